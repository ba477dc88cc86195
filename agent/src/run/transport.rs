//! The websocket to the factory: resolve, TCP connect and handshake, each bounded by a timeout,
//! with a cap on the size of messages the agent accepts.

use super::config::Server;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Error as WsError;
use async_tungstenite::WebSocketStream;
use smol::Async;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The agent's websocket.
pub type Ws = WebSocketStream<Async<TcpStream>>;

/// Why no websocket could be opened.
#[derive(Debug)]
pub enum ConnectError {
    /// Name resolution failed or gave no address.
    Resolve {
        /// The server as configured.
        server: String,
        /// The cause.
        source: io::Error,
    },
    /// TCP connect failed or timed out on every address.
    Tcp {
        /// The last address tried.
        peer: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// The websocket handshake failed or timed out.
    Handshake {
        /// The peer.
        peer: SocketAddr,
        /// The cause.
        source: WsError,
    },
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Resolve { server, source } => {
                write!(f, "cannot resolve {server}: {source}")
            }
            ConnectError::Tcp { peer, source } => write!(f, "cannot connect to {peer}: {source}"),
            ConnectError::Handshake { peer, source } => {
                write!(f, "websocket handshake with {peer} failed: {source}")
            }
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Resolve { source, .. } | ConnectError::Tcp { source, .. } => Some(source),
            ConnectError::Handshake { source, .. } => Some(source),
        }
    }
}

/// Limits for one connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bounds resolve, TCP connect and handshake, each.
    pub connect_timeout: Duration,
    /// The largest message accepted from the factory (it only sends small control messages).
    pub max_message: usize,
}

/// Opens the websocket; returns it with the peer address.
pub async fn connect(server: &Server, limits: Limits) -> Result<(Ws, SocketAddr), ConnectError> {
    // Resolution is a blocking libc call: keep it off the executor.
    let (host, port) = (server.host.clone(), server.port);
    let resolve = smol::unblock(move || {
        (host.as_str(), port)
            .to_socket_addrs()
            .map(|a| a.collect::<Vec<_>>())
    });
    let addrs = with_timeout(limits.connect_timeout, resolve)
        .await
        .and_then(|a| a)
        .map_err(|source| ConnectError::Resolve {
            server: server.to_string(),
            source,
        })?;
    let mut last = None;
    for peer in addrs {
        match with_timeout(limits.connect_timeout, Async::<TcpStream>::connect(peer)).await {
            Ok(Ok(tcp)) => {
                // Batches are written whole; Nagle would only add latency to acks and pings.
                let _ = tcp.get_ref().set_nodelay(true);
                let ws_config = WebSocketConfig::default()
                    .max_message_size(Some(limits.max_message))
                    .max_frame_size(Some(limits.max_message));
                let hs =
                    async_tungstenite::client_async_with_config(server.url(), tcp, Some(ws_config));
                return match with_timeout(limits.connect_timeout, hs).await {
                    Ok(Ok((ws, _response))) => Ok((ws, peer)),
                    Ok(Err(source)) => Err(ConnectError::Handshake { peer, source }),
                    Err(e) => Err(ConnectError::Handshake {
                        peer,
                        source: WsError::Io(e),
                    }),
                };
            }
            Ok(Err(e)) | Err(e) => last = Some((peer, e)),
        }
    }
    Err(match last {
        Some((peer, source)) => ConnectError::Tcp { peer, source },
        None => ConnectError::Resolve {
            server: server.to_string(),
            source: io::Error::new(io::ErrorKind::NotFound, "no address"),
        },
    })
}

/// Runs `fut` for at most `d`.
pub async fn with_timeout<T>(
    d: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, io::Error> {
    smol::future::or(async { Ok(fut.await) }, async {
        smol::Timer::after(d).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("timed out after {d:?}"),
        ))
    })
    .await
}
