//! The client inventory: one fjall keyspace `clients`, key = client id (32 hex digits), value =
//! the record as nanoserde JSON. Kept in memory too (a fleet is thousands of small records) so
//! reads never touch disk; every change is written through.
//!
//! Durability: an enrollment is fsync'd before the Welcome goes out (a lost record would lock
//! the client out for good). Other updates (last seen, last acked seq) go to fjall's journal
//! without an fsync; losing the last few after a crash only means a batch may be written twice,
//! which the design allows.

// nanoserde's DeJson derive expands to `match .. { Some(t) => t, None => return .. }`.
#![allow(clippy::question_mark)]

use crate::error::Error;
use nanoserde::{DeJson, SerJson};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What the factory knows about one client.
#[derive(Debug, Clone, Default, PartialEq, SerJson, DeJson)]
#[nserde(default)]
pub struct ClientRecord {
    /// 32 hex digits.
    pub id: String,
    /// Display name.
    pub hostname: String,
    /// Region tag.
    pub region: String,
    /// Zone tag.
    pub zone: String,
    /// uname -m.
    pub arch: String,
    /// uname -r.
    pub kernel: String,
    /// OS pretty name.
    pub os: String,
    /// CPU model / board.
    pub cpu_model: String,
    /// Total memory, bytes.
    pub mem_total: u64,
    /// The agent's version.
    pub agent_version: String,
    /// Enrollment time, unix seconds.
    pub first_seen: u64,
    /// Last Hello or batch, unix seconds.
    pub last_seen: u64,
    /// Peer address of the last connection.
    pub last_address: String,
    /// Highest acknowledged batch seq.
    pub last_acked_seq: u64,
    /// `buffered_batches` from the client's latest health fact, if any.
    pub backlog: Option<u64>,
    /// Hex SHA-256 of the client's secret.
    pub secret_hash: String,
}

/// The inventory store.
pub struct Inventory {
    path: PathBuf,
    db: fjall::Database,
    clients: fjall::Keyspace,
    cache: Mutex<HashMap<String, ClientRecord>>,
}

impl Inventory {
    /// Opens (or creates) the store under `dir` and loads every record.
    pub fn open(dir: &Path) -> Result<Inventory, Error> {
        let path = dir.join("inventory");
        let store = |source| Error::Store {
            path: path.clone(),
            source,
        };
        let db = fjall::Database::builder(&path).open().map_err(store)?;
        let clients = db
            .keyspace("clients", fjall::KeyspaceCreateOptions::default)
            .map_err(store)?;
        let mut cache = HashMap::new();
        for guard in clients.iter() {
            let (k, v) = guard.into_inner().map_err(store)?;
            let id = String::from_utf8_lossy(&k).into_owned();
            match decode(&id, &v) {
                Ok(rec) => {
                    cache.insert(id, rec);
                }
                // One unreadable record must not take the whole factory down; that client
                // will be refused as unknown and can be re-enrolled.
                Err(e) => crate::warn!("skipping {e}"),
            }
        }
        Ok(Inventory {
            path,
            db,
            clients,
            cache: Mutex::new(cache),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, ClientRecord>> {
        // A panic while holding the lock cannot leave a record half-written (we only insert
        // whole records), so a poisoned lock is still safe to use.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn store_err(&self, source: fjall::Error) -> Error {
        Error::Store {
            path: self.path.clone(),
            source,
        }
    }

    fn write(&self, rec: &ClientRecord) -> Result<(), Error> {
        self.clients
            .insert(rec.id.as_bytes(), rec.serialize_json().into_bytes())
            .map_err(|e| self.store_err(e))
    }

    /// The record of `id`.
    pub fn get(&self, id: &str) -> Option<ClientRecord> {
        self.cache().get(id).cloned()
    }

    /// Every record, sorted by hostname then id.
    pub fn list(&self) -> Vec<ClientRecord> {
        let mut v: Vec<ClientRecord> = self.cache().values().cloned().collect();
        v.sort_by(|a, b| (&a.hostname, &a.id).cmp(&(&b.hostname, &b.id)));
        v
    }

    /// Number of known clients.
    pub fn len(&self) -> usize {
        self.cache().len()
    }

    /// True when no client is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores a new client and fsyncs; blocking (call off the executor).
    pub fn enroll(&self, rec: ClientRecord) -> Result<(), Error> {
        self.write(&rec)?;
        self.db
            .persist(fjall::PersistMode::SyncAll)
            .map_err(|e| self.store_err(e))?;
        self.cache().insert(rec.id.clone(), rec);
        Ok(())
    }

    /// Applies `f` to the record of `id` and writes it through; returns the updated record.
    pub fn update(
        &self,
        id: &str,
        f: impl FnOnce(&mut ClientRecord),
    ) -> Result<Option<ClientRecord>, Error> {
        // The write happens under the lock so two updates of one client reach fjall in the
        // order they were made (last_acked_seq must never go backwards on disk).
        let mut cache = self.cache();
        let Some(rec) = cache.get_mut(id) else {
            return Ok(None);
        };
        f(rec);
        let rec = rec.clone();
        self.write(&rec)?;
        Ok(Some(rec))
    }

    /// Flushes the journal to disk (at shutdown).
    pub fn persist(&self) -> Result<(), Error> {
        self.db
            .persist(fjall::PersistMode::SyncAll)
            .map_err(|e| self.store_err(e))
    }
}

fn decode(id: &str, bytes: &[u8]) -> Result<ClientRecord, Error> {
    let bad = |detail: String| Error::Record {
        id: id.to_string(),
        detail,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    let rec = ClientRecord::deserialize_json(text).map_err(|e| bad(format!("{e:?}")))?;
    if rec.id != id {
        return Err(bad(format!("record names another id {:?}", rec.id)));
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "autofactory-inv-{name}-{}-{}",
            std::process::id(),
            crate::ids::new_client_id().unwrap_or_default()
        ));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn records_survive_reopen() {
        let dir = temp_dir("reopen");
        let rec = ClientRecord {
            id: "0123456789abcdef0123456789abcdef".into(),
            hostname: "pi-1 \"kitchen\"".into(),
            first_seen: 5,
            secret_hash: crate::ids::secret_hash("s"),
            ..Default::default()
        };
        {
            let inv = Inventory::open(&dir).expect("open");
            inv.enroll(rec.clone()).expect("enroll");
            inv.update(&rec.id, |r| {
                r.last_acked_seq = 42;
                r.backlog = Some(3);
            })
            .expect("update");
            assert!(inv
                .update("ffffffffffffffffffffffffffffffff", |_| {})
                .expect("update")
                .is_none());
            inv.persist().expect("persist");
        }
        let inv = Inventory::open(&dir).expect("reopen");
        let got = inv.get(&rec.id).expect("record kept");
        assert_eq!(got.hostname, rec.hostname);
        assert_eq!(got.last_acked_seq, 42);
        assert_eq!(got.backlog, Some(3));
        assert_eq!(inv.len(), 1);
        drop(inv);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_record_is_an_error_naming_the_id() {
        let e = decode("abc", b"{\"id\": 5").expect_err("corrupt");
        assert!(e.to_string().contains("inventory record abc"), "{e}");
        let e = decode("abc", b"{\"id\": \"other\"}").expect_err("mismatch");
        assert!(e.to_string().contains("another id"), "{e}");
        assert!(decode("abc", &[0xff, 0xfe]).is_err());
    }
}
