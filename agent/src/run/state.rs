//! What the agent keeps in `data_dir` besides the buffer: its identity (client id + secret from
//! the first Welcome) and the last Config the factory pushed, so a restarted agent collects even
//! while the factory is unreachable.
//!
//! On-disk format: two small JSON files, `identity.json` (mode 0600, it holds a secret) and
//! `config.json`. Both are replaced atomically (write a temp file, fsync, rename, fsync the
//! directory) so a crash leaves the old or the new file, never a torn one.

use autofact_fbs::{Config, Periods};
use nanoserde::{DeJson, SerJson};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The client's identity as given by the factory.
#[derive(Debug, Clone, PartialEq, Eq, SerJson, DeJson)]
pub struct Identity {
    /// 32 lowercase hex digits.
    pub client_id: String,
    /// The secret presented on every Hello.
    pub secret: String,
}

/// A state file could not be read or written.
#[derive(Debug)]
pub struct StateError {
    /// The file or directory.
    pub path: PathBuf,
    /// What was being done.
    pub op: &'static str,
    /// The cause.
    pub source: io::Error,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} {}: {}",
            self.op,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for StateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// The state files of one data directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Creates the directory (mode 0700) when missing.
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err(dir, "create data directory"))?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    /// Where the disk buffer lives.
    pub fn buffer_dir(&self) -> PathBuf {
        self.dir.join("buffer")
    }

    fn identity_path(&self) -> PathBuf {
        self.dir.join("identity.json")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// The stored identity; `None` when the agent was never welcomed. A corrupt file is an error
    /// rather than silently re-enrolling, which would orphan this client's history.
    pub fn identity(&self) -> Result<Option<Identity>, StateError> {
        let path = self.identity_path();
        let Some(text) = read_optional(&path)? else {
            return Ok(None);
        };
        let id = Identity::deserialize_json(&text).map_err(|e| StateError {
            path: path.clone(),
            op: "parse",
            source: io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")),
        })?;
        Ok(Some(id))
    }

    /// Stores the identity, readable by the owner only.
    pub fn save_identity(&self, id: &Identity) -> Result<(), StateError> {
        write_atomic(&self.identity_path(), id.serialize_json().as_bytes(), 0o600)
    }

    /// Forgets the identity (the factory no longer knows it).
    pub fn forget_identity(&self) -> Result<(), StateError> {
        let path = self.identity_path();
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(err(&path, "remove")(e)),
            _ => Ok(()),
        }
    }

    /// The last Config received; `None` before the first Welcome.
    pub fn config(&self) -> Result<Option<Config>, StateError> {
        let path = self.config_path();
        let Some(text) = read_optional(&path)? else {
            return Ok(None);
        };
        let c = StoredConfig::deserialize_json(&text).map_err(|e| StateError {
            path: path.clone(),
            op: "parse",
            source: io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")),
        })?;
        Ok(Some(c.into()))
    }

    /// Stores the Config.
    pub fn save_config(&self, c: &Config) -> Result<(), StateError> {
        let text = StoredConfig::from(*c).serialize_json();
        write_atomic(&self.config_path(), text.as_bytes(), 0o600)
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, StateError> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(path, "read")(e)),
    }
}

/// Replaces `path` with `bytes` so readers see the old or the new content, never a mix.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err(&tmp, "create"))?;
    // A leftover temp file from an older run may have kept looser permissions.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(err(&tmp, "chmod"))?;
    f.write_all(bytes).map_err(err(&tmp, "write"))?;
    f.sync_all().map_err(err(&tmp, "fsync"))?;
    drop(f);
    fs::rename(&tmp, path).map_err(err(path, "rename into place"))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err(dir, "fsync"))?;
    }
    Ok(())
}

/// `Config` mirrored for nanoserde; the protocol crate stays free of serde derives.
#[derive(SerJson, DeJson)]
struct StoredConfig {
    cpu_ms: u32,
    kernel_ms: u32,
    mem_ms: u32,
    swap_ms: u32,
    system_ms: u32,
    net_ms: u32,
    diskio_ms: u32,
    disk_ms: u32,
    temp_ms: u32,
    health_ms: u32,
    push_interval_ms: u32,
    ping_interval_ms: u32,
    buffer_cap_bytes: u64,
    give_up_secs: u32,
    // Issue 19; a file written before it has no such key: 0 (processes off) until the factory
    // sends its Config.
    #[nserde(default)]
    processes_ms: u32,
}

impl From<Config> for StoredConfig {
    fn from(c: Config) -> StoredConfig {
        let p = c.periods;
        StoredConfig {
            cpu_ms: p.cpu_ms,
            kernel_ms: p.kernel_ms,
            mem_ms: p.mem_ms,
            swap_ms: p.swap_ms,
            system_ms: p.system_ms,
            net_ms: p.net_ms,
            diskio_ms: p.diskio_ms,
            disk_ms: p.disk_ms,
            temp_ms: p.temp_ms,
            health_ms: p.health_ms,
            push_interval_ms: c.push_interval_ms,
            ping_interval_ms: c.ping_interval_ms,
            buffer_cap_bytes: c.buffer_cap_bytes,
            give_up_secs: c.give_up_secs,
            processes_ms: p.processes_ms,
        }
    }
}

impl From<StoredConfig> for Config {
    fn from(s: StoredConfig) -> Config {
        Config {
            periods: Periods {
                cpu_ms: s.cpu_ms,
                kernel_ms: s.kernel_ms,
                mem_ms: s.mem_ms,
                swap_ms: s.swap_ms,
                system_ms: s.system_ms,
                net_ms: s.net_ms,
                diskio_ms: s.diskio_ms,
                disk_ms: s.disk_ms,
                temp_ms: s.temp_ms,
                health_ms: s.health_ms,
                processes_ms: s.processes_ms,
            },
            push_interval_ms: s.push_interval_ms,
            ping_interval_ms: s.ping_interval_ms,
            buffer_cap_bytes: s.buffer_cap_bytes,
            give_up_secs: s.give_up_secs,
            max_message_bytes: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("autofact-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn identity_round_trip_and_mode() -> Result<(), StateError> {
        let dir = tmp("id");
        let s = StateDir::open(&dir)?;
        assert_eq!(s.identity()?, None);
        let id = Identity {
            client_id: "0123456789abcdef0123456789abcdef".into(),
            secret: "s3cret".into(),
        };
        s.save_identity(&id)?;
        assert_eq!(s.identity()?, Some(id));
        let mode = fs::metadata(dir.join("identity.json"))
            .map_err(err(&dir, "stat"))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        s.forget_identity()?;
        assert_eq!(s.identity()?, None);
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn config_round_trip() -> Result<(), StateError> {
        let dir = tmp("cfg");
        let s = StateDir::open(&dir)?;
        assert_eq!(s.config()?, None);
        let mut c = Config::default();
        c.periods.temp_ms = 0;
        c.periods.cpu_ms = 1234;
        c.buffer_cap_bytes = u64::MAX;
        s.save_config(&c)?;
        assert_eq!(s.config()?, Some(c));
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn corrupt_identity_is_an_error() -> Result<(), StateError> {
        let dir = tmp("bad");
        let s = StateDir::open(&dir)?;
        fs::write(dir.join("identity.json"), "{\"client_id\": ").map_err(err(&dir, "write"))?;
        let e = s
            .identity()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("identity.json"), "{e}");
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }
}
