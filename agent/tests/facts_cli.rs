//! `autofact collect --once`, the built binary: on this machine its figures agree with /proc
//! read at the same moment; on a fixture tree it reads only that tree; bad flags exit 2 with
//! one line naming the problem (issue 3).

use autofact::facts::{mounts, Procfs};
use std::path::PathBuf;
use std::process::{Command, Output};

fn autofact(args: &[&str]) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_autofact"))
        .args(args)
        .output()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The value of `field` (an integer, `i` suffix) on the first line of `measurement`.
fn int_field(lp: &str, measurement: &str, field: &str) -> Option<u64> {
    let line = lp
        .lines()
        .find(|l| l.starts_with(&format!("{measurement},")))?;
    let fields = line.split(' ').nth(1)?;
    fields.split(',').find_map(|kv| {
        let v = kv.strip_prefix(field)?.strip_prefix('=')?;
        v.strip_suffix('i')?.parse().ok()
    })
}

fn proc_value(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn live_collect_once_agrees_with_proc() -> std::io::Result<()> {
    let out = autofact(&["collect", "--once", "--interval-ms", "50"])?;
    let mem_total = proc_value("/proc/meminfo", "MemTotal:").map(|kb| kb * 1024);
    let btime = proc_value("/proc/stat", "btime");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(int_field(&stdout, "mem", "total"), mem_total, "{stdout}");
    let ours = int_field(&stdout, "kernel", "boot_time").unwrap_or(0);
    // btime follows the wall clock and can move by a second under NTP slew.
    assert!(
        ours.abs_diff(btime.unwrap_or(u64::MAX)) <= 1,
        "{ours} vs {btime:?}"
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    assert!(
        stdout.contains(&format!(",host={} ", host.trim()))
            || stdout.contains(&format!("host={},", host.trim())),
        "{stdout}"
    );
    // Every fact this machine has: disk and diskio only where the machine (or container) has
    // a real root filesystem and block devices.
    let mut expected = vec!["kernel,", "mem,", "swap,", "system,", "autofact,"];
    let real_root = Procfs::default()
        .mounts()
        .map(|m| mounts::select(&m).iter().any(|m| m.path == "/"))
        .unwrap_or(false);
    if real_root {
        expected.push("disk,");
    }
    if Procfs::default().diskstats().is_ok_and(|d| !d.is_empty()) {
        expected.push("diskio,");
    }
    for m in expected {
        assert!(
            stdout.lines().any(|l| l.starts_with(m)),
            "no {m} line in {stdout}"
        );
    }
    assert!(!stdout.contains("interface=lo "), "{stdout}");
    assert_eq!(int_field(&stdout, "autofact", "parse_errors"), Some(0));
    Ok(())
}

#[test]
fn fixture_tree_collect_once_reads_the_tree() -> std::io::Result<()> {
    let pi = fixture("pi4-aarch64-bookworm-nsynet");
    let proc_root = pi.join("proc");
    let sys_root = pi.join("sys");
    let out = autofact(&[
        "collect",
        "--once",
        "--proc-root",
        &proc_root.to_string_lossy(),
        "--sys-root",
        &sys_root.to_string_lossy(),
        "--interval-ms",
        "1",
    ])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.lines().all(|l| l.contains("host=raspberrypi")),
        "{stdout}"
    );
    assert_eq!(int_field(&stdout, "mem", "total"), Some(3882988 * 1024));
    assert_eq!(int_field(&stdout, "kernel", "boot_time"), Some(1731310462));
    assert_eq!(int_field(&stdout, "system", "n_cpus"), Some(4));
    assert!(
        stdout.contains("temp,host=raspberrypi,sensor=cpu-thermal temp=47.686 "),
        "{stdout}"
    );
    assert!(
        stdout.contains("interface=eth1 bytes_sent=99991576856i,bytes_recv=21375449369i,"),
        "{stdout}"
    );
    assert!(
        stdout.contains("diskio,host=raspberrypi,name=mmcblk0 reads=11234i,"),
        "{stdout}"
    );
    assert!(
        stdout.contains("disk,device=mmcblk0p2,fstype=ext4,host=raspberrypi,mode=rw,path=/ "),
        "{stdout}"
    );
    // The tree's stat does not change between the two samples: no cpu point, rather than NaN.
    assert!(!stdout.lines().any(|l| l.starts_with("cpu,")), "{stdout}");
    Ok(())
}

#[test]
fn bad_flags_exit_2_with_one_line() -> std::io::Result<()> {
    let cases: [(&[&str], &str); 6] = [
        (
            &["collect", "--once", "--interval-ms", "soon"],
            "--interval-ms",
        ),
        (
            &["collect", "--once", "--interval-ms", "0"],
            "--interval-ms",
        ),
        (&["collect", "--once", "--bogus"], "--bogus"),
        (
            &["collect", "--once", "--proc-root", "/nonexistent-autofact"],
            "--proc-root",
        ),
        (&["collect"], "--once"),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, names) in cases {
        let out = autofact(args)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(names), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    Ok(())
}
