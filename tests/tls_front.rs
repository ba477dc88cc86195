//! An https endpoint for tests: a TLS terminator on a loopback port, with a certificate from
//! [`crate::pki`], that forwards each request to a plain HTTP server (a real InfluxDB) or, with
//! no upstream, answers 204 itself. One request per connection (`Connection: close`), as the
//! factory's sink sends them. Stops on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::pki::ServerFiles;

/// One request as received over TLS.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The request line and headers.
    pub head: String,
    /// The body.
    pub body: Vec<u8>,
}

/// The TLS terminator.
pub struct TlsFront {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    failed: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl TlsFront {
    /// Starts on `127.0.0.1:0` with `files`, forwarding to `upstream` when given.
    pub fn start(files: &ServerFiles, upstream: Option<SocketAddr>) -> Result<TlsFront, String> {
        let chain = CertificateDer::pem_file_iter(&files.cert)
            .map_err(|e| e.to_string())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| e.to_string())?;
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| e.to_string())?;
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let (s, seen2, failed2) = (stop.clone(), seen.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        match serve(tcp, config.clone(), upstream) {
                            Ok(req) => lock(&seen2).push(req),
                            Err(e) => lock(&failed2).push(e),
                        };
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(TlsFront {
            addr,
            stop,
            seen,
            failed,
            thread: Some(thread),
        })
    }

    /// `https://localhost:PORT` (the certificate is for `localhost`).
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Requests received over TLS.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.seen).clone()
    }

    /// Connections that failed, with why (a TLS handshake the client refused, say).
    pub fn failed(&self) -> Vec<String> {
        lock(&self.failed).clone()
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A whole HTTP answer: 204, Content-Length, or chunked framing.
fn answer_complete(raw: &[u8]) -> bool {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    if head.starts_with("http/1.1 204") || head.starts_with("http/1.0 204") {
        return true;
    }
    if head.contains("transfer-encoding: chunked") {
        return raw.ends_with(b"0\r\n\r\n");
    }
    head.lines()
        .filter_map(|l| l.strip_prefix("content-length:"))
        .find_map(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|n| raw.len() >= end + 4 + n)
}

fn serve(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    upstream: Option<SocketAddr>,
) -> Result<Seen, String> {
    tcp.set_nonblocking(false).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let conn = rustls::ServerConnection::new(config).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // The request: headers, then Content-Length bytes of body.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let (head_end, length) = loop {
        let n = tls.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the request ended".into());
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = find(&raw, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            let length = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end, length);
        }
    };
    while raw.len() < head_end + 4 + length {
        let n = tls.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed inside the body".into());
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let seen = Seen {
        head: String::from_utf8_lossy(&raw[..head_end]).to_string(),
        body: raw[head_end + 4..head_end + 4 + length].to_vec(),
    };
    let answer = match upstream {
        Some(up) => {
            let mut plain = TcpStream::connect(up).map_err(|e| format!("upstream: {e}"))?;
            plain
                .set_read_timeout(Some(Duration::from_secs(30)))
                .map_err(|e| e.to_string())?;
            plain.write_all(&raw).map_err(|e| e.to_string())?;
            // The upstream keeps the connection alive: the answer ends by its framing.
            let mut answer = Vec::new();
            loop {
                let n = plain.read(&mut buf).map_err(|e| format!("upstream: {e}"))?;
                answer.extend_from_slice(&buf[..n]);
                if n == 0 || answer_complete(&answer) {
                    break answer;
                }
            }
        }
        None => {
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
        }
    };
    tls.write_all(&answer).map_err(|e| e.to_string())?;
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Ok(seen)
}
