//! autofactory, the factory: accepts agents over websockets, keeps the inventory of clients,
//! pushes each client its configuration, prints what clients send, and writes their facts to
//! the sink, acknowledging each batch once it is durable.
//!
//! # Layout
//! Each file one responsibility; imports go one way, from the top of this list down:
//!
//! - [`server`]: [`Factory`]: opening (config, TLS, sink, inventory, token), the one executor,
//!   the accept loop and its connection limit, reload, the shutdown sequence.
//! - [`admin`]: the admin HTTP listener (`/`, `/clients`, `/metrics`) and its CLI client.
//! - [`fleet`]: the fleet-wide inventory measurement (`autofact_client`) written to the sink.
//! - `session`: one connection's state machine (Hello -> Welcome/Reject -> Batches -> Acks);
//!   it decides, the parts below do the I/O.
//! - [`transport`]: TLS-or-plain on one port, websocket upgrade, frame limits, sending a
//!   Reject and closing.
//! - [`context`]: what the parts of a running factory share, each behind an accessor.
//! - [`registry`]: live sessions (who is connected, the Config each has, how to reach it) and
//!   what their batches said.
//! - [`shutdown`]: the stop signal and the drain of sessions.
//! - [`refusal`]: the one place a refusal is counted and logged.
//! - [`sink`]: where facts go: the encoder (line protocol from a batch, `sink::encode`), then
//!   InfluxDB, VictoriaMetrics or a file; [`FactSink`] is its interface.
//! - [`inventory`]: the fjall-backed client inventory.
//! - [`clock`]: agent clock offsets and the rebuilt time of snapshots taken while wrong.
//! - [`config`]: the JSON config file, its validation, effective Config per client.
//! - [`tls`]: the listener's certificate (swapped on SIGHUP) and `require_tls`.
//! - [`metrics`]: atomic counters, Prometheus text.
//! - [`ids`]: random ids and secrets, SHA-256, fleet secrets (HMAC-SHA256 under the fleet key).
//! - [`log`]: log lines.
//! - [`error`]: the crate's error type.
//!
//! A batch flows down the list: transport reads the frame, the session decodes and dedups it,
//! the encoder makes its lines, the sink makes them durable, the session acks and records the
//! ack in the inventory.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod clock;
pub mod config;
pub mod context;
pub mod error;
pub mod fleet;
pub mod ids;
pub mod inventory;
pub mod log;
pub mod metrics;
pub mod refusal;
pub mod registry;
pub mod server;
mod session;
pub mod shutdown;
pub mod sink;
pub mod tls;
pub mod transport;

pub use config::FactoryConfig;
pub use error::Error;
pub use server::{Factory, Settings};
pub use sink::{FactSink, WriteFuture};

use smol::Async;
use std::future::Future;
use std::net::TcpListener;

/// Runs `factory` on the given listeners (the caller binds them, so tests can use port 0)
/// until `shutdown` resolves; then shuts down gracefully. The admin listener stops when the
/// shutdown starts.
pub async fn run(
    factory: &Factory,
    listener: Async<TcpListener>,
    admin: Option<Async<TcpListener>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    factory.serve(listener, admin, shutdown).await
}
