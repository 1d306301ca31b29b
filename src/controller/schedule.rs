//! When to renew a token, and how long to wait after a failed renewal.
//!
//! Renewal happens at `expires_at - before - jitter`. `before` is the Connection's
//! `spec.refresh.before`, or else a third of the token's lifetime, at least one minute. Whatever
//! `before` says, renewal is never earlier than half the token's lifetime after it was obtained,
//! and never sooner than [`MIN_INTERVAL`] after it: a `before` close to (or beyond) the lifetime,
//! or a provider issuing near-zero lifetimes, cannot make a refresh loop.
//! Jitter (up to a tenth of `before`) is derived from the account UID and the token's issue time,
//! so many tokens issued together spread out, yet a reconcile always computes the same time: no
//! status churn, no hot loop.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::store::TokenSet;

/// When `tokens` should be renewed, or `None` when they cannot be (no expiry or no refresh token).
pub fn refresh_at(tokens: &TokenSet, before: Option<SignedDuration>, uid: &str) -> Option<Timestamp> {
    renew_at(tokens, before, uid, true)
}

/// [`refresh_at`] for any credential with an expiry: one renewed with a refresh token
/// (`needs_refresh_token`), or one the operator obtains again on its own (JWTs, client credentials).
pub fn renew_at(
    tokens: &TokenSet,
    before: Option<SignedDuration>,
    uid: &str,
    needs_refresh_token: bool,
) -> Option<Timestamp> {
    let expires_at = tokens.expires_at?;
    if needs_refresh_token {
        tokens.refresh_token.as_ref()?;
    }
    let lifetime = expires_at
        .duration_since(tokens.obtained_at)
        .max(SignedDuration::ZERO);
    let half = lifetime / 2;
    let before = match before {
        Some(b) => b.min(half),
        None => (lifetime / 3).max(SignedDuration::from_secs(60).min(half)),
    };
    let mut h = DefaultHasher::new();
    (uid, tokens.obtained_at.as_second()).hash(&mut h);
    let spread = (before / 10).as_millis().max(1) as u64;
    let jitter = SignedDuration::from_millis((h.finish() % spread) as i64);
    let earliest = tokens.obtained_at + half.max(MIN_INTERVAL);
    Some((expires_at - before - jitter).max(earliest))
}

/// The shortest time between obtaining a credential and renewing it.
pub const MIN_INTERVAL: SignedDuration = SignedDuration::from_secs(5);

/// Delay before retry number `attempt` (1-based) after a transient failure: 5 s doubling to 5 min,
/// plus up to 20% jitter.
pub fn backoff(attempt: u32, uid: &str) -> Duration {
    let base = Duration::from_secs(5).saturating_mul(1u32 << attempt.saturating_sub(1).min(10));
    let base = base.min(Duration::from_secs(300));
    let mut h = DefaultHasher::new();
    (uid, attempt).hash(&mut h);
    let spread = (base.as_millis() as u64 / 5).max(1);
    base + Duration::from_millis(h.finish() % spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(lifetime_s: i64) -> TokenSet {
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        TokenSet {
            refresh_token: Some("r".into()),
            obtained_at: t0,
            expires_at: Some(t0 + SignedDuration::from_secs(lifetime_s)),
            ..Default::default()
        }
    }

    fn lead(t: &TokenSet, before: Option<SignedDuration>, uid: &str) -> i64 {
        t.expires_at
            .unwrap()
            .duration_since(refresh_at(t, before, uid).unwrap())
            .as_secs()
    }

    #[test]
    fn default_is_a_third_of_the_lifetime_with_bounded_jitter() {
        let t = tokens(3600);
        for uid in ["a", "b", "c", "d"] {
            let l = lead(&t, None, uid);
            assert!((1200..=1320).contains(&l), "lead {l}s for {uid}");
        }
        assert_eq!(
            refresh_at(&t, None, "a"),
            refresh_at(&t, None, "a"),
            "deterministic"
        );
    }

    #[test]
    fn at_least_a_minute_but_never_more_than_half_the_lifetime() {
        assert!((60..=66).contains(&lead(&tokens(150), None, "u")));
        assert!((30..=33).contains(&lead(&tokens(60), None, "u")));
    }

    #[test]
    fn explicit_before_wins_up_to_half_the_lifetime() {
        assert!((20..=22).contains(&lead(&tokens(60), Some(SignedDuration::from_secs(20)), "u")));
        // `before` at or beyond the lifetime: never before half of it has passed, for any jitter.
        for before in [30, 45, 59, 60, 600] {
            for uid in ["a", "b", "c", "d", "e"] {
                let t = tokens(60);
                let at = refresh_at(&t, Some(SignedDuration::from_secs(before)), uid).unwrap();
                assert!(
                    at >= t.obtained_at + SignedDuration::from_secs(30),
                    "before {before}s, {uid}"
                );
                assert_eq!(lead(&t, Some(SignedDuration::from_secs(before)), uid), 30);
            }
        }
    }

    #[test]
    fn near_zero_lifetimes_cannot_loop() {
        for lifetime in [0, 1, 4] {
            let t = tokens(lifetime);
            let at = refresh_at(&t, None, "u").unwrap();
            assert_eq!(at, t.obtained_at + MIN_INTERVAL, "lifetime {lifetime}s");
        }
    }

    #[test]
    fn no_refresh_without_expiry_or_refresh_token() {
        let mut t = tokens(60);
        t.refresh_token = None;
        assert_eq!(refresh_at(&t, None, "u"), None);
        let mut t = tokens(60);
        t.expires_at = None;
        assert_eq!(refresh_at(&t, None, "u"), None);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert!(backoff(1, "u") >= Duration::from_secs(5) && backoff(1, "u") < Duration::from_secs(7));
        assert!(backoff(3, "u") >= Duration::from_secs(20));
        assert!(backoff(30, "u") <= Duration::from_secs(360));
    }
}
