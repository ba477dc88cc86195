//! What the agent keeps in `data_dir` besides the buffer: its identity (client id + secret from
//! the first Welcome) and the last Config the factory pushed, so a restarted agent collects even
//! while the factory is unreachable.
//!
//! On-disk format: two small JSON files, `identity.json` (mode 0600, it holds a secret) and
//! `config.json`. Both are replaced atomically (write a temp file, fsync, rename, fsync the
//! directory) so a crash leaves the old or the new file, never a torn one.

use autofact_fbs::Config;
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

    /// The stored identity; `None` when the agent was never welcomed. A damaged file (empty, cut,
    /// garbage) is moved aside to `identity.json.damaged-<unix seconds>` and `None` returned, so
    /// the agent enrolls again with its token instead of crash-looping; `damaged` then says so
    /// in one line. Only a file that cannot be read at all (permissions, I/O) is an error.
    pub fn identity(&self) -> Result<(Option<Identity>, Option<String>), StateError> {
        let path = self.identity_path();
        let Some(text) = read_optional(&path)? else {
            return Ok((None, None));
        };
        match Identity::deserialize_json(&text) {
            Ok(id) if !id.client_id.is_empty() && !id.secret.is_empty() => Ok((Some(id), None)),
            Ok(_) => Ok((
                None,
                Some(self.set_aside(&path, "has an empty client id or secret")),
            )),
            Err(e) => Ok((None, Some(self.set_aside(&path, &format!("{e:?}"))))),
        }
    }

    /// Renames a damaged state file out of the way; returns the one line that says so.
    fn set_aside(&self, path: &Path, why: &str) -> String {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut aside = path.as_os_str().to_os_string();
        aside.push(format!(".damaged-{secs}"));
        let aside = PathBuf::from(aside);
        match fs::rename(path, &aside) {
            Ok(()) => format!(
                "{} is damaged ({why}); moved it to {}",
                path.display(),
                aside.display()
            ),
            // A read-only disk: the file stays, and is ignored at every start until repaired.
            Err(e) => format!(
                "{} is damaged ({why}) and cannot be moved aside ({e}); ignoring it",
                path.display()
            ),
        }
    }

    /// This installation: a value that stays the same across restarts and for a backup restored
    /// in place, and differs when the whole data dir is copied to another board (cloned SD card)
    /// or another path. It hashes a random nonce kept in `data_dir/installation` (made at the
    /// first start) with the machine's identifiers (`machine_ids`: `/etc/machine-id`, the
    /// Pi's serial) and the data dir's canonical path. On a disk that refuses the nonce file the
    /// nonce is empty, which still tells machines and paths apart.
    pub fn installation(&self, machine_ids: &[String]) -> String {
        let path = self.dir.join("installation");
        let nonce = match fs::read_to_string(&path) {
            Ok(t) if t.trim().len() == 32 => t.trim().to_string(),
            _ => {
                let fresh = format!(
                    "{:016x}{:016x}",
                    crate::clock::random_u64(),
                    crate::clock::random_u64()
                );
                match write_atomic(&path, format!("{fresh}\n").as_bytes(), 0o600) {
                    Ok(()) => fresh,
                    Err(_) => String::new(),
                }
            }
        };
        let canonical = fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        let mut h = Fnv128::default();
        h.write(nonce.as_bytes());
        for id in machine_ids {
            h.write(b"\0");
            h.write(id.as_bytes());
        }
        h.write(b"\0");
        h.write(canonical.as_os_str().as_encoded_bytes());
        h.hex()
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

    /// The last Config received; `None` before the first Welcome. It is only a cache of what the
    /// factory sends at every connection, so a damaged file is moved aside (one line in
    /// `damaged`) and ignored until the factory sends a Config. Fields unknown to this release
    /// are ignored and missing ones take the protocol's defaults (an upgrade or a downgrade).
    pub fn config(&self) -> Result<(Option<Config>, Option<String>), StateError> {
        let path = self.config_path();
        let Some(text) = read_optional(&path)? else {
            return Ok((None, None));
        };
        match StoredConfig::deserialize_json(&text) {
            Ok(c) => Ok((Some(c.into()), None)),
            Err(e) => Ok((None, Some(self.set_aside(&path, &format!("{e:?}"))))),
        }
    }

    /// Stores the Config.
    pub fn save_config(&self, c: &Config) -> Result<(), StateError> {
        let text = StoredConfig::from(*c).serialize_json();
        write_atomic(&self.config_path(), text.as_bytes(), 0o600)
    }
}

/// FNV-1a, two 64-bit lanes with different offsets: hand-written so the installation value never
/// changes with the Rust version (std's hashers make no such promise). Not cryptographic: it only
/// has to tell installations apart, not hide them.
struct Fnv128(u64, u64);

impl Default for Fnv128 {
    fn default() -> Fnv128 {
        Fnv128(0xcbf2_9ce4_8422_2325, 0x6c62_272e_07bb_0142)
    }
}

impl Fnv128 {
    fn write(&mut self, bytes: &[u8]) {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(PRIME);
            self.1 = (self.1 ^ u64::from(b.rotate_left(3))).wrapping_mul(PRIME);
        }
    }

    fn hex(&self) -> String {
        format!("{:016x}{:016x}", self.0, self.1)
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

use stored::StoredConfig;

/// The stored Config's file format, in its own module because nanoserde's derive expands
/// `Option` fields into code that clippy would write with `?` (not ours to change).
#[allow(clippy::question_mark)]
mod stored {
    use autofact_fbs::{Config, Periods};
    use nanoserde::{DeJson, SerJson};

    /// `Config` mirrored for nanoserde; the protocol crate stays free of serde derives. Every field
    /// is optional so a file written by another release still loads (missing -> the protocol's
    /// default); keys this release does not know are skipped by nanoserde.
    #[derive(SerJson, DeJson)]
    pub struct StoredConfig {
        cpu_ms: Option<u32>,
        kernel_ms: Option<u32>,
        mem_ms: Option<u32>,
        swap_ms: Option<u32>,
        system_ms: Option<u32>,
        net_ms: Option<u32>,
        diskio_ms: Option<u32>,
        disk_ms: Option<u32>,
        temp_ms: Option<u32>,
        health_ms: Option<u32>,
        push_interval_ms: Option<u32>,
        ping_interval_ms: Option<u32>,
        buffer_cap_bytes: Option<u64>,
        give_up_secs: Option<u32>,
        max_message_bytes: Option<u32>,
        processes_ms: Option<u32>,
    }

    impl From<Config> for StoredConfig {
        fn from(c: Config) -> StoredConfig {
            let p = c.periods;
            StoredConfig {
                cpu_ms: Some(p.cpu_ms),
                kernel_ms: Some(p.kernel_ms),
                mem_ms: Some(p.mem_ms),
                swap_ms: Some(p.swap_ms),
                system_ms: Some(p.system_ms),
                net_ms: Some(p.net_ms),
                diskio_ms: Some(p.diskio_ms),
                disk_ms: Some(p.disk_ms),
                temp_ms: Some(p.temp_ms),
                health_ms: Some(p.health_ms),
                push_interval_ms: Some(c.push_interval_ms),
                ping_interval_ms: Some(c.ping_interval_ms),
                buffer_cap_bytes: Some(c.buffer_cap_bytes),
                give_up_secs: Some(c.give_up_secs),
                max_message_bytes: Some(c.max_message_bytes),
                processes_ms: Some(p.processes_ms),
            }
        }
    }

    impl From<StoredConfig> for Config {
        fn from(s: StoredConfig) -> Config {
            let d = Config::default();
            let p = d.periods;
            Config {
                periods: Periods {
                    cpu_ms: s.cpu_ms.unwrap_or(p.cpu_ms),
                    kernel_ms: s.kernel_ms.unwrap_or(p.kernel_ms),
                    mem_ms: s.mem_ms.unwrap_or(p.mem_ms),
                    swap_ms: s.swap_ms.unwrap_or(p.swap_ms),
                    system_ms: s.system_ms.unwrap_or(p.system_ms),
                    net_ms: s.net_ms.unwrap_or(p.net_ms),
                    diskio_ms: s.diskio_ms.unwrap_or(p.diskio_ms),
                    disk_ms: s.disk_ms.unwrap_or(p.disk_ms),
                    temp_ms: s.temp_ms.unwrap_or(p.temp_ms),
                    health_ms: s.health_ms.unwrap_or(p.health_ms),
                    processes_ms: s.processes_ms.unwrap_or(p.processes_ms),
                },
                push_interval_ms: s.push_interval_ms.unwrap_or(d.push_interval_ms),
                ping_interval_ms: s.ping_interval_ms.unwrap_or(d.ping_interval_ms),
                buffer_cap_bytes: s.buffer_cap_bytes.unwrap_or(d.buffer_cap_bytes),
                give_up_secs: s.give_up_secs.unwrap_or(d.give_up_secs),
                max_message_bytes: s.max_message_bytes.unwrap_or(d.max_message_bytes),
            }
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
        assert_eq!(s.identity()?.0, None);
        let id = Identity {
            client_id: "0123456789abcdef0123456789abcdef".into(),
            secret: "s3cret".into(),
        };
        s.save_identity(&id)?;
        assert_eq!(s.identity()?.0, Some(id));
        let mode = fs::metadata(dir.join("identity.json"))
            .map_err(err(&dir, "stat"))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        s.forget_identity()?;
        assert_eq!(s.identity()?.0, None);
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn config_round_trip() -> Result<(), StateError> {
        let dir = tmp("cfg");
        let s = StateDir::open(&dir)?;
        assert_eq!(s.config()?.0, None);
        let mut c = Config::default();
        c.periods.temp_ms = 0;
        c.periods.cpu_ms = 1234;
        c.buffer_cap_bytes = u64::MAX;
        s.save_config(&c)?;
        assert_eq!(s.config()?.0, Some(c));
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn damaged_files_are_moved_aside_and_ignored() -> Result<(), StateError> {
        let dir = tmp("bad");
        let s = StateDir::open(&dir)?;
        for (file, text) in [
            ("identity.json", "{\"client_id\": "),
            ("identity.json", ""),
            ("identity.json", "{\"client_id\": \"\", \"secret\": \"\"}"),
            ("config.json", "[1, 2]"),
            ("config.json", ""),
        ] {
            fs::write(dir.join(file), text).map_err(err(&dir, "write"))?;
            let said = if file == "identity.json" {
                let (id, said) = s.identity()?;
                assert_eq!(id, None);
                said
            } else {
                let (c, said) = s.config()?;
                assert_eq!(c, None);
                said
            };
            let said = said.unwrap_or_default();
            assert!(said.contains(file) && said.contains("moved"), "{said}");
            assert!(!dir.join(file).exists(), "{file} moved aside");
        }
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn installation_is_stable_and_tells_copies_apart() -> Result<(), StateError> {
        let dir = tmp("inst");
        let s = StateDir::open(&dir)?;
        let here = vec!["machine-a".to_string()];
        let first = s.installation(&here);
        assert_eq!(first.len(), 32);
        assert_eq!(s.installation(&here), first, "same across restarts");
        // The same data dir (nonce file included) on another board, or at another path.
        assert_ne!(s.installation(&["machine-b".to_string()]), first);
        let copy = tmp("inst-copy");
        let c = StateDir::open(&copy)?;
        fs::copy(dir.join("installation"), copy.join("installation"))
            .map_err(err(&copy, "copy"))?;
        assert_ne!(c.installation(&here), first);
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::remove_dir_all(&copy);
        Ok(())
    }

    #[test]
    fn a_config_of_another_release_loads() -> Result<(), StateError> {
        let dir = tmp("compat");
        let s = StateDir::open(&dir)?;
        // The first release's file (captured, tests/fixtures/release-0.1-datadir), then one of a
        // later release with a field this one does not know and one it lacks.
        let old = include_str!("../../tests/fixtures/release-0.1-datadir/config.json");
        fs::write(dir.join("config.json"), old).map_err(err(&dir, "write"))?;
        let c = s.config()?.0.unwrap_or_default();
        assert_eq!(c.periods.cpu_ms, 1000);
        assert_eq!(c.push_interval_ms, 10_000);
        assert_eq!(c.max_message_bytes, 0, "missing: the protocol default");
        let newer = r#"{"cpu_ms":500,"push_interval_ms":10000,"future_knob":{"a":[1,2]},"give_up_secs":60}"#;
        fs::write(dir.join("config.json"), newer).map_err(err(&dir, "write"))?;
        let c = s.config()?.0.unwrap_or_default();
        assert_eq!((c.periods.cpu_ms, c.give_up_secs), (500, 60));
        assert_eq!(c.periods.mem_ms, Config::default().periods.mem_ms);
        // The first release's identity file.
        let old = include_str!("../../tests/fixtures/release-0.1-datadir/identity.json");
        fs::write(dir.join("identity.json"), old).map_err(err(&dir, "write"))?;
        let id = s.identity()?.0.map(|i| i.client_id).unwrap_or_default();
        assert_eq!(id, "0123456789abcdef0123456789abcdef");
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }
}
