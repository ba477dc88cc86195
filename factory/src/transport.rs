//! Websocket transport: the upgrade with its limits, reading one frame as a protocol event,
//! sending encoded messages, and the reject-then-close sequence. Knows nothing of sessions.

use crate::config::Limits;
use crate::metrics::{Metrics, Reason};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use async_tungstenite::WebSocketStream;
use autofact_fbs::{Message, Reject, RejectCode};
use smol::stream::StreamExt;
use smol::Async;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An accepted websocket.
pub type Ws = WebSocketStream<Async<TcpStream>>;

/// How long a closing connection may take to answer our close frame before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Read buffer per connection. tungstenite allocates it eagerly (128 KiB by default, which
/// is 2.5 GiB at 20,000 connections); agents send a batch every few seconds, so a small
/// buffer costs a few more read calls and saves almost all of that memory.
const READ_BUFFER: usize = 8 * 1024;

/// tungstenite settings from our limits: messages and frames above the limit are refused while
/// being read, before they are buffered whole.
pub fn ws_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(READ_BUFFER)
        .max_message_size(Some(limits.max_message_bytes))
        .max_frame_size(Some(limits.max_message_bytes))
}

/// Performs the websocket upgrade on an accepted TCP stream (the caller bounds it in time).
pub async fn accept(stream: Async<TcpStream>, limits: &Limits) -> Result<Ws, WsError> {
    async_tungstenite::accept_async_with_config(stream, Some(ws_config(limits))).await
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

/// The one way a connection is refused once the websocket is up: a Reject message, a close, a
/// log line with the peer and reason, and the metric for the reason.
pub async fn reject(
    ws: &mut Ws,
    peer: SocketAddr,
    metrics: &Metrics,
    reason: Reason,
    code: RejectCode,
    message: &str,
) {
    metrics.reject(reason);
    crate::info_limited!("rejected {peer}: {} ({message})", reason.label());
    let msg = Message::Reject(Reject {
        code,
        message: message.to_string(),
    });
    if send(ws, &msg).await.is_ok() {
        close(ws, close_code(code), reason.label()).await;
    }
}
