//! Issue 13 at the buffer's level: collected snapshots survive a kill before they are in a batch;
//! a full or read-only disk and a cut start counter never move a buffer aside.
//!
//! The disk cases mount a small tmpfs (root, as in CI); the mount is undone by a drop guard.

use autofact::buffer::{Buffer, DiskFault};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn temp_root(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "autofact-bufferfault-{name}-{}-{nanos}",
        std::process::id()
    ));
    fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A tmpfs mounted for one test; unmounted (lazily if busy) on drop, then its dir removed.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Mount {
        fs::create_dir_all(at).expect("mount point");
        run(
            &[
                "mount",
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
            ],
            at,
        );
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str], path: &Path) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .arg(path)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "{args:?} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn pending_snapshots_survive_a_reopen_and_are_sealed_once() -> TestResult {
    let root = temp_root("pending");
    let dir = root.join("buffer");
    {
        let b = Buffer::open(&dir, 1 << 20)?;
        for i in 0..3u8 {
            b.add_pending(&[i; 10])?;
        }
        // Dropped without a seal, as a kill between two pushes leaves it.
    }
    let b = Buffer::open(&dir, 1 << 20)?;
    let pending = b.pending()?;
    assert_eq!(pending.len(), 3);
    let upto = pending.last().map(|(k, _)| *k);
    let seqs = b.seal(upto, |first| vec![first.to_be_bytes().to_vec()])?;
    assert_eq!(seqs.len(), 1);
    assert!(b.pending()?.is_empty());
    let window = b.window(0, 10)?;
    assert_eq!(window.len(), 1);
    assert_eq!(window[0].1, seqs[0].to_be_bytes());
    // New pending keys continue after the sealed ones.
    let k = b.add_pending(b"x")?;
    assert!(upto.is_some_and(|u| k > u));
    drop(b);
    let _ = fs::remove_dir_all(&root);
    Ok(())
}

#[test]
fn a_cut_start_counter_is_not_a_crashed_start() -> TestResult {
    let root = temp_root("opening");
    let dir = root.join("buffer");
    {
        let b = Buffer::open(&dir, 1 << 20)?;
        b.append(|_| b"kept".to_vec())?;
        b.flush()?;
    }
    // What a full disk left of the counter under the first release: an empty file.
    fs::write(dir.join("OPENING"), "")?;
    let b = Buffer::open(&dir, 1 << 20)?;
    assert_eq!(b.stats().batches, 1, "the buffer was kept");
    assert!(
        !names(&root).iter().any(|n| n.contains("corrupt")),
        "{:?}",
        names(&root)
    );
    drop(b);
    let _ = fs::remove_dir_all(&root);
    Ok(())
}

#[test]
fn full_and_read_only_disks_never_move_a_buffer_aside() -> TestResult {
    let root = temp_root("disk");
    let mount = Mount::tmpfs(&root.join("mnt"), "4m");
    let dir = mount.0.join("buffer");
    {
        let b = Buffer::open(&dir, 1 << 20)?;
        b.append(|_| vec![7; 1000])?;
        b.flush()?;
    }
    // Full: fill every byte, then reopen (twice: a restart loop on the full disk).
    let filler = mount.0.join("filler");
    {
        use std::io::Write;
        let mut f = fs::File::create(&filler)?;
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
    }
    for _ in 0..3 {
        match Buffer::open(&dir, 1 << 20) {
            Ok(b) => assert_eq!(b.stats().batches, 1),
            Err(e) => assert_eq!(e.fault(), DiskFault::Full, "{e}"),
        }
    }
    assert!(!names(&mount.0).iter().any(|n| n.contains("corrupt")));
    fs::remove_file(&filler)?;
    // Read-only (no file open: the remount is allowed).
    run(&["mount", "-o", "remount,ro"], &mount.0);
    for _ in 0..3 {
        let e = Buffer::open(&dir, 1 << 20).err();
        assert_eq!(e.map(|e| e.fault()), Some(DiskFault::ReadOnly));
    }
    run(&["mount", "-o", "remount,rw"], &mount.0);
    assert!(!names(&mount.0).iter().any(|n| n.contains("corrupt")));
    let b = Buffer::open(&dir, 1 << 20)?;
    assert_eq!(b.stats().batches, 1, "the data is still there");
    drop(b);
    drop(mount);
    let _ = fs::remove_dir_all(&root);
    Ok(())
}
