//! autofactory, the factory: accepts agents over websockets, keeps the inventory of clients,
//! pushes each client its configuration, prints what clients send, and writes their facts to
//! the sink, acknowledging each batch once it is durable.
//!
//! # Layout
//! - [`config`]: the JSON config file, its validation, effective Config per client.
//! - [`server`]: [`Factory`]: shared state, accept loop and limits, reload, graceful shutdown.
//! - `session`: one connection's state machine (Hello -> Welcome/Reject -> Batches -> Acks).
//! - [`transport`]: TLS-or-plain on one port, websocket upgrade, frame limits, reject-and-close.
//! - [`tls`]: the listener's certificate (swapped on SIGHUP) and `require_tls`.
//! - [`inventory`]: the fjall-backed client inventory.
//! - [`admin`]: the admin HTTP listener (`/clients`, `/metrics`) and its CLI client.
//! - [`metrics`]: atomic counters, Prometheus text.
//! - [`fleet`]: the fleet-wide inventory measurement (`autofact_client`) written to the sink.
//! - [`ids`]: random ids and secrets, SHA-256, fleet secrets (HMAC-SHA256 under the fleet key).
//! - [`sink`]: where facts go (InfluxDB or a file).
//! - [`log`]: log lines.
//! - [`error`]: the crate's error type.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod config;
pub mod error;
pub mod fleet;
pub mod ids;
pub mod inventory;
pub mod log;
pub mod metrics;
pub mod server;
mod session;
pub mod sink;
pub mod tls;
pub mod transport;

pub use config::FactoryConfig;
pub use error::Error;
pub use server::{FactSink, Factory, Settings, WriteFuture};

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
    let stop_rx = factory.shared.stop_rx.clone();
    let admin = async {
        match admin {
            Some(l) => {
                factory
                    .serve_admin(l, async {
                        let _ = stop_rx.recv().await;
                    })
                    .await
            }
            None => Ok(()),
        }
    };
    // The fleet inventory loop ends with the sessions (on the same stop signal).
    let port = listener.get_ref().local_addr().map_or(0, |a| a.port());
    let fleet = fleet::run(factory.shared.clone(), fleet::factory_name(port));
    let ((a, b), ()) = smol::future::zip(
        smol::future::zip(factory.serve(listener, shutdown), admin),
        fleet,
    )
    .await;
    a.and(b)
}
