//! The signer over a key ring: which keys sign and verify, through rotation, legacy tokens and an
//! emptied ring.
#![allow(clippy::unwrap_used)] // test code

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::Mac;

use super::ring::{LEGACY_KID, MAX_TOKEN_LIFETIME_SECS, RingSpec};
use super::*;

fn link(exp: i64) -> LinkClaims {
    LinkClaims {
        ns: "ns".into(),
        name: "kim".into(),
        uid: "u1".into(),
        nonce: random_id(),
        exp,
    }
}

fn state(sid: &str) -> StateClaims {
    StateClaims {
        ns: "ns".into(),
        name: "kim".into(),
        uid: "u1".into(),
        link: "n".into(),
        sid: sid.into(),
        exp: 1000,
        conn: String::new(),
    }
}

fn signer(ring: &RingSpec) -> Signer {
    let s = Signer::empty();
    s.load(ring).unwrap();
    s
}

/// A token in the pre-ring format (`payload.sig`, no kid) signed with `key`.
fn legacy_token(key: &[u8], purpose: &str, claims: &LinkClaims) -> String {
    let payload = serde_json::to_vec(claims).unwrap();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(purpose.as_bytes());
    mac.update(b"\0");
    mac.update(&payload);
    format!(
        "{}.{}",
        B64.encode(&payload),
        B64.encode(mac.finalize().into_bytes())
    )
}

#[test]
fn the_primary_signs_and_names_itself_and_every_member_verifies() {
    let ring = RingSpec::fresh(0);
    let s = signer(&ring);
    let old = s.issue_link(&link(1000));
    assert!(old.starts_with(&format!("{}.", ring.primary)), "carries its kid");

    let mut rotated = ring.clone();
    rotated.rotate(10);
    s.load(&rotated).unwrap();
    let new = s.issue_link(&link(1000));
    assert!(new.starts_with(&format!("{}.", rotated.primary)));
    assert_ne!(rotated.primary, ring.primary);
    // Both verify: the old key stays a member for the overlap.
    assert!(s.verify_link(&old, 999).is_ok());
    assert!(s.verify_link(&new, 999).is_ok());
    assert_eq!(s.ring_size().0, 2);
    assert_eq!(s.primary_kid(), Some(rotated.primary.clone()));
}

#[test]
fn a_token_of_a_key_no_longer_in_the_ring_is_refused() {
    let ring = RingSpec::fresh(0);
    let s = signer(&ring);
    let token = s.issue_link(&link(1000));
    s.load(&RingSpec::fresh(0)).unwrap();
    assert_eq!(s.verify_link(&token, 0), Err(TokenError::UnknownKey));
    assert!(s.read_link(&token).is_none(), "the controller replaces it");
    // A kid of the ring with another key's signature is a bad signature, not a pass.
    let other = signer(&RingSpec::fresh(0)).issue_link(&link(1000));
    let (_, rest) = other.split_once('.').unwrap();
    let forged = format!("{}.{rest}", s.primary_kid().unwrap());
    assert_eq!(s.verify_link(&forged, 0), Err(TokenError::BadSignature));
}

#[test]
fn expiry_is_checked_and_capped_at_issue() {
    let s = signer(&RingSpec::fresh(0));
    let t = s.issue_link(&link(1000));
    assert_eq!(s.verify_link(&t, 1000), Err(TokenError::Expired));
    assert!(s.read_link(&t).is_some(), "reading ignores expiry");
    let now = jiff::Timestamp::now().as_second();
    let far = s.issue_link(&link(now + 30 * 24 * 3600));
    let exp = s.read_link(&far).unwrap().exp;
    assert!(exp <= now + MAX_TOKEN_LIFETIME_SECS + 5, "capped at 7 days");
    let req = s.issue_request(&link(i64::MAX));
    assert!(
        s.verify_request(&req, now + MAX_TOKEN_LIFETIME_SECS + 10)
            .is_err()
    );
    let st = s.issue_state(&StateClaims {
        exp: i64::MAX,
        ..state("s")
    });
    assert!(s.verify_state(&st, now + MAX_TOKEN_LIFETIME_SECS + 10).is_err());
}

#[test]
fn a_pre_ring_token_verifies_with_the_legacy_member_only() {
    let key = random_key();
    let claims = link(1000);
    let token = legacy_token(&key, "link", &claims);
    let s = signer(&RingSpec::legacy(&key, 0));
    assert_eq!(s.verify_link(&token, 0), Ok(claims.clone()));
    // After a rotation it still verifies (the legacy key is retired, not dropped)...
    let mut ring = RingSpec::legacy(&key, 0);
    ring.rotate(5);
    s.load(&ring).unwrap();
    assert_eq!(s.verify_link(&token, 0), Ok(claims));
    assert_ne!(s.primary_kid().as_deref(), Some(LEGACY_KID));
    // ...until the ring no longer holds it.
    s.load(&RingSpec::fresh(0)).unwrap();
    assert_eq!(s.verify_link(&token, 0), Err(TokenError::UnknownKey));
    // A token in the old format under another key is refused.
    let s = signer(&RingSpec::legacy(&random_key(), 0));
    assert_eq!(s.verify_link(&token, 0), Err(TokenError::BadSignature));
}

#[test]
fn an_emptied_ring_refuses_everything_and_signs_nothing_usable() {
    let s = signer(&RingSpec::fresh(0));
    let token = s.issue_link(&link(1000));
    let clone = s.clone();
    s.clear();
    assert_eq!(clone.verify_link(&token, 0), Err(TokenError::UnknownKey));
    let issued = clone.issue_link(&link(1000));
    assert!(clone.read_link(&issued).is_none());
    assert_eq!(clone.ring_size().0, 0);
    assert_eq!(clone.primary_kid(), None);
}

#[test]
fn the_pkce_verifier_comes_from_the_key_that_signed_the_state() {
    let ring = RingSpec::fresh(0);
    let s = signer(&ring);
    let st = s.issue_state(&state("sid"));
    let before = s.pkce_verifier(&st).unwrap();
    let mut rotated = ring.clone();
    rotated.rotate(1);
    s.load(&rotated).unwrap();
    assert_eq!(s.pkce_verifier(&st).unwrap(), before, "survives a rotation");
    let fresh = s.issue_state(&state("sid"));
    assert_ne!(s.pkce_verifier(&fresh).unwrap(), before, "new key, new verifier");
    s.load(&RingSpec::fresh(0)).unwrap();
    assert_eq!(s.pkce_verifier(&st), Err(TokenError::UnknownKey));
}

#[tokio::test]
async fn clones_see_a_new_ring_and_listeners_are_told() {
    use futures::StreamExt;
    let s = signer(&RingSpec::fresh(0));
    let mut changes = Box::pin(s.changes());
    let clone = s.clone();
    let ring = RingSpec::fresh(0);
    s.load(&ring).unwrap();
    assert_eq!(clone.primary_kid(), Some(ring.primary.clone()));
    changes.next().await.unwrap();
    // Reading the same ring again (a watch relist) tells nobody.
    s.load(&ring).unwrap();
    assert!(futures::FutureExt::now_or_never(changes.next()).is_none());
}
