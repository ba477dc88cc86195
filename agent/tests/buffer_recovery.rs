//! Cap and drop-oldest, and what happens to a buffer that cannot be opened: it is moved aside, a fresh
//! one starts, nothing panics, and a second open does not move anything again.

use std::fs;
use std::path::{Path, PathBuf};

use autofact::buffer::{Buffer, BufferError};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn temp_root(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "autofact-buffer-{name}-{}-{nanos}",
        std::process::id()
    ));
    fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn value(seq: u64, len: usize) -> Vec<u8> {
    let tag = seq.to_le_bytes();
    (0..len).map(|i| tag[i % 8] ^ (i as u8)).collect()
}

fn seqs(buf: &Buffer) -> Result<Vec<u64>, BufferError> {
    Ok(buf
        .window(0, usize::MAX)?
        .into_iter()
        .map(|(s, _)| s)
        .collect())
}

#[test]
fn cap_drops_oldest_and_keeps_newest() -> TestResult {
    let root = temp_root("cap");
    let dir = root.join("buffer");
    let buf = Buffer::open(&dir, 10_000)?;
    let first = buf.append(|s| value(s, 1000))?;
    for _ in 1..25 {
        buf.append(|s| value(s, 1000))?;
    }
    // 25 batches of 1000 bytes under a 10 000-byte cap: the 10 newest stay.
    let s = buf.stats();
    assert_eq!((s.batches, s.bytes, s.dropped), (10, 10_000, 15));
    assert_eq!(seqs(&buf)?, (first + 15..first + 25).collect::<Vec<_>>());

    // A 5000-byte batch pushes out exactly the 5 oldest.
    let big = buf.append(|s| value(s, 5000))?;
    let s = buf.stats();
    assert_eq!((s.batches, s.bytes, s.dropped), (6, 10_000, 20));
    assert_eq!(seqs(&buf)?.first(), Some(&(first + 20)));

    // A batch larger than the whole cap is kept, alone.
    let huge = buf.append(|s| value(s, 20_000))?;
    let s = buf.stats();
    assert_eq!((s.batches, s.bytes, s.dropped), (1, 20_000, 26));
    assert_eq!(seqs(&buf)?, vec![huge]);
    assert!(huge == big + 1);

    // Lowering the cap applies at the next append.
    buf.set_cap(1_000_000);
    for _ in 0..10 {
        buf.append(|s| value(s, 1000))?;
    }
    buf.set_cap(3_000);
    assert_eq!(buf.stats().batches, 11);
    let last = buf.append(|s| value(s, 1000))?;
    let s = buf.stats();
    assert_eq!((s.batches, s.bytes, s.dropped), (3, 3_000, 35));
    assert_eq!(seqs(&buf)?, vec![last - 2, last - 1, last]);
    // The values are the ones stored under those seqs.
    for (seq, v) in buf.window(0, 10)? {
        assert_eq!(v, value(seq, 1000));
    }

    // Counters are rebuilt from disk on reopen; `dropped` counts since open.
    drop(buf);
    let buf = Buffer::open(&dir, 3_000)?;
    let s = buf.stats();
    assert_eq!(
        (s.batches, s.bytes, s.dropped, s.next_seq),
        (3, 3_000, 0, last + 1)
    );
    drop(buf);
    fs::remove_dir_all(&root).ok();
    Ok(())
}

/// A closed buffer with ~750 KB in it: enough for fjall to have flushed memtables to table files.
fn filled(root: &Path) -> Result<PathBuf, BufferError> {
    let dir = root.join("buffer");
    let buf = Buffer::open(&dir, u64::MAX)?;
    for _ in 0..500 {
        buf.append(|s| value(s, 1500))?;
    }
    buf.flush()?;
    drop(buf);
    Ok(dir)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files_under(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn db_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    files_under(&dir.join("db"), &mut out)?;
    // The lock file is empty by design; nothing to damage there.
    out.retain(|p| p.file_name().is_some_and(|n| n != "lock"));
    out.sort();
    Ok(out)
}

/// Names in `root` starting with `buffer.corrupt-`.
fn aside_dirs(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root)? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("buffer.corrupt-"))
        {
            out.push(path);
        }
    }
    Ok(out)
}

/// Damages a filled buffer with `damage`, then checks: open gives a fresh empty buffer, the old
/// directory sits next to it as `buffer.corrupt-*` with its files, a second open moves nothing, and
/// the fresh buffer works and keeps its data.
fn check_moved_aside(name: &str, damage: impl FnOnce(&Path) -> std::io::Result<()>) -> TestResult {
    let root = temp_root(name);
    let dir = filled(&root)?;
    damage(&dir)?;

    let buf = Buffer::open(&dir, u64::MAX)?;
    assert_eq!(buf.stats().batches, 0, "{name}: not a fresh buffer");
    let aside = aside_dirs(&root)?;
    assert_eq!(
        aside.len(),
        1,
        "{name}: expected one moved-aside dir, got {aside:?}"
    );
    assert!(aside[0].join("FORMAT").exists() || name == "format-missing");
    let seq = buf.append(|s| value(s, 100))?;
    drop(buf);

    // No crash loop: the fresh buffer opens cleanly and nothing more is moved.
    let buf = Buffer::open(&dir, u64::MAX)?;
    assert_eq!(aside_dirs(&root)?.len(), 1, "{name}: moved aside twice");
    assert_eq!(
        seqs(&buf)?,
        vec![seq],
        "{name}: fresh buffer lost its batch"
    );
    drop(buf);
    fs::remove_dir_all(&root).ok();
    Ok(())
}

#[test]
fn garbled_format_marker_is_moved_aside() -> TestResult {
    check_moved_aside("format-garbled", |dir| {
        fs::write(dir.join("FORMAT"), b"\x00\xffnot a marker")
    })
}

#[test]
fn newer_format_version_is_moved_aside() -> TestResult {
    check_moved_aside("format-newer", |dir| {
        fs::write(dir.join("FORMAT"), b"autofact-buffer 2\n")
    })
}

#[test]
fn missing_format_marker_is_moved_aside() -> TestResult {
    check_moved_aside("format-missing", |dir| fs::remove_file(dir.join("FORMAT")))
}

#[test]
fn opens_that_keep_dying_are_moved_aside() -> TestResult {
    // What two earlier starts that aborted (panic=abort) inside fjall's recovery leave behind.
    check_moved_aside("opening", |dir| fs::write(dir.join("OPENING"), b"2\n"))
}

#[test]
fn truncated_db_files_are_moved_aside() -> TestResult {
    check_moved_aside("truncated", |dir| {
        for f in db_files(dir)? {
            let len = fs::metadata(&f)?.len();
            fs::OpenOptions::new()
                .write(true)
                .open(&f)?
                .set_len(len / 2)?;
        }
        Ok(())
    })
}

#[test]
fn garbled_db_files_are_moved_aside() -> TestResult {
    check_moved_aside("garbled", |dir| {
        let mut x = 0x1234_5678_9abc_def1u64;
        for f in db_files(dir)? {
            let len = fs::metadata(&f)?.len().min(1 << 20) as usize;
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            fs::write(&f, junk)?;
        }
        Ok(())
    })
}

/// Flips bits all over the files `pick` selects (up to their first MiB).
fn flip_bits(dir: &Path, pick: impl Fn(&Path) -> bool) -> std::io::Result<()> {
    let mut hit = 0;
    for f in db_files(dir)?.into_iter().filter(|p| pick(p)) {
        let mut data = fs::read(&f)?;
        let end = data.len().min(1 << 20);
        for i in (0..end).step_by(97) {
            data[i] ^= 0x5a;
        }
        fs::write(&f, data)?;
        hit += 1;
    }
    // The damage must land somewhere, or the test proves nothing.
    assert!(hit > 0, "no file matched");
    Ok(())
}

fn is_table(p: &Path) -> bool {
    p.parent()
        .and_then(|d| d.file_name())
        .is_some_and(|n| n == "tables")
}

#[test]
fn garbled_table_files_are_moved_aside() -> TestResult {
    check_moved_aside("tables-garbled", |dir| flip_bits(dir, is_table))
}

#[test]
fn truncated_table_files_are_moved_aside() -> TestResult {
    check_moved_aside("tables-truncated", |dir| {
        let tables: Vec<PathBuf> = db_files(dir)?.into_iter().filter(|p| is_table(p)).collect();
        assert!(!tables.is_empty(), "fjall flushed no table");
        for f in tables {
            let len = fs::metadata(&f)?.len();
            fs::OpenOptions::new()
                .write(true)
                .open(&f)?
                .set_len(len / 2)?;
        }
        Ok(())
    })
}

/// fjall treats a damaged journal like a torn write: it keeps the batches before the damage. The
/// buffer must then open in place (nothing moved aside), hold a gap-free run of intact batches, and
/// count exactly what it holds.
#[test]
fn damaged_journal_keeps_a_consistent_prefix() -> TestResult {
    let root = temp_root("journal");
    let dir = filled(&root)?;
    flip_bits(&dir, |p| p.extension().is_some_and(|e| e == "jnl"))?;

    let buf = Buffer::open(&dir, u64::MAX)?;
    assert!(aside_dirs(&root)?.is_empty());
    let stored = buf.window(0, usize::MAX)?;
    assert!(
        stored.len() < 500,
        "the damage lost nothing: test did not damage the journal"
    );
    for pair in stored.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "gap in recovered seqs");
    }
    for (seq, v) in &stored {
        assert_eq!(*v, value(*seq, 1500), "batch {seq} damaged");
    }
    let s = buf.stats();
    assert_eq!(s.batches, stored.len() as u64);
    assert_eq!(s.bytes, 1500 * stored.len() as u64);
    if let Some((last, _)) = stored.last() {
        assert!(s.next_seq > *last);
    }
    drop(buf);
    fs::remove_dir_all(&root).ok();
    Ok(())
}

#[test]
fn a_locked_buffer_is_an_error_and_is_not_moved() -> TestResult {
    let root = temp_root("locked");
    let dir = root.join("buffer");
    let first = Buffer::open(&dir, u64::MAX)?;
    let seq = first.append(|s| value(s, 10))?;
    match Buffer::open(&dir, u64::MAX) {
        Err(BufferError::Locked { .. }) => {}
        other => panic!("second open of a live buffer: {other:?}"),
    }
    assert!(aside_dirs(&root)?.is_empty());
    drop(first);
    // The failed open left no stale OPENING count behind that would count against the next start.
    let buf = Buffer::open(&dir, u64::MAX)?;
    assert_eq!(seqs(&buf)?, vec![seq]);
    drop(buf);
    fs::remove_dir_all(&root).ok();
    Ok(())
}
