//! Websocket transport: TLS or plain on one port (told apart by the first byte), the upgrade
//! with its limits, reading one frame as a protocol event, sending encoded messages, and the
//! reject-then-close sequence. Knows nothing of sessions, and neither counts nor logs: the
//! caller records refusals (see [`crate::refusal`]).

use crate::config::Limits;
use crate::metrics::Reason;
use crate::refusal::Refusal;
use crate::tls::TlsListener;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use async_tungstenite::WebSocketStream;
use autofact_fbs::{Message, Reject, RejectCode};
use smol::io::{AsyncRead, AsyncWrite};
use smol::stream::StreamExt;
use smol::Async;
use std::fmt;
use std::io;
use std::net::TcpStream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// An accepted websocket.
pub type Ws = WebSocketStream<Stream>;

/// The byte stream under a websocket: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// `ws://`.
    Plain(Async<TcpStream>),
    /// `wss://`; boxed, rustls's state is a few kB.
    Tls(Box<futures_rustls::server::TlsStream<Async<TcpStream>>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
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
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// Why a connection ended before its websocket was up.
#[derive(Debug)]
pub enum AcceptError {
    /// The TLS handshake failed (a client that does not trust our certificate, garbage).
    Tls(io::Error),
    /// A TLS client on a listener without a `tls` section.
    TlsNotConfigured,
    /// The websocket upgrade failed.
    Ws(WsError),
}

impl AcceptError {
    /// The rejection reason it is counted under.
    pub fn reason(&self) -> Reason {
        match self {
            AcceptError::Tls(_) | AcceptError::TlsNotConfigured => Reason::TlsHandshake,
            AcceptError::Ws(_) => Reason::WsHandshake,
        }
    }
}

impl fmt::Display for AcceptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcceptError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            AcceptError::TlsNotConfigured => write!(
                f,
                "a TLS client on a plain listener (give the factory a tls section, or use ws://)"
            ),
            AcceptError::Ws(e) => e.fmt(f),
        }
    }
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// How long a closing connection may take to answer our close frame before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Read buffer per connection. tungstenite allocates it eagerly (128 KiB by default, which
/// is 2.5 GiB at 20,000 connections) and keeps it for the connection's life; agents send a
/// batch every few seconds, so a small buffer costs a few more read calls for a large batch
/// and saves almost all of that memory. It grows to the largest frame received, which it then
/// keeps (a 10-snapshot batch is about 12 KiB); from 1 KiB it grows to about the frame's size,
/// where from 2 KiB a 2.5 KiB batch made it 4 KiB (10,000 agents: 18.0 -> 16.5 KiB each, the
/// same CPU).
const READ_BUFFER: usize = 1024;

/// tungstenite settings from our limits: messages and frames above the limit are refused while
/// being read, before they are buffered whole.
pub fn ws_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(READ_BUFFER)
        .max_message_size(Some(limits.max_message_bytes))
        .max_frame_size(Some(limits.max_message_bytes))
}

/// A websocket that is up.
pub enum Accepted {
    /// Ready for the protocol.
    Ws(Ws),
    /// A plain client where `require_tls` is set: to be told Reject{TlsRequired}.
    PlainWhereTlsRequired(Ws),
}

/// Performs TLS when the client starts with a TLS handshake, then the websocket upgrade on an
/// accepted TCP stream (the caller bounds it in time). A plain websocket client starts with
/// `GET`, so one port serves both; with `require_tls` a plain one is upgraded only to be told
/// Reject{TlsRequired} (by the caller), which the agent reports in words.
pub async fn accept(
    tcp: Async<TcpStream>,
    limits: &Limits,
    tls: Option<&TlsListener>,
) -> Result<Accepted, AcceptError> {
    let mut first = [0u8; 1];
    // Peek, not read: the byte stays for rustls or the HTTP parser. A client that closes
    // without a byte is left to the websocket upgrade, which reports it.
    let is_tls = matches!(tcp.peek(&mut first).await, Ok(1) if first[0] == TLS_HANDSHAKE);
    let stream = match (is_tls, tls) {
        (true, Some(t)) => Stream::Tls(Box::new(
            t.acceptor().accept(tcp).await.map_err(AcceptError::Tls)?,
        )),
        (true, None) => return Err(AcceptError::TlsNotConfigured),
        (false, _) => Stream::Plain(tcp),
    };
    let ws = async_tungstenite::accept_async_with_config(stream, Some(ws_config(limits)))
        .await
        .map_err(AcceptError::Ws)?;
    if !is_tls && tls.is_some_and(|t| t.require_tls()) {
        return Ok(Accepted::PlainWhereTlsRequired(ws));
    }
    Ok(Accepted::Ws(ws))
}

/// One thing read from the peer.
#[derive(Debug)]
pub enum Incoming {
    /// A binary message: one protocol envelope.
    Binary(Vec<u8>),
    /// A ping or pong (tungstenite answers pings itself): proof of life only.
    Control,
    /// A text frame, or one with invalid UTF-8: not our protocol.
    Text,
    /// A message or frame above the size limit.
    TooLarge,
    /// The peer closed, or the connection failed.
    Closed(Option<String>),
}

/// Reads the next frame. Cancel-safe: dropping the future loses nothing (tungstenite keeps the
/// partial frame in its own buffer).
pub async fn recv(ws: &mut Ws) -> Incoming {
    match ws.next().await {
        None => Incoming::Closed(None),
        Some(Ok(WsMessage::Binary(b))) => Incoming::Binary(b.to_vec()),
        Some(Ok(WsMessage::Text(_))) | Some(Err(WsError::Utf8(_))) => Incoming::Text,
        Some(Ok(WsMessage::Ping(_))) | Some(Ok(WsMessage::Pong(_))) => Incoming::Control,
        Some(Ok(WsMessage::Close(_))) => Incoming::Closed(None),
        Some(Ok(WsMessage::Frame(_))) => Incoming::Control,
        Some(Err(WsError::Capacity(_))) => Incoming::TooLarge,
        Some(Err(WsError::ConnectionClosed)) | Some(Err(WsError::AlreadyClosed)) => {
            Incoming::Closed(None)
        }
        Some(Err(e)) => Incoming::Closed(Some(e.to_string())),
    }
}

/// Encodes and sends one protocol message.
pub async fn send(ws: &mut Ws, msg: &Message) -> Result<(), WsError> {
    let bytes = autofact_fbs::encode(msg);
    ws.send(WsMessage::Binary(bytes.into())).await
}

/// Sends a close frame and waits briefly for the peer's close, so it sees a clean close
/// (with our code) rather than a reset.
pub async fn close(ws: &mut Ws, code: CloseCode, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.to_string().into(),
    };
    if ws.close(Some(frame)).await.is_err() {
        return;
    }
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    let _ = smol::future::or(
        async {
            drain.await;
            true
        },
        async {
            smol::Timer::after(CLOSE_GRACE).await;
            false
        },
    )
    .await;
}

/// The close code that goes with a refusal.
pub fn close_code(code: RejectCode) -> CloseCode {
    match code {
        RejectCode::TooLarge => CloseCode::Size,
        RejectCode::Malformed => CloseCode::Unsupported,
        RejectCode::ShuttingDown | RejectCode::Busy => CloseCode::Away,
        _ => CloseCode::Policy,
    }
}

/// The one way a connection is refused once the websocket is up: a Reject message, then a
/// close with the code that goes with it (the caller has recorded the refusal).
pub async fn refuse(ws: &mut Ws, r: &Refusal) {
    let msg = Message::Reject(Reject {
        code: r.code,
        message: r.message.clone(),
    });
    if send(ws, &msg).await.is_ok() {
        close(ws, close_code(r.code), r.reason.label()).await;
    }
}
