//! The operator's HMAC key ring for links, OAuth state and verification requests: one Secret in
//! the operator's namespace.
//!
//! - Every process [`follow`]s the Secret with a watch on that one name and installs each version
//!   in its [`Signer`] within moments; when the Secret is deleted it drops every key, so every
//!   outstanding token is refused until a new ring exists.
//! - The controller (the leader) [`maintain`]s it: creates it when absent, rotates the primary
//!   every `--signing-key-rotation` or when the rotate annotation changes, and drops keys whose
//!   overlap has passed. Every write is a replace at the resourceVersion it read, so two replicas
//!   racing never lose each other's key.
//!
//! The Secret's `ring.json` holds the ring (see [`RingSpec`]). A Secret written before the ring
//! existed holds one key under `hmac-sha256`: it reads as a ring of that key (id `legacy`),
//! so tokens signed before the upgrade keep verifying; `hmac-sha256` is kept for as long as the
//! legacy key is in the ring, for processes of the previous version during a rolling upgrade.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use super::{MANAGED_BY, ROLE_LABEL};
use crate::metrics::Metrics;
use crate::signer::Signer;
use crate::signer::ring::{RingError, RingSpec};

/// Name of the Secret holding the ring.
pub const NAME: &str = "agent-auth-operator-signing-key";
/// Annotation on the Secret that asks for a rotation: any value not acted on yet.
pub const ROTATE_ANNOTATION: &str = "agentauth.dev/rotate";
/// The ring.
const RING: &str = "ring.json";
/// The one key of a Secret written before the ring existed.
const LEGACY: &str = "hmac-sha256";
/// Longest wait between maintenance passes: a missed watch event costs at most this.
const RECHECK: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("Kubernetes API error: {0}")]
    Api(#[from] kube::Error),
    #[error("Secret {NAME} holds no usable key ring: {0}")]
    Unusable(RingError),
    #[error("Secret {NAME} holds neither {RING:?} nor a usable {LEGACY:?}")]
    Empty,
}

/// The ring a Secret holds.
pub fn ring_of(secret: &Secret) -> Result<RingSpec, KeyError> {
    let data = secret.data.as_ref();
    if let Some(json) = data.and_then(|d| d.get(RING)) {
        return RingSpec::parse(&json.0).map_err(KeyError::Unusable);
    }
    let key = data.and_then(|d| d.get(LEGACY)).map(|b| b.0.as_slice());
    match key {
        Some(k) if k.len() >= 32 => {
            let created = secret
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second());
            Ok(RingSpec::legacy(k, created))
        }
        _ => Err(KeyError::Empty),
    }
}

/// Keeps `signer` on the Secret's current ring until `shutdown` resolves. Never fails: the
/// watch retries with backoff; while the Secret is absent or unusable the signer holds no key.
pub async fn follow(
    client: Client,
    namespace: &str,
    signer: Signer,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let mut seen = false;
    let events = watcher(api, watch_config()).default_backoff().map_ok(|event| {
        match event {
            watcher::Event::Init => seen = false,
            watcher::Event::InitApply(s) | watcher::Event::Apply(s) => {
                seen = true;
                install(&signer, &s);
            }
            watcher::Event::Delete(_) => {
                seen = false;
                tracing::warn!(
                    "the signing key Secret was deleted; refusing every link until a new key ring exists"
                );
                signer.clear();
            }
            watcher::Event::InitDone if !seen => {
                if signer.primary_kid().is_some() {
                    tracing::warn!(
                        "the signing key Secret is gone; refusing every link until a new key ring exists"
                    );
                }
                signer.clear();
            }
            watcher::Event::InitDone => {}
        }
        let (keys, created) = signer.ring_size();
        metrics.signing_ring(keys, created);
    });
    let run = events.for_each(|r| async move {
        if let Err(e) = r {
            tracing::warn!(error = %e, "watching the signing key Secret failed; retrying");
        }
    });
    tokio::select! {
        () = run => {}
        () = shutdown => {}
    }
}

/// A watch on the one Secret (all that RBAC with `resourceNames` allows).
fn watch_config() -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={NAME}"))
}

fn install(signer: &Signer, secret: &Secret) {
    let ring = match ring_of(secret) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "refusing every link until the key ring is fixed or the Secret deleted");
            signer.clear();
            return;
        }
    };
    let before = signer.primary_kid();
    match signer.load(&ring) {
        Ok(()) if before.as_deref() != Some(ring.primary.as_str()) => {
            tracing::info!(primary = %ring.primary, keys = ring.keys.len(), "loaded the signing key ring");
        }
        Ok(()) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot load the signing key ring");
            signer.clear();
        }
    }
}

/// Keeps the ring (the controller, while it leads): creates it, rotates it every `rotation`
/// or on request, and drops keys past their overlap, until `shutdown` resolves. Each change of
/// the Secret wakes it, so a deleted Secret is recreated at once.
pub async fn maintain(
    client: Client,
    namespace: &str,
    rotation: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let rotation_secs = i64::try_from(rotation.as_secs()).unwrap_or(i64::MAX).max(1);
    // Its own watch: an annotation change leaves the ring (and so the signer) as it is.
    let mut changes = Box::pin(watcher(api.clone(), watch_config()).default_backoff());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = match pass(&api, rotation_secs).await {
            Ok(next) => {
                backoff = Duration::from_secs(1);
                let secs = next - jiff::Timestamp::now().as_second();
                Duration::from_secs(u64::try_from(secs.max(1)).unwrap_or(1)).min(RECHECK)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot maintain the signing key ring; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(30));
                backoff
            }
        };
        tokio::select! {
            () = &mut shutdown => return,
            _ = changes.next() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One maintenance pass; returns when the next one is due (Unix seconds). A write that loses a
/// race (409) is retried against the newer version at once.
async fn pass(api: &Api<Secret>, rotation: i64) -> Result<i64, KeyError> {
    loop {
        let now = jiff::Timestamp::now().as_second();
        let current = api.get_opt(NAME).await?;
        let Some(secret) = current else {
            let ring = RingSpec::fresh(now);
            match api.create(&PostParams::default(), &new_secret(&ring)).await {
                Ok(_) => {
                    tracing::info!(primary = %ring.primary, "created the signing key ring");
                    return Ok(ring.next_due(rotation));
                }
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let request = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ROTATE_ANNOTATION))
            .map(String::as_str);
        let (next, why) = match ring_of(&secret) {
            Ok(ring) => match ring.maintained(now, rotation, request) {
                Some(next) => (next, "rotated or pruned"),
                None => return Ok(ring.next_due(rotation)),
            },
            Err(e) => {
                tracing::error!(error = %e, "replacing the unusable signing key ring with a new one");
                (RingSpec::fresh(now), "replaced")
            }
        };
        match api
            .replace(NAME, &PostParams::default(), &updated(secret, &next))
            .await
        {
            Ok(_) => {
                tracing::info!(primary = %next.primary, keys = next.keys.len(), "signing key ring {why}");
                return Ok(next.next_due(rotation));
            }
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn new_secret(ring: &RingSpec) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(NAME.to_owned()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                (ROLE_LABEL.to_owned(), "signing-key".to_owned()),
            ])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(RING.to_owned(), ByteString(ring.to_json()))])),
        ..Default::default()
    }
}

/// `secret` (keeping its metadata and resourceVersion) holding `ring`; the legacy key stays
/// only while the ring holds it.
fn updated(mut secret: Secret, ring: &RingSpec) -> Secret {
    let data = secret.data.get_or_insert_with(BTreeMap::new);
    data.insert(RING.to_owned(), ByteString(ring.to_json()));
    if !ring.has_legacy() {
        data.remove(LEGACY);
    }
    secret.metadata.managed_fields = None;
    secret
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pre_ring_secret_reads_as_its_legacy_key_and_keeps_it_while_the_ring_does() {
        let secret = Secret {
            data: Some(BTreeMap::from([(LEGACY.to_owned(), ByteString(vec![3; 32]))])),
            ..Default::default()
        };
        let ring = ring_of(&secret).unwrap();
        assert_eq!(ring.primary, crate::signer::ring::LEGACY_KID);
        let rotated = ring.maintained(1, 1, None).unwrap();
        let written = updated(secret.clone(), &rotated);
        assert!(written.data.as_ref().unwrap().contains_key(LEGACY));
        assert_eq!(ring_of(&written).unwrap(), rotated);
        let dropped = updated(written, &RingSpec::fresh(0));
        assert!(!dropped.data.unwrap().contains_key(LEGACY));
    }

    #[test]
    fn a_secret_without_a_usable_key_is_refused() {
        let short = Secret {
            data: Some(BTreeMap::from([(LEGACY.to_owned(), ByteString(vec![3; 8]))])),
            ..Default::default()
        };
        assert!(matches!(ring_of(&short), Err(KeyError::Empty)));
        let broken = Secret {
            data: Some(BTreeMap::from([(RING.to_owned(), ByteString(b"{}".to_vec()))])),
            ..Default::default()
        };
        assert!(matches!(ring_of(&broken), Err(KeyError::Unusable(_))));
    }
}
