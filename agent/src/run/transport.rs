//! The websocket to the factory: resolve, TCP connect, TLS for `wss://` (see `tls`), and the
//! websocket handshake, each bounded by a timeout, with a cap on the size of messages the agent
//! accepts.

use super::config::Server;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Error as WsError;
use async_tungstenite::WebSocketStream;
use smol::io::{AsyncRead, AsyncWrite};
use smol::Async;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The agent's websocket.
pub type Ws = WebSocketStream<Stream>;

/// The byte stream under the websocket: plain TCP (`ws://`) or TLS over TCP (`wss://`).
#[derive(Debug)]
pub enum Stream {
    /// `ws://`.
    Plain(Async<TcpStream>),
    /// `wss://`, boxed: rustls's connection state is a few kB, the plain variant a few bytes.
    #[cfg(feature = "tls")]
    Tls(Box<futures_rustls::client::TlsStream<Async<TcpStream>>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

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
    /// The TLS setup or handshake failed or timed out (`wss://`).
    Tls {
        /// The peer.
        peer: SocketAddr,
        /// Why, in words an operator can act on (the certificate's problem, a pin mismatch).
        reason: String,
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
            ConnectError::Tls { peer, reason, .. } => {
                write!(f, "TLS handshake with {peer} failed: {reason}")
            }
            ConnectError::Handshake { peer, source } => {
                write!(f, "websocket handshake with {peer} failed: {source}")
            }
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Resolve { source, .. }
            | ConnectError::Tcp { source, .. }
            | ConnectError::Tls { source, .. } => Some(source),
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
                let stream = secure(server, tcp, peer, limits).await?;
                let ws_config = WebSocketConfig::default()
                    .max_message_size(Some(limits.max_message))
                    .max_frame_size(Some(limits.max_message));
                let hs = async_tungstenite::client_async_with_config(
                    server.url(),
                    stream,
                    Some(ws_config),
                );
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

/// With `wss://`, the TLS handshake on `tcp` (verified against the server's trust); else `tcp`.
#[cfg(feature = "tls")]
async fn secure(
    server: &Server,
    tcp: Async<TcpStream>,
    peer: SocketAddr,
    limits: Limits,
) -> Result<Stream, ConnectError> {
    use super::tls;
    let Some(trust) = &server.tls else {
        return Ok(Stream::Plain(tcp));
    };
    let fail = |reason: String, source: io::Error| ConnectError::Tls {
        peer,
        reason,
        source,
    };
    let setup = |reason: String| fail(reason, io::Error::other("TLS setup"));
    // Read per connection: a CA bundle replaced on disk is used from the next connect on.
    let config = tls::client_config(trust).map_err(setup)?;
    let name = tls::server_name(&server.host).map_err(setup)?;
    let connector = futures_rustls::TlsConnector::from(config);
    match with_timeout(limits.connect_timeout, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(Stream::Tls(Box::new(s))),
        Ok(Err(e)) => Err(fail(tls::describe(&e, trust, &server.host), e)),
        Err(e) => Err(fail(e.to_string(), e)),
    }
}

/// Without the `tls` feature a `wss://` server is refused when the config is read.
#[cfg(not(feature = "tls"))]
async fn secure(
    _server: &Server,
    tcp: Async<TcpStream>,
    _peer: SocketAddr,
    _limits: Limits,
) -> Result<Stream, ConnectError> {
    Ok(Stream::Plain(tcp))
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
