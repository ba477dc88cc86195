//! Issue 13 end to end, with a user's settings (collect every 1 s, push every 10 s): a `kill -9`
//! halfway between two pushes loses only the time the agent was down, a disk whose fsync takes
//! 800 ms (the agent's test seam `AUTOFACT_TEST_SLOW_FSYNC_MS`) skips no collection, and a data
//! dir on a disk that fills and empties, or that is read-only when the agent starts (a small
//! tmpfs, mounted here: root, as in CI), loses nothing, shows the fault in the `autofact`
//! measurement, and goes back to disk without a restart.

use crate::{secs, Site};
use autofact_tests::harness::{last_health, max_health, now_ns, AgentSpec, FactorySpec};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Long enough for any wait here (a push interval, reconnects) to be a failure.
const WAIT: Duration = Duration::from_secs(120);

fn user_settings() -> FactorySpec {
    FactorySpec {
        push_interval_ms: 10_000,
        ping_interval_ms: 15_000,
        ..FactorySpec::default()
    }
}

/// Sleeps until `offset` after the next multiple of `every` on the wall clock (pushes are
/// aligned to multiples of the push interval).
fn sleep_until_after_boundary(every: i64, offset: i64) {
    let now = now_ns();
    let target = (now / every + 1) * every + offset;
    std::thread::sleep(Duration::from_nanos((target - now) as u64));
}

#[test]
fn kill_9_halfway_between_pushes_loses_only_the_time_down() {
    let Some(mut site) = Site::new("agent-kill-push10", &user_settings()) else {
        return;
    };
    let host = "e2e-kill-push10";
    let start = now_ns();
    let i = site.agent(&AgentSpec::new(host, "eu"));
    // Past the first push, then halfway to the next: 5 s collected and not yet pushed.
    sleep_until_after_boundary(secs(10.0), 0);
    sleep_until_after_boundary(secs(10.0), secs(5.5));
    let killed_at = now_ns();
    site.agents[i].kill();
    site.agents[i].start();
    let back_at = now_ns();
    let allowed = (killed_at - secs(1.5), back_at + secs(3.0));
    let until = back_at + secs(12.0);
    site.assert_nothing_lost(host, start + secs(12.0), until, &[allowed], WAIT);
}

#[test]
fn a_slow_disk_never_delays_collection() {
    let Some(mut site) = Site::new("agent-slow-disk", &user_settings()) else {
        return;
    };
    let host = "e2e-slow-disk";
    let start = now_ns();
    let mut spec = AgentSpec::new(host, "eu");
    // Every fsync of the buffer takes 800 ms more: a cheap SD card under load.
    spec.env = vec![("AUTOFACT_TEST_SLOW_FSYNC_MS".into(), "800".into())];
    site.agent(&spec);
    let until = now_ns() + secs(30.0);
    site.assert_nothing_lost(host, start + secs(12.0), until, &[], WAIT);
}

/// A tmpfs mounted for one test; unmounted (lazily if busy) on drop, also when the test fails.
struct Mount(PathBuf);

impl Mount {
    fn remount(&self, opt: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(&self.0)
            .output()
            .unwrap_or_else(|e| panic!("mount: {e}"));
        assert!(
            out.status.success(),
            "remount {opt} {}: {}",
            self.0.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn tmpfs(at: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap_or_else(|e| panic!("{}: {e}", at.display()));
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap_or_else(|e| panic!("mount: {e}"));
        assert!(
            out.status.success(),
            "mount tmpfs on {}: {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[test]
fn a_data_dir_on_a_disk_that_fills_and_empties_loses_nothing() {
    let Some(mut site) = Site::new("agent-disk-full", &user_settings()) else {
        return;
    };
    let host = "e2e-disk-full";
    // The harness keeps an agent's data in <dir>/<host>-data: make that a small disk.
    let mount = Mount::tmpfs(&site.dir.path().join(format!("{host}-data")), "8m");
    let start = now_ns();
    site.agent(&AgentSpec::new(host, "eu"));
    sleep_until_after_boundary(secs(10.0), secs(2.0));
    // Fill the disk to the last byte and keep it full for 15 s.
    let filler = mount.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap_or_else(|e| panic!("filler: {e}"));
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
    }
    std::thread::sleep(Duration::from_secs(15));
    let _ = std::fs::remove_file(&filler);
    let emptied_at = now_ns();
    let until = emptied_at + secs(15.0);
    site.assert_nothing_lost(host, start + secs(12.0), until, &[], WAIT);
    let worst = max_health(&site.influx, host, "buffer_state").unwrap_or(0);
    assert_eq!(
        worst,
        1,
        "buffer_state disk_full reported\n{}",
        site.outputs()
    );
    let last = last_health(&site.influx, host, "buffer_state");
    assert_eq!(last, Some(0), "back to disk\n{}", site.outputs());
    assert_eq!(site.agents[0].exited(), None, "{}", site.outputs());
    site.agents[0].kill();
    drop(mount);
}

/// A worn SD card is usually found read-only at boot: the agent is killed, its disk turns
/// read-only (a remount with files open for writing is refused, so it turns while the agent is
/// down), the agent starts on it, and the disk is made writable again 15 s later.
#[test]
fn an_agent_started_on_a_read_only_disk_runs_and_goes_back_to_disk() {
    let Some(mut site) = Site::new("agent-read-only", &user_settings()) else {
        return;
    };
    let host = "e2e-read-only";
    let mount = Mount::tmpfs(&site.dir.path().join(format!("{host}-data")), "8m");
    let start = now_ns();
    let i = site.agent(&AgentSpec::new(host, "eu"));
    sleep_until_after_boundary(secs(10.0), secs(2.0));
    let killed_at = now_ns();
    site.agents[i].kill();
    mount.remount("ro");
    site.agents[i].start();
    let back_at = now_ns();
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(site.agents[i].exited(), None, "{}", site.outputs());
    mount.remount("rw");
    let until = now_ns() + secs(15.0);
    let allowed = (killed_at - secs(1.5), back_at + secs(3.0));
    site.assert_nothing_lost(host, start + secs(12.0), until, &[allowed], WAIT);
    let worst = max_health(&site.influx, host, "buffer_state").unwrap_or(0);
    assert_eq!(
        worst,
        2,
        "buffer_state read_only reported\n{}",
        site.outputs()
    );
    let last = last_health(&site.influx, host, "buffer_state");
    assert_eq!(last, Some(0), "back to disk\n{}", site.outputs());
    site.agents[i].kill();
    drop(mount);
}
