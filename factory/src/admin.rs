//! The admin listener: a deliberately tiny HTTP/1.1 server (one request per connection, GET
//! only) serving `GET /` (the fleet page: one self-contained HTML page whose inline script
//! renders, sorts and refreshes the `/clients` document), `GET /clients` (JSON inventory) and
//! `GET /metrics` (Prometheus text). Also the client side used by `autofactory clients`. The
//! fleet page's no-script fallback and the `clients` table show the same columns, from one
//! function.

// nanoserde's DeJson derive expands to `match .. { Some(t) => t, None => return .. }`.
#![allow(clippy::question_mark)]

use crate::context::Context;
use crate::error::Error;
use nanoserde::{DeJson, SerJson};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::Async;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Bound on a request head; anything longer is not a request we serve.
const MAX_HEAD: usize = 8 * 1024;
/// Headers in a request head; more is a bad request (browsers send about 15).
const MAX_HEADERS: usize = 64;
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
    /// Batches the agent dropped at its buffer cap since it started, from its latest health
    /// fact seen by this factory since it started (kept in memory only).
    pub dropped: Option<u64>,
    /// The `host` tag of its points: the hostname, or `hostname~<8 hex of the id>` when
    /// another client held that hostname first.
    pub host_tag: String,
    /// Another client has the same hostname.
    pub duplicate_hostname: bool,
    /// The agent's installation (instance nonce); empty for a first-release agent.
    pub installation: String,
    /// Where the agent keeps unacknowledged batches: `disk`, `disk_full`, `read_only`,
    /// `disk_failed`.
    pub buffer_state: String,
    /// The buffer epoch of `last_acked_seq`, 16 hex digits (a string: JSON numbers lose
    /// precision above 2^53).
    pub epoch: String,
    /// The id this client was enrolled from as a clone; empty otherwise.
    pub cloned_from: String,
    /// The agent's answer to its last Config: `applied`, `failed` or `unknown`.
    pub config_status: String,
    /// Why it could not apply it.
    pub config_error: String,
    /// Hash of the Config it applied, 16 hex digits; zeros when not reported.
    pub config_hash: String,
    /// The applied Config is the one the factory means it to have now.
    pub config_current: bool,
    /// `synced`, `unsynced` or `unknown`.
    pub clock_sync: String,
    /// The boot the agent last reported.
    pub boot_id: String,
    /// Agent wall clock minus the factory's, milliseconds, as last estimated; null = unknown.
    pub clock_offset_ms: Option<i64>,
    /// Snapshots whose time the factory rebuilt.
    pub snapshots_time_corrected: u64,
    /// Snapshots that needed it but could not be rebuilt.
    pub snapshots_time_uncorrectable: u64,
}

/// The `GET /clients` document.
#[derive(Debug, Clone, Default, PartialEq, SerJson, DeJson)]
#[nserde(default)]
pub struct ClientsDoc {
    /// Every known client, sorted by hostname.
    pub clients: Vec<ClientView>,
}

/// The `GET /clients` document.
pub(crate) fn clients_doc(ctx: &Context) -> ClientsDoc {
    // A set: one lookup per client, not a scan of every session (quadratic at 10,000).
    let connected: std::collections::HashSet<String> =
        ctx.registry().connected().into_iter().collect();
    let config = ctx.config();
    let list = ctx.inventory().list();
    let mut names: std::collections::HashMap<String, usize> = Default::default();
    for r in &list {
        *names.entry(r.name().to_string()).or_default() += 1;
    }
    let clients = list
        .into_iter()
        .map(|r| ClientView {
            connected: connected.contains(&r.id),
            dropped: ctx.registry().seen(&r.id).dropped,
            host_tag: r.tag().to_string(),
            duplicate_hostname: names.get(r.name()).is_some_and(|n| *n > 1),
            installation: r.installation,
            buffer_state: r.buffer_state,
            epoch: format!("{:016x}", r.epoch),
            cloned_from: r.cloned_from,
            config_current: r.config_hash != 0
                && r.config_hash == config.effective(&r.region, &r.id).hash(),
            config_hash: format!("{:016x}", r.config_hash),
            config_status: r.config_status,
            config_error: r.config_error,
            clock_sync: r.clock_sync,
            boot_id: r.boot_id,
            clock_offset_ms: r.clock_offset_ms,
            snapshots_time_corrected: r.snapshots_time_corrected,
            snapshots_time_uncorrectable: r.snapshots_time_uncorrectable,
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

/// Serves the admin API on `listener` until the factory stops; each request is a task on
/// `executor`, the factory's.
pub(crate) async fn serve(
    ctx: Arc<Context>,
    executor: &smol::Executor<'static>,
    listener: Async<TcpListener>,
) {
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let ctx = ctx.clone();
                    executor
                        .spawn(async move {
                            let _ = smol::future::or(answer(&ctx, stream, peer), async {
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
    smol::future::or(accept, ctx.shutdown().begun()).await;
}

async fn answer(
    ctx: &Context,
    mut stream: Async<TcpStream>,
    peer: SocketAddr,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    // httparse reads the request line and headers; after each read either the head is
    // complete, or it is a prefix of a valid one (read on), or it is not HTTP (400).
    let (method, path) = loop {
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
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                let method = req.method.unwrap_or_default().to_string();
                break (method, req.path.unwrap_or_default().to_string());
            }
            Ok(httparse::Status::Partial) => continue,
            Err(e) => {
                crate::info!("admin: {peer} sent a bad request: {e}");
                return respond(
                    &mut stream,
                    "400 Bad Request",
                    "text/plain",
                    &format!("bad request: {e}\n"),
                )
                .await;
            }
        }
    };
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
        "/" => {
            let body = fleet_page(&clients_doc(ctx));
            respond(&mut stream, "200 OK", "text/html; charset=utf-8", &body).await
        }
        "/clients" => {
            let body = clients_doc(ctx).serialize_json();
            respond(&mut stream, "200 OK", "application/json", &body).await
        }
        "/metrics" => {
            let body = ctx.metrics().render();
            respond(&mut stream, "200 OK", "text/plain; version=0.0.4", &body).await
        }
        _ => {
            crate::info!("admin: {peer} asked for {path:?}: not found");
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                "try /, /clients or /metrics\n",
            )
            .await
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
    let url = format!("http://{addr}{path}");
    let what = format!("GET {url}");
    let fail = |e: String| Error::io(what.clone(), std::io::Error::other(e));
    let resp = minreq::get(&url)
        .with_timeout(10)
        .send()
        .map_err(|e| fail(e.to_string()))?;
    if resp.status_code != 200 {
        return Err(fail(format!(
            "answered {} {}",
            resp.status_code, resp.reason_phrase
        )));
    }
    resp.as_str()
        .map(str::to_string)
        .map_err(|e| fail(e.to_string()))
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

/// The columns of the `clients` table and the fleet page, and one row per client. A duplicate
/// hostname is marked `(dup)` in its cell; empty cells are `-`.
fn rows(doc: &ClientsDoc) -> ([&'static str; 17], Vec<Vec<String>>) {
    let header = [
        "HOSTNAME",
        "HOST TAG",
        "ID",
        "REGION",
        "ZONE",
        "ARCH",
        "OS",
        "AGENT",
        "INSTALLATION",
        "BUFFER",
        "CONFIG",
        "CLOCK",
        "CONNECTED",
        "LAST SEEN",
        "ACKED SEQ",
        "BACKLOG",
        "ADDRESS",
    ];
    let rows = doc
        .clients
        .iter()
        .map(|c| {
            vec![
                if c.duplicate_hostname {
                    format!("{} (dup)", c.hostname)
                } else {
                    c.hostname.clone()
                },
                c.host_tag.clone(),
                c.id.clone(),
                c.region.clone(),
                c.zone.clone(),
                c.arch.clone(),
                c.os.clone(),
                c.agent_version.clone(),
                // Enough to tell two apart; /clients has the whole nonce.
                c.installation.chars().take(12).collect(),
                c.buffer_state.clone(),
                // "stale": applied, but not the Config the factory means it to have now.
                match c.config_status.as_str() {
                    "applied" if !c.config_current => "stale".to_string(),
                    "unknown" => String::new(),
                    s => s.to_string(),
                },
                clock_cell(c),
                if c.connected { "yes" } else { "no" }.to_string(),
                if c.last_seen == 0 {
                    String::new()
                } else {
                    crate::log::rfc3339(c.last_seen)
                },
                c.last_acked_seq.to_string(),
                c.backlog.map(|b| b.to_string()).unwrap_or_default(),
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
    (header, rows)
}

/// The clock column: the sync state the agent reported and, when known, its offset from the
/// factory's clock (`synced +3ms`, `unsynced -3h0m12s`).
fn clock_cell(c: &ClientView) -> String {
    let sync = if c.clock_sync == "unknown" {
        ""
    } else {
        c.clock_sync.as_str()
    };
    match c.clock_offset_ms {
        None => sync.to_string(),
        Some(ms) => {
            let sign = if ms < 0 { '-' } else { '+' };
            let a = ms.unsigned_abs();
            let off = if a < 10_000 {
                format!("{sign}{a}ms")
            } else if a < 3_600_000 {
                format!("{sign}{}m{}s", a / 60_000, a % 60_000 / 1000)
            } else {
                format!(
                    "{sign}{}h{}m{}s",
                    a / 3_600_000,
                    a % 3_600_000 / 60_000,
                    a % 60_000 / 1000
                )
            };
            format!("{sync} {off}").trim().to_string()
        }
    }
}

/// The inventory as a text table (for `autofactory clients`).
pub fn clients_table(doc: &ClientsDoc) -> String {
    let (header, rows) = rows(doc);
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

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The fleet page's script: renders the rows from the inventory JSON (embedded in the page,
/// then fetched from `clients` every [`REFRESH_SECS`] s), sorts them by the column whose
/// header was clicked (again: reversed), and keeps the sort in the address (`?sort=backlog`,
/// `?sort=-backlog` for descending) so a reload or a bookmark keeps it. Cells are set with
/// `textContent`, never as HTML, so nothing an agent sends can become markup. A field the
/// factory does not serve (`clock_offset_ms` before clock correction) leaves its cell empty.
const FLEET_JS: &str = r#"
"use strict";
const num = (v) => (typeof v === "number" ? v : null);
const iso = (s) => (s ? new Date(s * 1000).toISOString().replace(".000Z", "Z") : "");
const config = (c) => {
  if (c.config_status === "applied") return c.config_current ? "applied" : "stale";
  if (c.config_status === "failed") return c.config_error ? "failed: " + c.config_error : "failed";
  return "";
};
const offset = (c) => {
  const v = num(c.clock_offset_ms);
  return v === null ? "" : (v > 0 ? "+" : "") + v + " ms";
};
// [key, header, shown text, sort value]
const COLS = [
  ["host", "host", (c) => c.hostname + (c.duplicate_hostname ? " (dup)" : ""), (c) => c.hostname],
  ["region", "region", (c) => c.region, (c) => c.region],
  ["zone", "zone", (c) => c.zone, (c) => c.zone],
  ["connected", "connected", (c) => (c.connected ? "yes" : "no"), (c) => (c.connected ? 1 : 0)],
  ["last_seen", "last seen", (c) => iso(c.last_seen), (c) => c.last_seen || 0],
  ["backlog", "backlog", (c) => (num(c.backlog) ?? ""), (c) => num(c.backlog) ?? -1],
  ["dropped", "dropped", (c) => (num(c.dropped) ?? ""), (c) => num(c.dropped) ?? -1],
  ["agent", "agent", (c) => c.agent_version, (c) => c.agent_version],
  ["config", "config", config, config],
  ["clock_offset", "clock offset", offset, (c) => { const v = num(c.clock_offset_ms); return v === null ? -1 : Math.abs(v); }],
  ["buffer", "buffer", (c) => c.buffer_state, (c) => c.buffer_state],
];
let doc = JSON.parse(document.getElementById("doc").textContent);
let sort = { key: "host", desc: false };
const asked = new URLSearchParams(location.search).get("sort");
if (asked) {
  const key = asked.replace(/^-/, "");
  if (COLS.some((c) => c[0] === key)) sort = { key, desc: asked.startsWith("-") };
}
function cmp(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b));
}
function render() {
  const col = COLS.find((c) => c[0] === sort.key);
  const list = doc.clients.slice().sort((a, b) => {
    const d = cmp(col[3](a), col[3](b));
    return (sort.desc ? -d : d) || cmp(a.hostname, b.hostname) || cmp(a.id, b.id);
  });
  const head = document.getElementById("head");
  head.replaceChildren(...COLS.map(([key, title]) => {
    const th = document.createElement("th");
    th.dataset.col = key;
    th.textContent = title + (key === sort.key ? (sort.desc ? " ▼" : " ▲") : "");
    th.onclick = () => {
      sort = { key, desc: key === sort.key ? !sort.desc : false };
      history.replaceState(null, "", "?sort=" + (sort.desc ? "-" : "") + key);
      render();
    };
    return th;
  }));
  const body = document.getElementById("rows");
  body.replaceChildren(...list.map((c) => {
    const tr = document.createElement("tr");
    tr.dataset.id = c.id;
    if (c.duplicate_hostname) tr.className = "dup";
    if (!c.connected) tr.classList.add("off");
    for (const [key, , text] of COLS) {
      const td = document.createElement("td");
      td.dataset.col = key;
      td.textContent = text(c);
      tr.appendChild(td);
    }
    return tr;
  }));
  const on = doc.clients.filter((c) => c.connected).length;
  document.getElementById("summary").textContent =
    doc.clients.length + " client(s), " + on + " connected";
}
async function refresh() {
  const note = document.getElementById("updated");
  try {
    const r = await fetch("clients", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    doc = await r.json();
    render();
    note.textContent = "updated " + new Date().toISOString().replace(/\.\d+Z$/, "Z");
  } catch (e) {
    note.textContent = "refresh failed (" + e.message + "); showing the last inventory";
  }
}
render();
setInterval(refresh, REFRESH_MS);
"#;

/// How often the fleet page fetches the inventory again.
pub const REFRESH_SECS: u64 = 10;

/// The fleet page: one self-contained HTML page (inline style and script, no external asset,
/// no build step). The inventory is embedded as JSON and rendered, sorted and refreshed by
/// [`FLEET_JS`]; without script, the `clients` table is shown as plain HTML instead.
pub fn fleet_page(doc: &ClientsDoc) -> String {
    let (header, rows) = rows(doc);
    let dups = doc.clients.iter().filter(|c| c.duplicate_hostname).count();
    let mut out = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>autofactory fleet</title>\n\
         <style>body{font-family:sans-serif}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}\
         th[data-col]{cursor:pointer;background:#eee}.dup{background:#fee}.off{color:#888}\
         </style></head><body>\n",
    );
    out.push_str(&format!(
        "<h1>autofactory fleet</h1>\n<p id=\"summary\">{} client(s), {} connected</p>\n{}",
        doc.clients.len(),
        doc.clients.iter().filter(|c| c.connected).count(),
        if dups > 0 {
            format!("<p>{dups} sharing a hostname (dup): each has its own host tag</p>\n")
        } else {
            String::new()
        }
    ));
    out.push_str(
        "<table id=\"fleet\"><thead><tr id=\"head\"></tr></thead><tbody id=\"rows\"></tbody></table>\n\
         <p id=\"updated\"></p>\n<noscript><table>\n<tr>",
    );
    for h in header {
        out.push_str(&format!("<th>{}</th>", html_escape(h)));
    }
    out.push_str("</tr>\n");
    for (c, r) in doc.clients.iter().zip(&rows) {
        out.push_str(if c.duplicate_hostname {
            "<tr class=\"dup\">"
        } else {
            "<tr>"
        });
        for cell in r {
            out.push_str(&format!("<td>{}</td>", html_escape(cell)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table></noscript>\n");
    // In a script element only `</script` ends it: JSON has `<` only inside strings, where
    // \u003c means the same.
    out.push_str("<script id=\"doc\" type=\"application/json\">");
    out.push_str(&doc.serialize_json().replace('<', "\\u003c"));
    out.push_str("</script>\n<script>");
    out.push_str(&FLEET_JS.replace("REFRESH_MS", &(REFRESH_SECS * 1000).to_string()));
    out.push_str("</script>\n</body></html>\n");
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
        assert!(
            lines[0].starts_with("HOSTNAME          HOST TAG  ID"),
            "{t}"
        );
        let row1: Vec<&str> = lines[1].split_whitespace().collect();
        let row2: Vec<&str> = lines[2].split_whitespace().collect();
        // hostname, tag, id, region, zone, arch, os, agent, installation, buffer, config,
        // clock, connected, last seen, seq, backlog, address
        assert_eq!(row1.len(), 17, "{t}");
        assert_eq!((row1[0], row1[12], row1[15]), ("pi", "yes", "4"));
        assert_eq!(
            (row2[0], row2[12], row2[15]),
            ("server-long-name", "no", "-")
        );
        let json = doc.serialize_json();
        assert_eq!(
            ClientsDoc::deserialize_json(&json).expect("round trip"),
            doc
        );
    }

    #[test]
    fn duplicates_are_flagged_and_the_page_escapes_what_agents_send() {
        let doc = ClientsDoc {
            clients: vec![
                ClientView {
                    hostname: "raspberrypi".into(),
                    host_tag: "raspberrypi".into(),
                    duplicate_hostname: true,
                    buffer_state: "disk_full".into(),
                    ..Default::default()
                },
                ClientView {
                    hostname: "raspberrypi".into(),
                    host_tag: "raspberrypi~0123abcd".into(),
                    duplicate_hostname: true,
                    ..Default::default()
                },
                ClientView {
                    hostname: "<script>".into(),
                    ..Default::default()
                },
            ],
        };
        let t = clients_table(&doc);
        assert_eq!(t.matches("raspberrypi (dup)").count(), 2, "{t}");
        assert!(
            t.contains("raspberrypi~0123abcd") && t.contains("disk_full"),
            "{t}"
        );
        let page = fleet_page(&doc);
        // The page's own two script elements, and the agent's text nowhere as markup.
        assert_eq!(page.matches("<script").count(), 2, "{page}");
        assert!(page.contains("&lt;script&gt;"), "{page}");
        assert!(page.contains("\\u003cscript>"), "{page}");
        assert_eq!(page.matches("<tr class=\"dup\">").count(), 2, "{page}");
        assert!(page.contains("2 sharing a hostname"), "{page}");
        // The embedded inventory is the /clients document.
        let json = page
            .split("<script id=\"doc\" type=\"application/json\">")
            .nth(1)
            .and_then(|r| r.split("</script>").next())
            .expect("embedded inventory");
        let back: ClientsDoc = DeJson::deserialize_json(json).expect("valid JSON");
        assert_eq!(back, doc);
    }
}
