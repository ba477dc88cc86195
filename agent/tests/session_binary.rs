//! Issue 5 through the real binary: `autofact run --config FILE` stops on SIGTERM with status 0
//! after closing the websocket normally; a bad config file is one line on stderr and status 2.

mod common;

use common::{config, wait_for, Factory, Script, TempDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

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

fn autofact(args: &[&str]) -> std::io::Result<Child> {
    Command::new(env!("CARGO_BIN_EXE_autofact"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

fn run_to_end(args: &[&str]) -> Result<Output, String> {
    autofact(args)
        .and_then(|c| c.wait_with_output())
        .map_err(|e| e.to_string())
}

#[test]
fn sigterm_flushes_closes_normally_and_exits_0() -> Result<(), String> {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let factory = Factory::start(Script {
            token: "tok".into(),
            config: config(100, 200),
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
        let dir = TempDir::new("binary");
        std::fs::create_dir_all(&dir.0).map_err(|e| e.to_string())?;
        let file = dir.0.join("agent.json");
        let text = format!(
            r#"{{"server": "ws://{}/", "data_dir": "{}", "token": "tok", "region": "", "zone": ""}}"#,
            factory.addr,
            dir.0.join("data").display()
        );
        std::fs::write(&file, text).map_err(|e| e.to_string())?;
        let file = file.to_string_lossy().into_owned();

        let mut guard = Guard(Some(
            autofact(&["run", "--config", &file]).map_err(|e| e.to_string())?,
        ));
        wait_for("a batch", Duration::from_secs(15), || {
            !factory.record().batches.is_empty()
        });
        let pid = guard.0.as_ref().map_or(0, |c| c.id());
        kill(Pid::from_raw(pid as i32), signal).map_err(|e| e.to_string())?;
        let out = guard
            .0
            .take()
            .ok_or("no child")?
            .wait_with_output()
            .map_err(|e| e.to_string())?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{signal:?}: {stderr}");
        assert_eq!(factory.record().close_codes, [1000], "{signal:?}: {stderr}");
        // The hostname defaults to the machine's.
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert_eq!(factory.record().hellos[0].hostname, host);
    }
    Ok(())
}

#[test]
fn bad_config_is_one_line_and_status_2() -> Result<(), String> {
    let dir = TempDir::new("badconfig");
    std::fs::create_dir_all(&dir.0).map_err(|e| e.to_string())?;
    let cases = [
        ("missing.json", None, "cannot read"),
        ("badjson.json", Some("{\"server\": "), "bad JSON"),
        (
            "unknown.json",
            Some(r#"{"server": "h:1", "data_dir": "/d", "zome": "a"}"#),
            "unknown key `zome`",
        ),
        (
            "badvalue.json",
            Some(r#"{"server": "h:99999", "data_dir": "/d"}"#),
            "invalid port",
        ),
    ];
    for (name, text, want) in cases {
        let file = dir.0.join(name);
        if let Some(t) = text {
            std::fs::write(&file, t).map_err(|e| e.to_string())?;
        }
        let out = run_to_end(&["run", "--config", &file.to_string_lossy()])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(
            stderr.contains(want) && stderr.contains(name),
            "{name}: {stderr}"
        );
    }
    let out = run_to_end(&["run"])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
    Ok(())
}
