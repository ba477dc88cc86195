//! Shared by the sink tests: the dead-letter file reader, and a fake HTTP server on loopback for
//! the InfluxDB sink: every connection is read as one
//! request and answered by a handler (a script, or a stateful fake store), one thread per
//! connection so several writers can be held at once.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Status, extra header lines (each ending in `\r\n`), body.
    Status(u16, String, String),
    /// Read the request and never answer (until the client gives up).
    Hang,
}

impl Reply {
    pub fn new(code: u16, headers: &str, body: &str) -> Reply {
        Reply::Status(code, headers.to_string(), body.to_string())
    }
}

/// Decides the answer to each request.
pub type Handler = Box<dyn FnMut(&Request) -> Reply + Send>;

/// Requests wait here while it is closed (to hold writers and let submissions queue up).
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    wake: Condvar,
    waiting: Mutex<usize>,
}

impl Gate {
    pub fn closed() -> Arc<Gate> {
        Arc::new(Gate::default())
    }
    pub fn open(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }
    /// Requests waiting at the gate now.
    pub fn waiting(&self) -> usize {
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn pass(&self) {
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while !*open {
            open = self.wake.wait(open).unwrap_or_else(|e| e.into_inner());
        }
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
    }
}

pub struct FakeInflux {
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeInflux {
    /// Answers requests in order from the script, then 204 forever.
    pub fn start(script: Vec<Reply>) -> FakeInflux {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        FakeInflux::on(listener, script)
    }

    pub fn on(listener: TcpListener, script: Vec<Reply>) -> FakeInflux {
        let mut script = script.into_iter();
        FakeInflux::with(
            listener,
            Box::new(move |_| script.next().unwrap_or(Reply::new(204, "", ""))),
            None,
        )
    }

    /// Answers with `handler`; with a gate, each request waits at it before being answered.
    pub fn with(listener: TcpListener, handler: Handler, gate: Option<Arc<Gate>>) -> FakeInflux {
        let port = listener.local_addr().expect("local addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(Mutex::new(handler));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut hung = Vec::new();
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let (requests, handler, gate) =
                        (requests.clone(), handler.clone(), gate.clone());
                    let (tx, rx) = std::sync::mpsc::channel();
                    hung.push(rx);
                    std::thread::spawn(move || {
                        let Some(req) = read_request(&conn) else {
                            return;
                        };
                        if let Some(g) = gate {
                            g.pass();
                        }
                        // Recorded and answered under one lock: the handler sees requests in
                        // the order they are recorded.
                        let mut h = handler.lock().unwrap_or_else(|e| e.into_inner());
                        requests
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(req.clone());
                        match h(&req) {
                            // Kept open until the server is dropped.
                            Reply::Hang => drop(tx.send(conn)),
                            Reply::Status(code, headers, body) => {
                                answer(conn, code, &headers, &body)
                            }
                        }
                    });
                }
            })
        };
        FakeInflux {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for FakeInflux {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_request(conn: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    })
}

fn answer(mut conn: TcpStream, code: u16, headers: &str, body: &str) {
    let _ = write!(
        conn,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The dead-letter files' records as (client, reason, line), read by the documented format:
/// a `# refused ... client=ID ... reason="..."` header, then the refused lines verbatim.
pub fn dead_letters(data: &Path) -> Vec<(String, String, String)> {
    let dir = data.join("dead-letters");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "lp"));
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let (mut client, mut reason) = (String::new(), String::new());
        for line in text.lines() {
            if let Some(h) = line.strip_prefix("# refused ") {
                client = h
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("client="))
                    .unwrap_or_else(|| panic!("no client in header {line:?}"))
                    .to_string();
                let at = h
                    .find("reason=\"")
                    .unwrap_or_else(|| panic!("no reason in {line:?}"));
                reason = h[at + 8..].trim_end_matches('"').to_string();
            } else if line.starts_with('#') || line.is_empty() {
                continue;
            } else {
                assert!(
                    !client.is_empty(),
                    "a line before any header in {}",
                    f.display()
                );
                out.push((client.clone(), reason.clone(), line.to_string()));
            }
        }
    }
    out
}
