//! TLS for `wss://` (the `tls` cargo feature): the trust anchors read from `ca_file`, the
//! optional pin of the factory's public key checked on top of webpki's verification, the rustls
//! client config (TLS 1.3, ring), and one readable reason for each way a handshake fails.
//!
//! The agent trusts only the CA file it is given: no system root store is read (small boards
//! often have none, or an old one), so a certificate from any public CA is refused unless that
//! CA is in the file.

use super::config::{hex, Trust};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{
    CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// Reads the CA certificates of `path`; the error is one line naming the file.
pub fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "{} holds no certificate (expected PEM `-----BEGIN CERTIFICATE-----` blocks)",
            path.display()
        ));
    }
    Ok(roots)
}

/// The rustls client config for `trust`. Built for each connection, so a CA bundle replaced on
/// disk is used from the next reconnect on.
pub fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(provider());
    let roots = load_roots(&trust.ca_file)?;
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("{}: {e}", trust.ca_file.display()))?;
    let verifier = Arc::new(Verifier {
        webpki,
        pin: trust.pin_sha256.clone(),
        provider: provider.clone(),
    });
    // TLS 1.3 only: the factory is ours and speaks it, and TLS 1.2 code would cost size.
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The agent's crypto: ring (issue 17: it cross-compiles to musl without cmake), cut to what
/// talking to our own factory needs, because every algorithm costs binary size on the board
/// (vendor-notes/rustls.md has the figures). rustls's ready-made ring provider links all of
/// them (and is deprecated in 0.23.48 only for lacking post-quantum key exchange, which ring
/// does not have). The factory is rustls with every default suite, so it always finds these:
/// - TLS 1.3 with ChaCha20-Poly1305 only: fast without AES instructions, which the
///   Raspberry Pi 3/4 lack;
/// - X25519 key exchange;
/// - certificates and handshake signatures in Ed25519 (what the README's openssl commands
///   make) and RSA with SHA-256 (PKCS#1 for CA signatures, PSS for the handshake). ECDSA is
///   left out on purpose: ring verifies P-256 with a 148 KiB precomputed table, more than all
///   of rustls, and would take the aarch64 build past its 1.25 MiB goal. An ECDSA key or chain
///   is refused with a line saying which algorithms the agent takes.
pub fn provider() -> CryptoProvider {
    use rustls::crypto::ring::{cipher_suite, kx_group};
    CryptoProvider {
        cipher_suites: vec![cipher_suite::TLS13_CHACHA20_POLY1305_SHA256],
        kx_groups: vec![kx_group::X25519],
        signature_verification_algorithms: SIG_ALGS,
        secure_random: &Random,
        key_provider: &NoKeys,
    }
}

static SIG_ALGS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        webpki::ring::ED25519,
        webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    ],
    mapping: &[
        (SignatureScheme::ED25519, &[webpki::ring::ED25519]),
        (
            SignatureScheme::RSA_PSS_SHA256,
            &[webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA256,
            &[webpki::ring::RSA_PKCS1_2048_8192_SHA256],
        ),
    ],
};

/// The kernel's random numbers through ring (rustls's own ring `SecureRandom` is private).
#[derive(Debug)]
struct Random;

impl SecureRandom for Random {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        use ring::rand::SecureRandom as _;
        ring::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| GetRandomFailed)
    }
}

/// The agent presents no certificate, so it never loads a private key.
#[derive(Debug)]
struct NoKeys;

impl KeyProvider for NoKeys {
    fn load_private_key(
        &self,
        _key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        Err(rustls::Error::General(
            "the agent loads no private key".into(),
        ))
    }
}

/// The server name checked against the factory's certificate (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string())
        .map_err(|_| format!("`{host}` is not a valid DNS name or IP address for TLS"))
}

/// webpki's normal verification (chain to `ca_file`, validity dates, server name), then the pin.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    pin: Vec<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

/// The pin did not match: carried inside rustls's error so the log line can say so.
#[derive(Debug)]
pub struct PinMismatch {
    /// The SHA-256 of the public key the factory presented.
    pub got: [u8; 32],
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the factory's public key (SPKI sha256 {}) does not match pin_sha256",
            hex(&self.got)
        )
    }
}

impl std::error::Error for PinMismatch {}

/// SHA-256 of the certificate's SubjectPublicKeyInfo, as `pin_sha256` names it.
pub fn spki_sha256(cert: &CertificateDer<'_>) -> Result<[u8; 32], rustls::Error> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let spki = ee.subject_public_key_info();
    let digest = ring::digest::digest(&ring::digest::SHA256, spki.as_ref());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    Ok(out)
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The pin is on top of, never instead of, the CA: a pinned key with a certificate for
        // another name or past its date is still refused.
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if !self.pin.is_empty() {
            let got = spki_sha256(end_entity)?;
            if !self.pin.contains(&got) {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(PinMismatch { got })),
                )));
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The keys and signatures the agent verifies, for messages.
const ALGORITHMS: &str = "Ed25519 or RSA keys and certificates, SHA-256, TLS 1.3";

/// Why a handshake failed, in words an operator can act on, from the I/O error futures-rustls
/// returns (a rustls error inside, or a plain I/O error when the peer hung up).
pub fn describe(e: &io::Error, trust: &Trust, host: &str) -> String {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => format!(
                "the factory closed the connection during the TLS handshake (is it listening \
                 with TLS? a plain ws:// factory hangs up on TLS): {e}"
            ),
            _ => e.to_string(),
        };
    };
    let ca = trust.ca_file.display();
    match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                format!("the factory's certificate is not signed by a CA in ca_file {ca} ({tls})")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the factory's certificate is not valid for the name `{host}` ({tls})")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the factory's certificate has expired ({tls})")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => format!(
                "the factory's certificate is not valid yet: is this node's clock right? ({tls})"
            ),
            CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                format!(
                    "the factory's certificate chain is signed with an algorithm this agent does \
                     not take ({ALGORITHMS}): {tls}"
                )
            }
            CertificateError::Other(OtherError(o)) => match o.downcast_ref::<PinMismatch>() {
                Some(p) => p.to_string(),
                None => format!("the factory's certificate was refused ({tls})"),
            },
            _ => format!("the factory's certificate was refused ({tls})"),
        },
        // The factory's rustls sends this when nothing the agent offers fits its key.
        rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure) => format!(
            "the factory found no algorithm in common with this agent (it takes {ALGORITHMS}; \
             is the factory's key ECDSA?): {tls}"
        ),
        rustls::Error::AlertReceived(a) => {
            format!("the factory refused the TLS handshake (alert {a:?})")
        }
        rustls::Error::InvalidMessage(_) => format!(
            "the factory did not answer in TLS (is it listening with TLS, or is this a plain \
             ws:// port?): {tls}"
        ),
        other => format!("TLS error: {other}"),
    }
}
