//! `autofactory replay FILE`: a dead-letter file written through the configured sink again,
//! once the operator has fixed what made the store refuse it. Each record keeps its client, so
//! lines the store still refuses are dead-lettered again under their own client, with the new
//! reason, in `<data_dir>/dead-letters/<day>-replay.lp` (the factory may be running and
//! appending to `<day>.lp` meanwhile). The replayed file is first renamed `FILE.replaying` (so a
//! replay of `<day>-replay.lp` does not read its own refusals), then `FILE.replayed` once every
//! line is written or dead-lettered again; it is kept, not deleted, for the operator to remove.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::dead_letter::{self, ParseError};
use super::{Sink, SinkConfig, SinkError};
use crate::metrics::Metrics;

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Lines in the file.
    pub lines: usize,
    /// Lines the store took.
    pub written: u64,
    /// Lines it refused again, now in `dead_dir`.
    pub refused: u64,
    /// Where the replayed file is now.
    pub kept: PathBuf,
    /// The dead-letter directory.
    pub dead_dir: PathBuf,
}

/// Why a replay failed; each names the file.
#[derive(Debug)]
pub enum ReplayError {
    /// The file could not be read.
    Read(PathBuf, std::io::Error),
    /// The file is not a dead-letter file.
    Format(PathBuf, ParseError),
    /// Renaming it aside failed.
    Rename(PathBuf, PathBuf, std::io::Error),
    /// The sink could not start (a bad `sink` section), or stopped.
    Sink(SinkError),
    /// The store did not take every line within the time allowed (it is down, or refuses our
    /// credentials: the sink's log lines say which). The file stays as `.replaying`.
    TimedOut(PathBuf, Duration),
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Read(p, e) => write!(f, "read {}: {e}", p.display()),
            ReplayError::Format(p, e) => write!(f, "{}: {e}", p.display()),
            ReplayError::Rename(a, b, e) => {
                write!(f, "rename {} to {}: {e}", a.display(), b.display())
            }
            ReplayError::Sink(e) => write!(f, "sink: {e}"),
            ReplayError::TimedOut(p, t) => write!(
                f,
                "the store did not take every line within {} s (see the sink's lines above); \
                 {} is kept: replay it again once the store answers (lines written twice are harmless)",
                t.as_secs(),
                p.display()
            ),
        }
    }
}

impl std::error::Error for ReplayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReplayError::Read(_, e) | ReplayError::Rename(_, _, e) => Some(e),
            ReplayError::Sink(e) => Some(e),
            ReplayError::Format(..) | ReplayError::TimedOut(..) => None,
        }
    }
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Replays `file` into the sink `cfg` describes (refusals go under `data_dir`), giving up after
/// `timeout` if the store does not take the lines.
pub fn replay(
    cfg: &SinkConfig,
    data_dir: &Path,
    file: &Path,
    timeout: Duration,
) -> Result<Summary, ReplayError> {
    let text = std::fs::read_to_string(file).map_err(|e| ReplayError::Read(file.into(), e))?;
    let records = dead_letter::parse(&text).map_err(|e| ReplayError::Format(file.into(), e))?;
    let metrics = Arc::new(Metrics::default());
    // Refusals go to `<day>-replay.lp`: a running factory appends to `<day>.lp` meanwhile.
    let sink =
        Sink::start_tagged(cfg, data_dir, metrics.clone(), "-replay").map_err(ReplayError::Sink)?;
    let name = file.to_string_lossy();
    let base = name.strip_suffix(".replaying").map(PathBuf::from);
    let aside = match &base {
        // Replaying a file left over by an interrupted replay: it is aside already.
        Some(_) => file.to_path_buf(),
        None => {
            let aside = with_suffix(file, ".replaying");
            if let Err(e) = std::fs::rename(file, &aside) {
                sink.shutdown();
                return Err(ReplayError::Rename(file.into(), aside, e));
            }
            aside
        }
    };
    let lines = records.iter().map(|r| r.points()).sum();
    let outcome = smol::block_on(smol::future::or(
        async {
            // All at once: the writer merges them into few bodies, as it does for agents.
            let tasks: Vec<_> = records
                .into_iter()
                .map(|r| {
                    let sink = sink.clone();
                    smol::spawn(async move {
                        let points = r.points();
                        sink.write(&r.client, r.lines, points).await
                    })
                })
                .collect();
            for t in tasks {
                if let Err(e) = t.await {
                    return Some(Err(e));
                }
            }
            Some(Ok(()))
        },
        async {
            smol::Timer::after(timeout).await;
            None
        },
    ));
    sink.shutdown();
    match outcome {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(ReplayError::Sink(e)),
        None => return Err(ReplayError::TimedOut(aside, timeout)),
    }
    let mut done = with_suffix(&base.unwrap_or_else(|| file.to_path_buf()), ".replayed");
    // A file of the same name replayed before keeps its own record.
    let first = done.clone();
    let mut n = 1;
    while done.exists() {
        done = with_suffix(&first, &format!(".{n}"));
        n += 1;
    }
    std::fs::rename(&aside, &done)
        .map_err(|e| ReplayError::Rename(aside.clone(), done.clone(), e))?;
    Ok(Summary {
        lines,
        written: metrics.points_written.load(Ordering::Relaxed),
        refused: metrics.points_dead_lettered.load(Ordering::Relaxed),
        kept: done,
        dead_dir: dead_letter::dir_under(data_dir),
    })
}
