//! The agent's own config file (`autofact run --config FILE`): where the factory is and how to
//! trust it (`ca_file`, `pin_sha256` for `wss://`), where to keep state, and the enrollment
//! credentials. Behaviour (periods, intervals, caps) is not here: the
//! factory pushes it.
//!
//! The file is JSON, read with nanoserde's tokenizer. The object is walked by hand instead of
//! derived so an unknown key is an error that names the key (the derive silently skips it, and a
//! typo like `"zome"` would then go unnoticed).

use nanoserde::{DeJson, DeJsonState, DeJsonTok};
use std::fmt;
use std::path::{Path, PathBuf};

/// The port used when the server address does not name one.
pub const DEFAULT_PORT: u16 = 8675;

/// A validated agent config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The factory's address.
    pub server: Server,
    /// Directory for identity, last Config and the disk buffer.
    pub data_dir: PathBuf,
    /// Enrollment token; used when the agent has no identity yet.
    pub token: String,
    /// Region tag, may be empty.
    pub region: String,
    /// Zone tag, may be empty.
    pub zone: String,
    /// Overrides the system hostname as the client's name.
    pub hostname: Option<String>,
}

/// Where the factory listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Request path, starting with `/`.
    pub path: String,
    /// `wss://`: what to trust (from the config's `ca_file` and `pin_sha256`); `None` = `ws://`.
    pub tls: Option<Trust>,
}

impl Server {
    /// Parses `host`, `host:port`, `[v6]:port`, `ws://host[:port][/path]` or the same with
    /// `wss://`; `trust` is required with `wss://` and refused otherwise.
    pub fn parse(s: &str, trust: Option<Trust>) -> Result<Server, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("is empty".into());
        }
        let (rest, tls) = if let Some(rest) = s.strip_prefix("ws://") {
            (rest, false)
        } else if let Some(rest) = s.strip_prefix("wss://") {
            (rest, true)
        } else if s.contains("://") {
            return Err(format!(
                "`{s}` has an unsupported scheme (use host:port, ws:// or wss://)"
            ));
        } else {
            (s, false)
        };
        let tls = match (tls, trust) {
            (true, _) if !cfg!(feature = "tls") => {
                return Err(format!(
                    "`{s}` is wss:// but this agent was built without TLS (the `tls` cargo feature)"
                ))
            }
            (true, None) => {
                return Err(format!(
                    "`{s}` is wss:// but `ca_file` is missing (the PEM file of the CA that signed \
                     the factory's certificate; the agent reads no system root store)"
                ))
            }
            // Refused rather than ignored: a user who set a CA believes the link is encrypted.
            (false, Some(_)) => {
                return Err(format!(
                    "`{s}` is not wss://, but `ca_file`/`pin_sha256` are set: use a wss:// URL \
                     (or remove them for a plain ws:// link)"
                ))
            }
            (true, Some(t)) => Some(t),
            (false, None) => None,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(|| format!("`{s}`: missing `]`"))?;
            let host = &v6[..end];
            match &v6[end + 1..] {
                "" => (host, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None => return Err(format!("`{s}`: junk after `]`")),
                },
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("`{s}` has no host"));
        }
        if host.chars().any(|c| c.is_whitespace() || c == '@') {
            return Err(format!("`{s}` has an invalid host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("`{s}` has an invalid port `{p}`")),
            },
        };
        Ok(Server {
            host: host.to_string(),
            port,
            path,
            tls,
        })
    }

    /// The websocket URL used in the handshake request.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            format!("{scheme}://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What the agent trusts for `wss://`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    /// PEM bundle of the CA certificates that may sign the factory's certificate.
    pub ca_file: PathBuf,
    /// SHA-256s of the factory certificate's SubjectPublicKeyInfo (DER) any one of which it
    /// must show; empty = not pinned. More than one lets a key rotation be rolled out.
    pub pin_sha256: Vec<[u8; 32]>,
}

/// Parses `pin_sha256`: 64 hex digits, or 44 characters of standard base64 (what
/// `openssl ... | openssl dgst -sha256 -binary | base64` prints).
pub fn parse_pin(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    let bytes = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string()))
            .collect::<Result<Vec<u8>, String>>()?
    } else {
        base64_decode(s).ok_or_else(|| {
            format!("`{s}` is neither 64 hex digits nor base64 of a SHA-256 (44 characters)")
        })?
    };
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("`{s}` is {} bytes, a SHA-256 is 32", b.len()))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.as_bytes();
    if s.is_empty() || s.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for chunk in s.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why the config file was refused; the message is one line meant for a human.
#[derive(Debug)]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// What is wrong, naming the key or the position.
    pub problem: String,
    /// The I/O error when the file could not be read.
    pub source: Option<std::io::Error>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config {}: {}", self.path.display(), self.problem)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

impl AgentConfig {
    /// Reads and validates the config file, and with `wss://` the CA file it names (a missing
    /// or empty CA file is a config error at start, not a retry loop).
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            problem: format!("cannot read: {e}"),
            source: Some(e),
        })?;
        let bad = |problem| ConfigError {
            path: path.to_path_buf(),
            problem,
            source: None,
        };
        let config = AgentConfig::parse(&text).map_err(bad)?;
        #[cfg(feature = "tls")]
        if let Some(t) = &config.server.tls {
            super::tls::load_roots(&t.ca_file).map_err(|e| bad(format!("`ca_file` {e}")))?;
        }
        Ok(config)
    }

    /// Parses and validates config text; the error is one line naming the problem.
    pub fn parse(text: &str) -> Result<AgentConfig, String> {
        let raw = parse_raw(text)?;
        // One pin, or several separated by commas (the current key and the next one).
        let pin_sha256 = match &raw.pin_sha256 {
            Some(p) => p
                .split(',')
                .map(|one| parse_pin(one).map_err(|e| format!("`pin_sha256` {e}")))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let trust = match (raw.ca_file, pin_sha256) {
            (Some(f), pin_sha256) if !f.trim().is_empty() => Some(Trust {
                ca_file: PathBuf::from(f),
                pin_sha256,
            }),
            (Some(_), _) => return Err("`ca_file` is empty".into()),
            (None, pins) if !pins.is_empty() => {
                return Err(
                    "`pin_sha256` needs `ca_file` and a wss:// server (the pin is checked \
                            on top of the CA, never instead of it)"
                        .into(),
                )
            }
            (None, _) => None,
        };
        let server = match raw.server {
            Some(s) => Server::parse(&s, trust).map_err(|e| format!("`server` {e}"))?,
            None => {
                return Err("missing key `server` (\"host:port\", a ws:// or a wss:// URL)".into())
            }
        };
        let data_dir = match raw.data_dir {
            Some(d) if !d.trim().is_empty() => PathBuf::from(d),
            Some(_) => return Err("`data_dir` is empty".into()),
            None => return Err("missing key `data_dir`".into()),
        };
        let hostname = match raw.hostname {
            Some(h) if h.trim().is_empty() => return Err("`hostname` is empty".into()),
            Some(h) if h.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                return Err(format!("`hostname` `{h}` contains whitespace"))
            }
            other => other,
        };
        for (key, v) in [("region", &raw.region), ("zone", &raw.zone)] {
            if let Some(v) = v {
                if v.chars().any(|c| c.is_control()) {
                    return Err(format!("`{key}` contains a control character"));
                }
            }
        }
        Ok(AgentConfig {
            server,
            data_dir,
            token: raw.token.unwrap_or_default(),
            region: raw.region.unwrap_or_default(),
            zone: raw.zone.unwrap_or_default(),
            hostname,
        })
    }
}

#[derive(Default)]
struct Raw {
    server: Option<String>,
    data_dir: Option<String>,
    token: Option<String>,
    region: Option<String>,
    zone: Option<String>,
    hostname: Option<String>,
    ca_file: Option<String>,
    pin_sha256: Option<String>,
}

const KEYS: &str = "server, data_dir, token, region, zone, hostname, ca_file, pin_sha256";

/// Walks one JSON object of string values.
fn parse_raw(text: &str) -> Result<Raw, String> {
    let mut s = DeJsonState::default();
    let mut i = text.chars();
    let at = |s: &DeJsonState| format!("line {} col {}", s.line + 1, s.col + 1);
    let json = |_: &DeJsonState, e: nanoserde::DeJsonErr| {
        format!(
            "bad JSON at line {} col {}: {:?}",
            e.line + 1,
            e.col + 1,
            e.msg
        )
    };
    s.next(&mut i);
    s.next_tok(&mut i).map_err(|e| json(&s, e))?;
    if s.tok != DeJsonTok::CurlyOpen {
        return Err(format!("bad JSON at {}: expected an object `{{`", at(&s)));
    }
    s.curly_open(&mut i).map_err(|e| json(&s, e))?;
    let mut raw = Raw::default();
    while s.tok != DeJsonTok::CurlyClose {
        if s.tok != DeJsonTok::Str {
            return Err(format!(
                "bad JSON at {}: expected a key string or `}}`",
                at(&s)
            ));
        }
        let key = String::de_json(&mut s, &mut i).map_err(|e| json(&s, e))?;
        s.colon(&mut i).map_err(|e| json(&s, e))?;
        let slot = match key.as_str() {
            "server" => &mut raw.server,
            "data_dir" => &mut raw.data_dir,
            "token" => &mut raw.token,
            "region" => &mut raw.region,
            "zone" => &mut raw.zone,
            "hostname" => &mut raw.hostname,
            "ca_file" => &mut raw.ca_file,
            "pin_sha256" => &mut raw.pin_sha256,
            _ => return Err(format!("unknown key `{key}` (known: {KEYS})")),
        };
        if s.tok == DeJsonTok::Eof {
            return Err(format!("bad JSON at {}: the file ends early", at(&s)));
        }
        if s.tok != DeJsonTok::Str {
            return Err(format!("`{key}` must be a string ({})", at(&s)));
        }
        if slot.is_some() {
            return Err(format!("key `{key}` appears twice"));
        }
        *slot = Some(String::de_json(&mut s, &mut i).map_err(|e| json(&s, e))?);
        s.eat_comma_curly(&mut i).map_err(|e| json(&s, e))?;
    }
    s.curly_close(&mut i).map_err(|e| json(&s, e))?;
    if s.tok != DeJsonTok::Eof {
        return Err(format!("bad JSON at {}: text after the object", at(&s)));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config() {
        let c = AgentConfig::parse(
            r#"{"server": "ws://factory.lan:9000/agents", "data_dir": "/var/lib/autofact",
                "token": "t0k", "region": "eu", "zone": "a", "hostname": "pi-7"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.server.host, "factory.lan");
        assert_eq!(c.server.port, 9000);
        assert_eq!(c.server.url(), "ws://factory.lan:9000/agents");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/autofact"));
        assert_eq!(c.token, "t0k");
        assert_eq!((c.region.as_str(), c.zone.as_str()), ("eu", "a"));
        assert_eq!(c.hostname.as_deref(), Some("pi-7"));
    }

    #[test]
    fn server_forms() {
        let s = Server::parse("10.0.0.1", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.host.as_str(), s.port), ("10.0.0.1", DEFAULT_PORT));
        let s = Server::parse("[::1]:8000", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.host.as_str(), s.port), ("::1", 8000));
        assert_eq!(s.url(), "ws://[::1]:8000/");
        assert!(Server::parse("wss://x", None).is_err());
        assert!(Server::parse("http://x", None).is_err());
        assert!(Server::parse("x:0", None).is_err());
        assert!(Server::parse("x:99999", None).is_err());
        assert!(Server::parse(":80", None).is_err());
    }

    #[test]
    fn wss_takes_ca_file_and_pin() {
        let other = "ff".repeat(32);
        let text = format!(
            r#"{{"server": "wss://factory.lan/", "data_dir": "/d", "ca_file": "/etc/autofact/ca.pem",
                 "pin_sha256": "AAcOFRwjKjE4P0ZNVFtiaXB3foWMk5qhqK+2vcTL0tk=, {other}"}}"#
        );
        let text = text.as_str();
        match AgentConfig::parse(text) {
            Ok(c) if cfg!(feature = "tls") => {
                assert_eq!(c.server.url(), "wss://factory.lan:8675/");
                let t = c.server.tls.unwrap_or_else(|| panic!("no trust"));
                assert_eq!(t.ca_file, PathBuf::from("/etc/autofact/ca.pem"));
                assert_eq!(
                    t.pin_sha256,
                    vec![std::array::from_fn(|i| i as u8 * 7), [0xff; 32]]
                );
            }
            Ok(c) => panic!("parsed without the tls feature: {c:?}"),
            Err(e) => assert!(
                !cfg!(feature = "tls") && e.contains("built without TLS"),
                "{e}"
            ),
        }
        let cases = [
            (
                r#"{"server": "wss://h", "data_dir": "/d"}"#,
                "`ca_file` is missing",
            ),
            (
                r#"{"server": "ws://h", "data_dir": "/d", "ca_file": "/ca.pem"}"#,
                "is not wss://",
            ),
            (
                r#"{"server": "h:1", "data_dir": "/d", "ca_file": "/ca.pem"}"#,
                "is not wss://",
            ),
            (
                r#"{"server": "wss://h", "data_dir": "/d", "pin_sha256": "AAcOFRwjKjE4P0ZNVFtiaXB3foWMk5qhqK+2vcTL0tk="}"#,
                "`pin_sha256` needs `ca_file`",
            ),
            (
                r#"{"server": "wss://h", "data_dir": "/d", "ca_file": "/c", "pin_sha256": "abcd"}"#,
                "`pin_sha256` `abcd` is 3 bytes, a SHA-256 is 32",
            ),
        ];
        for (text, want) in cases {
            match AgentConfig::parse(text) {
                Ok(c) => panic!("{text} parsed as {c:?}"),
                Err(e) => assert!(
                    e.contains(want) || (!cfg!(feature = "tls") && e.contains("without TLS")),
                    "{text}: {e} lacks {want}"
                ),
            }
        }
    }

    #[test]
    fn pin_in_hex_or_base64() {
        let want: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        let hex_form = hex(&want);
        assert_eq!(parse_pin(&hex_form), Ok(want));
        assert_eq!(parse_pin(&hex_form.to_uppercase()), Ok(want));
        // Computed independently: python3 -c 'import base64;
        // print(base64.b64encode(bytes(i*7 for i in range(32))).decode())'
        let b64 = "AAcOFRwjKjE4P0ZNVFtiaXB3foWMk5qhqK+2vcTL0tk=";
        assert_eq!(parse_pin(b64), Ok(want));
        assert!(parse_pin("abc").is_err());
        assert!(parse_pin(&hex_form[..62]).is_err());
        assert!(parse_pin("AAcOFRwjKjE4P0ZNVFtiaXB3foWMk5qhqK+2vcTL").is_err());
        assert!(parse_pin("AAcOFRwjKjE4P0ZNVFtiaXB3foWMk5qhqK+2vcTL0t!=").is_err());
    }

    #[test]
    fn problems_name_the_key() {
        let cases = [
            (
                r#"{"server": "h:1", "data_dir": "/d", "zome": "a"}"#,
                "unknown key `zome`",
            ),
            (r#"{"data_dir": "/d"}"#, "missing key `server`"),
            (r#"{"server": "h:1"}"#, "missing key `data_dir`"),
            (
                r#"{"server": 5, "data_dir": "/d"}"#,
                "`server` must be a string",
            ),
            (r#"{"server": "h:x", "data_dir": "/d"}"#, "invalid port"),
            (
                r#"{"server": "h:1", "data_dir": "/d", "hostname": ""}"#,
                "`hostname` is empty",
            ),
            (r#"{"server": "h:1", "data_dir": "/d""#, "bad JSON"),
            (r#"{"server": "#, "ends early"),
            (r#"["server"]"#, "expected an object"),
            (
                r#"{"server": "h:1", "data_dir": "/d"} x"#,
                "bad JSON at line 1",
            ),
            (r#"{"server": "h:1", "data_dir": "/d"} {}"#, "text after"),
            (
                r#"{"server": "h:1", "server": "h:2", "data_dir": "/d"}"#,
                "twice",
            ),
        ];
        for (text, want) in cases {
            match AgentConfig::parse(text) {
                Ok(c) => panic!("{text} parsed as {c:?}"),
                Err(e) => assert!(e.contains(want), "{text}: {e} lacks {want}"),
            }
        }
    }

    #[test]
    fn missing_file_names_the_path() {
        let p = std::env::temp_dir().join("autofact-no-such-config.json");
        let e = AgentConfig::load(&p)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("autofact-no-such-config.json") && e.contains("cannot read"),
            "{e}"
        );
    }
}
