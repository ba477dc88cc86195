//! Issue 17: the factory's TLS listener. TLS and plain agents share the port; `require_tls`
//! refuses plain ones with Reject{TlsRequired}; a client that is not TLS-correct fails cleanly
//! and the factory goes on serving; SIGHUP re-reads the certificate for new connections while a
//! connected agent keeps its session; a bad certificate is a config error that names the file.

mod common;

use async_tungstenite::tungstenite::Message as WsMessage;
use async_tungstenite::WebSocketStream;
use autofact_fbs::{Batch, Message, RejectCode};
use autofact_tests::pki::Pki;
use autofactory::metrics::Reason;
use autofactory::{Factory, FactoryConfig, Settings};
use common::{config_text, new_hello, refused, snapshot, still_serves, temp_dir, within, Harness};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use smol::io::AsyncWriteExt;
use smol::stream::StreamExt;
use smol::Async;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

type TlsWs = WebSocketStream<futures_rustls::client::TlsStream<Async<TcpStream>>>;

/// A TLS connection to `addr` trusting only `ca`, checking the name `localhost`.
async fn tls_connect(
    addr: SocketAddr,
    ca: &Path,
) -> std::io::Result<futures_rustls::client::TlsStream<Async<TcpStream>>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(ca)).expect("add CA");
    // ring, like the agent (deprecated in rustls 0.23.48 only for lacking post-quantum kx).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = Async::<TcpStream>::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    within(
        "TLS handshake",
        futures_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
}

/// A TLS websocket client trusting `ca`; returns it with the certificate the factory showed.
async fn tls_client(addr: SocketAddr, ca: &Path) -> (TlsWs, CertificateDer<'static>) {
    let tls = tls_connect(addr, ca).await.expect("TLS handshake");
    let shown = tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone();
    let (ws, _) = async_tungstenite::client_async(format!("wss://localhost:{}/", addr.port()), tls)
        .await
        .expect("websocket upgrade");
    (ws, shown.into_owned())
}

async fn send(ws: &mut TlsWs, m: &Message) {
    ws.send(WsMessage::Binary(autofact_fbs::encode(m).into()))
        .await
        .expect("send");
}

async fn recv(ws: &mut TlsWs) -> Message {
    within("recv", async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Binary(b))) => {
                    return autofact_fbs::decode(&b).expect("a valid message")
                }
                Some(Ok(WsMessage::Close(f))) => panic!("closed: {f:?}"),
                Some(Ok(_)) => continue,
                other => panic!("connection ended: {other:?}"),
            }
        }
    })
    .await
}

fn der(pem: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(pem).expect("certificate PEM")
}

fn tls_config(pki_files: &autofact_tests::pki::ServerFiles, require: bool) -> String {
    config_text(&format!(
        r#""tls": {}, "require_tls": {require}"#,
        pki_files.tls_json()
    ))
}

#[test]
fn sighup_swaps_the_certificate_without_dropping_agents() {
    let dir = temp_dir("tls-reload");
    let pki = Pki::create(&dir).expect("pki");
    let h = Harness::start(&dir, &tls_config(&pki.good, true));
    smol::block_on(async {
        let (mut old, shown) = tls_client(h.addr, &pki.ca).await;
        assert_eq!(shown, der(&pki.good.cert));
        send(&mut old, &Message::Hello(new_hello(common::TOKEN, "kept"))).await;
        assert!(matches!(recv(&mut old).await, Message::Welcome(_)));

        // The renewal: new files in the config, then SIGHUP's reload.
        h.write_config(&tls_config(&pki.renewed, true));
        h.factory.reload().expect("reload");
        let (_new, shown) = tls_client(h.addr, &pki.ca).await;
        assert_eq!(
            shown,
            der(&pki.renewed.cert),
            "new connections see the new one"
        );

        // The agent connected before the reload keeps its session: a batch is acked.
        send(
            &mut old,
            &Message::Batch(Batch {
                seq: 1,
                snapshots: vec![snapshot(1_000, 0)],
                ..Batch::default()
            }),
        )
        .await;
        match recv(&mut old).await {
            Message::Ack(a) => assert_eq!(a.seq, 1),
            other => panic!("expected Ack, got {other:?}"),
        }

        // A broken file on the next reload keeps the running certificate.
        std::fs::write(&pki.good.key, "not a key\n").expect("break key");
        h.write_config(&tls_config(&pki.good, true));
        let _ = h.factory.reload();
        let (_again, shown) = tls_client(h.addr, &pki.ca).await;
        assert_eq!(shown, der(&pki.renewed.cert), "running certificate kept");
    });
    h.stop().expect("clean stop");
}

#[test]
fn plain_client_is_refused_with_tls_required_and_factory_goes_on() {
    let dir = temp_dir("tls-required");
    let pki = Pki::create(&dir).expect("pki");
    let h = Harness::start(&dir, &tls_config(&pki.good, true));
    smol::block_on(async {
        let (code, _close) = refused(h.addr, new_hello(common::TOKEN, "plain")).await;
        assert_eq!(code, RejectCode::TlsRequired);
        assert_eq!(h.factory.metrics().rejected(Reason::TlsRequired), 1);
        // TLS clients are still served.
        let (mut ws, _) = tls_client(h.addr, &pki.ca).await;
        send(&mut ws, &Message::Hello(new_hello(common::TOKEN, "tls"))).await;
        assert!(matches!(recv(&mut ws).await, Message::Welcome(_)));
    });
    h.stop().expect("clean stop");
}

#[test]
fn broken_tls_and_tls_on_a_plain_port_fail_cleanly() {
    // A TLS listener: a ClientHello record header followed by garbage, then a client that
    // does not trust the certificate (another CA): both refused, counted, and the factory
    // still serves plain clients (no require_tls here).
    let dir = temp_dir("tls-garbage");
    let pki = Pki::create(&dir).expect("pki");
    let h = Harness::start(&dir, &tls_config(&pki.good, false));
    smol::block_on(async {
        let mut tcp = Async::<TcpStream>::connect(h.addr).await.expect("tcp");
        tcp.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        let n = within(
            "the factory to hang up",
            smol::io::AsyncReadExt::read(&mut tcp, &mut buf),
        )
        .await;
        assert!(
            !matches!(n, Ok(k) if k > 0 && buf[0] != 0x15),
            "only an alert or EOF: {n:?}"
        );
        common::wait_until("the garbage counted", || {
            h.factory.metrics().rejected(Reason::TlsHandshake) >= 1
        })
        .await;
        let e = tls_connect(h.addr, &pki.other_ca).await.err();
        assert!(
            e.as_ref()
                .is_some_and(|e| e.to_string().contains("UnknownIssuer")),
            "a client of another CA refuses: {e:?}"
        );
        common::wait_until("the refused handshake counted", || {
            h.factory.metrics().rejected(Reason::TlsHandshake) >= 2
        })
        .await;
        still_serves(h.addr).await;
    });
    h.stop().expect("clean stop");

    // A plain listener: a TLS client is hung up on, with a line saying why.
    let dir = temp_dir("tls-on-plain");
    let h = Harness::start(&dir, &config_text(""));
    smol::block_on(async {
        let r = tls_connect(h.addr, &pki.ca).await;
        assert!(r.is_err(), "a plain listener cannot complete TLS");
        common::wait_until("the TLS client counted", || {
            h.factory.metrics().rejected(Reason::TlsHandshake) >= 1
        })
        .await;
        still_serves(h.addr).await;
    });
    h.stop().expect("clean stop");
}

#[test]
fn bad_tls_settings_are_config_errors_naming_the_file() {
    let dir = temp_dir("tls-config");
    let pki = Pki::create(&dir).expect("pki");
    let open = |text: &str| -> Result<Factory, String> {
        let mut cfg = FactoryConfig::parse(text, "test").map_err(|e| e.to_string())?;
        cfg.data_dir = dir.join("data");
        Factory::open(Settings {
            config: cfg,
            config_path: None,
            sink: None,
        })
        .map_err(|e| e.to_string())
    };
    let e = open(&config_text(r#""require_tls": true"#))
        .err()
        .unwrap_or_default();
    assert!(
        e.contains("require_tls") && e.contains("tls section"),
        "{e}"
    );
    let e = open(&config_text(
        r#""tls": {"cert_file": "/nonexistent/c.pem"}"#,
    ))
    .err()
    .unwrap_or_default();
    assert!(e.contains("tls.key_file"), "{e}");
    let missing = format!(
        r#""tls": {{"cert_file": "{}", "key_file": "{}"}}"#,
        dir.join("missing.pem").display(),
        pki.good.key.display()
    );
    let e = open(&config_text(&missing)).err().unwrap_or_default();
    assert!(
        e.contains("missing.pem") && e.contains("cannot read"),
        "{e}"
    );
    // The key of another certificate.
    let mismatched = format!(
        r#""tls": {{"cert_file": "{}", "key_file": "{}"}}"#,
        pki.good.cert.display(),
        pki.renewed.key.display()
    );
    let e = open(&config_text(&mismatched)).err().unwrap_or_default();
    assert!(e.contains("does not fit the certificate"), "{e}");
    let e = open(&config_text(
        r#""tls": {"cert_file": "a", "key_file": "b", "x": 1}"#,
    ))
    .err()
    .unwrap_or_default();
    assert!(e.contains("tls.x: unknown field `x`"), "{e}");
    let e = open(&config_text(r#""require_tls": "yes""#))
        .err()
        .unwrap_or_default();
    assert!(
        e.contains("require_tls: invalid type: string \"yes\", expected a boolean"),
        "{e}"
    );
}
