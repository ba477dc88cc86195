//! The factory's TLS: its certificate and key read from the `tls` section's files, a rustls
//! server config (ring; TLS 1.3 and 1.2) whose certificate can be swapped while agents stay
//! connected (SIGHUP after a renewal), and whether plain agents are refused (`require_tls`).
//!
//! Agents keep their TLS session until they reconnect: a renewed certificate is shown to new
//! connections only, which is what a renewal needs.

use crate::config::TlsConfig;
use crate::error::Error;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// The TLS side of the agent listener.
pub struct TlsListener {
    acceptor: futures_rustls::TlsAcceptor,
    resolver: Arc<Resolver>,
    /// Plain (`ws://`) agents get Reject{TlsRequired} instead of a session; SIGHUP may change it.
    require_tls: AtomicBool,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("require_tls", &self.require_tls())
            .finish_non_exhaustive()
    }
}

/// Always hands out the current certificate; [`TlsListener::reload`] replaces it.
#[derive(Debug)]
struct Resolver(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// ring, for the same reason as the agent (one provider in the workspace; no cmake); rustls
/// 0.23.48 deprecates it only for lacking post-quantum key exchange.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the certificate chain and private key (PEM) and checks that they belong together.
pub fn load_certified_key(files: &TlsConfig) -> Result<CertifiedKey, Error> {
    let cert_origin = files.cert_file.display().to_string();
    let key_origin = files.key_file.display().to_string();
    let chain = read_chain(&files.cert_file).map_err(|e| Error::config(&cert_origin, e))?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| {
        Error::config(
            &key_origin,
            format!("no usable private key (PEM PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        Error::config(
            &key_origin,
            format!("key does not fit the certificate in {cert_origin}: {e}"),
        )
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if chain.is_empty() {
        return Err("holds no certificate (expected PEM `-----BEGIN CERTIFICATE-----`)".into());
    }
    Ok(chain)
}

impl TlsListener {
    /// Loads the certificate and builds the acceptor.
    pub fn new(files: &TlsConfig, require_tls: bool) -> Result<TlsListener, Error> {
        let key = load_certified_key(files)?;
        let resolver = Arc::new(Resolver(RwLock::new(Arc::new(key))));
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config("tls", e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        Ok(TlsListener {
            acceptor: futures_rustls::TlsAcceptor::from(Arc::new(config)),
            resolver,
            require_tls: AtomicBool::new(require_tls),
        })
    }

    /// The acceptor for one connection.
    pub fn acceptor(&self) -> &futures_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// Whether plain agents are refused.
    pub fn require_tls(&self) -> bool {
        self.require_tls.load(Ordering::Relaxed)
    }

    /// Re-reads the certificate and key (from `files`, the reloaded config's paths) and takes
    /// the new `require_tls`; on error the running certificate stays. Connected agents are not
    /// touched: the new certificate is for new connections.
    pub fn reload(&self, files: &TlsConfig, require_tls: bool) -> Result<(), Error> {
        let key = load_certified_key(files)?;
        *self.resolver.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        self.require_tls.store(require_tls, Ordering::Relaxed);
        Ok(())
    }
}
