//! The file sink: line protocol appended to `<dir>/YYYY-MM-DD.lp` (UTC), fsync'd before the
//! batch counts as durable. The files are plain line protocol with nanosecond timestamps, ready
//! for `influx -import` (after a `# DML` / `# CONTEXT-DATABASE:` header) or `curl --data-binary`.
//!
//! The day files (facts and dead letters alike) leave a reserve free on the filesystem they
//! share with the data dir -- 5 % of it, at most 64 MiB -- so a filling sink stops (its data
//! waiting on the agents) before the inventory beside it runs out of space and blocks enrollment.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::writer::{Attempt, Backend};

/// Appends to one file per UTC day.
pub(crate) struct FileBackend {
    files: DayFiles,
}

impl FileBackend {
    /// Files in `dir`, keeping the reserve on `data_dir`'s filesystem.
    pub(crate) fn new(dir: PathBuf, data_dir: PathBuf) -> FileBackend {
        FileBackend {
            files: DayFiles::new(dir, Some(data_dir)),
        }
    }
}

/// The most the day files leave free for the rest of the data dir.
pub(crate) const RESERVE_CAP: u64 = 64 << 20;

/// The free space the day files leave on a filesystem of `total` bytes.
pub(crate) fn reserve(total: u64) -> u64 {
    (total / 20).min(RESERVE_CAP)
}

/// Whether `len` more bytes fit with `avail` bytes free (for unprivileged users) on a
/// filesystem of `total` bytes, the reserve left untouched; Err says how much is left.
pub(crate) fn check_room(avail: u64, total: u64, len: u64) -> Result<(), String> {
    let keep = reserve(total);
    if avail >= keep.saturating_add(len) {
        Ok(())
    } else {
        Err(format!(
            "{avail} bytes free, {len} to write: keeping {keep} bytes free for the inventory beside it (the data waits on the agents)"
        ))
    }
}

/// `<dir>/YYYY-MM-DD.lp` (UTC), appended to and fsync'd: the file sink's facts and the dead
/// letters share it.
pub(crate) struct DayFiles {
    dir: PathBuf,
    /// The open file and the day it is for.
    open: Option<(String, File)>,
    /// The data dir whose filesystem keeps its reserve (when `dir` is on the same one).
    guard: Option<PathBuf>,
    /// Added to the day in file names: another process appending to the same directory
    /// (`autofactory replay`) uses its own files, so neither cuts back what the other wrote.
    tag: String,
}

impl DayFiles {
    pub(crate) fn new(dir: PathBuf, guard: Option<PathBuf>) -> DayFiles {
        DayFiles {
            dir,
            open: None,
            guard,
            tag: String::new(),
        }
    }

    /// Files named `<day><tag>.lp`.
    pub(crate) fn tagged(mut self, tag: &str) -> DayFiles {
        self.tag = tag.to_string();
        self
    }

    /// Err when `len` bytes would eat into the reserve of the guarded filesystem. A directory
    /// on another filesystem (a `sink.dir` of its own) has no reserve: it shares nothing.
    fn room_for(&self, len: u64) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let Some(guard) = &self.guard else {
            return Ok(());
        };
        let (Ok(here), Ok(there)) = (std::fs::metadata(&self.dir), std::fs::metadata(guard)) else {
            return Ok(());
        };
        if here.dev() != there.dev() {
            return Ok(());
        }
        let st = nix::sys::statvfs::statvfs(&self.dir).map_err(std::io::Error::from)?;
        let frsize = st.fragment_size() as u64;
        let total = (st.blocks() as u64).saturating_mul(frsize);
        let avail = (st.blocks_available() as u64).saturating_mul(frsize);
        check_room(avail, total, len).map_err(std::io::Error::other)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file for today (UTC), opened (and its directory entry made durable) when the day changes.
    fn file(&mut self, day: &str) -> std::io::Result<&mut File> {
        if self.open.as_ref().map(|(d, _)| d != day).unwrap_or(true) {
            self.open = None;
            std::fs::create_dir_all(&self.dir)?;
            let path = file_path(&self.dir, &format!("{day}{}", self.tag));
            let created = !path.exists();
            let f = OpenOptions::new().create(true).append(true).open(&path)?;
            if created {
                // A new file's name lives in the directory: without this a crash could lose the
                // whole file even though its data was fsync'd.
                File::open(&self.dir)?.sync_all()?;
            }
            self.open = Some((day.to_string(), f));
        }
        match self.open.as_mut() {
            Some((_, f)) => Ok(f),
            None => Err(std::io::Error::other("file sink: no open file")),
        }
    }

    /// Appends `body` to today's file and syncs it; on failure cuts the file back so a retry does
    /// not leave half a line. Ok carries the file's path; Err names it.
    pub(crate) fn append(&mut self, body: &str) -> Result<PathBuf, String> {
        let day = utc_day(SystemTime::now());
        let path = file_path(&self.dir, &format!("{day}{}", self.tag));
        let result = (|| {
            self.file(&day)?;
            self.room_for(body.len() as u64)?;
            let f = self.file(&day)?;
            let before = f.metadata()?.len();
            let result = f.write_all(body.as_bytes()).and_then(|_| f.sync_data());
            if result.is_err() {
                let _ = f.set_len(before);
                self.open = None;
            }
            result
        })();
        match result {
            Ok(()) => Ok(path),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

impl Backend for FileBackend {
    fn attempt(&mut self, body: &str, _points: usize) -> Attempt {
        match self.files.append(body) {
            Ok(_) => Attempt::Durable,
            Err(error) => Attempt::Retry {
                error,
                retry_after: None,
                loud: false,
            },
        }
    }

    fn describe(&self) -> String {
        format!("file sink {}", self.files.dir().display())
    }
}

/// `<dir>/<day>.lp`.
pub(crate) fn file_path(dir: &Path, day: &str) -> PathBuf {
    dir.join(format!("{day}.lp"))
}

/// The UTC calendar day of `t` as `YYYY-MM-DD` (times before 1970 count as 1970-01-01).
pub(crate) fn utc_day(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian: Howard Hinnant's
/// `civil_from_days` (public domain), exact for every day we can meet.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}
