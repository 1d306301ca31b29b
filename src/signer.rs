//! Signed authorization links, OAuth `state`, and PKCE verifiers.
//!
//! Everything the gateway needs to continue a flow travels in the URL, signed with an HMAC key that
//! only the operator holds (a Secret it creates once and every replica reads), so the flow survives
//! restarts and completes on any replica. Guarantees:
//! - a token verifies only with the key that signed it and only for its purpose (link vs. state);
//! - it names the account by namespace, name *and* UID, so it cannot be moved to another account
//!   or to a re-created account of the same name;
//! - it expires; the gateway also checks that a link is still the account's current one, so a
//!   completed or superseded link is refused;
//! - the PKCE verifier never travels: it is derived from the key and the flow's random session id.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::Sha256;

/// Longest token the gateway will look at; anything longer is refused before decoding.
pub const MAX_TOKEN_LEN: usize = 1024;

/// Why a link or state was refused. Messages are safe to show and log: they contain no token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the link is malformed")]
    Malformed,
    #[error("the link's signature is not valid")]
    BadSignature,
    #[error("the link has expired")]
    Expired,
}

/// What an authorization link stands for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LinkClaims {
    pub ns: String,
    pub name: String,
    pub uid: String,
    /// Random id of this link; the account's status names the current one.
    pub nonce: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// What an OAuth `state` stands for: one authorization attempt through one link.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StateClaims {
    pub ns: String,
    pub name: String,
    pub uid: String,
    /// The link nonce this attempt started from.
    pub link: String,
    /// Random session id; also bound to the browser by a cookie and the seed of the PKCE verifier.
    pub sid: String,
    pub exp: i64,
    /// UID of the Connection the attempt was sent out for: the callback refuses the state at any
    /// other Connection's redirect URI (RFC 9700 mix-up defence).
    #[serde(default)]
    pub conn: String,
}

/// Signs and verifies tokens with the operator's HMAC-SHA256 key.
#[derive(Clone)]
pub struct Signer {
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// A signer for `key`; fails only for an empty key.
    pub fn new(key: &[u8]) -> Result<Self, TokenError> {
        if key.is_empty() {
            return Err(TokenError::Malformed);
        }
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| TokenError::Malformed)?;
        Ok(Self { keyed })
    }

    fn mac(&self, purpose: &str) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac
    }

    fn sign<T: Serialize>(&self, purpose: &str, claims: &T) -> String {
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let mut mac = self.mac(purpose);
        mac.update(&payload);
        format!(
            "{}.{}",
            B64.encode(&payload),
            B64.encode(mac.finalize().into_bytes())
        )
    }

    fn verify<T: DeserializeOwned>(&self, purpose: &str, token: &str) -> Result<T, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (payload, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = B64.decode(payload).map_err(|_| TokenError::Malformed)?;
        let sig = B64.decode(sig).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac(purpose);
        mac.update(&payload);
        mac.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)
    }

    pub fn issue_link(&self, claims: &LinkClaims) -> String {
        self.sign("link", claims)
    }

    /// Checks signature and expiry; whether the link is still current is the caller's job.
    pub fn verify_link(&self, token: &str, now: i64) -> Result<LinkClaims, TokenError> {
        let claims: LinkClaims = self.verify("link", token)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Reads a link this operator issued without checking expiry (the controller's own status).
    pub fn read_link(&self, token: &str) -> Option<LinkClaims> {
        self.verify("link", token).ok()
    }

    pub fn issue_state(&self, claims: &StateClaims) -> String {
        self.sign("state", claims)
    }

    pub fn verify_state(&self, token: &str, now: i64) -> Result<StateClaims, TokenError> {
        let claims: StateClaims = self.verify("state", token)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// A one-time verification request id, handed to the platform's verify page.
    pub fn issue_request(&self, claims: &LinkClaims) -> String {
        self.sign("verify", claims)
    }

    pub fn verify_request(&self, token: &str, now: i64) -> Result<LinkClaims, TokenError> {
        let claims: LinkClaims = self.verify("verify", token)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// The PKCE code verifier of a session: 43 URL-safe characters derived from the key, so it is
    /// never stored and never leaves the operator.
    pub fn pkce_verifier(&self, sid: &str) -> String {
        let mut mac = self.mac("pkce");
        mac.update(sid.as_bytes());
        B64.encode(mac.finalize().into_bytes())
    }
}

/// A random URL-safe id with 128 bits of entropy.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    B64.encode(bytes)
}

/// A fresh 256-bit signing key.
pub fn random_key() -> Vec<u8> {
    let mut bytes = vec![0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// The token at the end of a link URL (`.../connect/<token>`).
pub fn token_of(link: &str) -> Option<&str> {
    link.rsplit_once("/connect/").map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> LinkClaims {
        LinkClaims {
            ns: "a".into(),
            name: "b".into(),
            uid: "u1".into(),
            nonce: random_id(),
            exp: 1000,
        }
    }

    #[test]
    fn link_round_trips_and_expires() {
        let s = Signer::new(&random_key()).unwrap();
        let t = s.issue_link(&link());
        assert_eq!(s.verify_link(&t, 999).unwrap(), s.read_link(&t).unwrap());
        assert_eq!(s.verify_link(&t, 1000), Err(TokenError::Expired));
    }

    #[test]
    fn tampered_forged_and_cross_purpose_tokens_are_refused() {
        let s = Signer::new(&random_key()).unwrap();
        let t = s.issue_link(&link());
        let (payload, sig) = t.split_once('.').unwrap();
        let mut claims = link();
        claims.name = "other".into();
        let forged_payload = B64.encode(serde_json::to_vec(&claims).unwrap());
        assert_eq!(
            s.verify_link(&format!("{forged_payload}.{sig}"), 0),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            Signer::new(&random_key()).unwrap().verify_link(&t, 0),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            s.verify_link(&format!("{payload}.AAAA"), 0),
            Err(TokenError::BadSignature)
        );
        assert!(s.verify_state(&t, 0).is_err(), "a link is not a state");
        assert_eq!(s.verify_link("no-dot", 0), Err(TokenError::Malformed));
        assert_eq!(s.verify_link(&"a.".repeat(600), 0), Err(TokenError::Malformed));
        assert_eq!(s.verify_link("%%%.%%%", 0), Err(TokenError::Malformed));
    }

    #[test]
    fn pkce_verifier_is_stable_per_session_and_valid_length() {
        let s = Signer::new(&random_key()).unwrap();
        let v = s.pkce_verifier("sid");
        assert_eq!(v, s.pkce_verifier("sid"));
        assert_ne!(v, s.pkce_verifier("sid2"));
        assert!((43..=128).contains(&v.len()));
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Whatever arrives in a URL, verification answers with an error, never a panic, and never
        /// accepts something that was not signed.
        #[test]
        fn arbitrary_tokens_are_refused_without_panicking(token in ".{0,1500}") {
            let s = Signer::new(b"0123456789abcdef0123456789abcdef").unwrap();
            prop_assert!(s.verify_link(&token, 0).is_err());
            prop_assert!(s.verify_state(&token, 0).is_err());
            prop_assert!(s.read_link(&token).is_none());
        }

        /// Signed tokens with any claims round-trip; flipping any byte breaks them.
        #[test]
        fn signed_tokens_round_trip_and_any_flip_is_caught(
            name in "[a-z0-9-]{1,63}", uid in "[a-f0-9-]{1,40}", exp in 1i64..4_000_000_000, flip in 0usize..2000, bit in 0u8..8,
        ) {
            let s = Signer::new(&random_key()).unwrap();
            let claims = LinkClaims { ns: "ns".into(), name, uid, nonce: random_id(), exp };
            let token = s.issue_link(&claims);
            prop_assert_eq!(s.verify_link(&token, exp - 1), Ok(claims));
            let mut bytes = token.into_bytes();
            let i = flip % bytes.len();
            bytes[i] ^= 1 << bit;
            if let Ok(t) = String::from_utf8(bytes) {
                prop_assert!(s.verify_link(&t, 0).is_err());
            }
        }
    }
}
