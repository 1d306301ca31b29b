//! The sealed form of one value: AES-256-GCM under a fresh data key (DEK), the DEK itself
//! AES-256-GCM-encrypted ("wrapped") under a key-encryption key (KEK).
//!
//! Stored as JSON, so the key id and format version are readable without any key:
//!
//! ```json
//! {"v":1,"kek":"k1","dek":"<base64 nonce||wrapped DEK||tag>","data":"<base64 nonce||ciphertext||tag>"}
//! ```
//!
//! Guarantees:
//! - every seal draws a new DEK and new 96-bit nonces from the OS RNG, so a nonce never repeats
//!   under one key in practice (one value per DEK);
//! - both layers authenticate the version, the KEK id and the `binding` (the Secret's name, which
//!   carries the account UID): a sealed value copied into another account's Secret, or with its
//!   key id edited, does not open;
//! - DEKs live in [`Zeroizing`] buffers and are wiped once used.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload, rand_core::RngCore};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::keyring::{KEY_LEN, Key, Keyring};

/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Length of an AES-GCM nonce in bytes.
const NONCE_LEN: usize = 12;

/// Why a sealed value does not open (or cannot be sealed).
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the sealed value is sealed with key {0:?}, which is not loaded (--kek)")]
    KeyNotLoaded(String),
    #[error("the sealed value has format version {0}; this operator reads version {VERSION}")]
    Version(u32),
    #[error("the sealed value is malformed")]
    Malformed,
    #[error("the sealed value does not open: wrong key, wrong Secret, or altered")]
    Authentication,
    #[error("no key to seal with")]
    NoKey,
}

/// The stored envelope.
#[derive(Serialize, Deserialize)]
struct Envelope {
    v: u32,
    kek: String,
    dek: String,
    data: String,
}

/// The header of an envelope: what can be read without a key.
#[derive(Deserialize)]
struct Header {
    v: u32,
    kek: String,
}

/// The KEK id a sealed value names, read without opening it.
pub fn key_id(sealed: &[u8]) -> Result<String, SealError> {
    let h: Header = serde_json::from_slice(sealed).map_err(|_| SealError::Malformed)?;
    if h.v != VERSION {
        return Err(SealError::Version(h.v));
    }
    Ok(h.kek)
}

/// Additional authenticated data of a layer: the layer, version, key id and binding.
fn aad(layer: &str, kek: &str, binding: &str) -> Vec<u8> {
    format!("agentauth.dev/{layer}/v{VERSION}\0{kek}\0{binding}").into_bytes()
}

fn encrypt(key: &[u8], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| SealError::NoKey)?;
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let ct = cipher
        .encrypt(&nonce, Payload { msg: plaintext, aad })
        .map_err(|_| SealError::NoKey)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

fn decrypt(key: &[u8], sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if sealed.len() < NONCE_LEN {
        return Err(SealError::Malformed);
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| SealError::Malformed)?;
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| SealError::Authentication)
}

/// Seals `plaintext` under the keyring's primary KEK, bound to `binding`.
pub fn seal(keyring: &Keyring, binding: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let (kek_id, kek) = keyring.primary_key().ok_or(SealError::NoKey)?;
    let mut dek: Key = Zeroizing::new([0; KEY_LEN]);
    OsRng.fill_bytes(dek.as_mut_slice());
    let data = encrypt(dek.as_slice(), plaintext, &aad("record", kek_id, binding))?;
    let wrapped = encrypt(kek.as_slice(), dek.as_slice(), &aad("dek", kek_id, binding))?;
    let envelope = Envelope {
        v: VERSION,
        kek: kek_id.to_owned(),
        dek: STANDARD.encode(wrapped),
        data: STANDARD.encode(data),
    };
    serde_json::to_vec(&envelope).map_err(|_| SealError::Malformed)
}

/// Opens a value sealed by [`seal`] with the same `binding`.
pub fn open(
    keyring: Option<&Keyring>,
    binding: &str,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let e: Envelope = serde_json::from_slice(sealed).map_err(|_| SealError::Malformed)?;
    if e.v != VERSION {
        return Err(SealError::Version(e.v));
    }
    let kek = keyring
        .and_then(|k| k.get(&e.kek))
        .ok_or_else(|| SealError::KeyNotLoaded(e.kek.clone()))?;
    let wrapped = STANDARD.decode(&e.dek).map_err(|_| SealError::Malformed)?;
    let data = STANDARD.decode(&e.data).map_err(|_| SealError::Malformed)?;
    let dek = decrypt(kek.as_slice(), &wrapped, &aad("dek", &e.kek, binding))?;
    if dek.len() != KEY_LEN {
        return Err(SealError::Malformed);
    }
    decrypt(&dek, &data, &aad("record", &e.kek, binding))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::collections::BTreeMap;

    use super::*;

    fn ring(keys: &[(&str, u8)], primary: &str) -> Keyring {
        let keys: BTreeMap<String, Key> = keys
            .iter()
            .map(|(id, b)| ((*id).to_owned(), Zeroizing::new([*b; KEY_LEN])))
            .collect();
        Keyring::from_keys(keys, Some(primary)).unwrap().unwrap()
    }

    #[test]
    fn round_trip_names_the_key_and_hides_the_plaintext() {
        let k = ring(&[("k1", 1)], "k1");
        let secret = b"{\"refreshToken\":\"rt-very-secret-value\"}";
        let sealed = seal(&k, "agentauth-uid-1", secret).unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("rt-very-secret"));
        assert_eq!(key_id(&sealed).unwrap(), "k1");
        assert_eq!(
            open(Some(&k), "agentauth-uid-1", &sealed).unwrap().as_slice(),
            secret
        );
        // Fresh DEK and nonces every time.
        assert_ne!(sealed, seal(&k, "agentauth-uid-1", secret).unwrap());
    }

    #[test]
    fn another_binding_a_missing_key_or_a_tampered_value_does_not_open() {
        let k = ring(&[("k1", 1), ("k2", 2)], "k1");
        let sealed = seal(&k, "agentauth-uid-1", b"payload").unwrap();
        assert!(matches!(
            open(Some(&k), "agentauth-uid-2", &sealed),
            Err(SealError::Authentication)
        ));
        let only_k2 = ring(&[("k2", 2)], "k2");
        assert!(matches!(
            open(Some(&only_k2), "agentauth-uid-1", &sealed),
            Err(SealError::KeyNotLoaded(id)) if id == "k1"
        ));
        assert!(matches!(
            open(None, "agentauth-uid-1", &sealed),
            Err(SealError::KeyNotLoaded(_))
        ));
        // Relabelling the key id does not help: the id is authenticated.
        let relabelled = String::from_utf8(sealed.clone())
            .unwrap()
            .replace("\"k1\"", "\"k2\"");
        assert!(matches!(
            open(Some(&k), "agentauth-uid-1", relabelled.as_bytes()),
            Err(SealError::Authentication)
        ));
        let mut e: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        e["v"] = 2.into();
        assert!(matches!(
            open(Some(&k), "agentauth-uid-1", &serde_json::to_vec(&e).unwrap()),
            Err(SealError::Version(2))
        ));
        assert!(matches!(key_id(b"{}"), Err(SealError::Malformed)));
    }

    #[test]
    fn a_record_sealed_under_the_old_key_opens_after_rotation() {
        let old = ring(&[("k1", 1)], "k1");
        let sealed = seal(&old, "n", b"x").unwrap();
        let rotated = ring(&[("k1", 1), ("k2", 2)], "k2");
        assert_eq!(open(Some(&rotated), "n", &sealed).unwrap().as_slice(), b"x");
        assert_eq!(key_id(&seal(&rotated, "n", b"x").unwrap()).unwrap(), "k2");
    }
}
