//! The signing key from the Secret's bytes: a PEM private key (PKCS#8; also PKCS#1 for RSA and
//! SEC1 for P-256), or the HS256 secret byte for byte. Every refusal says what to do and quotes
//! nothing from the key.

use jsonwebtoken::EncodingKey;
use p256::pkcs8::EncodePrivateKey;

use super::{JwtError, config};
use crate::api::JwtAlgorithm;

const ENCRYPTED: &str = "the signing key is encrypted; store it unencrypted (openssl pkcs8 -topk8 -nocrypt)";

/// The kind of a private key, by its PEM label or PKCS#8 algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    Ec,
    Ed,
}

impl KeyKind {
    fn describe(self) -> &'static str {
        match self {
            KeyKind::Rsa => "an RSA key",
            KeyKind::Ec => "an EC key",
            KeyKind::Ed => "an Ed25519 key",
        }
    }
}

/// The signing key for `algorithm` from the Secret's bytes, with a message a user can act on
/// when it is the wrong kind or format.
pub(super) fn signing_key(alg: JwtAlgorithm, key: &[u8]) -> Result<EncodingKey, JwtError> {
    let looks_like_pem = String::from_utf8_lossy(key).contains("-----BEGIN");
    let wanted = match alg {
        JwtAlgorithm::HS256 => {
            if key.is_empty() {
                return Err(config("the HS256 secret is empty"));
            }
            if looks_like_pem {
                return Err(config(
                    "HS256 needs a shared secret, but the signing key Secret holds a PEM key",
                ));
            }
            return Ok(EncodingKey::from_secret(key));
        }
        JwtAlgorithm::RS256 => KeyKind::Rsa,
        JwtAlgorithm::ES256 => KeyKind::Ec,
        JwtAlgorithm::EdDSA => KeyKind::Ed,
    };
    let text = std::str::from_utf8(key)
        .ok()
        .filter(|_| looks_like_pem)
        .ok_or_else(|| {
            config(format!(
                "{alg:?} needs a PEM private key, but the signing key is not PEM"
            ))
        })?;
    let blocks = pem_blocks(text)?;
    let Some(block) = blocks.iter().find(|b| b.tag().ends_with("PRIVATE KEY")) else {
        return Err(config(
            if blocks
                .iter()
                .any(|b| b.tag().ends_with("PUBLIC KEY") || b.tag() == "CERTIFICATE")
            {
                "the signing key Secret holds a public key or certificate; it needs the private key"
            } else {
                "the signing key has no PEM private key block"
            },
        ));
    };
    let mismatch = |kind: KeyKind| {
        config(format!(
            "the signing key is {}, but {alg:?} needs {}",
            kind.describe(),
            wanted.describe()
        ))
    };
    // The block alone, as PEM again: the library reads only the first block of a file, which may
    // be `EC PARAMETERS`.
    let alone = pem::encode(block);
    let (kind, encoding_key) = match block.tag() {
        "PRIVATE KEY" => {
            if let Ok(k) = EncodingKey::from_rsa_pem(alone.as_bytes()) {
                (KeyKind::Rsa, k)
            } else if let Ok(k) = EncodingKey::from_ec_pem(alone.as_bytes()) {
                (KeyKind::Ec, k)
            } else if let Ok(k) = EncodingKey::from_ed_pem(alone.as_bytes()) {
                (KeyKind::Ed, k)
            } else {
                return Err(config(
                    "the signing key is not an RSA, EC or Ed25519 PKCS#8 private key",
                ));
            }
        }
        "RSA PRIVATE KEY" => {
            let k = EncodingKey::from_rsa_pem(alone.as_bytes())
                .map_err(|_| config("the signing key is not a valid RSA private key"))?;
            (KeyKind::Rsa, k)
        }
        "EC PRIVATE KEY" if wanted != KeyKind::Ec => return Err(mismatch(KeyKind::Ec)),
        "EC PRIVATE KEY" => (
            KeyKind::Ec,
            EncodingKey::from_ec_der(&sec1_p256_to_pkcs8(block.contents())?),
        ),
        "ENCRYPTED PRIVATE KEY" => return Err(config(ENCRYPTED)),
        other => {
            return Err(config(format!(
                "{} keys are not supported; use PKCS#8 (openssl pkcs8 -topk8 -nocrypt)",
                printable(other)
            )));
        }
    };
    if kind != wanted {
        return Err(mismatch(kind));
    }
    Ok(encoding_key)
}

/// Every PEM block in `text`. A block with headers (`Proc-Type: 4,ENCRYPTED`) is an encrypted
/// legacy key, refused by name.
fn pem_blocks(text: &str) -> Result<Vec<pem::Pem>, JwtError> {
    let blocks = pem::parse_many(text).map_err(|e| match e {
        pem::PemError::InvalidData(_) => config(format!(
            "the PEM block {} is not valid base64",
            printable(&undecodable_label(text))
        )),
        _ => config("the signing key is not well-formed PEM"),
    })?;
    // The parser stops quietly at a block without its END line.
    if text.matches("-----BEGIN ").count() > blocks.len() {
        return Err(config("the signing key is not well-formed PEM (no END line)"));
    }
    if blocks.iter().any(|b| b.headers().iter().next().is_some()) {
        return Err(config(ENCRYPTED));
    }
    Ok(blocks)
}

/// The label of the first block whose body is not base64, for the message.
fn undecodable_label(text: &str) -> String {
    text.match_indices("-----BEGIN ")
        .map(|(at, _)| &text[at..])
        .find(|block| matches!(pem::parse(block), Err(pem::PemError::InvalidData(_))))
        .and_then(|block| block["-----BEGIN ".len()..].split("-----").next())
        .unwrap_or_default()
        .to_owned()
}

/// A PEM label for a message: user data, so only short, plain text.
fn printable(label: &str) -> String {
    if label.len() <= 40 && label.chars().all(|c| c.is_ascii_uppercase() || c == ' ') {
        label.to_owned()
    } else {
        "these".to_owned()
    }
}

/// A SEC1 `EC PRIVATE KEY` (what `openssl ecparam -genkey` prints) as the PKCS#8 DER the signer
/// reads. Only P-256 is accepted, which is what ES256 needs.
fn sec1_p256_to_pkcs8(sec1: &[u8]) -> Result<Vec<u8>, JwtError> {
    let not_p256 = |_| config("the signing key is not a valid P-256 (prime256v1) key, which ES256 needs");
    let key = p256::SecretKey::from_sec1_der(sec1).map_err(not_p256)?;
    let der = key
        .to_pkcs8_der()
        .map_err(|_| config("the signing key cannot be re-encoded as PKCS#8"))?;
    Ok(der.as_bytes().to_vec())
}
