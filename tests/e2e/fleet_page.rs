//! The fleet page (issue 19.4) in a real browser: Debian's headless Chromium loads `GET /` from
//! a running factory with two real agents (at the settings users run: every fact each second,
//! a batch every 10 s) and the test checks the rows the page's script rendered, a sort given
//! in the address (what a header click writes there), that the page fetched the inventory
//! again by itself, and takes a screenshot kept as a test artifact:
//! `target/test-artifacts/fleet-page.png` (and the rendered DOM beside it).
//!
//! Without `chromium` the test fails, unless `AUTOFACT_SKIP_CHROMIUM=1` (then it prints
//! SKIPPED); `tests/run` installs it.

use crate::Site;
use autofact_tests::harness::{AgentSpec, FactorySpec};
use autofact_tests::influx::Json;
use autofact_tests::poll::wait_for;
use autofact_tests::tmp::TempDir;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Long enough for two 10 s pushes on a loaded machine.
const WAIT: Duration = Duration::from_secs(120);

fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        Command::new("which")
            .arg(name)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
    });
    if found.is_none() {
        if std::env::var("AUTOFACT_SKIP_CHROMIUM").as_deref() == Ok("1") {
            println!("SKIPPED fleet page: chromium not installed (AUTOFACT_SKIP_CHROMIUM=1)");
            return None;
        }
        panic!("fleet page: chromium not installed (tests/run installs Debian's `chromium`)");
    }
    found
}

/// Runs headless Chromium on `url` with a fresh profile: `--dump-dom` (after `budget_ms` of
/// virtual time, so timers and fetches run) or `--screenshot=FILE`. Returns stdout.
fn run_chromium(bin: &Path, url: &str, extra: &[String], budget_ms: u32) -> String {
    let profile = TempDir::new("chromium-profile").unwrap_or_else(|e| panic!("temp dir: {e}"));
    let out = Command::new("timeout")
        .arg("180")
        .arg(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .args(extra)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "chromium {url} {extra:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One rendered row: `(data-col, text)` per cell.
type Row = Vec<(String, String)>;

/// The rows of `<tbody id="rows">` in a dumped DOM (the page's own simple markup).
fn rendered_rows(dom: &str) -> Vec<Row> {
    let body = dom
        .split("<tbody id=\"rows\">")
        .nth(1)
        .and_then(|b| b.split("</tbody>").next())
        .unwrap_or_else(|| panic!("no rendered rows in\n{dom}"));
    body.split("<tr")
        .skip(1)
        .map(|tr| {
            tr.split("<td data-col=\"")
                .skip(1)
                .map(|td| {
                    let (col, rest) = td.split_once("\">").unwrap_or((td, ""));
                    let text = rest.split("</td>").next().unwrap_or("");
                    (col.to_string(), unescape(text))
                })
                .collect()
        })
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

fn cell<'a>(row: &'a Row, col: &str) -> &'a str {
    row.iter()
        .find(|(c, _)| c == col)
        .map(|(_, t)| t.as_str())
        .unwrap_or_else(|| panic!("no {col} cell in {row:?}"))
}

fn str_of(c: &Json, key: &str) -> String {
    c.get(key)
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn the_fleet_page_renders_sorts_and_refreshes_in_headless_chromium() {
    let Some(bin) = chromium() else {
        return;
    };
    let spec = FactorySpec {
        period_ms: 1000,
        push_interval_ms: 10_000,
        ping_interval_ms: 5_000,
        ..FactorySpec::default()
    };
    let Some(mut site) = Site::new("fleet-page", &spec) else {
        return;
    };
    let hosts = ["e2e-page-alpha", "e2e-page-beta"];
    let mut a = AgentSpec::new(hosts[0], "eu");
    a.zone = "rack-1".into();
    site.agent(&a);
    site.agent(&AgentSpec::new(hosts[1], "us"));

    // Both connected, and each has sent a batch with its health fact (backlog, dropped known).
    let listed = wait_for("both agents' first batches", WAIT, || {
        let rows: Vec<Json> = hosts
            .iter()
            .filter_map(|h| site.factory.client(h))
            .filter(|c| c.get("connected") == Some(&Json::Bool(true)))
            .filter(|c| c.get("dropped").and_then(Json::as_i64).is_some())
            .filter(|c| str_of(c, "config_status") == "applied")
            .collect();
        (rows.len() == 2).then_some(rows)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", site.outputs()));

    let url = format!("http://{}/", site.factory.admin());
    // 25 s of virtual time: the page's 10 s refresh runs twice.
    let dom = run_chromium(&bin, &url, &["--dump-dom".into()], 25_000);
    let rows = rendered_rows(&dom);
    assert_eq!(rows.len(), 2, "two rendered rows:\n{dom}");
    for (row, host) in rows.iter().zip(hosts) {
        assert_eq!(
            cell(row, "host"),
            host,
            "sorted by host by default: {rows:?}"
        );
        let c = listed
            .iter()
            .find(|c| str_of(c, "hostname") == host)
            .expect("listed");
        assert_eq!(cell(row, "region"), str_of(c, "region"));
        assert_eq!(cell(row, "zone"), str_of(c, "zone"));
        assert_eq!(cell(row, "connected"), "yes");
        let seen = cell(row, "last_seen");
        assert!(seen.starts_with("20") && seen.ends_with('Z'), "{seen:?}");
        assert!(cell(row, "backlog").parse::<u64>().is_ok(), "{row:?}");
        assert_eq!(cell(row, "dropped"), "0", "{row:?}");
        assert_eq!(cell(row, "agent"), str_of(c, "agent_version"));
        assert!(!cell(row, "agent").is_empty());
        assert_eq!(cell(row, "config"), "applied");
        // Empty until the factory serves a clock offset; then a signed figure in ms.
        let offset = cell(row, "clock_offset");
        assert!(offset.is_empty() || offset.ends_with(" ms"), "{offset:?}");
        assert_eq!(cell(row, "buffer"), "disk");
    }
    assert_eq!(cell(&rows[0], "zone"), "rack-1");
    assert!(
        dom.contains("<p id=\"updated\">updated 20"),
        "the page fetched /clients again by itself:\n{dom}"
    );

    // The sort a header click writes into the address: descending by host, then by region.
    let dom = run_chromium(
        &bin,
        &format!("{url}?sort=-host"),
        &["--dump-dom".into()],
        2_000,
    );
    let order: Vec<String> = rendered_rows(&dom)
        .iter()
        .map(|r| cell(r, "host").to_string())
        .collect();
    assert_eq!(order, vec![hosts[1], hosts[0]], "{dom}");
    assert!(
        dom.contains("host \u{25bc}"),
        "the header shows the order:\n{dom}"
    );
    let dom = run_chromium(
        &bin,
        &format!("{url}?sort=-region"),
        &["--dump-dom".into()],
        2_000,
    );
    let order: Vec<String> = rendered_rows(&dom)
        .iter()
        .map(|r| cell(r, "region").to_string())
        .collect();
    assert_eq!(order, vec!["us", "eu"], "{dom}");

    // The screenshot, kept as an artifact.
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("test-artifacts");
    std::fs::create_dir_all(&artifacts)
        .unwrap_or_else(|e| panic!("creating {}: {e}", artifacts.display()));
    let shot = artifacts.join("fleet-page.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &bin,
        &url,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,360".into(),
            "--hide-scrollbars".into(),
        ],
        2_000,
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "{}: not a screenshot ({} bytes)",
        shot.display(),
        png.len()
    );
    let dom_file = artifacts.join("fleet-page.html");
    std::fs::write(&dom_file, &dom).unwrap_or_else(|e| panic!("{}: {e}", dom_file.display()));
    println!(
        "fleet page: 2 rows rendered, sorted, refreshed; screenshot {} ({} bytes), {:.1} s",
        shot.display(),
        png.len(),
        site.elapsed()
    );
}
