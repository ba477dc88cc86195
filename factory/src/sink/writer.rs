//! The writer thread: gathers submissions into batches, makes each batch durable through a
//! [`Backend`] (retrying as the answer says), then completes every submission of the batch.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::channel::{Receiver, Sender, TryRecvError};

use super::backoff::{self, Stop};
use super::config::Batching;
use super::dead_letter::{DeadLetters, Record};
use super::{log, SinkError};
use crate::metrics::Metrics;

/// The longest fill wait under load (see `Writer::gather`).
const FILL: Duration = Duration::from_millis(5);

/// One `Sink::write` call waiting for its lines to be durable.
pub(crate) struct Submission {
    /// The client the lines came from, so refused lines are kept under their own client.
    pub client: String,
    pub lines: String,
    pub points: usize,
    /// Lines the factory refuses itself (never sent to the store), with the reason: kept as
    /// dead letters by the writer, alone, not batched with others.
    pub refused: Option<String>,
    pub done: Sender<Result<(), SinkError>>,
}

/// What one attempt to write a body came to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Attempt {
    /// Durable (InfluxDB 2xx, or written and fsync'd).
    Durable,
    /// The store refused lines of this body for good (InfluxDB 400 and 422, 1.x partial writes):
    /// the same bytes would be refused again. `named` holds the lines (0-based, within the body)
    /// the store said it refused, when it said; the other lines may or may not have been
    /// written, so they are sent again (writing a point twice is harmless). Without names the
    /// writer halves the body until the refused lines are isolated.
    Refused { reason: String, named: Vec<usize> },
    /// Too large (InfluxDB 413): write it in halves.
    TooLarge,
    /// Not written; try again later. `loud` marks failures an operator must fix (credentials).
    Retry {
        error: String,
        retry_after: Option<Duration>,
        loud: bool,
    },
    /// An answer the table does not list (a 4xx it does not know): retried
    /// [`UNEXPECTED_TRIES`] times in all, then the body's lines are refused with it.
    Unexpected { error: String },
}

/// Tries of a body that gets an answer the sink does not know, before its lines are refused:
/// enough to ride out a proxy's hiccup, few enough that one such body never holds a writer.
pub(crate) const UNEXPECTED_TRIES: u32 = 3;

/// What the store finally said about one body, after the retries.
enum Answer {
    Written,
    TooLarge,
    /// `split`: halving the body can isolate the refused lines.
    Refused {
        reason: String,
        named: Vec<usize>,
        split: bool,
    },
}

/// One line of a batch and the client it came from: built only once the store refuses lines.
#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    text: &'a str,
    client: &'a str,
}

/// Refusals are logged once per reason per minute, with a count (issue 16: a store refusing
/// every batch must not bury the log).
static REFUSALS: crate::log::Repeats = crate::log::Repeats::new(60);

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
    /// Where refused lines go (shared by the writers).
    pub dead: Arc<DeadLetters>,
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
            if let Some(reason) = &first.refused {
                let result = if refusing {
                    Err(Stopped)
                } else {
                    self.keep_refused(&first, reason)
                };
                let _ = first
                    .done
                    .try_send(result.map_err(|Stopped| SinkError::ShutDown));
                continue;
            }
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
            if s.refused.is_some() || points + s.points > self.batching.batch_points {
                return (batch, Some(s));
            }
            points += s.points;
            batch.push(s);
        }
        (batch, None)
    }

    /// Appends `records` to the dead letters (fsync'd), retrying with backoff while the disk
    /// refuses; `Stopped` when shutdown interrupts the retries.
    fn append_dead(&mut self, records: &[Record]) -> Result<std::path::PathBuf, Stopped> {
        let mut failures = 0u32;
        loop {
            match self.dead.append(records) {
                Ok(path) => return Ok(path),
                Err(error) => {
                    self.metrics.sink_errors.fetch_add(1, Ordering::Relaxed);
                    if self.stop.is_stopped() {
                        log(&format!(
                            "dead letters {error}; shutting down, the batch is not acknowledged (the agents keep it)"
                        ));
                        return Err(Stopped);
                    }
                    let wait = backoff::delay(failures, None, backoff::jitter());
                    failures = failures.saturating_add(1);
                    crate::warn_repeated!(
                        REFUSALS,
                        "dead-letter write failed",
                        1,
                        "sink: cannot keep refused lines: dead letters {error}; the batch waits (not acknowledged), retrying"
                    );
                    if self.stop.sleep(wait) {
                        return Err(Stopped);
                    }
                }
            }
        }
    }

    /// Keeps a submission the factory refused itself as dead letters under its client.
    fn keep_refused(&mut self, s: &Submission, reason: &str) -> Result<(), Stopped> {
        let record = Record {
            client: s.client.clone(),
            reason: reason.to_string(),
            at: String::new(),
            lines: s.lines.clone(),
        };
        let n = record.points() as u64;
        self.append_dead(&[record])?;
        self.metrics.dead_lettered(&s.client, n);
        Ok(())
    }

    /// Makes every line of the batch durable -- written, or refused by the store and written
    /// to a dead-letter file -- or fails only when shutdown interrupts the retries.
    fn write_batch(&mut self, batch: &[Submission]) -> Result<(), Stopped> {
        let joined;
        let body: &str = match batch {
            [one] if one.lines.ends_with('\n') => &one.lines,
            _ => {
                let mut b = String::with_capacity(batch.iter().map(|s| s.lines.len() + 1).sum());
                for s in batch {
                    b.push_str(&s.lines);
                    if !s.lines.ends_with('\n') {
                        b.push('\n');
                    }
                }
                joined = b;
                &joined
            }
        };
        let points = count_lines(body);
        if points == 0 {
            return Ok(());
        }
        // The happy path sends the body as it is; lines and their clients are only indexed
        // once the store refuses some.
        let answer = self.send(body, points)?;
        if let Answer::Written = answer {
            self.written(points);
            return Ok(());
        }
        let lines: Vec<Line<'_>> = batch
            .iter()
            .flat_map(|s| {
                s.lines
                    .split('\n')
                    .filter(|l| !l.is_empty())
                    .map(|text| Line {
                        text,
                        client: &s.client,
                    })
            })
            .collect();
        let mut refused = Vec::new();
        self.settle(lines, answer, &mut refused)?;
        self.dead_letter(refused)
    }

    /// Acts on the store's answer about `lines`: counts them written, halves them (413, or
    /// refused without names), or sets the named refused lines aside and sends the rest again
    /// (iteratively: InfluxDB 2.x names one bad line per answer).
    fn settle<'a>(
        &mut self,
        mut lines: Vec<Line<'a>>,
        mut answer: Answer,
        refused: &mut Vec<(Line<'a>, String)>,
    ) -> Result<(), Stopped> {
        loop {
            match answer {
                Answer::Written => {
                    self.written(lines.len());
                    return Ok(());
                }
                Answer::Refused {
                    reason, mut named, ..
                } if named.iter().any(|i| *i < lines.len()) => {
                    named.sort_unstable();
                    named.dedup();
                    let mut rest = Vec::with_capacity(lines.len());
                    for (i, l) in lines.into_iter().enumerate() {
                        if named.binary_search(&i).is_ok() {
                            refused.push((l, reason.clone()));
                        } else {
                            rest.push(l);
                        }
                    }
                    if rest.is_empty() {
                        return Ok(());
                    }
                    lines = rest;
                    answer = self.send(&join(&lines), lines.len())?;
                }
                Answer::Refused { reason, split, .. } if lines.len() == 1 || !split => {
                    refused.extend(lines.into_iter().map(|l| (l, reason.clone())));
                    return Ok(());
                }
                Answer::TooLarge if lines.len() == 1 => {
                    refused.push((
                        lines[0],
                        format!(
                            "HTTP 413: a single line of {} bytes is larger than the store accepts",
                            lines[0].text.len() + 1
                        ),
                    ));
                    return Ok(());
                }
                Answer::TooLarge | Answer::Refused { .. } => {
                    let (a, b) = lines.split_at(lines.len() / 2);
                    return self.put_halves(a, b, refused);
                }
            }
        }
    }

    /// Sends each half as its own body and settles its answer (recursion depth: log2 of the
    /// batch's lines).
    fn put_halves<'a>(
        &mut self,
        a: &[Line<'a>],
        b: &[Line<'a>],
        refused: &mut Vec<(Line<'a>, String)>,
    ) -> Result<(), Stopped> {
        for half in [a, b] {
            let answer = self.send(&join(half), half.len())?;
            self.settle(half.to_vec(), answer, refused)?;
        }
        Ok(())
    }

    /// Writes the refused lines to the dead-letter file, grouped by client and reason, and
    /// retries until that is durable: only then may the batch be acknowledged.
    fn dead_letter(&mut self, refused: Vec<(Line<'_>, String)>) -> Result<(), Stopped> {
        if refused.is_empty() {
            return Ok(());
        }
        let mut records: Vec<Record> = Vec::new();
        for (line, reason) in refused {
            match records
                .iter_mut()
                .find(|r| r.client == line.client && r.reason == reason)
            {
                Some(r) => {
                    r.lines.push_str(line.text);
                    r.lines.push('\n');
                }
                None => records.push(Record {
                    client: line.client.to_string(),
                    reason,
                    at: String::new(),
                    lines: format!("{}\n", line.text),
                }),
            }
        }
        let path = self.append_dead(&records)?;
        let store = self.backend.describe();
        let mut by_reason: Vec<(String, &str, u64, Vec<&str>)> = Vec::new();
        for r in &records {
            let n = r.points() as u64;
            self.metrics.dead_lettered(&r.client, n);
            let key = crate::log::reason_key(&r.reason);
            match by_reason.iter_mut().find(|(k, ..)| *k == key) {
                Some((_, _, count, clients)) => {
                    *count += n;
                    if !clients.contains(&r.client.as_str()) {
                        clients.push(&r.client);
                    }
                }
                None => by_reason.push((key, &r.reason, n, vec![&r.client])),
            }
        }
        for (key, reason, n, clients) in by_reason {
            crate::warn_repeated!(
                REFUSALS,
                &key,
                n,
                "sink: {store} refused {n} line(s) of client(s) {}: {}; kept in {} (`autofactory replay` once fixed)",
                clients.join(", "),
                one_line(reason),
                path.display()
            );
        }
        Ok(())
    }

    fn written(&self, points: usize) {
        self.metrics
            .points_written
            .fetch_add(points as u64, Ordering::Relaxed);
    }

    /// Sends `body` until the store gives an answer other than "try again" (retrying with
    /// backoff meanwhile), or shutdown interrupts.
    fn send(&mut self, body: &str, points: usize) -> Result<Answer, Stopped> {
        let mut unexpected = 0;
        loop {
            let (error, retry_after, loud) = match self.backend.attempt(body, points) {
                Attempt::Durable => {
                    self.recovered();
                    return Ok(Answer::Written);
                }
                Attempt::TooLarge => {
                    self.recovered();
                    return Ok(Answer::TooLarge);
                }
                Attempt::Refused { reason, named } => {
                    self.recovered();
                    return Ok(Answer::Refused {
                        reason,
                        named,
                        split: true,
                    });
                }
                Attempt::Unexpected { error } => {
                    unexpected += 1;
                    if unexpected >= UNEXPECTED_TRIES {
                        self.recovered();
                        return Ok(Answer::Refused {
                            reason: format!(
                                "{error} (an answer the sink does not know; refused after {unexpected} tries)"
                            ),
                            named: Vec::new(),
                            split: false,
                        });
                    }
                    (error, None, true)
                }
                Attempt::Retry {
                    error,
                    retry_after,
                    loud,
                } => (error, retry_after, loud),
            };
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

/// The start of a reason for a log line: its first line, at most 300 bytes (1.x lists every
/// unparsable line; the dead-letter file keeps the whole reason).
pub(crate) fn one_line(reason: &str) -> String {
    let first = reason.lines().next().unwrap_or("");
    let mut end = first.len().min(300);
    while !first.is_char_boundary(end) {
        end -= 1;
    }
    if end < reason.len() {
        format!("{}…", &first[..end])
    } else {
        first.to_string()
    }
}

/// `lines` as one body, each line ending in `\n`.
fn join(lines: &[Line<'_>]) -> String {
    let mut body = String::with_capacity(lines.iter().map(|l| l.text.len() + 1).sum());
    for l in lines {
        body.push_str(l.text);
        body.push('\n');
    }
    body
}
