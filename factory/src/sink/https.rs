//! `https://` for the InfluxDB sink: one HTTP/1.1 request per connection over rustls (ring),
//! trusting `sink.ca_file` (a private CA) or, without it, the system's CA bundle.
//!
//! minreq 3.0.0's rustls support trusts only its compiled-in Mozilla roots and has no way to
//! add a CA, so a store behind a private CA (the common case on a site) could not be reached
//! through it. This writes the same request minreq would (a `Content-Length` body, no
//! `Connection: close`) and reads the answer into a [`Reply`] shaped like minreq's response, so
//! the InfluxDB sink maps answers the same way for both schemes.
//!
//! Why no `Connection: close`: InfluxDB answers some errors (404 database not found) without
//! reading the body; with `close` it then closes a socket holding unread bytes, the kernel sends
//! a reset, and the answer is lost. Without it the server drains the body to keep the
//! connection, and we read the answer by its framing and hang up ourselves.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Where Linux distributions keep the system CA bundle (Debian/Ubuntu, Fedora/RHEL, Alpine/BSD).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Largest answer read (InfluxDB's error bodies are small; this bounds a misbehaving peer).
const MAX_REPLY: usize = 1 << 20;

/// The TLS client config for the sink: `ca_file` when given, else the system bundle.
pub(crate) fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let path = match ca_file {
        Some(p) => p.to_path_buf(),
        None => SYSTEM_BUNDLES
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
            .map(Path::to_path_buf)
            .ok_or_else(|| {
                format!(
                    "no sink.ca_file and no system CA bundle ({}): set sink.ca_file",
                    SYSTEM_BUNDLES.join(", ")
                )
            })?,
    };
    let pem = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
        // A system bundle may hold a certificate webpki cannot use; skip it, as browsers do.
        if roots.add(cert).is_err() && ca_file.is_some() {
            return Err(format!("{}: not a usable CA certificate", path.display()));
        }
    }
    if roots.is_empty() {
        return Err(format!("{} holds no CA certificate", path.display()));
    }
    // ring, like the agent; rustls 0.23.48 deprecates it only for lacking post-quantum kx.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An HTTP answer: the parts of minreq's response the sink reads.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// The status code.
    pub status_code: u16,
    /// The reason phrase of the status line.
    pub reason_phrase: String,
    /// Header names lowercased, in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    /// The first header of that name (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub(crate) fn as_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.body)
    }
}

impl From<minreq::Response> for Reply {
    fn from(r: minreq::Response) -> Reply {
        Reply {
            status_code: r.status_code,
            reason_phrase: r.reason_phrase.clone(),
            headers: r.headers.clone(),
            body: r.into_bytes(),
        }
    }
}

/// POSTs `body` to `url` (`https://host[:port]/path?query`); `timeout` bounds the connect and
/// each read and write. The error is one line naming the peer and what failed.
pub(crate) fn post(
    config: &Arc<ClientConfig>,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Reply, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url}: not an https:// URL"))?;
    let (authority, target) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = split_authority(authority)?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host}: not a valid DNS name or IP address for TLS"))?;
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut last = format!("{host} resolved to no address");
    let mut tcp = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {a}: {e}"),
        }
    }
    let tcp = tcp.ok_or(last)?;
    let peer = tcp
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| authority.to_string());
    let io_err = |what: &str, e: io::Error| format!("{what} {peer}: {}", describe(&e));
    tcp.set_read_timeout(Some(timeout))
        .and_then(|()| tcp.set_write_timeout(Some(timeout)))
        .map_err(|e| io_err("socket options for", e))?;
    let conn = ClientConnection::new(config.clone(), name)
        .map_err(|e| format!("TLS setup for {peer}: {e}"))?;
    let mut tls = StreamOwned::new(conn, tcp);

    let mut head = format!("POST {target} HTTP/1.1\r\nHost: {authority}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    // The handshake happens on the first write: its failures (certificate) show here.
    tls.write_all(head.as_bytes())
        .and_then(|()| tls.write_all(body))
        .and_then(|()| tls.flush())
        .map_err(|e| io_err("sending to", e))?;

    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_REPLY {
                    return Err(format!("answer from {peer} larger than {MAX_REPLY} bytes"));
                }
                if complete(&raw) {
                    break;
                }
            }
            // A server that closes without TLS close_notify: the answer is judged by its
            // Content-Length below.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io_err("reading the answer from", e)),
        }
    }
    parse_reply(&raw).map_err(|e| format!("answer from {peer}: {e}"))
}

fn split_authority(authority: &str) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6
            .find(']')
            .ok_or_else(|| format!("{authority}: missing `]`"))?;
        (&v6[..end], v6[end + 1..].strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => 443,
        Some(p) => p
            .parse()
            .map_err(|_| format!("{authority}: bad port `{p}`"))?,
    };
    Ok((host, port))
}

/// The rustls error inside an I/O error, when there is one: it says what was wrong with the
/// certificate (UnknownIssuer, NotValidForName, expired).
fn describe(e: &io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(t) => format!("TLS: {t}"),
        None => e.to_string(),
    }
}

/// Whether `raw` holds a whole answer by its framing (the connection stays open: the server
/// keeps it alive). An answer framed by the close only is complete when the server closes.
fn complete(raw: &[u8]) -> bool {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head.lines().next().unwrap_or_default();
    if status
        .split(' ')
        .nth(1)
        .is_some_and(|c| c == "204" || c == "304")
    {
        return true;
    }
    let header = |name: &str| {
        head.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return raw[end + 4..].ends_with(b"0\r\n\r\n");
    }
    header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| raw.len() >= end + 4 + n)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a status line, headers and a body (Content-Length, chunked, or up to the close).
pub(crate) fn parse_reply(raw: &[u8]) -> Result<Reply, String> {
    let end = find(raw, b"\r\n\r\n").ok_or("the connection closed before the headers ended")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut parts = status.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next());
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x status line: {status:?}"));
    }
    let status_code = code
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status:?}"))?;
    let reason_phrase = parts.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(n) = header("content-length") {
        let n: usize = n.parse().map_err(|_| format!("bad Content-Length {n:?}"))?;
        if rest.len() < n {
            return Err(format!("body cut short: {} of {n} bytes", rest.len()));
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Reply {
        status_code,
        reason_phrase,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n").ok_or("chunked body cut short")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 {
            return Err("chunked body cut short".into());
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_with_length_chunks_or_close() {
        let r = parse_reply(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nX-Influxdb-Error: boom\r\nContent-Length: 15\r\n\r\n{\"error\":\"bad\"}",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (r.status_code, r.reason_phrase.as_str()),
            (400, "Bad Request")
        );
        assert_eq!(r.header("x-influxdb-error"), Some("boom"));
        assert_eq!(r.as_str(), Ok("{\"error\":\"bad\"}"));

        let r = parse_reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"re\r\n6;x=y\r\nsults\"\r\n0\r\n\r\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.as_str(), Ok("{\"results\""));

        let r = parse_reply(b"HTTP/1.0 204 No Content\r\n\r\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.status_code, r.as_str()), (204, Ok("")));

        for bad in [
            &b"HTTP/1.1 204"[..],
            b"SSH-2.0 hello\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            assert!(
                parse_reply(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(complete(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab"));
        assert!(complete(b"HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n"));
        assert!(complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
        ));
        assert!(!complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n"
        ));
        assert!(!complete(b"HTTP/1.1 200 OK\r\n\r\nuntil the close"));
    }

    #[test]
    fn authority_forms() {
        assert_eq!(split_authority("influx.lan"), Ok(("influx.lan", 443)));
        assert_eq!(split_authority("influx.lan:8086"), Ok(("influx.lan", 8086)));
        assert_eq!(split_authority("[::1]:8086"), Ok(("::1", 8086)));
        assert!(split_authority("h:x").is_err());
    }
}
