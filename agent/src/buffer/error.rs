//! The buffer's error type: what went wrong, and on which path.

use std::fmt;
use std::path::PathBuf;

/// An error from the disk buffer. Every variant names the buffer directory (or file) involved.
#[derive(Debug)]
pub enum BufferError {
    /// A file-system operation on the buffer directory failed.
    Io {
        /// What we were doing, e.g. "create directory".
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// fjall reported an error while reading or writing.
    Store {
        /// What we were doing, e.g. "append batch".
        op: &'static str,
        /// The buffer directory.
        path: PathBuf,
        /// The underlying error.
        source: fjall::Error,
    },
    /// Another process (or another `Buffer` in this one) holds the buffer's lock.
    Locked {
        /// The buffer directory.
        path: PathBuf,
    },
    /// The stored data does not have the shape this version writes (bad key length, bad meta value,
    /// bad format marker). At open time this moves the buffer aside; afterwards it is reported.
    Corrupt {
        /// The buffer directory.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// The buffer could not be opened, and a fresh one could not be opened after moving it aside.
    Unrecoverable {
        /// The buffer directory.
        path: PathBuf,
        /// Why the fresh buffer failed to open.
        source: Box<BufferError>,
    },
}

impl BufferError {
    /// True when fjall has stopped accepting writes after an I/O failure ("poisoned"): this `Buffer`
    /// will fail every write from now on. Exit and let the supervisor restart the agent; reopening
    /// recovers from the journal.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            BufferError::Store {
                source: fjall::Error::Poisoned,
                ..
            }
        )
    }
}

/// Why the disk refuses writes, as far as the OS said (`errno` of the first failed write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFault {
    /// ENOSPC or EDQUOT: no space left.
    Full,
    /// EROFS, EACCES or EPERM: the disk (or the directory) does not accept writes.
    ReadOnly,
    /// Any other error (EIO, a bug, corruption found while writing).
    Other,
}

impl BufferError {
    /// Classifies the error by the first `io::Error` in its source chain.
    pub fn fault(&self) -> DiskFault {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return fault_of(io);
            }
            cur = e.source();
        }
        DiskFault::Other
    }
}

/// Classifies one I/O error.
pub fn fault_of(e: &std::io::Error) -> DiskFault {
    match e.raw_os_error() {
        Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT) => DiskFault::Full,
        Some(nix::libc::EROFS) | Some(nix::libc::EACCES) | Some(nix::libc::EPERM) => {
            DiskFault::ReadOnly
        }
        _ if e.kind() == std::io::ErrorKind::PermissionDenied => DiskFault::ReadOnly,
        _ => DiskFault::Other,
    }
}

impl fmt::Display for BufferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BufferError::Io { op, path, source } => {
                write!(f, "buffer: {op} {}: {source}", path.display())
            }
            BufferError::Store { op, path, source } => {
                write!(f, "buffer {}: {op}: {source}", path.display())
            }
            BufferError::Locked { path } => write!(
                f,
                "buffer {}: locked by another process (is another agent running?)",
                path.display()
            ),
            BufferError::Corrupt { path, what } => {
                write!(f, "buffer {}: corrupt: {what}", path.display())
            }
            BufferError::Unrecoverable { path, source } => write!(
                f,
                "buffer {}: a fresh buffer could not be opened after moving the old one aside: {source}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for BufferError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BufferError::Io { source, .. } => Some(source),
            BufferError::Store { source, .. } => Some(source),
            BufferError::Unrecoverable { source, .. } => Some(source.as_ref()),
            BufferError::Locked { .. } | BufferError::Corrupt { .. } => None,
        }
    }
}
