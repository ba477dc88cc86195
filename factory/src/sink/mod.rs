//! Where facts become durable: InfluxDB over HTTP, or line protocol files by default.
//!
//! # Layout
//! - [`config`]: the `sink` config section ([`SinkConfig`]) and its validation.
//! - `writer`: the writer thread, batching, and the retry rules shared by every backend.
//! - `influx`: InfluxDB 1.x / 2.x HTTP writes with minreq, and what each answer means.
//! - `file`: `<data_dir>/facts/YYYY-MM-DD.lp`, fsync'd.
//! - [`dead_letter`]: `<data_dir>/dead-letters/YYYY-MM-DD.lp`, the lines a store refused, with
//!   their client and the store's reason; its module doc has the format.
//! - [`replay`]: a dead-letter file written through the sink again (`autofactory replay`).
//! - `backoff`: capped exponential backoff with jitter.
//!
//! # How a write flows
//! [`Sink::write`] queues the lines on a bounded channel and waits for its answer. A writer
//! thread (blocking minreq and file I/O stay off the async executor; the file sink has one,
//! InfluxDB `writers`, default 2, each with one request in flight) takes the first queued
//! submission, adds whatever else is already queued up to `batch_points` points ("group
//! commit": no fixed flush delay unless `linger_ms` asks for one; when the previous batch was full
//! it waits up to 5 ms for the sessions it just answered to submit again), writes the batch, and
//! answers every submission in it once the batch is durable. A lone write is acknowledged after
//! one InfluxDB round trip (about 6 ms on loopback, against 1 s with a Telegraf-like fixed flush:
//! see `examples/sink_bench.rs`), which matters because an agent's send window waits on acks. While the store fails the writer retries the
//! same batch with backoff, the queue fills, and `write` stops returning: the sessions stop
//! reading from their agents, whose data waits on their own disks. Nothing is dropped: lines the
//! store refuses for good (400, 422, partial writes, a 4xx the table does not know after a few
//! tries) are isolated -- by the lines the store names, else by halving the body -- and written
//! to a dead-letter file under the client each came from; every other line of the body is
//! written. A submission is answered once each of its lines is written or dead-lettered and
//! fsync'd. The answer table is in `influx.rs` and the README.

pub mod config;
pub mod dead_letter;
pub mod replay;

mod backoff;
pub mod encode;
mod file;
mod https;
mod influx;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use smol::channel::Sender;

pub use config::SinkConfig;

use crate::metrics::Metrics;
use backoff::Stop;
use config::Target;
use dead_letter::DeadLetters;
use writer::{Backend, Submission, Writer};

/// Why the sink could not take or finish a write.
#[derive(Debug)]
pub enum SinkError {
    /// The `sink` config section is invalid; the text names the field.
    Config(String),
    /// The writer thread could not be started.
    Spawn(std::io::Error),
    /// The sink was shut down before the lines were durable (the caller must not acknowledge).
    ShutDown,
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::Config(what) => write!(f, "bad sink config: {what}"),
            SinkError::Spawn(e) => write!(f, "cannot start the sink writer thread: {e}"),
            SinkError::ShutDown => write!(f, "the sink is shut down; lines not written"),
        }
    }
}

impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SinkError::Spawn(e) => Some(e),
            SinkError::Config(_) | SinkError::ShutDown => None,
        }
    }
}

/// The factory's handle to its sink; clones share the writer threads.
#[derive(Clone)]
pub struct Sink {
    tx: Sender<Submission>,
    shared: Arc<Shared>,
}

struct Shared {
    stop: Arc<Stop>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    what: String,
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink")
            .field("target", &self.shared.what)
            .finish()
    }
}

impl Sink {
    /// Validates `cfg` and starts the writer thread. `data_dir` holds the file sink's `facts/`
    /// and the `dead-letters/`.
    pub fn start(
        cfg: &SinkConfig,
        data_dir: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<Sink, SinkError> {
        Sink::start_tagged(cfg, data_dir, metrics, "")
    }

    /// [`Sink::start`], its dead letters in `<day><tag>.lp` files.
    pub(crate) fn start_tagged(
        cfg: &SinkConfig,
        data_dir: &Path,
        metrics: Arc<Metrics>,
        tag: &str,
    ) -> Result<Sink, SinkError> {
        let (target, batching) = cfg.validate(data_dir)?;
        let dead = Arc::new(DeadLetters::new(
            dead_letter::dir_under(data_dir),
            Some(data_dir.to_path_buf()),
            tag,
        ));
        match target {
            Target::File { dir } => Sink::spawn(
                1,
                || file::FileBackend::new(dir.clone(), data_dir.to_path_buf()),
                batching,
                metrics,
                dead,
            ),
            Target::Influx {
                base,
                api,
                timeout,
                writers,
                ca_file,
            } => {
                // https: the CA is read once here, so a bad ca_file stops the start.
                let tls = match base.starts_with("https://") {
                    true => Some(
                        https::client_config(ca_file.as_deref())
                            .map_err(|e| SinkError::Config(format!("sink.ca_file: {e}")))?,
                    ),
                    false => None,
                };
                Sink::spawn(
                    writers,
                    || {
                        influx::InfluxBackend::new(base.clone(), api.clone(), timeout)
                            .with_tls(tls.clone())
                    },
                    batching,
                    metrics,
                    dead,
                )
            }
        }
    }

    /// Starts `writers` threads, each with its own backend, all taking from one queue. Every
    /// submission is answered on its own, so writes finishing out of order are fine: a session
    /// acknowledges its batches in seq order whatever order they became durable in.
    fn spawn<B: Backend>(
        writers: usize,
        mut backend: impl FnMut() -> B,
        batching: config::Batching,
        metrics: Arc<Metrics>,
        dead: Arc<DeadLetters>,
    ) -> Result<Sink, SinkError> {
        let (tx, rx) = smol::channel::bounded(batching.queue);
        let stop = Arc::new(Stop::default());
        let backends: Vec<B> = (0..writers.max(1)).map(|_| backend()).collect();
        let mut what = backends[0].describe();
        if backends.len() > 1 {
            what = format!("{what} ({} writers)", backends.len());
        }
        let mut threads = Vec::with_capacity(backends.len());
        for (i, backend) in backends.into_iter().enumerate() {
            let writer = Writer {
                backend,
                batching,
                stop: stop.clone(),
                metrics: metrics.clone(),
                dead: dead.clone(),
                failures: 0,
            };
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("sink-writer-{i}"))
                .spawn(move || writer.run(rx));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // Stop the writers already started before reporting.
                    tx.close();
                    stop.stop();
                    threads.into_iter().for_each(|t| drop(t.join()));
                    return Err(SinkError::Spawn(e));
                }
            }
        }
        Ok(Sink {
            tx,
            shared: Arc::new(Shared {
                stop,
                threads: Mutex::new(threads),
                what,
            }),
        })
    }

    /// Resolves once each line is durable (Ok): written by the store, or refused by it and
    /// written to a dead-letter file (fsync'd) under `client`, so a refused line never blocks the
    /// queue; while the sink fails it keeps retrying and the future stays pending
    /// (backpressure); Err only once the sink has shut down.
    ///
    /// `client` is the id of the agent the lines came from (refused lines are kept, logged and
    /// counted under it); `lines` is line protocol, one point per line; `points` is how many
    /// lines it holds (used for batch sizing).
    pub async fn write(&self, client: &str, lines: String, points: usize) -> Result<(), SinkError> {
        if lines.trim().is_empty() {
            return if self.tx.is_closed() {
                Err(SinkError::ShutDown)
            } else {
                Ok(())
            };
        }
        self.submit(client, lines, points, None).await
    }

    async fn submit(
        &self,
        client: &str,
        lines: String,
        points: usize,
        refused: Option<String>,
    ) -> Result<(), SinkError> {
        let (done, answer) = smol::channel::bounded(1);
        self.tx
            .send(Submission {
                client: client.to_string(),
                lines,
                points,
                refused,
                done,
            })
            .await
            .map_err(|_| SinkError::ShutDown)?;
        answer.recv().await.unwrap_or(Err(SinkError::ShutDown))
    }

    /// Keeps lines the factory refuses itself (never sent to the store) as dead letters under
    /// `client` with `reason`, fsync'd, counted like the store's refusals. Resolves once they are
    /// on disk (the writer retries while the disk refuses); Err only once the sink has shut
    /// down (the batch then stays unacknowledged, on the agent). The writer threads do the
    /// disk I/O, so no blocking pool is needed for it.
    pub async fn keep_refused(
        &self,
        client: &str,
        reason: &str,
        lines: String,
    ) -> Result<(), SinkError> {
        let points = lines.lines().count();
        self.submit(client, lines, points, Some(reason.to_string()))
            .await
    }

    /// Stop taking writes, drain and finish in-flight ones, then stop the writer thread. Queued
    /// writes are still attempted; once one fails, it and the rest resolve Err (the agents keep
    /// those points and send them again). Blocks until the writer thread has exited.
    pub fn shutdown(&self) {
        self.tx.close();
        self.shared.stop.stop();
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for t in threads {
            if t.join().is_err() {
                log("a writer thread panicked");
            }
        }
    }

    /// Where the lines go, for the factory's start-up line.
    pub fn describe(&self) -> &str {
        &self.shared.what
    }
}

/// A boxed sink write.
pub type WriteFuture =
    Pin<Box<dyn Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Send>>;

/// Where facts go. Implemented by [`Sink`]; tests substitute an in-memory one.
pub trait FactSink: Send + Sync + 'static {
    /// Resolves once `lines` (from client `client`) are durable -- written, or refused by the
    /// store and kept as dead letters under `client`; waits while the store is failing; an
    /// error only when the sink has shut down.
    fn write(&self, client: &str, lines: String, points: usize) -> WriteFuture;
    /// Resolves once `lines` that the factory itself refuses (never sent to the store, e.g. a
    /// timestamp it could not trust) are kept as dead letters under `client` with `reason`.
    /// Test sinks keep them with the rest by default.
    fn keep_refused(&self, client: &str, reason: &str, lines: String) -> WriteFuture {
        let _ = reason;
        let points = lines.lines().count();
        self.write(client, lines, points)
    }
    /// Drains in-flight writes, then stops.
    fn shutdown(&self);
    /// Where the facts go, for the startup line.
    fn describe(&self) -> String {
        "a test sink".to_string()
    }
}

impl FactSink for Sink {
    fn write(&self, client: &str, lines: String, points: usize) -> WriteFuture {
        let (sink, client) = (self.clone(), client.to_string());
        Box::pin(async move {
            sink.write(&client, lines, points)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
    }
    fn keep_refused(&self, client: &str, reason: &str, lines: String) -> WriteFuture {
        let (sink, client, reason) = (self.clone(), client.to_string(), reason.to_string());
        Box::pin(async move {
            sink.keep_refused(&client, &reason, lines)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
    }
    fn shutdown(&self) {
        Sink::shutdown(self)
    }
    fn describe(&self) -> String {
        Sink::describe(self).to_string()
    }
}

/// One log line on stderr, through the factory's log. Everything the sink says is worth a
/// warning level: failures, dropped points, recoveries after failures, a created database.
fn log(msg: &str) {
    crate::log::line("WARN", format_args!("sink: {msg}"));
}
