//! The `autofactory` binary as a user meets it: no-config start, bad flags and files (exit 2,
//! one line), SIGHUP reload pushing a Config, `autofactory clients`, SIGTERM exit 0.

mod common;

use autofact_fbs::Message;
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_autofactory");

/// A running binary with the addresses it printed.
struct Running {
    child: Child,
    out: Vec<String>,
    ws: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `autofactory run ARGS` in `cwd` and reads stdout up to its last startup line.
fn start(cwd: &std::path::Path, args: &[&str]) -> Running {
    start_env(cwd, args, None)
}

/// [`start`] with `STATE_DIRECTORY` set (as systemd's `StateDirectory=` does).
fn start_env(cwd: &std::path::Path, args: &[&str], state_dir: Option<&std::path::Path>) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("STATE_DIRECTORY");
    if let Some(d) = state_dir {
        cmd.env("STATE_DIRECTORY", d);
    }
    let mut child = cmd
        .arg("run")
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn autofactory");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut out = Vec::new();
    let (mut ws, mut admin) = (None, None);
    for line in lines.by_ref() {
        let line = line.expect("stdout line");
        if let Some(a) = line.strip_prefix("autofactory: listening for agents on ws://") {
            ws = Some(a.parse().expect("ws address"));
        }
        if let Some(a) = line.strip_prefix("autofactory: admin on http://") {
            admin = Some(
                a.split(' ')
                    .next()
                    .unwrap_or("")
                    .parse()
                    .expect("admin address"),
            );
        }
        let last = line.starts_with("autofactory: config ") || line.contains("no config file");
        out.push(line);
        if last {
            break;
        }
    }
    // Keep draining stdout (per-batch lines) so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Running {
        child,
        ws: ws.unwrap_or_else(|| panic!("no listen line in {out:?}")),
        admin: admin.unwrap_or_else(|| panic!("no admin line in {out:?}")),
        out,
    }
}

fn stop(mut r: Running, sig: Signal) -> i32 {
    kill(Pid::from_raw(r.child.id() as i32), sig).expect("kill");
    let status = r.child.wait().expect("wait");
    status.code().unwrap_or(-1)
}

#[test]
fn no_config_starts_with_safe_defaults_and_exits_0_on_sigterm() {
    let dir = temp_dir("cli-defaults");
    let r = start(&dir, &[]);
    let text = r.out.join("\n");
    assert!(text.contains("generated enrollment token"), "{text}");
    assert!(text.contains("facts go to"), "{text}");
    assert!(text.contains("autofactory-data"), "{text}");
    let token = std::fs::read_to_string(dir.join("autofactory-data/enrollment-token"))
        .expect("token stored in the data dir");
    assert!(
        text.contains(token.trim()),
        "the printed token is the stored one"
    );
    // The generated token enrolls a client; another does not.
    smol::block_on(async {
        let (_c, answer) = Client::hello(r.ws, new_hello(token.trim(), "first")).await;
        assert!(matches!(answer, Message::Welcome(_)), "{answer:?}");
        let (code, _) = refused(r.ws, new_hello(TOKEN, "intruder")).await;
        assert_eq!(code, autofact_fbs::RejectCode::BadToken);
    });

    let out = Command::new(BIN)
        .args(["clients", "--admin", &r.admin.to_string()])
        .output()
        .expect("autofactory clients");
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("HOSTNAME"), "{table}");
    assert!(table.contains("first"), "{table}");

    assert_eq!(stop(r, Signal::SIGTERM), 0);

    // A restart reuses the stored token instead of printing a new one.
    let r = start(&dir, &[]);
    assert!(!r.out.join("\n").contains("generated enrollment token"));
    assert_eq!(stop(r, Signal::SIGINT), 0);
}

#[test]
fn bad_flags_and_files_exit_2_with_one_line() {
    let dir = temp_dir("cli-bad");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"listen": "0.0.0.0:8675", "tokn": "x"}"#).expect("write");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["run", "--bogus"], "--bogus"),
        (vec!["run", "--config"], "--config"),
        (vec!["run", "--listen", "nowhere"], "--listen"),
        (vec!["frobnicate"], "frobnicate"),
        (vec!["run", "--config", "missing.json"], "missing.json"),
        (vec!["run", "--config", bad.to_str().unwrap_or("")], "tokn"),
        (vec!["replay"], "dead-letter file"),
        (vec!["replay", "--bogus", "x.lp"], "--bogus"),
        (vec!["replay", "--timeout", "soon", "x.lp"], "--timeout"),
        (
            vec!["replay", "--config", bad.to_str().unwrap_or(""), "x.lp"],
            "tokn",
        ),
    ];
    for (args, needle) in cases {
        let out = Command::new(BIN)
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // Nothing was created for a refused start.
    assert!(!dir.join("autofactory-data").exists());
}

#[test]
fn sighup_reloads_and_pushes_the_changed_config() {
    let dir = temp_dir("cli-hup");
    let cfg = dir.join("factory.json");
    let data = dir.join("data");
    let write = |extra: &str| {
        std::fs::write(
            &cfg,
            format!(
                r#"{{"token": "{TOKEN}", "data_dir": "{}"{extra}}}"#,
                data.display()
            ),
        )
        .expect("write config")
    };
    write("");
    let r = start(&dir, &["--config", cfg.to_str().unwrap_or("")]);
    smol::block_on(async {
        let (mut c, w) = Client::enroll(r.ws, "hup").await;
        assert_eq!(
            w.config.push_interval_ms,
            autofact_fbs::Config::default().push_interval_ms
        );
        write(
            r#", "clients": {"CLIENT": {"push_interval_ms": 2500}}"#
                .replace("CLIENT", &w.client_id)
                .as_str(),
        );
        kill(Pid::from_raw(r.child.id() as i32), Signal::SIGHUP).expect("hup");
        match c.recv().await {
            Ok(Message::Config(c)) => assert_eq!(c.push_interval_ms, 2500),
            other => panic!("expected Config, got {other:?}"),
        }
        // A broken file on SIGHUP keeps the factory running with the old config.
        std::fs::write(&cfg, "{ not json").expect("write");
        kill(Pid::from_raw(r.child.id() as i32), Signal::SIGHUP).expect("hup");
        assert_eq!(c.batch(1, vec![snapshot(1, 0)]).await.seq, 1);
    });
    assert_eq!(stop(r, Signal::SIGTERM), 0);
}

#[test]
fn state_directory_is_the_default_data_dir() {
    let dir = temp_dir("cli-state");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("mkdir");
    let r = start_env(&dir, &[], Some(&state));
    let text = r.out.join("\n");
    let canonical = std::fs::canonicalize(&state).expect("canonical");
    assert!(
        text.contains(&format!("inventory in {}", canonical.display())),
        "{text}"
    );
    assert!(state.join("enrollment-token").exists());
    assert!(!dir.join("autofactory-data").exists());
    assert_eq!(stop(r, Signal::SIGTERM), 0);
}
