//! The writer thread: gathers submissions into batches, makes each batch durable through a
//! [`Backend`] (retrying as the answer says), then completes every submission of the batch.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::channel::{Receiver, Sender, TryRecvError};

use super::backoff::{self, Stop};
use super::config::Batching;
use super::{log, SinkError};
use crate::metrics::Metrics;

/// The longest fill wait under load (see `Writer::gather`).
const FILL: Duration = Duration::from_millis(5);

/// One `Sink::write` call waiting for its lines to be durable.
pub(crate) struct Submission {
    pub lines: String,
    pub points: usize,
    pub done: Sender<Result<(), SinkError>>,
}

/// What one attempt to write a batch came to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Attempt {
    /// Durable (InfluxDB 2xx, or written and fsync'd).
    Durable,
    /// Refused as malformed (InfluxDB 400): `dropped` points are lost for good, the rest were
    /// written. Never retried: the same bytes would be refused again and block the queue.
    Poison { dropped: usize, message: String },
    /// Too large (InfluxDB 413): write it in halves.
    TooLarge,
    /// Not written; try again later. `loud` marks failures an operator must fix (credentials).
    Retry {
        error: String,
        retry_after: Option<Duration>,
        loud: bool,
    },
}

/// A place lines become durable. Blocking: it runs on the writer thread only.
pub(crate) trait Backend: Send + 'static {
    /// One try at writing `body` (whole lines, each ending in `\n`) holding `points` points.
    fn attempt(&mut self, body: &str, points: usize) -> Attempt;
    /// Where the lines go, for log lines.
    fn describe(&self) -> String;
}

/// Shutdown interrupted the retries of a batch that was not durable yet.
#[derive(Debug)]
pub(crate) struct Stopped;

/// The writer's state besides the backend.
pub(crate) struct Writer<B: Backend> {
    pub backend: B,
    pub batching: Batching,
    pub stop: Arc<Stop>,
    pub metrics: Arc<Metrics>,
    /// Consecutive failed attempts, for pacing and for the "recovered" log line.
    pub failures: u32,
}

/// Points (lines) in a body; the body ends with `\n`.
fn count_lines(body: &str) -> usize {
    body.bytes().filter(|b| *b == b'\n').count()
}

impl<B: Backend> Writer<B> {
    /// The thread's body: runs until the channel is closed and drained.
    pub(crate) fn run(mut self, rx: Receiver<Submission>) {
        let mut carry: Option<Submission> = None;
        // After shutdown interrupted a failing write, the rest of the queue is refused at once:
        // each further attempt could cost a full timeout, and the agents keep the data anyway.
        let mut refusing = false;
        let mut carry_was_full = false;
        loop {
            let first = match carry.take() {
                Some(s) => s,
                None => match rx.recv_blocking() {
                    Ok(s) => s,
                    Err(_) => return,
                },
            };
            let (batch, next) = self.gather(first, &rx, carry_was_full);
            // A batch closed by the size limit means more is coming than one write carries.
            carry_was_full = next.is_some()
                || batch.iter().map(|s| s.points).sum::<usize>() >= self.batching.batch_points;
            carry = next;
            let result = if refusing {
                Err(Stopped)
            } else {
                self.write_batch(&batch)
            };
            if result.is_err() {
                refusing = true;
            }
            for s in batch {
                // The caller may have given up waiting (its session ended); nothing to do then.
                let _ = s.done.try_send(match result {
                    Ok(()) => Ok(()),
                    Err(Stopped) => Err(SinkError::ShutDown),
                });
            }
        }
    }

    /// Collects submissions after `first` until `batch_points` would be passed, the queue is empty
    /// (and the linger is over), or `flush` has passed since the batch opened. A submission that
    /// does not fit is returned to open the next batch; one larger than `batch_points` goes alone.
    ///
    /// `under_load` (the previous batch was full) adds a short fill wait in group-commit mode: the
    /// sessions whose writes just completed need a moment on the executor to submit their next
    /// ones, and without it the writer would send a small batch first. At most `FILL` more
    /// latency, and only when batches are full anyway; a quiet sink never waits.
    fn gather(
        &self,
        first: Submission,
        rx: &Receiver<Submission>,
        under_load: bool,
    ) -> (Vec<Submission>, Option<Submission>) {
        let opened = Instant::now();
        let fill_until = opened + FILL.min(self.batching.flush);
        let mut points = first.points;
        let mut batch = vec![first];
        while points < self.batching.batch_points {
            let next = match rx.try_recv() {
                Ok(s) => Some(s),
                Err(TryRecvError::Closed) => None,
                Err(TryRecvError::Empty) => {
                    if !self.batching.linger.is_zero() {
                        let deadline = (Instant::now() + self.batching.linger)
                            .min(opened + self.batching.flush);
                        recv_until(rx, deadline)
                    } else if under_load && Instant::now() < fill_until {
                        recv_until(rx, fill_until)
                    } else {
                        None
                    }
                }
            };
            let Some(s) = next else { break };
            if points + s.points > self.batching.batch_points {
                return (batch, Some(s));
            }
            points += s.points;
            batch.push(s);
        }
        (batch, None)
    }

    /// Makes the batch durable, or fails only when shutdown interrupts the retries.
    fn write_batch(&mut self, batch: &[Submission]) -> Result<(), Stopped> {
        if let [one] = batch {
            if one.lines.ends_with('\n') {
                return self.write_durable(&one.lines);
            }
        }
        let mut body = String::with_capacity(batch.iter().map(|s| s.lines.len() + 1).sum());
        for s in batch {
            body.push_str(&s.lines);
            if !s.lines.ends_with('\n') {
                body.push('\n');
            }
        }
        self.write_durable(&body)
    }

    /// Retries `body` until it is durable or refused as poison; splits it on "too large".
    pub(crate) fn write_durable(&mut self, body: &str) -> Result<(), Stopped> {
        let points = count_lines(body);
        if points == 0 {
            return Ok(());
        }
        loop {
            match self.backend.attempt(body, points) {
                Attempt::Durable => {
                    self.recovered();
                    self.metrics
                        .points_written
                        .fetch_add(points as u64, Ordering::Relaxed);
                    return Ok(());
                }
                Attempt::Poison { dropped, message } => {
                    self.recovered();
                    let dropped = dropped.min(points);
                    log(&format!(
                        "{} refused {dropped} of {points} points as malformed, dropped them: {message}",
                        self.backend.describe()
                    ));
                    self.metrics
                        .points_dropped_by_sink
                        .fetch_add(dropped as u64, Ordering::Relaxed);
                    self.metrics
                        .points_written
                        .fetch_add((points - dropped) as u64, Ordering::Relaxed);
                    return Ok(());
                }
                Attempt::TooLarge if points > 1 => {
                    self.recovered();
                    let (a, b) = split_half(body);
                    log(&format!(
                        "{} says {points} points ({} bytes) is too large; writing it in halves",
                        self.backend.describe(),
                        body.len()
                    ));
                    self.write_durable(a)?;
                    return self.write_durable(b);
                }
                Attempt::TooLarge => {
                    // One line the server will never take: the poison rule applies.
                    self.recovered();
                    log(&format!(
                        "{} refused a single point of {} bytes as too large, dropped it",
                        self.backend.describe(),
                        body.len()
                    ));
                    self.metrics
                        .points_dropped_by_sink
                        .fetch_add(points as u64, Ordering::Relaxed);
                    return Ok(());
                }
                Attempt::Retry {
                    error,
                    retry_after,
                    loud,
                } => {
                    self.metrics.sink_errors.fetch_add(1, Ordering::Relaxed);
                    if self.stop.is_stopped() {
                        log(&format!(
                            "{}: {error}; shutting down, {points} points not written (the agents keep them)",
                            self.backend.describe()
                        ));
                        return Err(Stopped);
                    }
                    let wait = backoff::delay(self.failures, retry_after, backoff::jitter());
                    self.failures = self.failures.saturating_add(1);
                    // Quiet while the backoff is short; every failure once it is long (at most
                    // one line per 10 s), and always the credential failures.
                    if loud || self.failures == 1 || wait >= Duration::from_secs(1) {
                        log(&format!(
                            "{}{}: {error}; {points} points kept, retry {} in {:.1}s",
                            if loud { "ERROR: " } else { "" },
                            self.backend.describe(),
                            self.failures,
                            wait.as_secs_f64()
                        ));
                    }
                    if self.stop.sleep(wait) {
                        return Err(Stopped);
                    }
                    self.metrics.sink_retries.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Ends a failure streak, saying so once.
    fn recovered(&mut self) {
        if self.failures > 0 {
            log(&format!(
                "{} is writing again after {} failed attempts",
                self.backend.describe(),
                self.failures
            ));
            self.failures = 0;
        }
    }
}

/// Waits for the next submission until `deadline`; None on timeout or closed channel.
fn recv_until(rx: &Receiver<Submission>, deadline: Instant) -> Option<Submission> {
    smol::block_on(smol::future::or(async { rx.recv().await.ok() }, async {
        smol::Timer::at(deadline).await;
        None
    }))
}

/// Splits a body of at least two lines into two halves of whole lines.
pub(crate) fn split_half(body: &str) -> (&str, &str) {
    let lines = count_lines(body);
    let mut seen = 0;
    for (i, b) in body.bytes().enumerate() {
        if b == b'\n' {
            seen += 1;
            if seen == lines / 2 {
                return body.split_at(i + 1);
            }
        }
    }
    (body, "")
}
