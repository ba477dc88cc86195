//! The factory's error type: one enum, each variant carrying the context (path, peer, client id)
//! a reader of the log line needs.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong in the factory library.
#[derive(Debug)]
pub enum Error {
    /// An I/O operation failed; `what` says on what (a path, an address).
    Io {
        /// What was being done, e.g. "bind 0.0.0.0:8675".
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file (or a flag) is invalid.
    Config {
        /// Where the config came from: a path or "command line".
        origin: String,
        /// What is wrong, naming the key.
        detail: String,
    },
    /// The inventory store failed.
    Store {
        /// The store's directory.
        path: PathBuf,
        /// The cause.
        source: fjall::Error,
    },
    /// A stored inventory record could not be read.
    Record {
        /// The client id (the record's key).
        id: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The sink could not be started or failed.
    Sink(crate::sink::SinkError),
    /// A websocket error with a peer.
    Ws {
        /// The peer.
        peer: SocketAddr,
        /// The cause.
        source: async_tungstenite::tungstenite::Error,
    },
}

impl Error {
    /// An I/O error with context.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// True for errors in what the user gave (flags, config file, sink section): exit 2.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::Config { .. } | Error::Sink(crate::sink::SinkError::Config(_))
        )
    }

    /// A config error.
    pub fn config(origin: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::Config {
            origin: origin.into(),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::Config { origin, detail } => write!(f, "{origin}: {detail}"),
            Error::Store { path, source } => {
                write!(f, "inventory store {}: {source}", path.display())
            }
            Error::Record { id, detail } => write!(f, "inventory record {id}: {detail}"),
            Error::Sink(e) => write!(f, "sink: {e}"),
            Error::Ws { peer, source } => write!(f, "websocket with {peer}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Store { source, .. } => Some(source),
            Error::Sink(e) => Some(e),
            Error::Ws { source, .. } => Some(source),
            Error::Config { .. } | Error::Record { .. } => None,
        }
    }
}

impl From<crate::sink::SinkError> for Error {
    fn from(e: crate::sink::SinkError) -> Error {
        Error::Sink(e)
    }
}
