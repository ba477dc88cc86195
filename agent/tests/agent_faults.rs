//! Issue 13 (and the agent side of issue 15): nothing lost through a `kill -9` between pushes, a
//! slow disk, a full or read-only disk, damaged state files, an upgrade, or a batch the factory
//! refuses; clones get their own identity. With a user's settings: collect every 1 s, push every
//! 10 s (the slow-disk case pushes every 2 s to keep it short; the fault there is the flush).
//!
//! The full and read-only disk cases mount a small tmpfs (they need root, as CI has); each mount
//! is undone by a drop guard, also when the test fails.

mod common;

use autofact::run::Exit;
use autofact_fbs::{BufferState, Config};
use common::{config, settings, wait_for, Agent, Factory, Refuse, Script, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const S: i64 = 1_000_000_000;

/// Collect every second, push every 10 s: what users run.
fn user_config() -> Config {
    config(1000, 10_000)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Every whole second from the first to the last time must be there, except inside `allowed`
/// (inclusive ranges). Names the first missing instant.
fn assert_complete(times: &[i64], allowed: &[(i64, i64)]) {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let (Some(&first), Some(&last)) = (sorted.first(), sorted.last()) else {
        panic!("no snapshots at all");
    };
    let mut missing = Vec::new();
    let mut t = first;
    while t <= last {
        if sorted.binary_search(&t).is_err() && !allowed.iter().any(|&(a, b)| a <= t && t <= b) {
            missing.push(t);
        }
        t += S;
    }
    assert!(
        missing.is_empty(),
        "{} of {} instants missing between {first} and {last}, first missing {:?} (allowed {allowed:?})",
        missing.len(),
        (last - first) / S + 1,
        missing.first()
    );
}

/// The snapshot times received so far.
fn times(f: &Factory) -> Vec<i64> {
    f.record().snapshot_times()
}

/// Waits until the factory holds a snapshot at or after `t_ns`.
fn wait_until_time(f: &Factory, what: &str, t_ns: i64, limit: Duration) {
    wait_for(what, limit, || times(f).iter().any(|&t| t >= t_ns));
}

fn factory(config: Config, refuse: Refuse) -> Factory {
    Factory::start(Script {
        token: "tok".into(),
        config,
        refuse,
    })
    .unwrap_or_else(|e| panic!("fake factory: {e}"))
}

// ---------------------------------------------------------------------------------------------
// kill -9 between pushes (the real binary)

/// Kills and reaps the child if the test fails half-way.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_agent(config_file: &Path) -> Child {
    spawn_agent_with_clock(config_file, 0)
}

fn spawn_agent_with_clock(config_file: &Path, offset_ns: i64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_autofact"))
        .env("AUTOFACT_TEST_CLOCK_OFFSET_NS", offset_ns.to_string())
        .args(["run", "--config"])
        .arg(config_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn autofact: {e}"))
}

fn write_agent_config(dir: &Path, server: std::net::SocketAddr, data: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let file = dir.join("agent.json");
    let text = format!(
        r#"{{"server": "ws://{server}/", "data_dir": "{}", "token": "tok", "region": "", "zone": "", "hostname": "kill9"}}"#,
        data.display()
    );
    std::fs::write(&file, text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    file
}

#[test]
fn kill_9_between_pushes_loses_only_the_time_down() {
    let f = factory(user_config(), Refuse::Nothing);
    let dir = TempDir::new("kill9");
    let file = write_agent_config(&dir.0, f.addr, &dir.0.join("data"));

    let mut agent = Guard(Some(spawn_agent(&file)));
    wait_for("the first push", Duration::from_secs(30), || {
        !f.record().batches.is_empty()
    });
    // Halfway between two pushes: 5 s of snapshots collected and not yet sent.
    std::thread::sleep(Duration::from_millis(5_500));
    let killed_at = now_ns();
    if let Some(c) = agent.0.as_mut() {
        let _ = c.kill(); // SIGKILL
        let _ = c.wait();
    }
    let restarted_at = now_ns();
    let _again = Guard(Some(spawn_agent(&file)));
    wait_until_time(
        &f,
        "snapshots of the second run",
        restarted_at + 6 * S,
        Duration::from_secs(40),
    );
    // The only instants allowed to be missing are those while no agent ran: from a period before
    // the kill (an instant due right at it) to 3 s after the restart (the new process starting
    // on a loaded machine). The old code lost the 5 s before the kill as well.
    assert_complete(&times(&f), &[(killed_at - S, restarted_at + 3 * S)]);
}

// ---------------------------------------------------------------------------------------------
// a slow disk

#[test]
fn a_slow_disk_never_delays_collection() {
    let f = factory(config(1000, 2_000), Refuse::Nothing);
    let dir = TempDir::new("slowdisk");
    let (mut s, lines) = settings(f.addr, &dir.0, "tok");
    s.timing.flush_every = Duration::from_secs(1);
    // Every fsync takes 1.5 s: a cheap SD card under load, only worse.
    s.timing.slow_disk = Duration::from_millis(1_500);
    let agent = Agent::start(s, lines);
    let start = now_ns();
    wait_until_time(
        &f,
        "12 s of snapshots",
        start + 12 * S,
        Duration::from_secs(60),
    );
    assert_eq!(agent.stop(), Ok(Exit::Stopped));
    assert_complete(&times(&f), &[]);
}

// ---------------------------------------------------------------------------------------------
// full and read-only disks: a small tmpfs

/// A tmpfs mounted for one test; unmounted (lazily if busy) on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap_or_else(|e| panic!("{}: {e}", at.display()));
        sh(
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

    fn remount(&self, opt: &str) {
        sh(&["mount", "-o", &format!("remount,{opt}")], &self.0);
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
    }
}

fn sh(args: &[&str], path: &Path) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.write_all(&[0u8; 512]);
}

/// The buffer states reported in health facts so far.
fn health_states(f: &Factory) -> Vec<BufferState> {
    f.record()
        .unique_batches()
        .iter()
        .flat_map(|b| b.snapshots.iter().filter_map(|s| s.health.clone()))
        .map(|h| h.buffer_state)
        .collect()
}

/// Runs an agent on a small tmpfs: `break_disk` before (`at_start`) or after its first push,
/// `repair` while it runs; checks that nothing was lost, that the fault was reported, and that
/// the buffer was never moved aside.
fn disk_fault(
    name: &str,
    at_start: bool,
    break_disk: impl FnOnce(&Mount),
    repair: impl FnOnce(&Mount),
) {
    let f = factory(user_config(), Refuse::Nothing);
    let dir = TempDir::new(name);
    let mount = Mount::tmpfs(&dir.0.join("mnt"), "8m");
    let data = mount.0.join("data");
    let mut break_disk = Some(break_disk);
    let mut break_now = |m: &Mount| {
        if let Some(b) = break_disk.take() {
            b(m);
        }
    };
    if at_start {
        // A first life writes every state file, then the disk breaks while the agent is down.
        let (s, lines) = settings(f.addr, &data, "tok");
        let agent = Agent::start(s, lines);
        wait_for("the first push", Duration::from_secs(30), || {
            !f.record().batches.is_empty()
        });
        assert_eq!(agent.stop(), Ok(Exit::Stopped));
        break_now(&mount);
    }
    let (s, lines) = settings(f.addr, &data, "tok");
    let agent = Agent::start(s, lines);
    if !at_start {
        wait_for("the first push", Duration::from_secs(30), || {
            !f.record().batches.is_empty()
        });
        break_now(&mount);
    }
    let broken_at = now_ns();
    // It keeps collecting and sending while the disk refuses writes.
    wait_until_time(
        &f,
        "snapshots sent while the disk refuses writes",
        broken_at + 5 * S,
        Duration::from_secs(40),
    );
    assert!(
        !agent.finished(),
        "the agent ended: {:?}",
        agent.drain_lines()
    );
    repair(&mount);
    let repaired_at = now_ns();
    wait_until_time(
        &f,
        "snapshots after the disk came back",
        repaired_at + 12 * S,
        Duration::from_secs(60),
    );
    let lines = agent.drain_lines();
    assert_eq!(agent.stop(), Ok(Exit::Stopped), "{lines:?}");
    // A restart between two lives leaves a hole of its own; within each life, none.
    let stopped_first = if at_start { broken_at } else { 0 };
    let all = times(&f);
    let second: Vec<i64> = all
        .iter()
        .copied()
        .filter(|&t| t >= stopped_first)
        .collect();
    assert_complete(&second, &[]);
    let states = health_states(&f);
    assert!(
        states.iter().any(|s| *s != BufferState::Disk),
        "no health fact reported the fault: {states:?}"
    );
    assert_eq!(states.last(), Some(&BufferState::Disk), "{states:?}");
    // Never moved aside.
    let aside: Vec<_> = std::fs::read_dir(&data)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !aside
            .iter()
            .any(|n| n.to_string_lossy().contains("corrupt")),
        "{aside:?}"
    );
}

#[test]
fn a_disk_that_fills_and_empties_loses_nothing() {
    let filler = std::cell::RefCell::new(PathBuf::new());
    disk_fault(
        "diskfull",
        false,
        |m| {
            let p = m.0.join("filler");
            fill(&p);
            *filler.borrow_mut() = p;
        },
        |_| {
            let _ = std::fs::remove_file(&*filler.borrow());
        },
    );
}

/// A worn SD card is usually found read-only at boot: the agent starts on a read-only disk
/// (a remount with open files is refused, so the disk turns read-only while it is down) and the
/// disk is made writable again while it runs.
#[test]
fn a_disk_that_turns_read_only_loses_nothing() {
    disk_fault("readonly", true, |m| m.remount("ro"), |m| m.remount("rw"));
}

// ---------------------------------------------------------------------------------------------
// damaged state files

/// Runs an agent, stops it, applies `damage` to its data dir, and checks that the next start
/// runs and delivers. Returns the second run's lines and the names in the data dir after it.
fn runs_and_delivers(name: &str, damage: impl FnOnce(&Path)) -> (Vec<String>, Vec<String>) {
    let f = factory(config(200, 400), Refuse::Nothing);
    let dir = TempDir::new(name);
    // A first life writes every state file.
    let (s, lines) = settings(f.addr, &dir.0, "tok");
    let agent = Agent::start(s, lines);
    wait_for("a batch", Duration::from_secs(15), || {
        !f.record().batches.is_empty()
    });
    assert_eq!(agent.stop(), Ok(Exit::Stopped));
    damage(&dir.0);
    let before = f.record().batches.len();
    let (s, lines) = settings(f.addr, &dir.0, "tok");
    let agent = Agent::start(s, lines);
    wait_for(
        &format!("{name}: a batch after the damage"),
        Duration::from_secs(15),
        || f.record().batches.len() > before || agent.finished(),
    );
    let lines = agent.drain_lines();
    assert_eq!(agent.stop(), Ok(Exit::Stopped), "{name}: {lines:?}");
    let names = std::fs::read_dir(&dir.0)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    (lines, names)
}

#[test]
fn damaged_state_files_are_repaired_loudly() {
    for (name, file, text) in [
        ("identity-empty", "identity.json", ""),
        ("identity-cut", "identity.json", "{\"client_id\": \"00"),
        ("identity-garbage", "identity.json", "\u{0}\u{1}garbage"),
        ("config-empty", "config.json", ""),
        ("config-cut", "config.json", "{\"cpu_ms\": 10"),
        ("config-garbage", "config.json", "[1,2,3]"),
    ] {
        let (lines, _) = runs_and_delivers(name, |d| {
            std::fs::write(d.join(file), text).unwrap_or_else(|e| panic!("{file}: {e}"));
        });
        let loud: Vec<_> = lines.iter().filter(|l| l.contains(file)).collect();
        assert_eq!(loud.len(), 1, "{name}: one line naming {file}: {lines:?}");
    }
    let (_, names) = runs_and_delivers("buffer-is-a-file", |d| {
        let b = d.join("buffer");
        let _ = std::fs::remove_dir_all(&b);
        std::fs::write(&b, "not a directory").unwrap_or_else(|e| panic!("{e}"));
    });
    // The buffer's own line goes to stderr (it is printed before the agent's log exists); the
    // file is found moved aside.
    assert!(
        names.iter().any(|n| n.starts_with("buffer.corrupt-")),
        "{names:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// upgrade: a data dir written by the first release

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    for e in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let e = e.unwrap_or_else(|e| panic!("{e}"));
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap_or_else(|err| panic!("{dst:?}: {err}"));
        }
    }
}

#[test]
fn a_data_dir_of_the_first_release_is_read_without_loss() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/release-0.1-datadir");
    let dir = TempDir::new("upgrade");
    copy_dir(&fixture, &dir.0);
    let f = factory(config(1000, 2_000), Refuse::Nothing);
    f.know(
        "0123456789abcdef0123456789abcdef",
        "secret-from-release-0.1",
    );
    let (s, lines) = settings(f.addr, &dir.0, "tok");
    let agent = Agent::start(s, lines);
    wait_for("the old buffered batches", Duration::from_secs(20), || {
        f.record().batches.len() >= 3
    });
    let lines = agent.drain_lines();
    assert_eq!(agent.stop(), Ok(Exit::Stopped), "{lines:?}");
    let r = f.record();
    assert!(
        r.welcomes.iter().all(|w| w.welcome_back),
        "{:?}",
        r.welcomes
    );
    let old: Vec<u64> = r
        .unique_batches()
        .iter()
        .flat_map(|b| b.snapshots.iter().filter_map(|s| s.mem.map(|m| m.total)))
        .filter(|t| *t < 2000)
        .collect();
    assert_eq!(old, [1001, 1002], "the release-0.1 batches, in order");
}

// ---------------------------------------------------------------------------------------------
// no poison batch

#[test]
fn batches_stay_under_the_factorys_message_limit() {
    let limit = 1024;
    let f = factory(
        Config {
            max_message_bytes: limit as u32,
            ..user_config()
        },
        Refuse::LargerThan(limit),
    );
    let dir = TempDir::new("limit");
    let (s, lines) = settings(f.addr, &dir.0, "tok");
    let agent = Agent::start(s, lines);
    let start = now_ns();
    wait_until_time(
        &f,
        "25 s of snapshots",
        start + 25 * S,
        Duration::from_secs(60),
    );
    let lines = agent.drain_lines();
    assert_eq!(agent.stop(), Ok(Exit::Stopped), "{lines:?}");
    assert!(f.record().rejects.is_empty(), "{:?}", f.record().rejects);
    assert_complete(&times(&f), &[]);
}

#[test]
fn a_refused_batch_goes_to_the_dead_letter_file_and_the_queue_goes_on() {
    let f = factory(config(1000, 2_000), Refuse::FirstBatch);
    let dir = TempDir::new("deadletter");
    let (s, lines) = settings(f.addr, &dir.0, "tok");
    let agent = Agent::start(s, lines);
    let start = now_ns();
    wait_until_time(
        &f,
        "snapshots after the refused batch",
        start + 10 * S,
        Duration::from_secs(60),
    );
    wait_for(
        "the dead letter in a health fact",
        Duration::from_secs(20),
        || {
            f.record()
                .unique_batches()
                .iter()
                .flat_map(|b| b.snapshots.iter().filter_map(|s| s.health.clone()))
                .any(|h| h.dead_letter_batches == 1)
        },
    );
    let lines = agent.drain_lines();
    assert_eq!(agent.stop(), Ok(Exit::Stopped), "{lines:?}");
    let dead = std::fs::read_dir(&dir.0)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("dead-letter"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(dead, 1, "{lines:?}");
}

// ---------------------------------------------------------------------------------------------
// issue 15, agent side

#[test]
fn epoch_installation_and_clock_fields_are_filled() {
    let f = factory(config(200, 400), Refuse::Nothing);
    let dir = TempDir::new("epoch");
    for _ in 0..2 {
        let (s, lines) = settings(f.addr, &dir.0, "tok");
        let agent = Agent::start(s, lines);
        let n = f.record().batches.len();
        wait_for("a batch", Duration::from_secs(15), || {
            f.record().batches.len() > n + 1
        });
        assert_eq!(agent.stop(), Ok(Exit::Stopped));
    }
    let r = f.record();
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let (h0, h1) = (&r.hellos[0], &r.hellos[1]);
    assert!(h0.epoch != 0 && h1.epoch != 0 && h0.epoch != h1.epoch);
    assert!(!h0.installation.is_empty());
    assert_eq!(h0.installation, h1.installation, "same across restarts");
    assert_eq!(h0.boot_id, boot_id);
    assert!(h0.agent_boottime_ns > 0);
    let mut last_seq = 0;
    for b in &r.batches {
        assert!(
            b.epoch == h0.epoch || b.epoch == h1.epoch,
            "batch epoch {}",
            b.epoch
        );
        assert!(b.seq >= last_seq);
        last_seq = b.seq;
        assert!(b.agent_clock_ns > 0 && b.agent_boottime_ns > 0);
        for s in &b.snapshots {
            assert!(s.boottime_ns > 0);
            assert_eq!(s.boot_id, boot_id);
        }
    }
}

#[test]
fn a_copied_data_dir_is_a_new_installation_and_takes_the_new_identity() {
    let f = factory(config(200, 400), Refuse::Nothing);
    let dir = TempDir::new("clone");
    let (a_dir, b_dir) = (dir.0.join("a"), dir.0.join("b"));
    let (s, lines) = settings(f.addr, &a_dir, "tok");
    let agent = Agent::start(s, lines);
    wait_for("a batch", Duration::from_secs(15), || {
        !f.record().batches.is_empty()
    });
    assert_eq!(agent.stop(), Ok(Exit::Stopped));
    // The whole data dir copied elsewhere: a clone, with the original's id and secret.
    copy_dir(&a_dir, &b_dir);
    let _ = std::fs::remove_file(b_dir.join("buffer/LOCK"));
    let (s, lines) = settings(f.addr, &a_dir, "tok");
    let a = Agent::start(s, lines);
    let (s, lines) = settings(f.addr, &b_dir, "tok");
    let b = Agent::start(s, lines);
    wait_for("the clone enrolled", Duration::from_secs(15), || {
        f.record()
            .welcomes
            .iter()
            .any(|w| w.client_id.starts_with("0000") && w.client_id.contains("c10e"))
    });
    let n = f.record().batches.len();
    wait_for("batches from both", Duration::from_secs(15), || {
        f.record().batches.len() > n + 4
    });
    let b_lines = b.drain_lines();
    assert_eq!(a.stop(), Ok(Exit::Stopped));
    assert_eq!(b.stop(), Ok(Exit::Stopped), "{b_lines:?}");
    {
        let r = f.record();
        let clone_id = r
            .welcomes
            .iter()
            .find(|w| w.client_id.contains("c10e"))
            .map(|w| w.client_id.clone())
            .unwrap_or_default();
        let under_clone = r.batch_clients.iter().filter(|c| **c == clone_id).count();
        assert!(
            under_clone > 0,
            "the clone's batches go out under its new id"
        );
    }
    let stored = std::fs::read_to_string(b_dir.join("identity.json")).unwrap_or_default();
    assert!(
        stored.contains("c10e"),
        "the clone keeps its new identity: {stored}"
    );
    let a_stored = std::fs::read_to_string(a_dir.join("identity.json")).unwrap_or_default();
    assert!(!a_stored.contains("c10e"), "{a_stored}");
    assert_eq!(
        b_lines.iter().filter(|l| l.contains("c10e")).count(),
        1,
        "one line about the new identity: {b_lines:?}"
    );
}

/// Issue 15 (3): a board without a real-time clock moves its buffer aside before NTP ran, so the
/// new buffer's seqs start far below what the factory acknowledged. The new run's epoch tells
/// them apart (the factory dedups on (epoch, seq)); the wall clock is set low through the
/// agent's test seam.
#[test]
fn a_new_buffer_made_with_the_clock_low_has_its_own_epoch() {
    let f = factory(config(1000, 2_000), Refuse::Nothing);
    let dir = TempDir::new("clocklow");
    let data = dir.0.join("data");
    let file = write_agent_config(&dir.0, f.addr, &data);
    let mut first = Guard(Some(spawn_agent(&file)));
    wait_for("batches of the first run", Duration::from_secs(30), || {
        f.record().batches.len() >= 2
    });
    if let Some(c) = first.0.as_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let (first_epoch, first_max) = {
        let r = f.record();
        (
            r.hellos[0].epoch,
            r.batches.iter().map(|b| b.seq).max().unwrap_or(0),
        )
    };
    std::fs::rename(data.join("buffer"), data.join("buffer.aside"))
        .unwrap_or_else(|e| panic!("move the buffer aside: {e}"));
    let year = 365 * 24 * 3600 * S;
    let n = f.record().batches.len();
    let _second = Guard(Some(spawn_agent_with_clock(&file, -year)));
    wait_for("batches of the second run", Duration::from_secs(30), || {
        f.record().batches.len() >= n + 2
    });
    let r = f.record();
    let hello = r.hellos.last().cloned().unwrap_or_default();
    assert_ne!(hello.epoch, first_epoch);
    assert!(
        hello.agent_clock_ns < now_ns() - year / 2,
        "the seam sets the clock low"
    );
    let later: Vec<_> = r.batches[n..].iter().collect();
    assert!(later.iter().all(|b| b.epoch == hello.epoch));
    assert!(
        later.iter().all(|b| b.seq < first_max),
        "the new buffer's seqs start below the old ones: only the epoch tells them apart"
    );
    assert!(later
        .iter()
        .flat_map(|b| &b.snapshots)
        .all(|s| s.time_ns < now_ns() - year / 2));
}
