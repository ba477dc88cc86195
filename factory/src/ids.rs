//! Client identity: random ids and secrets from the kernel's CSPRNG (`getrandom`), the SHA-256
//! under which a client's secret is stored (`sha2`), and the fleet secret: with a `fleet_key`
//! shared by every factory of a fleet, a client's secret is HMAC-SHA256(fleet_key, client id)
//! (`hmac`), so any factory verifies any client without a shared database.
//!
//! A random secret is 256 bits, and a fleet secret is an HMAC output of the same size, so a plain
//! SHA-256 is enough to store either: there is nothing to brute-force that a slow, salted
//! password hash would protect (those exist for low-entropy human passwords). Every comparison of
//! secret material is constant-time (`subtle`), so the time taken does not tell how many bytes
//! matched.
//!
//! Who holds the fleet key can compute every client's secret: it is as sensitive as all the
//! factories' inventories together, and lives only in the factories' config files.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The shortest fleet key accepted: 32 characters (`openssl rand -hex 32` gives 64).
pub const MIN_FLEET_KEY_LEN: usize = 32;

/// Fills `buf` from the kernel's CSPRNG (`getrandom(2)`, which blocks only until the pool is
/// initialised at boot).
pub fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    getrandom::fill(buf).map_err(|e| match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::other(format!("getrandom: {e}")),
    })
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// A new random client id: 128 bits as 32 lowercase hex digits.
pub fn new_client_id() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    random_bytes(&mut b)?;
    Ok(hex(&b))
}

/// A new random secret: 256 bits as 64 lowercase hex digits.
pub fn new_secret() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    random_bytes(&mut b)?;
    Ok(hex(&b))
}

/// True when `s` looks like a client id: exactly 32 lowercase hex digits.
pub fn is_client_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The stored form of a secret: hex SHA-256.
pub fn secret_hash(secret: &str) -> String {
    hex(&sha256(secret.as_bytes()))
}

/// Compares without an early exit, so the time taken does not tell how many bytes matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // subtle answers false at once for different lengths; lengths are not secret here.
    a.ct_eq(b).into()
}

/// SHA-256 (FIPS 180-4) of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The fleet secret of `client_id`: hex HMAC-SHA256 keyed with the fleet key's bytes. `None`
/// only if the HMAC refused the key, which it does for no length (a longer key is hashed first).
pub fn fleet_secret(fleet_key: &str, client_id: &str) -> Option<String> {
    Some(hex(&fleet_mac(fleet_key, client_id)?
        .finalize()
        .into_bytes()))
}

fn fleet_mac(fleet_key: &str, client_id: &str) -> Option<Hmac<Sha256>> {
    // No fallback key: a MAC we cannot key verifies nothing (fail closed).
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(fleet_key.as_bytes()).ok()?;
    mac.update(client_id.as_bytes());
    Some(mac)
}

/// Is `presented` the fleet secret of `client_id` under `fleet_key`? Constant-time.
pub fn is_fleet_secret(fleet_key: &str, client_id: &str, presented: &str) -> bool {
    match (unhex(presented), fleet_mac(fleet_key, client_id)) {
        (Some(code), Some(mac)) => mac.verify_slice(&code).is_ok(),
        _ => false,
    }
}

/// The secret a newly enrolled client gets: its fleet secret when the factory has a fleet key,
/// else 256 random bits.
pub fn enrollment_secret(fleet_key: Option<&str>, client_id: &str) -> std::io::Result<String> {
    match fleet_key {
        Some(k) => fleet_secret(k, client_id)
            .ok_or_else(|| std::io::Error::other("HMAC-SHA256 refused the fleet key")),
        None => new_secret(),
    }
}

/// A new client's id and secret (see [`enrollment_secret`]).
pub fn new_identity(fleet_key: Option<&str>) -> std::io::Result<(String, String)> {
    let id = new_client_id()?;
    let secret = enrollment_secret(fleet_key, &id)?;
    Ok((id, secret))
}

/// Does `presented` prove `client_id`? Either it hashes to the stored hash (`stored_hash`, when
/// this factory has a record: every client enrolled before the fleet key keeps working), or it
/// is the client's fleet secret (any factory of the fleet, record or not).
pub fn secret_valid(
    stored_hash: Option<&str>,
    fleet_key: Option<&str>,
    client_id: &str,
    presented: &str,
) -> bool {
    let stored = stored_hash
        .is_some_and(|h| constant_time_eq(secret_hash(presented).as_bytes(), h.as_bytes()));
    let fleet = fleet_key.is_some_and(|k| is_fleet_secret(k, client_id, presented));
    stored | fleet
}

/// The secret to send a known client with its welcome back: its fleet secret when the factory
/// has a fleet key and the client proved itself with another secret (it was enrolled before the
/// key), so that from then on every factory of the fleet knows it; else none (empty: keep yours).
/// The agent stores a secret it is sent, as at enrollment. Its old secret keeps working at this
/// factory (the stored hash is not replaced), so an agent that failed to store the new one is
/// not locked out.
pub fn fleet_rekey(fleet_key: Option<&str>, client_id: &str, presented: &str) -> String {
    match fleet_key {
        Some(k) if !is_fleet_secret(k, client_id, presented) => {
            fleet_secret(k, client_id).unwrap_or_default()
        }
        _ => String::new(),
    }
}

/// The bytes of an even-length hex string (either case), or `None`.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| Some((digit(p[0])? * 16 + digit(p[1])?) as u8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // FIPS 180-4 / NIST CAVP example vectors.
    #[test]
    fn sha256_fips_vectors() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            hex(&sha256(
                b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"
            )),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"
        );
        let million_a = vec![b'a'; 1_000_000];
        assert_eq!(
            hex(&sha256(&million_a)),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn sha256_padding_boundaries() {
        // 55, 56 and 64 bytes cross the one-/two-block padding boundary.
        assert_eq!(
            hex(&sha256(&[b'a'; 55])),
            "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"
        );
        assert_eq!(
            hex(&sha256(&[b'a'; 56])),
            "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"
        );
        assert_eq!(
            hex(&sha256(&[b'a'; 64])),
            "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"
        );
    }

    #[test]
    fn ids_are_random_hex_of_the_right_length() {
        let a = new_client_id().expect("urandom");
        let b = new_client_id().expect("urandom");
        assert!(is_client_id(&a) && is_client_id(&b));
        assert_ne!(a, b);
        assert_eq!(new_secret().expect("urandom").len(), 64);
        assert!(!is_client_id("ABCDEF0123456789abcdef0123456789"));
        assert!(!is_client_id("abc"));
    }

    // RFC 4231 test cases 1 and 2 (HMAC-SHA-256).
    #[test]
    fn hmac_sha256_rfc4231_vectors() {
        let key = String::from_utf8(vec![0x0b; 20]).expect("ascii");
        assert_eq!(
            fleet_secret(&key, "Hi There").as_deref(),
            Some("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        );
        assert_eq!(
            fleet_secret("Jefe", "what do ya want for nothing?").as_deref(),
            Some("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    #[test]
    fn fleet_secrets_verify_only_under_their_key_and_id() {
        let key = "fleet-key-0123456789abcdef0123456789abcdef";
        let id = "0123456789abcdef0123456789abcdef";
        let s = fleet_secret(key, id).expect("any key length");
        assert_eq!(s.len(), 64);
        assert!(is_fleet_secret(key, id, &s));
        assert!(is_fleet_secret(key, id, &s.to_uppercase()));
        assert!(!is_fleet_secret(
            "another-fleet-key-0123456789abcdef",
            id,
            &s
        ));
        assert!(!is_fleet_secret(
            key,
            "ffffffffffffffffffffffffffffffff",
            &s
        ));
        assert!(!is_fleet_secret(key, id, &s[..62]));
        assert!(!is_fleet_secret(key, id, "zz"));
        assert!(!is_fleet_secret(key, id, ""));
        assert_eq!(enrollment_secret(Some(key), id).expect("derived"), s);
        let random = enrollment_secret(None, id).expect("random");
        assert_eq!(random.len(), 64);
        assert_ne!(random, s);
    }

    #[test]
    fn a_secret_is_valid_through_the_stored_hash_or_the_fleet_key() {
        let key = "fleet-key-0123456789abcdef0123456789abcdef";
        let id = "0123456789abcdef0123456789abcdef";
        let old = new_secret().expect("random");
        let stored = secret_hash(&old);
        // Enrolled before the fleet key: the stored hash, with or without a key now.
        assert!(secret_valid(Some(&stored), None, id, &old));
        assert!(secret_valid(Some(&stored), Some(key), id, &old));
        // That secret means nothing to a factory without the record.
        assert!(!secret_valid(None, Some(key), id, &old));
        // A fleet secret: valid anywhere the key is, record or not.
        let fleet = fleet_secret(key, id).expect("any key length");
        assert!(secret_valid(None, Some(key), id, &fleet));
        assert!(secret_valid(Some(&stored), Some(key), id, &fleet));
        assert!(!secret_valid(Some(&stored), None, id, &fleet));
        assert!(!secret_valid(None, None, id, &fleet));
    }

    #[test]
    fn only_a_client_without_its_fleet_secret_is_rekeyed() {
        let key = "fleet-key-0123456789abcdef0123456789abcdef";
        let id = "0123456789abcdef0123456789abcdef";
        let fleet = fleet_secret(key, id).expect("any key length");
        assert_eq!(fleet_rekey(Some(key), id, "an-old-random-secret"), fleet);
        assert_eq!(fleet_rekey(Some(key), id, &fleet), "");
        assert_eq!(fleet_rekey(None, id, "an-old-random-secret"), "");
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
