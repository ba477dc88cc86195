//! A test PKI made by the test itself (rcgen): a CA, a factory certificate for `localhost` and
//! `127.0.0.1` signed by it, and the bad variants the TLS tests need (another CA, another name,
//! expired, an ECDSA key), each written as PEM files into a directory. Keys are Ed25519, as the
//! README's openssl commands make them (the agent verifies Ed25519 and RSA, not ECDSA).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, PublicKeyData,
};
use std::path::{Path, PathBuf};

/// The certificate and key files of one server identity.
#[derive(Debug, Clone)]
pub struct ServerFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// SHA-256 of its SubjectPublicKeyInfo, hex: what `pin_sha256` takes.
    pub spki_sha256: String,
}

impl ServerFiles {
    /// The factory config's `tls` section for these files.
    pub fn tls_json(&self) -> String {
        format!(
            r#"{{"cert_file": "{}", "key_file": "{}"}}"#,
            self.cert.display(),
            self.key.display()
        )
    }
}

/// Every file a TLS test needs.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The fleet's CA certificate: the agents' `ca_file`.
    pub ca: PathBuf,
    /// A CA that signed nothing the factory shows.
    pub other_ca: PathBuf,
    /// For `localhost` and `127.0.0.1`, signed by `ca`.
    pub good: ServerFiles,
    /// Same CA, but for `factory.example` only.
    pub wrong_name: ServerFiles,
    /// Same CA and names, valid 2020-01-01 to 2021-01-01.
    pub expired: ServerFiles,
    /// For `localhost`, signed by `other_ca`.
    pub other_signed: ServerFiles,
    /// Same CA and names as `good`, another key (a renewal): valid, but not the pinned key.
    pub renewed: ServerFiles,
    /// Same CA and names, but an ECDSA P-256 key (which the agent does not take).
    pub ecdsa: ServerFiles,
    /// An RSA CA (`rsa_ca`) and an RSA factory certificate it signed (PKCS#1 SHA-256), for
    /// `localhost` and `127.0.0.1`: the other key type the agent takes.
    pub rsa: ServerFiles,
    /// The RSA CA's certificate.
    pub rsa_ca: PathBuf,
}

/// Test-only RSA keys (ring cannot generate RSA keys; see tests/fixtures/README.md).
const RSA_CA_KEY: &str = include_str!("fixtures/rsa-ca.key");
const RSA_FACTORY_KEY: &str = include_str!("fixtures/rsa-factory.key");

fn rsa_key(pem: &str) -> Result<KeyPair, String> {
    KeyPair::from_pkcs8_pem_and_sign_algo(pem, &rcgen::PKCS_RSA_SHA256).map_err(|e| e.to_string())
}

fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, rcgen::Error> {
    ca_with(name, KeyPair::generate_for(&rcgen::PKCS_ED25519)?)
}

fn ca_with(name: &str, key: KeyPair) -> Result<CertifiedIssuer<'static, KeyPair>, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, key)
}

fn server(
    dir: &Path,
    file: &str,
    names: &[&str],
    issuer: &CertifiedIssuer<'static, KeyPair>,
    expired: bool,
) -> Result<ServerFiles, String> {
    server_with(dir, file, names, issuer, expired, &rcgen::PKCS_ED25519)
}

fn server_with(
    dir: &Path,
    file: &str,
    names: &[&str],
    issuer: &CertifiedIssuer<'static, KeyPair>,
    expired: bool,
    alg: &'static rcgen::SignatureAlgorithm,
) -> Result<ServerFiles, String> {
    let key = KeyPair::generate_for(alg).map_err(|e| e.to_string())?;
    signed(dir, file, names, issuer, expired, key)
}

fn signed(
    dir: &Path,
    file: &str,
    names: &[&str],
    issuer: &CertifiedIssuer<'static, KeyPair>,
    expired: bool,
    key: KeyPair,
) -> Result<ServerFiles, String> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "autofactory test");
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = params.signed_by(&key, issuer).map_err(|e| e.to_string())?;
    let files = ServerFiles {
        cert: dir.join(format!("{file}.pem")),
        key: dir.join(format!("{file}.key")),
        spki_sha256: sha256_hex(&key.subject_public_key_info()),
    };
    write(&files.cert, &cert.pem())?;
    write(&files.key, &key.serialize_pem())?;
    Ok(files)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

/// SHA-256 in lowercase hex (ring, not the code under test).
pub fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Pki {
    /// Makes every certificate and writes the files into `dir`.
    pub fn create(dir: &Path) -> Result<Pki, String> {
        let ca_main = ca("autofact test CA").map_err(|e| e.to_string())?;
        let ca_other = ca("some other CA").map_err(|e| e.to_string())?;
        let ca_rsa = ca_with("an RSA CA", rsa_key(RSA_CA_KEY)?).map_err(|e| e.to_string())?;
        let names = ["localhost", "127.0.0.1"];
        let pki = Pki {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            good: server(dir, "good", &names, &ca_main, false)?,
            wrong_name: server(dir, "wrong-name", &["factory.example"], &ca_main, false)?,
            expired: server(dir, "expired", &names, &ca_main, true)?,
            other_signed: server(dir, "other-signed", &names, &ca_other, false)?,
            renewed: server(dir, "renewed", &names, &ca_main, false)?,
            ecdsa: server_with(
                dir,
                "ecdsa",
                &names,
                &ca_main,
                false,
                &rcgen::PKCS_ECDSA_P256_SHA256,
            )?,
            rsa: signed(
                dir,
                "rsa",
                &names,
                &ca_rsa,
                false,
                rsa_key(RSA_FACTORY_KEY)?,
            )?,
            rsa_ca: dir.join("rsa-ca.pem"),
        };
        write(&pki.rsa_ca, &ca_rsa.pem())?;
        write(&pki.ca, &ca_main.pem())?;
        write(&pki.other_ca, &ca_other.pem())?;
        Ok(pki)
    }
}
