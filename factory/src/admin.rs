//! The admin listener: a deliberately tiny HTTP/1.1 server (one request per connection, GET
//! only) serving `GET /clients` (JSON inventory) and `GET /metrics` (Prometheus text). Also the
//! client side used by `autofactory clients`.

// nanoserde's DeJson derive expands to `match .. { Some(t) => t, None => return .. }`.
#![allow(clippy::question_mark)]

use crate::error::Error;
use crate::server::Factory;
use nanoserde::{DeJson, SerJson};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::Async;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Bound on a request head; anything longer is not a request we serve.
const MAX_HEAD: usize = 8 * 1024;
/// A client has this long to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One client as served by `GET /clients`: the inventory record (without the secret's hash)
/// plus whether it is connected now.
#[derive(Debug, Clone, Default, PartialEq, SerJson, DeJson)]
#[nserde(default)]
#[allow(missing_docs)]
pub struct ClientView {
    pub id: String,
    pub hostname: String,
    pub region: String,
    pub zone: String,
    pub arch: String,
    pub kernel: String,
    pub os: String,
    pub cpu_model: String,
    pub mem_total: u64,
    pub agent_version: String,
    pub first_seen: u64,
    pub last_seen: u64,
    pub last_address: String,
    pub last_acked_seq: u64,
    pub connected: bool,
    /// Batches the client has not yet had acknowledged, from its latest health fact.
    pub backlog: Option<u64>,
}

/// The `GET /clients` document.
#[derive(Debug, Clone, Default, PartialEq, SerJson, DeJson)]
#[nserde(default)]
pub struct ClientsDoc {
    /// Every known client, sorted by hostname.
    pub clients: Vec<ClientView>,
}

impl Factory {
    /// The `GET /clients` document.
    pub fn clients_doc(&self) -> ClientsDoc {
        let connected = self.connected();
        let clients = self
            .inventory()
            .list()
            .into_iter()
            .map(|r| ClientView {
                connected: connected.contains(&r.id),
                id: r.id,
                hostname: r.hostname,
                region: r.region,
                zone: r.zone,
                arch: r.arch,
                kernel: r.kernel,
                os: r.os,
                cpu_model: r.cpu_model,
                mem_total: r.mem_total,
                agent_version: r.agent_version,
                first_seen: r.first_seen,
                last_seen: r.last_seen,
                last_address: r.last_address,
                last_acked_seq: r.last_acked_seq,
                backlog: r.backlog,
            })
            .collect();
        ClientsDoc { clients }
    }

    /// Serves the admin API on `listener` until `shutdown` resolves.
    pub async fn serve_admin(
        &self,
        listener: Async<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let accept = async {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        let f = self.clone();
                        smol::spawn(async move {
                            let _ = smol::future::or(f.answer(stream, peer), async {
                                smol::Timer::after(REQUEST_TIMEOUT).await;
                                Ok(())
                            })
                            .await;
                        })
                        .detach();
                    }
                    Err(e) => {
                        crate::warn!("admin accept: {e}");
                        smol::Timer::after(Duration::from_millis(100)).await;
                    }
                }
            }
        };
        smol::future::or(accept, shutdown).await;
        Ok(())
    }

    async fn answer(&self, mut stream: Async<TcpStream>, peer: SocketAddr) -> std::io::Result<()> {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
            if head.len() > MAX_HEAD {
                return respond(
                    &mut stream,
                    "431 Request Header Fields Too Large",
                    "text/plain",
                    "request too large\n",
                )
                .await;
            }
        }
        let first = head.split(|b| *b == b'\n').next().unwrap_or_default();
        let first = String::from_utf8_lossy(first);
        let mut parts = first.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if method != "GET" {
            return respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "only GET\n",
            )
            .await;
        }
        match path.split('?').next().unwrap_or("") {
            "/clients" => {
                let body = self.clients_doc().serialize_json();
                respond(&mut stream, "200 OK", "application/json", &body).await
            }
            "/metrics" => {
                let body = self.metrics().render();
                respond(&mut stream, "200 OK", "text/plain; version=0.0.4", &body).await
            }
            _ => {
                crate::info!("admin: {peer} asked for {path:?}: not found");
                respond(
                    &mut stream,
                    "404 Not Found",
                    "text/plain",
                    "try /clients or /metrics\n",
                )
                .await
            }
        }
    }
}

async fn respond(
    stream: &mut Async<TcpStream>,
    status: &str,
    ctype: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.flush().await
}

/// `GET path` from the admin listener at `addr` (blocking, for the CLI); returns the body of a
/// 200 answer.
pub fn http_get(addr: &str, path: &str) -> Result<String, Error> {
    let what = format!("GET http://{addr}{path}");
    let io = |e| Error::io(what.clone(), e);
    let sock: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .map_err(io)?
        .next()
        .ok_or_else(|| Error::config("--admin", format!("{addr:?} resolves to no address")))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(5)).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(io)?;
    let resp = String::from_utf8_lossy(&resp);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(Error::io(
            what,
            std::io::Error::other(format!("answered {status:?}")),
        ));
    }
    Ok(body.to_string())
}

/// `host:port` from an admin address given as `host:port` or `http://host:port[/]`.
pub fn admin_addr(s: &str) -> &str {
    let s = s.trim();
    let s = s.strip_prefix("http://").unwrap_or(s);
    s.trim_end_matches('/')
}

/// `GET /clients` from every admin address at once (one thread each, so a dead factory costs
/// its timeout once, not once per factory). Returns the documents that came, and for each
/// address that failed, the address and why.
pub fn fetch_clients(addrs: &[String]) -> (Vec<ClientsDoc>, Vec<(String, String)>) {
    let answers: Vec<(String, Result<ClientsDoc, String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = addrs
            .iter()
            .map(|a| {
                scope.spawn(move || {
                    let addr = admin_addr(a);
                    let doc = http_get(addr, "/clients")
                        .map_err(|e| e.to_string())
                        .and_then(|body| {
                            ClientsDoc::deserialize_json(&body).map_err(|e| {
                                format!("{addr}/clients answered something that is not the inventory: {e:?}")
                            })
                        });
                    (a.clone(), doc)
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(addrs)
            .map(|(h, a)| {
                h.join()
                    .unwrap_or_else(|_| (a.clone(), Err("fetch thread panicked".into())))
            })
            .collect()
    });
    let mut docs = Vec::new();
    let mut failed = Vec::new();
    for (addr, r) in answers {
        match r {
            Ok(d) => docs.push(d),
            Err(e) => failed.push((addr, e)),
        }
    }
    (docs, failed)
}

/// Several factories' inventories as one: one row per client id. A client known to several
/// factories (the balancer moved it) is shown as the factory it is connected to sees it, else
/// as the one that saw it last.
pub fn merge_clients(docs: Vec<ClientsDoc>) -> ClientsDoc {
    let mut by_id: std::collections::HashMap<String, ClientView> = Default::default();
    for c in docs.into_iter().flat_map(|d| d.clients) {
        match by_id.get(&c.id) {
            Some(have) if (have.connected, have.last_seen) >= (c.connected, c.last_seen) => {}
            _ => {
                by_id.insert(c.id.clone(), c);
            }
        }
    }
    let mut clients: Vec<ClientView> = by_id.into_values().collect();
    clients.sort_by(|a, b| (&a.hostname, &a.id).cmp(&(&b.hostname, &b.id)));
    ClientsDoc { clients }
}

/// The inventory as a text table (for `autofactory clients`).
pub fn clients_table(doc: &ClientsDoc) -> String {
    let header = [
        "HOSTNAME",
        "ID",
        "REGION",
        "ZONE",
        "ARCH",
        "OS",
        "AGENT",
        "CONNECTED",
        "LAST SEEN",
        "ACKED SEQ",
        "BACKLOG",
        "ADDRESS",
    ];
    let rows: Vec<Vec<String>> = doc
        .clients
        .iter()
        .map(|c| {
            vec![
                c.hostname.clone(),
                c.id.clone(),
                c.region.clone(),
                c.zone.clone(),
                c.arch.clone(),
                c.os.clone(),
                c.agent_version.clone(),
                if c.connected { "yes" } else { "no" }.to_string(),
                if c.last_seen == 0 {
                    String::new()
                } else {
                    crate::log::rfc3339(c.last_seen)
                },
                c.last_acked_seq.to_string(),
                c.backlog
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "-".into()),
                c.last_address.clone(),
            ]
        })
        .map(|r: Vec<String>| {
            // An empty cell would shift the eye to the next column.
            r.into_iter()
                .map(|c| if c.is_empty() { "-".to_string() } else { c })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let l: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(l.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in &rows {
        line(&mut r.iter().map(|s| s.as_str()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_inventories_have_one_row_per_client_the_connected_or_latest_view() {
        let view = |id: char, host: &str, connected: bool, last_seen: u64| ClientView {
            id: id.to_string().repeat(32),
            hostname: host.into(),
            connected,
            last_seen,
            ..Default::default()
        };
        let a = ClientsDoc {
            clients: vec![
                view('a', "moved", false, 100),
                view('b', "only-a", false, 50),
                view('c', "seen-both", false, 300),
            ],
        };
        let b = ClientsDoc {
            clients: vec![
                view('a', "moved", true, 90),
                view('c', "seen-both", false, 200),
                view('d', "only-b", true, 10),
            ],
        };
        let m = merge_clients(vec![a, b]);
        let rows: Vec<(&str, bool, u64)> = m
            .clients
            .iter()
            .map(|c| (c.hostname.as_str(), c.connected, c.last_seen))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("moved", true, 90),
                ("only-a", false, 50),
                ("only-b", true, 10),
                ("seen-both", false, 300),
            ]
        );
        assert_eq!(admin_addr(" http://10.0.0.1:8676/ "), "10.0.0.1:8676");
        assert_eq!(admin_addr("127.0.0.1:8676"), "127.0.0.1:8676");
    }

    #[test]
    fn table_aligns_and_shows_state() {
        let doc = ClientsDoc {
            clients: vec![
                ClientView {
                    hostname: "pi".into(),
                    id: "a".repeat(32),
                    connected: true,
                    backlog: Some(4),
                    ..Default::default()
                },
                ClientView {
                    hostname: "server-long-name".into(),
                    id: "b".repeat(32),
                    ..Default::default()
                },
            ],
        };
        let t = clients_table(&doc);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("HOSTNAME          ID"));
        let row1: Vec<&str> = lines[1].split_whitespace().collect();
        let row2: Vec<&str> = lines[2].split_whitespace().collect();
        // hostname, id, region, zone, arch, os, agent, connected, last seen, seq, backlog, address
        assert_eq!(row1.len(), 12, "{t}");
        assert_eq!((row1[0], row1[7], row1[10]), ("pi", "yes", "4"));
        assert_eq!(
            (row2[0], row2[7], row2[10]),
            ("server-long-name", "no", "-")
        );
        let json = doc.serialize_json();
        assert_eq!(
            ClientsDoc::deserialize_json(&json).expect("round trip"),
            doc
        );
    }
}
