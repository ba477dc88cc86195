//! The factory's configuration: the JSON file (serde_json, one pass), its validation (unknown
//! keys, wrong types and bad values are errors that name the key path and the line), safe defaults when there is no file, and the effective
//! agent [`Config`] of a client: defaults <- region override <- client override.
//!
//! ```json
//! {
//!   "listen": "0.0.0.0:8675", "admin_listen": "127.0.0.1:8676",
//!   "data_dir": "/var/lib/autofactory", "token": "...", "fleet_key": "...",
//!   "tls": { "cert_file": "/etc/autofactory/factory.pem", "key_file": "/etc/autofactory/factory.key" },
//!   "require_tls": false,
//!   "sink": { ... },
//!   "defaults": { "periods": { "cpu_ms": 10000 }, "push_interval_ms": 10000 },
//!   "regions": { "eu": { "push_interval_ms": 30000 } },
//!   "clients": { "<32 hex id>": { "periods": { "temp_ms": 0 } } },
//!   "limits": { "handshake_timeout_ms": 10000, "max_message_bytes": 4194304,
//!               "max_connections": 20000, "idle_timeout_ms": 90000, "max_inflight_batches": 4 }
//! }
//! ```

use crate::error::Error;
use crate::sink::SinkConfig;
use autofact_fbs::{Config, Periods};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default websocket listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8675";
/// Default admin listen address (loopback: the admin API has no authentication).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8676";

/// A partial agent Config: only the fields present replace the lower layer.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigOverride {
    /// Per-kind collection periods (each optional).
    #[serde(deserialize_with = "object")]
    pub periods: Option<PeriodsOverride>,
    /// See [`Config::push_interval_ms`].
    pub push_interval_ms: Option<u32>,
    /// See [`Config::ping_interval_ms`].
    pub ping_interval_ms: Option<u32>,
    /// See [`Config::buffer_cap_bytes`].
    pub buffer_cap_bytes: Option<u64>,
    /// See [`Config::give_up_secs`].
    pub give_up_secs: Option<u32>,
}

/// Partial [`Periods`]; 0 disables a kind.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct PeriodsOverride {
    pub cpu_ms: Option<u32>,
    pub kernel_ms: Option<u32>,
    pub mem_ms: Option<u32>,
    pub swap_ms: Option<u32>,
    pub system_ms: Option<u32>,
    pub net_ms: Option<u32>,
    pub diskio_ms: Option<u32>,
    pub disk_ms: Option<u32>,
    pub temp_ms: Option<u32>,
    pub health_ms: Option<u32>,
    pub processes_ms: Option<u32>,
}

impl PeriodsOverride {
    /// The overrides in [`autofact_fbs::FACT_KINDS`] order (the one place a kind's index meets
    /// its field here; `the_period_keys_are_the_fact_kinds` checks it against the table).
    fn slots(&self) -> [Option<u32>; 11] {
        [
            self.cpu_ms,
            self.kernel_ms,
            self.mem_ms,
            self.swap_ms,
            self.system_ms,
            self.net_ms,
            self.diskio_ms,
            self.disk_ms,
            self.temp_ms,
            self.health_ms,
            self.processes_ms,
        ]
    }

    fn fields(&self) -> [(&'static str, Option<u32>); 11] {
        let slots = self.slots();
        std::array::from_fn(|i| (autofact_fbs::FACT_KINDS[i].period_key, slots[i]))
    }

    fn apply(&self, p: &mut Periods) {
        for (dst, v) in p.slots_mut().into_iter().zip(self.slots()) {
            if let Some(v) = v {
                *dst = v;
            }
        }
    }
}

impl ConfigOverride {
    /// Replaces the fields of `c` that this override sets.
    pub fn apply(&self, c: &mut Config) {
        if let Some(p) = &self.periods {
            p.apply(&mut c.periods);
        }
        if let Some(v) = self.push_interval_ms {
            c.push_interval_ms = v;
        }
        if let Some(v) = self.ping_interval_ms {
            c.ping_interval_ms = v;
        }
        if let Some(v) = self.buffer_cap_bytes {
            c.buffer_cap_bytes = v;
        }
        if let Some(v) = self.give_up_secs {
            c.give_up_secs = v;
        }
    }

    /// Checks every value present; `at` is the key path used in the message.
    fn validate(&self, at: &str) -> Result<(), String> {
        // Periods below 100 ms would make an agent on a small board spend its time collecting.
        if let Some(p) = &self.periods {
            for (name, v) in p.fields() {
                if let Some(v) = v {
                    if v != 0 && v < 100 {
                        return Err(format!(
                            "{at}.periods.{name}: must be 0 (off) or at least 100 ms, got {v}"
                        ));
                    }
                }
            }
        }
        if let Some(v) = self.push_interval_ms {
            if v < 100 {
                return Err(format!(
                    "{at}.push_interval_ms: must be at least 100 ms, got {v}"
                ));
            }
        }
        if let Some(v) = self.ping_interval_ms {
            if v < 100 {
                return Err(format!(
                    "{at}.ping_interval_ms: must be at least 100 ms, got {v}"
                ));
            }
        }
        if let Some(v) = self.buffer_cap_bytes {
            if v < 64 * 1024 {
                return Err(format!(
                    "{at}.buffer_cap_bytes: must be at least 65536 bytes, got {v}"
                ));
            }
        }
        Ok(())
    }
}

/// Listener limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A connection that has not sent Hello within this is dropped.
    pub handshake_timeout: Duration,
    /// Largest websocket message (and frame) accepted.
    pub max_message_bytes: usize,
    /// Open connections past this are refused with Reject{Busy}.
    pub max_connections: usize,
    /// A connection silent for this long is dropped; the factory pings at half of it.
    pub idle_timeout: Duration,
    /// Batches of one client being written to the sink at once; past it the factory stops
    /// reading from that client, so a slow sink bounds memory instead of growing it.
    pub max_inflight_batches: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            max_message_bytes: 4 * 1024 * 1024,
            max_connections: 20_000,
            idle_timeout: Duration::from_secs(90),
            max_inflight_batches: 4,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLimits {
    handshake_timeout_ms: Option<u64>,
    max_message_bytes: Option<u64>,
    max_connections: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_inflight_batches: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawFile {
    listen: Option<String>,
    admin_listen: Option<String>,
    data_dir: Option<String>,
    token: Option<String>,
    fleet_key: Option<String>,
    #[serde(deserialize_with = "object")]
    sink: Option<SinkConfig>,
    #[serde(deserialize_with = "object")]
    defaults: Option<ConfigOverride>,
    #[serde(deserialize_with = "objects")]
    regions: Option<BTreeMap<String, ConfigOverride>>,
    #[serde(deserialize_with = "objects")]
    clients: Option<BTreeMap<String, ConfigOverride>>,
    #[serde(deserialize_with = "object")]
    limits: Option<RawLimits>,
    #[serde(deserialize_with = "object")]
    tls: Option<RawTls>,
    require_tls: Option<bool>,
    #[serde(deserialize_with = "object")]
    clock: Option<RawClock>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawClock {
    threshold_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
}

/// The `tls` section: the agent listener's certificate chain and private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The certificate, then any intermediates (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// The validated factory configuration.
#[derive(Debug, Clone)]
pub struct FactoryConfig {
    /// Websocket listen address.
    pub listen: SocketAddr,
    /// Admin listen address; `None` when disabled with `"admin_listen": ""`.
    pub admin_listen: Option<SocketAddr>,
    /// Inventory, generated token and file sink live here.
    pub data_dir: PathBuf,
    /// The enrollment token; `None` = use (or generate) the one stored in the data dir.
    pub token: Option<String>,
    /// Shared by every factory of a fleet: client secrets are derived from it (see
    /// [`crate::ids::fleet_secret`]). `None`: random secrets, known only to this factory.
    pub fleet_key: Option<String>,
    /// Sink settings.
    pub sink: SinkConfig,
    /// The sink section as written (secrets masked), for the startup line; empty = default sink.
    pub sink_text: String,
    /// The default agent Config (built-in defaults with the file's `defaults` applied).
    pub defaults: Config,
    /// Overrides per region.
    pub regions: BTreeMap<String, ConfigOverride>,
    /// Overrides per client id.
    pub clients: BTreeMap<String, ConfigOverride>,
    /// Listener limits.
    pub limits: Limits,
    /// TLS on the agent listener; `None` = plain websockets only.
    pub tls: Option<TlsConfig>,
    /// With `tls`: refuse plain agents (Reject{TlsRequired}); without it they are still served
    /// on the same port, so a fleet can move to wss:// one agent at a time.
    pub require_tls: bool,
    /// When agent clocks count as wrong (`clock.threshold_ms`): see [`crate::clock`].
    pub clock: crate::clock::ClockRules,
}

/// The data directory when none is configured: systemd's `$STATE_DIRECTORY` (first entry),
/// else `./autofactory-data`.
pub fn default_data_dir() -> PathBuf {
    match std::env::var("STATE_DIRECTORY") {
        Ok(v) if !v.is_empty() => PathBuf::from(v.split(':').next().unwrap_or(&v)),
        _ => PathBuf::from("autofactory-data"),
    }
}

impl Default for FactoryConfig {
    fn default() -> FactoryConfig {
        FactoryConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8675)),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8676))),
            data_dir: default_data_dir(),
            token: None,
            fleet_key: None,
            sink: SinkConfig::default(),
            sink_text: String::new(),
            defaults: Config::default(),
            regions: BTreeMap::new(),
            clients: BTreeMap::new(),
            limits: Limits::default(),
            tls: None,
            require_tls: false,
            clock: crate::clock::ClockRules::default(),
        }
    }
}

impl FactoryConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<FactoryConfig, Error> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(&origin, format!("cannot read: {e}")))?;
        FactoryConfig::parse(&text, &origin)
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<FactoryConfig, Error> {
        let bad = |d: String| Error::config(origin, d);
        // One pass: syntax, unknown keys (deny_unknown_fields at every level, the sink's too)
        // and wrong types, each with the key path and serde_json's line and column.
        let mut de = serde_json::Deserializer::from_str(text);
        let raw: Section<RawFile> = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let at = e.path().to_string();
            let e = e.into_inner();
            if at == "." {
                bad(e.to_string())
            } else {
                bad(format!("{at}: {e}"))
            }
        })?;
        de.end().map_err(|e| bad(e.to_string()))?;
        let raw = raw.0;
        let mut cfg = FactoryConfig::default();
        if let Some(s) = raw.listen {
            cfg.listen = s
                .parse()
                .map_err(|_| bad(format!("listen: not an address:port: {s:?}")))?;
        }
        if let Some(s) = raw.admin_listen {
            cfg.admin_listen = if s.is_empty() {
                None
            } else {
                Some(
                    s.parse()
                        .map_err(|_| bad(format!("admin_listen: not an address:port: {s:?}")))?,
                )
            };
        }
        if let Some(s) = raw.data_dir {
            if s.is_empty() {
                return Err(bad("data_dir: must not be empty".into()));
            }
            cfg.data_dir = PathBuf::from(s);
        }
        if let Some(t) = raw.token {
            // A short token can be guessed; anyone with it can enroll and write facts.
            if t.len() < 16 {
                return Err(bad(format!(
                    "token: must be at least 16 characters, got {}",
                    t.len()
                )));
            }
            cfg.token = Some(t);
        }
        if let Some(k) = raw.fleet_key {
            // Whoever has the fleet key can compute every client's secret.
            if k.len() < crate::ids::MIN_FLEET_KEY_LEN {
                return Err(bad(format!(
                    "fleet_key: must be at least {} characters, got {}",
                    crate::ids::MIN_FLEET_KEY_LEN,
                    k.len()
                )));
            }
            cfg.fleet_key = Some(k);
        }
        if let Some(s) = raw.sink {
            cfg.sink = s;
            // For the startup line only: the section as written (keys sorted), secrets masked.
            // The text has just parsed, so this second read cannot fail.
            if let Ok(serde_json::Value::Object(mut m)) = serde_json::from_str(text) {
                if let Some(v) = m.remove("sink") {
                    cfg.sink_text = masked(&v);
                }
            }
        }
        if let Some(d) = raw.defaults {
            d.validate("defaults").map_err(bad)?;
            d.apply(&mut cfg.defaults);
        }
        for (name, o) in raw.regions.unwrap_or_default() {
            o.validate(&format!("regions.{name}")).map_err(bad)?;
            cfg.regions.insert(name, o);
        }
        for (id, o) in raw.clients.unwrap_or_default() {
            if !crate::ids::is_client_id(&id) {
                return Err(bad(format!(
                    "clients.{id}: not a client id (32 lowercase hex digits)"
                )));
            }
            o.validate(&format!("clients.{id}")).map_err(bad)?;
            cfg.clients.insert(id, o);
        }
        if let Some(l) = raw.limits {
            let pos =
                |name: &str, v: Option<u64>, min: u64, max: u64| -> Result<Option<u64>, Error> {
                    match v {
                        Some(v) if v < min || v > max => Err(bad(format!(
                            "limits.{name}: must be between {min} and {max}, got {v}"
                        ))),
                        v => Ok(v),
                    }
                };
            let day = 86_400_000;
            if let Some(v) = pos("handshake_timeout_ms", l.handshake_timeout_ms, 1, day)? {
                cfg.limits.handshake_timeout = Duration::from_millis(v);
            }
            if let Some(v) = pos("max_message_bytes", l.max_message_bytes, 1024, 1 << 30)? {
                cfg.limits.max_message_bytes = v as usize;
            }
            if let Some(v) = pos("max_connections", l.max_connections, 1, 10_000_000)? {
                cfg.limits.max_connections = v as usize;
            }
            if let Some(v) = pos("idle_timeout_ms", l.idle_timeout_ms, 100, day)? {
                cfg.limits.idle_timeout = Duration::from_millis(v);
            }
            if let Some(v) = pos("max_inflight_batches", l.max_inflight_batches, 1, 1024)? {
                cfg.limits.max_inflight_batches = v as usize;
            }
        }
        if let Some(t) = raw.tls {
            let file = |name: &str, v: Option<String>| match v {
                Some(v) if !v.trim().is_empty() => Ok(PathBuf::from(v)),
                _ => Err(bad(format!(
                    "tls.{name}: missing (a PEM file; both cert_file and key_file are needed)"
                ))),
            };
            cfg.tls = Some(TlsConfig {
                cert_file: file("cert_file", t.cert_file)?,
                key_file: file("key_file", t.key_file)?,
            });
        }
        if let Some(r) = raw.require_tls {
            if r && cfg.tls.is_none() {
                return Err(bad(
                    "require_tls: needs a tls section (cert_file, key_file) to be served".into(),
                ));
            }
            cfg.require_tls = r;
        }
        if let Some(v) = raw.clock.and_then(|c| c.threshold_ms) {
            if !(1..=86_400_000).contains(&v) {
                return Err(bad(format!(
                    "clock.threshold_ms: must be between 1 and 86400000, got {v}"
                )));
            }
            cfg.clock.threshold_ns = v as i64 * 1_000_000;
        }
        Ok(cfg)
    }

    /// The effective agent Config of a client: defaults <- region <- client.
    pub fn effective(&self, region: &str, client_id: &str) -> Config {
        let mut c = self.defaults;
        if let Some(o) = self.regions.get(region) {
            o.apply(&mut c);
        }
        if let Some(o) = self.clients.get(client_id) {
            o.apply(&mut c);
        }
        // Not a per-client setting: the agent must know the limit it is held to, so it never
        // builds a batch the factory refuses (issue 13, no poison batch).
        c.max_message_bytes = u32::try_from(self.limits.max_message_bytes).unwrap_or(u32::MAX);
        c
    }
}

/// A config section: a JSON object only. serde's derive also reads a struct from an array, by
/// position, so `"limits": [5]` would silently set the first limit; sections go through this.
struct Section<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Section<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Section<T>, D::Error> {
        struct Only<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Only<T> {
            type Value = Section<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Section<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Section)
            }
        }
        d.deserialize_map(Only(std::marker::PhantomData))
    }
}

/// An optional section (`null` = absent, as an omitted key).
fn object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Section<T>>::deserialize(d)?.map(|s| s.0))
}

/// An optional map of sections (`regions`, `clients`).
fn objects<'de, D, T>(d: D) -> Result<Option<BTreeMap<String, T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let m = Option::<BTreeMap<String, Section<T>>>::deserialize(d)?;
    Ok(m.map(|m| m.into_iter().map(|(k, v)| (k, v.0)).collect()))
}

/// Compact JSON text with secret-looking values replaced by "***".
fn masked(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| {
                    let secret = ["password", "token", "secret"]
                        .iter()
                        .any(|s| k.to_ascii_lowercase().contains(s));
                    if secret {
                        format!("{k:?}:\"***\"")
                    } else {
                        format!("{k:?}:{}", masked(v))
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        ),
        serde_json::Value::Array(a) => {
            format!("[{}]", a.iter().map(masked).collect::<Vec<_>>().join(","))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    /// The factory's `periods` keys, its override struct (what the JSON derive reads) and the
    /// agent's Config all come from one table: each key of `FACT_KINDS` is accepted (unknown
    /// keys are refused), read into the right field, and applied to the right `Periods` slot.
    #[test]
    fn the_period_keys_are_the_fact_kinds() {
        let table: Vec<&str> = autofact_fbs::FACT_KINDS
            .iter()
            .map(|k| k.period_key)
            .collect();
        assert_eq!(table.len(), 11);
        for (i, key) in table.iter().enumerate() {
            let text = format!("{{\"{key}\": {}}}", 1000 + i);
            let o: PeriodsOverride =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let set: Vec<usize> = (0..11).filter(|j| o.slots()[*j].is_some()).collect();
            assert_eq!(set, vec![i], "{key} read into slot {set:?}");
            assert_eq!(o.fields()[i], (*key, Some(1000 + i as u32)));
            let mut p = Periods::default();
            o.apply(&mut p);
            let mut want = [0u32; 11];
            want[i] = 1000 + i as u32;
            assert_eq!(p.slots(), want, "{key} applied to the wrong period");
        }
    }

    use super::*;

    fn err(text: &str) -> String {
        match FactoryConfig::parse(text, "test.json") {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn empty_object_gives_safe_defaults() {
        let c = FactoryConfig::parse("{}", "t").expect("valid");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(
            c.admin_listen.map(|a| a.to_string()).as_deref(),
            Some(DEFAULT_ADMIN_LISTEN)
        );
        assert_eq!(c.token, None);
        assert_eq!(c.defaults, Config::default());
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn layers_apply_in_order() {
        let id = "0123456789abcdef0123456789abcdef";
        let text = format!(
            r#"{{
              "defaults": {{"push_interval_ms": 5000, "periods": {{"cpu_ms": 2000}}}},
              "regions": {{"eu": {{"push_interval_ms": 7000, "periods": {{"mem_ms": 3000}}}}}},
              "clients": {{"{id}": {{"periods": {{"mem_ms": 0, "temp_ms": 60000}}}}}}
            }}"#
        );
        let c = FactoryConfig::parse(&text, "t").expect("valid");
        let plain = c.effective("", "ffffffffffffffffffffffffffffffff");
        assert_eq!(plain.push_interval_ms, 5000);
        assert_eq!(plain.periods.cpu_ms, 2000);
        assert_eq!(plain.periods.mem_ms, 10_000);
        let eu = c.effective("eu", "ffffffffffffffffffffffffffffffff");
        assert_eq!(eu.push_interval_ms, 7000);
        assert_eq!(eu.periods.mem_ms, 3000);
        let mine = c.effective("eu", id);
        assert_eq!(mine.push_interval_ms, 7000);
        assert_eq!(mine.periods.cpu_ms, 2000);
        assert_eq!(mine.periods.mem_ms, 0);
        assert_eq!(mine.periods.temp_ms, 60000);
        assert_eq!(mine.ping_interval_ms, Config::default().ping_interval_ms);
        // Every client is told the factory's message size limit (issue 13).
        assert_eq!(plain.max_message_bytes, 4 * 1024 * 1024);
        let small = FactoryConfig::parse(r#"{"limits": {"max_message_bytes": 65536}}"#, "t")
            .expect("valid");
        assert_eq!(small.effective("", id).max_message_bytes, 65536);
    }

    #[test]
    fn unknown_keys_are_named() {
        let unknown = |text: &str, path: &str, key: &str| {
            let e = err(text);
            assert!(
                e.contains(&format!("{path}: unknown field `{key}`")) && e.contains("line 1"),
                "{text}: {e}"
            );
        };
        unknown(r#"{"listn": "0.0.0.0:1"}"#, "listn", "listn");
        unknown(
            r#"{"defaults": {"periods": {"cpu": 1000}}}"#,
            "defaults.periods.cpu",
            "cpu",
        );
        unknown(
            r#"{"regions": {"eu": {"push": 1}}}"#,
            "regions.eu.push",
            "push",
        );
        unknown(
            r#"{"limits": {"max_conn": 1}}"#,
            "limits.max_conn",
            "max_conn",
        );
        unknown(
            r#"{"sink": {"kind": "file", "urll": "x"}}"#,
            "sink.urll",
            "urll",
        );
        assert!(
            FactoryConfig::parse(r#"{"sink": {"kind": "file", "url": "http://x"}}"#, "t").is_ok()
        );
    }

    /// Issue 14: a misspelt nested key is one error naming the key path and its line (the
    /// sink's keys are flat: `linger_ms` sits directly under `sink`).
    #[test]
    fn an_unknown_nested_key_names_its_path_and_line() {
        let e = err("{\n  \"sink\": {\n    \"kind\": \"file\",\n    \"linger_msx\": 5\n  }\n}");
        assert!(e.contains("test.json"), "{e}");
        assert!(
            e.contains("sink.linger_msx: unknown field `linger_msx`"),
            "{e}"
        );
        assert!(e.contains("line 4"), "{e}");
        let e = err("{\"defaults\": {\n\"periods\": {\"cpu_msx\": 1000}}}");
        assert!(e.contains("defaults.periods.cpu_msx"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    /// Issue 14: a value of the wrong type is one error naming the key path, the type and the
    /// line.
    #[test]
    fn a_wrong_type_names_its_key_and_line() {
        let e = err("{\n\"limits\": {\"max_connections\": \"10\"}\n}");
        assert!(e.contains("test.json"), "{e}");
        assert!(
            e.contains("limits.max_connections: invalid type: string \"10\""),
            "{e}"
        );
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        assert!(err(r#"{"listen": "nowhere"}"#).contains("listen: not an address:port"));
        assert!(err(r#"{"token": "short"}"#).contains("token: must be at least 16"));
        assert!(err(r#"{"fleet_key": "short"}"#).contains("fleet_key: must be at least 32"));
        assert!(err(r#"{"clock": {"threshold_ms": 0}}"#).contains("clock.threshold_ms"));
        assert!(err(r#"{"clock": {"threshold": 5}}"#).contains("clock.threshold: unknown field"));
        let c = FactoryConfig::parse(r#"{"clock": {"threshold_ms": 500}}"#, "t").expect("valid");
        assert_eq!(c.clock.threshold_ns, 500_000_000);
        let key = "k".repeat(32);
        let c = FactoryConfig::parse(&format!(r#"{{"fleet_key": "{key}"}}"#), "t").expect("valid");
        assert_eq!(c.fleet_key.as_deref(), Some(key.as_str()));
        assert!(
            err(r#"{"defaults": {"push_interval_ms": 5}}"#).contains("defaults.push_interval_ms")
        );
        assert!(err(r#"{"regions": {"eu": {"periods": {"cpu_ms": 10}}}}"#)
            .contains("regions.eu.periods.cpu_ms"));
        assert!(err(r#"{"clients": {"bob": {}}}"#).contains("clients.bob: not a client id"));
        assert!(err(r#"{"limits": {"max_connections": 0}}"#).contains("limits.max_connections"));
        assert!(err(r#"{"listen": 5}"#)
            .contains("listen: invalid type: integer `5`, expected a string"));
        assert!(err(r#"{"defaults": {"push_interval_ms": -5}}"#)
            .contains("defaults.push_interval_ms: invalid value: integer `-5`, expected u32"));
        assert!(err(r#"{"regions": {"eu": {"periods": {"cpu_ms": "1s"}}}}"#)
            .contains("regions.eu.periods.cpu_ms: invalid type: string \"1s\""));
        assert!(err(r#"{"limits": {"max_connections": 1.5}}"#).contains("limits.max_connections"));
        assert!(
            err(r#"{"defaults": {"give_up_secs": 5000000000}}"#).contains("defaults.give_up_secs")
        );
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let e = err("{\n\"listen\": \"0.0.0.0:1\",\n}");
        assert!(e.contains("line 3"), "{e}");
        assert!(err("[1,2]").contains("invalid type: sequence, expected an object"));
        // serde's derive would read a struct from an array by position (`[5]` as the first
        // limit); every section must be an object.
        for (text, at) in [
            (r#"{"limits": [5]}"#, "limits: "),
            (r#"{"regions": {"eu": [5]}}"#, "regions.eu: "),
            (r#"{"defaults": {"periods": [5]}}"#, "defaults.periods: "),
            (r#"{"sink": ["file"]}"#, "sink: "),
        ] {
            let e = err(text);
            assert!(
                e.contains(&format!("{at}invalid type: sequence")),
                "{text}: {e}"
            );
        }
        assert!(err("{\"listen\":\"0.0.0.0:1\"} x").contains("trailing"));
        // A hostile file must not overflow the stack: every value has a type, so the first
        // bracket where a section or a scalar belongs is refused (and serde_json bounds nesting).
        let deep = format!("{{\"sink\": {{\"kind\": {}", "[".repeat(100_000));
        assert!(err(&deep).contains("sink.kind: invalid type: sequence"));
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../autofactory.example.json");
        let c = FactoryConfig::parse(text, "autofactory.example.json").expect("valid example");
        assert_eq!(c.effective("eu", "").push_interval_ms, 30_000);
        assert!(c.sink_text.contains("influxdb") && !c.sink_text.contains("change-me"));
        assert!(c.require_tls);
        assert_eq!(
            c.tls.map(|t| t.key_file),
            Some(PathBuf::from("/etc/autofactory/factory.key"))
        );
    }

    #[test]
    fn sink_text_masks_secrets() {
        let v = serde_json::from_str(r#"{"url":"http://x","password":"hunter2"}"#).expect("json");
        let s = masked(&v);
        assert!(s.contains("http://x") && !s.contains("hunter2"), "{s}");
    }
}
