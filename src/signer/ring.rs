//! The signing key ring as stored in the signing-key Secret, and its rotation schedule.
//!
//! One key is primary (it signs); the others only verify, for an overlap window after they stop
//! signing that outlasts every token they signed (the signer caps each token's lifetime at
//! [`MAX_TOKEN_LIFETIME_SECS`]). This module is pure: no I/O, so the schedule is unit-tested.
//! Guarantees:
//! - a key is dropped only once every token it signed has expired (retired + overlap);
//! - the primary is never dropped;
//! - a ring that parses is usable: its primary exists, ids are unique and URL-safe, keys have
//!   at least 256 bits.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Id of the key a pre-ring Secret held (tokens without a kid verify with it).
pub const LEGACY_KID: &str = "legacy";
/// Longest lifetime of any signed token (link, state, verification request): 7 days.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 7 * 24 * 3600;
/// How long a key keeps verifying after it stops signing: the longest token lifetime plus an
/// hour for clock skew between replicas.
pub const OVERLAP_SECS: i64 = MAX_TOKEN_LIFETIME_SECS + 3600;
/// Shortest key that may sign: 256 bits.
const MIN_KEY_BYTES: usize = 32;

/// Why a stored ring cannot be used. Messages name no key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    #[error("the key ring is not valid JSON: {0}")]
    Json(String),
    #[error("the key ring's primary {0:?} is not one of its keys")]
    NoPrimary(String),
    #[error("the key ring has a key with an invalid or duplicate id")]
    BadId,
    #[error("key {0:?} is not base64 of at least 32 bytes")]
    BadKey(String),
}

/// The ring: what the Secret's `ring.json` holds.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RingSpec {
    /// Id of the key that signs.
    pub primary: String,
    pub keys: Vec<KeySpec>,
    /// The last manual-rotation request (the Secret's rotate annotation) acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_for: Option<String>,
}

/// One key of the ring.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeySpec {
    /// URL-safe id carried by every token this key signs.
    pub id: String,
    /// When the key was made, Unix seconds.
    pub created: i64,
    /// When it stopped signing, Unix seconds; `None` while primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<i64>,
    /// The HMAC key, standard base64.
    pub key: String,
}

impl std::fmt::Debug for RingSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("RingSpec")
            .field("primary", &self.primary)
            .field("keys", &ids)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySpec")
            .field("id", &self.id)
            .field("created", &self.created)
            .field("retired", &self.retired)
            .finish_non_exhaustive()
    }
}

impl KeySpec {
    /// A fresh random key made at `now`.
    pub fn generate(now: i64) -> Self {
        Self::with_key(&random_kid(), &super::random_key(), now)
    }

    fn with_key(id: &str, key: &[u8], created: i64) -> Self {
        Self {
            id: id.to_owned(),
            created,
            retired: None,
            key: STANDARD.encode(key),
        }
    }

    /// The key bytes; `None` when not base64 of at least 256 bits.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        STANDARD
            .decode(&self.key)
            .ok()
            .filter(|k| k.len() >= MIN_KEY_BYTES)
    }
}

impl RingSpec {
    /// A new ring of one fresh primary key.
    pub fn fresh(now: i64) -> Self {
        let key = KeySpec::generate(now);
        Self {
            primary: key.id.clone(),
            keys: vec![key],
            rotated_for: None,
        }
    }

    /// The ring a pre-ring Secret stands for: its one key, primary, under [`LEGACY_KID`].
    pub fn legacy(key: &[u8], created: i64) -> Self {
        Self {
            primary: LEGACY_KID.to_owned(),
            keys: vec![KeySpec::with_key(LEGACY_KID, key, created)],
            rotated_for: None,
        }
    }

    /// Parses and checks a stored ring.
    pub fn parse(json: &[u8]) -> Result<Self, RingError> {
        let ring: Self = serde_json::from_slice(json).map_err(|e| RingError::Json(e.to_string()))?;
        ring.check()?;
        Ok(ring)
    }

    /// The JSON to store.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn check(&self) -> Result<(), RingError> {
        let mut seen = std::collections::HashSet::new();
        for k in &self.keys {
            if !valid_kid(&k.id) || !seen.insert(k.id.as_str()) {
                return Err(RingError::BadId);
            }
            if k.bytes().is_none() {
                return Err(RingError::BadKey(k.id.clone()));
            }
        }
        if !seen.contains(self.primary.as_str()) {
            return Err(RingError::NoPrimary(self.primary.clone()));
        }
        Ok(())
    }

    /// The primary key.
    pub fn primary_key(&self) -> Option<&KeySpec> {
        self.keys.iter().find(|k| k.id == self.primary)
    }

    /// Whether the ring still holds the pre-ring key.
    pub fn has_legacy(&self) -> bool {
        self.keys.iter().any(|k| k.id == LEGACY_KID)
    }

    /// The ring after a maintenance pass at `now`: rotated when the primary is `rotation`
    /// seconds old or a new manual `request` came in, and without keys whose overlap has
    /// passed. `None` when nothing changes.
    pub fn maintained(&self, now: i64, rotation: i64, request: Option<&str>) -> Option<Self> {
        let mut next = self.clone();
        let aged = self.primary_key().is_none_or(|p| p.created + rotation <= now);
        let asked = request.is_some_and(|r| self.rotated_for.as_deref() != Some(r));
        if aged || asked {
            next.rotate(now);
            if asked {
                next.rotated_for = request.map(str::to_owned);
            }
        }
        let primary = next.primary.clone();
        next.keys
            .retain(|k| k.id == primary || k.retired.is_none_or(|r| r + OVERLAP_SECS > now));
        (next != *self).then_some(next)
    }

    /// Makes a fresh key primary; the old primary verifies for the overlap window from `now`.
    pub fn rotate(&mut self, now: i64) {
        for k in &mut self.keys {
            if k.id == self.primary || k.retired.is_none() {
                k.retired = Some(k.retired.unwrap_or(now));
            }
        }
        let key = KeySpec::generate(now);
        self.primary = key.id.clone();
        self.keys.push(key);
    }

    /// When the next maintenance is due: the primary's rotation or a key's end of overlap.
    pub fn next_due(&self, rotation: i64) -> i64 {
        let rotate = self.primary_key().map_or(0, |p| p.created + rotation);
        self.keys
            .iter()
            .filter_map(|k| k.retired.map(|r| r + OVERLAP_SECS))
            .fold(rotate, i64::min)
    }
}

/// A random key id: 72 bits, URL-safe, no `.`.
fn random_kid() -> String {
    super::random_id().chars().take(12).collect()
}

/// Ids are 1 to 32 characters of the URL-safe base64 alphabet (they travel in URL paths and
/// are split from the token at the first `.`).
pub fn valid_kid(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3600;

    #[test]
    fn a_fresh_ring_round_trips_and_hides_its_key_from_debug() {
        let ring = RingSpec::fresh(100);
        let parsed = RingSpec::parse(&ring.to_json()).unwrap();
        assert_eq!(parsed, ring);
        let key = &ring.keys[0].key;
        assert!(!format!("{ring:?}").contains(key.as_str()));
        assert!(valid_kid(&ring.primary));
    }

    #[test]
    fn broken_rings_are_refused() {
        let mut ring = RingSpec::fresh(0);
        ring.primary = "gone".into();
        assert!(matches!(
            RingSpec::parse(&ring.to_json()),
            Err(RingError::NoPrimary(_))
        ));
        let mut ring = RingSpec::fresh(0);
        ring.keys[0].key = STANDARD.encode([1u8; 16]);
        assert!(matches!(
            RingSpec::parse(&ring.to_json()),
            Err(RingError::BadKey(_))
        ));
        let mut ring = RingSpec::fresh(0);
        ring.keys.push(ring.keys[0].clone());
        assert_eq!(RingSpec::parse(&ring.to_json()), Err(RingError::BadId));
        let mut ring = RingSpec::fresh(0);
        ring.keys[0].id = "a.b".into();
        ring.primary = "a.b".into();
        assert_eq!(RingSpec::parse(&ring.to_json()), Err(RingError::BadId));
        assert!(matches!(RingSpec::parse(b"{"), Err(RingError::Json(_))));
    }

    #[test]
    fn rotation_is_due_after_the_interval_and_keeps_the_old_key_for_the_overlap() {
        let rotation = 30 * DAY;
        let ring = RingSpec::fresh(0);
        assert_eq!(ring.maintained(rotation - 1, rotation, None), None);
        assert_eq!(ring.next_due(rotation), rotation);
        let rotated = ring.maintained(rotation, rotation, None).unwrap();
        assert_ne!(rotated.primary, ring.primary);
        assert_eq!(rotated.keys.len(), 2);
        assert_eq!(rotated.keys[0].retired, Some(rotation));
        // The retired key stays until the overlap has passed, then goes.
        let end = rotation + OVERLAP_SECS;
        assert_eq!(rotated.next_due(rotation), end);
        assert_eq!(rotated.maintained(end - 1, rotation, None), None);
        let pruned = rotated.maintained(end, rotation, None).unwrap();
        assert_eq!(pruned.keys.len(), 1);
        assert_eq!(pruned.primary, rotated.primary);
    }

    #[test]
    fn a_manual_request_rotates_once_per_value() {
        let ring = RingSpec::fresh(0);
        let once = ring.maintained(10, 30 * DAY, Some("2026-12-01")).unwrap();
        assert_ne!(once.primary, ring.primary);
        assert_eq!(once.rotated_for.as_deref(), Some("2026-12-01"));
        assert_eq!(once.maintained(20, 30 * DAY, Some("2026-12-01")), None);
        let twice = once.maintained(20, 30 * DAY, Some("again")).unwrap();
        assert_eq!(twice.keys.len(), 3);
        // Each retired key keeps its own retirement time.
        assert_eq!(twice.keys[0].retired, Some(10));
        assert_eq!(twice.keys[1].retired, Some(20));
    }

    #[test]
    fn a_legacy_key_is_rotated_out_but_verifies_for_the_overlap() {
        let ring = RingSpec::legacy(&[7u8; 32], -100 * DAY);
        assert!(ring.has_legacy());
        let next = ring.maintained(0, 30 * DAY, None).unwrap();
        assert_ne!(next.primary, LEGACY_KID);
        assert!(next.has_legacy(), "kept although older than rotation + overlap");
        assert!(
            !next
                .maintained(OVERLAP_SECS, 30 * DAY, None)
                .unwrap()
                .has_legacy()
        );
    }
}
