//! Signed authorization links, OAuth `state`, and PKCE verifiers.
//!
//! Everything the gateway needs to continue a flow travels in the URL, signed with an HMAC key ring
//! that only the operator holds (a Secret the controller keeps and rotates and every replica
//! watches, see `store::signing_key`), so the flow survives restarts and completes on any replica.
//! Guarantees:
//! - a token verifies only with the key that signed it (named by its kid, and still in the ring)
//!   and only for its purpose (link vs. state);
//! - no token lives longer than [`MAX_TOKEN_LIFETIME_SECS`] (7 days): issuing caps the expiry;
//! - it names the account by namespace, name *and* UID, so it cannot be moved to another account
//!   or to a re-created account of the same name;
//! - it expires; the gateway also checks that a link is still the account's current one, so a
//!   completed or superseded link is refused;
//! - the PKCE verifier never travels: it is derived from the key that signed the flow's state and
//!   the flow's random session id.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::Sha256;
use std::sync::Arc;
use tokio::sync::watch;

pub mod ring;
#[cfg(test)]
mod tests_ring;

pub use ring::{MAX_TOKEN_LIFETIME_SECS, RingSpec};

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
    /// Signed by a key the ring no longer (or never) held: rotated out, or the ring was replaced.
    #[error("the link was signed by a key that is no longer valid")]
    UnknownKey,
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

/// One key's HMAC, ready to sign.
#[derive(Clone)]
struct Member {
    id: String,
    mac: Hmac<Sha256>,
}

/// The keys in use: what the watcher of the signing-key Secret installs.
#[derive(Clone, Default)]
struct Keys {
    primary: Option<Member>,
    all: Vec<Member>,
    primary_created: Option<i64>,
    /// SHA-256 of the ring this was made of (empty for none), to tell a new ring from a re-read.
    digest: Vec<u8>,
}

impl Keys {
    fn of(ring: &RingSpec) -> Result<Self, TokenError> {
        let mut all = Vec::with_capacity(ring.keys.len());
        for k in &ring.keys {
            let bytes = k.bytes().ok_or(TokenError::Malformed)?;
            let mac = <Hmac<Sha256> as Mac>::new_from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
            all.push(Member {
                id: k.id.clone(),
                mac,
            });
        }
        let primary = all.iter().find(|m| m.id == ring.primary).cloned();
        Ok(Self {
            primary,
            all,
            primary_created: ring.primary_key().map(|k| k.created),
            digest: <Sha256 as sha2::Digest>::digest(ring.to_json()).to_vec(),
        })
    }

    fn get(&self, kid: &str) -> Option<&Member> {
        self.all.iter().find(|m| m.id == kid)
    }
}

/// Signs and verifies tokens with the operator's HMAC-SHA256 key ring.
///
/// Clones share one ring: replacing it (a rotation, or the Secret's deletion) takes effect in
/// every clone at once. Tokens carry the id of the key that signed them (`kid.payload.sig`);
/// a token without one (signed before the ring existed) verifies with [`ring::LEGACY_KID`].
/// An empty ring refuses every token and signs nothing that verifies.
#[derive(Clone)]
pub struct Signer {
    keys: Arc<watch::Sender<Arc<Keys>>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// A signer with the one key `key` (id [`ring::LEGACY_KID`]); fails only for an empty key.
    pub fn new(key: &[u8]) -> Result<Self, TokenError> {
        if key.is_empty() {
            return Err(TokenError::Malformed);
        }
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| TokenError::Malformed)?;
        let member = Member {
            id: ring::LEGACY_KID.to_owned(),
            mac,
        };
        let keys = Keys {
            primary: Some(member.clone()),
            all: vec![member],
            primary_created: None,
            digest: vec![0],
        };
        Ok(Self::with(keys))
    }

    /// A signer without keys until [`Signer::load`] installs a ring.
    pub fn empty() -> Self {
        Self::with(Keys::default())
    }

    fn with(keys: Keys) -> Self {
        Self {
            keys: Arc::new(watch::Sender::new(Arc::new(keys))),
        }
    }

    /// Installs `ring` in this signer and all its clones (listeners of [`Signer::changes`] are
    /// told only when it differs from the installed one).
    pub fn load(&self, ring: &RingSpec) -> Result<(), TokenError> {
        let keys = Keys::of(ring)?;
        if self.current().digest != keys.digest {
            self.keys.send_replace(Arc::new(keys));
        }
        Ok(())
    }

    /// Drops every key: from now on every token is refused.
    pub fn clear(&self) {
        if !self.current().all.is_empty() {
            self.keys.send_replace(Arc::new(Keys::default()));
        }
    }

    /// Id of the key that signs now, if any (ids are not secret).
    pub fn primary_kid(&self) -> Option<String> {
        self.current().primary.as_ref().map(|m| m.id.clone())
    }

    /// How many keys verify, and when the primary was made (Unix seconds).
    pub fn ring_size(&self) -> (usize, Option<i64>) {
        let keys = self.current();
        (keys.all.len(), keys.primary_created)
    }

    /// Resolves each time a ring is installed or cleared (after this call).
    pub fn changes(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        let rx = self.keys.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
    }

    /// Waits until a ring with a primary key is installed, at most `limit`; whether one is.
    pub async fn wait_loaded(&self, limit: std::time::Duration) -> bool {
        let mut rx = self.keys.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|k| k.primary.is_some()))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn current(&self) -> Arc<Keys> {
        self.keys.borrow().clone()
    }

    fn mac(member: &Member, purpose: &str) -> Hmac<Sha256> {
        let mut mac = member.mac.clone();
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac
    }

    fn sign<T: Serialize>(&self, purpose: &str, claims: &T) -> String {
        let keys = self.current();
        let Some(member) = keys.primary.as_ref() else {
            tracing::warn!(
                purpose,
                "no signing key loaded; issuing a token that will not verify"
            );
            return UNSIGNED.to_owned();
        };
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let mut mac = Self::mac(member, purpose);
        mac.update(&payload);
        format!(
            "{}.{}.{}",
            member.id,
            B64.encode(&payload),
            B64.encode(mac.finalize().into_bytes())
        )
    }

    /// The claims of `token` and the key that signed it.
    fn verify<T: DeserializeOwned>(&self, purpose: &str, token: &str) -> Result<(T, Member), TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (kid, payload, sig) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(p), Some(s), None, None) => (ring::LEGACY_KID, p, s),
            (Some(k), Some(p), Some(s), None) if ring::valid_kid(k) => (k, p, s),
            _ => return Err(TokenError::Malformed),
        };
        let payload = B64.decode(payload).map_err(|_| TokenError::Malformed)?;
        let sig = B64.decode(sig).map_err(|_| TokenError::Malformed)?;
        let keys = self.current();
        let member = keys.get(kid).ok_or(TokenError::UnknownKey)?;
        let mut mac = Self::mac(member, purpose);
        mac.update(&payload);
        mac.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        let claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        Ok((claims, member.clone()))
    }

    pub fn issue_link(&self, claims: &LinkClaims) -> String {
        self.sign("link", &capped(claims))
    }

    /// Checks signature and expiry; whether the link is still current is the caller's job.
    pub fn verify_link(&self, token: &str, now: i64) -> Result<LinkClaims, TokenError> {
        let (claims, _): (LinkClaims, _) = self.verify("link", token)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Reads a link this operator issued without checking expiry (the controller's own status).
    /// `None` also when no key of the ring signed it (so the controller issues a new one).
    pub fn read_link(&self, token: &str) -> Option<LinkClaims> {
        self.verify("link", token).ok().map(|(c, _)| c)
    }

    pub fn issue_state(&self, claims: &StateClaims) -> String {
        let mut claims = claims.clone();
        claims.exp = claims.exp.min(now() + ring::MAX_TOKEN_LIFETIME_SECS);
        self.sign("state", &claims)
    }

    pub fn verify_state(&self, token: &str, now: i64) -> Result<StateClaims, TokenError> {
        let (claims, _): (StateClaims, _) = self.verify("state", token)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// A one-time verification request id, handed to the platform's verify page.
    pub fn issue_request(&self, claims: &LinkClaims) -> String {
        self.sign("verify", &capped(claims))
    }

    pub fn verify_request(&self, token: &str, now: i64) -> Result<LinkClaims, TokenError> {
        let (claims, _): (LinkClaims, _) = self.verify("verify", token)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// The PKCE code verifier of the attempt `state` (a state token this operator signed; its
    /// expiry is not checked here): 43 URL-safe characters derived from the attempt's session id
    /// with the very key that signed the state, so it is never stored, never leaves the
    /// operator, and survives a rotation between the redirect and the callback.
    pub fn pkce_verifier(&self, state: &str) -> Result<String, TokenError> {
        let (claims, member): (StateClaims, _) = self.verify("state", state)?;
        let mut mac = Self::mac(&member, "pkce");
        mac.update(claims.sid.as_bytes());
        Ok(B64.encode(mac.finalize().into_bytes()))
    }
}

/// What a signer without keys hands out: malformed, so it never verifies.
const UNSIGNED: &str = "unsigned";

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// `claims` with their expiry capped at the longest token lifetime from now.
fn capped(claims: &LinkClaims) -> LinkClaims {
    let mut claims = claims.clone();
    claims.exp = claims.exp.min(now() + ring::MAX_TOKEN_LIFETIME_SECS);
    claims
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
        let (kid, rest) = t.split_once('.').unwrap();
        let (payload, sig) = rest.split_once('.').unwrap();
        let mut claims = link();
        claims.name = "other".into();
        let forged_payload = B64.encode(serde_json::to_vec(&claims).unwrap());
        assert_eq!(
            s.verify_link(&format!("{kid}.{forged_payload}.{sig}"), 0),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            Signer::new(&random_key()).unwrap().verify_link(&t, 0),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            s.verify_link(&format!("{kid}.{payload}.AAAA"), 0),
            Err(TokenError::BadSignature)
        );
        assert!(s.verify_state(&t, 0).is_err(), "a link is not a state");
        assert_eq!(s.verify_link("no-dot", 0), Err(TokenError::Malformed));
        assert_eq!(s.verify_link("a.b.c.d", 0), Err(TokenError::Malformed));
        assert_eq!(
            s.verify_link(&format!("k%.{payload}.{sig}"), 0),
            Err(TokenError::Malformed)
        );
        assert_eq!(s.verify_link(&"a.".repeat(600), 0), Err(TokenError::Malformed));
        assert_eq!(s.verify_link("%%%.%%%", 0), Err(TokenError::Malformed));
    }

    #[test]
    fn pkce_verifier_is_stable_per_session_and_valid_length() {
        let s = Signer::new(&random_key()).unwrap();
        let state = |sid: &str| {
            s.issue_state(&StateClaims {
                ns: "a".into(),
                name: "b".into(),
                uid: "u".into(),
                link: "l".into(),
                sid: sid.into(),
                exp: i64::MAX,
                conn: String::new(),
            })
        };
        let v = s.pkce_verifier(&state("sid")).unwrap();
        assert_eq!(v, s.pkce_verifier(&state("sid")).unwrap());
        assert_ne!(v, s.pkce_verifier(&state("sid2")).unwrap());
        assert!((43..=128).contains(&v.len()));
        assert!(
            s.pkce_verifier(&s.issue_link(&link())).is_err(),
            "a link is not a state"
        );
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
            name in "[a-z0-9-]{1,63}", uid in "[a-f0-9-]{1,40}", exp in 1i64..1_700_000_000, flip in 0usize..2000, bit in 0u8..8,
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
