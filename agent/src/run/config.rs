//! The agent's own config file (`autofact run --config FILE`): where the factory is, where to keep
//! state, and the enrollment credentials. Behaviour (periods, intervals, caps) is not here: the
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
}

impl Server {
    /// Parses `host`, `host:port`, `[v6]:port` or `ws://host[:port][/path]`.
    pub fn parse(s: &str) -> Result<Server, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("is empty".into());
        }
        let rest = if let Some(rest) = s.strip_prefix("ws://") {
            rest
        } else if s.starts_with("wss://") {
            // No TLS stack in the agent on purpose (size); a TLS terminator in front of the
            // factory is the supported way.
            return Err("wss:// is not supported (the agent speaks plain ws://)".into());
        } else if s.contains("://") {
            return Err(format!(
                "`{s}` has an unsupported scheme (use host:port or ws://)"
            ));
        } else {
            s
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
        })
    }

    /// The websocket URL used in the handshake request.
    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("ws://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            format!("ws://{}:{}{}", self.host, self.port, self.path)
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
    /// Reads and validates the config file.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            problem: format!("cannot read: {e}"),
            source: Some(e),
        })?;
        AgentConfig::parse(&text).map_err(|problem| ConfigError {
            path: path.to_path_buf(),
            problem,
            source: None,
        })
    }

    /// Parses and validates config text; the error is one line naming the problem.
    pub fn parse(text: &str) -> Result<AgentConfig, String> {
        let raw = parse_raw(text)?;
        let server = match raw.server {
            Some(s) => Server::parse(&s).map_err(|e| format!("`server` {e}"))?,
            None => return Err("missing key `server` (\"host:port\" or a ws:// URL)".into()),
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
}

const KEYS: &str = "server, data_dir, token, region, zone, hostname";

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
        let s = Server::parse("10.0.0.1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.host.as_str(), s.port), ("10.0.0.1", DEFAULT_PORT));
        let s = Server::parse("[::1]:8000").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.host.as_str(), s.port), ("::1", 8000));
        assert_eq!(s.url(), "ws://[::1]:8000/");
        assert!(Server::parse("wss://x").is_err());
        assert!(Server::parse("http://x").is_err());
        assert!(Server::parse("x:0").is_err());
        assert!(Server::parse("x:99999").is_err());
        assert!(Server::parse(":80").is_err());
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
