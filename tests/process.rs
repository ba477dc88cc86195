//! Child processes that are always stopped: killed and reaped on drop, output kept in files.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Where a program the tests start is: only `$env` when that is set (so a run can pretend the
/// program is missing), else `usual`, else the first `name` on `PATH`.
pub fn find_program(env: &str, usual: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        return p.exists().then_some(p);
    }
    let usual = PathBuf::from(usual);
    if usual.exists() {
        return Some(usual);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.exists())
    })
}

/// A running child whose stdout and stderr go to `<dir>/<name>.out` and `<dir>/<name>.err`.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with its output captured in `dir`. Appends when the files exist, so a restarted
    /// process keeps one log.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> std::io::Result<Proc> {
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        let open = |p: &Path| File::options().create(true).append(true).open(p);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(open(&out)?))
            .stderr(Stdio::from(open(&err)?));
        let child = cmd.spawn()?;
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            out,
            err,
        })
    }

    /// The child's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Everything the child wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Both outputs, labelled, for assertion messages.
    pub fn output(&self) -> String {
        format!(
            "--- {} stdout\n{}\n--- {} stderr\n{}",
            self.name,
            self.stdout(),
            self.name,
            self.stderr()
        )
    }

    /// Sends `sig` to the child.
    pub fn signal(&self, sig: Signal) -> std::io::Result<()> {
        match self.pid() {
            Some(pid) => kill(Pid::from_raw(pid as i32), sig).map_err(std::io::Error::from),
            None => Ok(()),
        }
    }

    /// Has the child exited? Returns its status when it has.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c.try_wait(),
            None => Ok(None),
        }
    }

    /// Waits up to `timeout` for the child to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                self.child = None;
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to `timeout`; SIGKILL after that. Returns the exit status of a clean stop.
    pub fn stop(&mut self, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
        self.signal(Signal::SIGTERM)?;
        let status = self.wait_timeout(timeout)?;
        self.kill();
        Ok(status)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::find_program;

    #[test]
    fn find_program_takes_the_env_path_only_then_the_usual_one_then_path() {
        // A set variable is the only place looked at, even when it names nothing.
        std::env::set_var("AUTOFACT_TEST_FIND_MISSING", "/nonexistent/program");
        assert_eq!(
            find_program("AUTOFACT_TEST_FIND_MISSING", "/bin/sh", "sh"),
            None
        );
        assert_eq!(
            find_program(
                "AUTOFACT_TEST_FIND_UNSET",
                "/bin/sh",
                "nothing-by-this-name"
            ),
            Some("/bin/sh".into())
        );
        let on_path =
            find_program("AUTOFACT_TEST_FIND_UNSET", "/nonexistent/sh", "sh").expect("sh on PATH");
        assert!(on_path.ends_with("sh") && on_path.exists(), "{on_path:?}");
    }
}
