//! The re-seal pass, run by the leader only: every copy not sealed under the primary KEK (sealed
//! under an older key, or plaintext from before a KEK was configured) is written again under it.
//!
//! Guarantees:
//! - bounded: at most `rate` re-seals per second, one at a time;
//! - never clobbers a concurrent write: each re-seal re-reads the copy and replaces it against
//!   that `resourceVersion`; on a conflict (a refresh wrote in between) it re-reads and tries again,
//!   a few times, then leaves the copy to the next pass;
//! - copies under a key that is not loaded are counted and named, never written;
//! - progress is visible: the gauge `agentauth_credential_records{key_id}`, a log line per pass,
//!   and the ConfigMap [`STATUS_CONFIGMAP`] (server-side applied only when the numbers change).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::keyring::PLAINTEXT;
use crate::metrics::Metrics;
use crate::store::operator_copy::{CredentialStore, Protection, Resealed, StoreError};

/// The ConfigMap in the operator's namespace that shows the progress (`kubectl get cm`).
pub const STATUS_CONFIGMAP: &str = "agent-auth-operator-encryption";
/// Copies listed per API request.
const PAGE: u32 = 200;
/// Pause between passes when every copy is under the primary key (or cannot be re-sealed). Long:
/// this process seals every write under the primary, so only another process (an old replica
/// during a rollout) can add stale copies meanwhile; a pass lists every copy.
const IDLE: Duration = Duration::from_secs(600);
/// Pause between passes while copies remain to re-seal, or after a failed pass.
const BUSY: Duration = Duration::from_secs(5);
/// Re-reads of one copy after conflicting writes, within one pass.
const ATTEMPTS: usize = 3;

/// The numbers of one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The primary key id; `None` without a KEK.
    pub primary: Option<String>,
    /// Copies per key id, and `plaintext`; every loaded key appears, with 0 when it holds none.
    pub counts: BTreeMap<String, u64>,
    /// Key ids that copies are sealed under but that are not loaded (those copies do not open).
    pub missing: BTreeSet<String>,
    /// Copies whose sealed value does not even name a key.
    pub unreadable: u64,
    /// Re-seals that failed this pass (left for the next one).
    pub failed: u64,
}

impl Progress {
    /// Copies not (yet) under the primary key; 0 without a KEK.
    pub fn remaining(&self) -> u64 {
        let Some(primary) = &self.primary else {
            return 0;
        };
        let others: u64 = self
            .counts
            .iter()
            .filter(|(id, _)| *id != primary)
            .map(|(_, n)| n)
            .sum();
        others + self.unreadable
    }

    fn tally(&mut self, protection: &Protection) {
        match protection {
            Protection::Empty => {}
            Protection::Plaintext => *self.counts.entry(PLAINTEXT.to_owned()).or_default() += 1,
            Protection::Sealed(id) => *self.counts.entry(id.clone()).or_default() += 1,
            Protection::Unreadable => self.unreadable += 1,
        }
    }
}

/// Runs passes until `shutdown` resolves: at most `rate` re-seals per second.
pub async fn run(
    client: kube::Client,
    namespace: String,
    rate: u32,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Clone,
) {
    let store = CredentialStore::new(client.clone(), &namespace);
    let status: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let spacing = Duration::from_secs(1) / rate.max(1);
    let mut published: Option<Progress> = None;
    loop {
        let wait = tokio::select! {
            _ = shutdown.clone() => return,
            p = pass(&store, spacing, &metrics) => match p {
                Ok(progress) => {
                    report(&progress, &metrics);
                    if published.as_ref() != Some(&progress) {
                        match publish(&status, &progress).await {
                            Ok(()) => published = Some(progress.clone()),
                            Err(e) => tracing::warn!(error = %e, configmap = STATUS_CONFIGMAP, "cannot write the encryption status"),
                        }
                    }
                    if progress.remaining() > progress.missing_count() { BUSY } else { IDLE }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "re-seal pass failed; retrying");
                    BUSY
                }
            },
        };
        tokio::select! {
            _ = shutdown.clone() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

impl Progress {
    /// Copies under keys that are not loaded: no pass can re-seal them.
    fn missing_count(&self) -> u64 {
        self.missing
            .iter()
            .filter_map(|id| self.counts.get(id))
            .sum::<u64>()
            + self.unreadable
    }
}

/// One pass over every copy.
async fn pass(store: &CredentialStore, spacing: Duration, metrics: &Metrics) -> Result<Progress, StoreError> {
    let keyring = super::keyring();
    let mut progress = Progress {
        primary: keyring.map(|k| k.primary().to_owned()),
        counts: keyring
            .into_iter()
            .flat_map(|k| k.ids())
            .chain([PLAINTEXT])
            .map(|id| (id.to_owned(), 0))
            .collect(),
        ..Default::default()
    };
    let mut ticker = tokio::time::interval(spacing);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for (name, protection) in store.protections(PAGE).await? {
        let stale = keyring.is_some_and(|k| match &protection {
            Protection::Plaintext => true,
            Protection::Sealed(id) => id != k.primary() && k.get(id).is_some(),
            Protection::Empty | Protection::Unreadable => false,
        });
        let now = if stale {
            ticker.tick().await;
            match reseal(store, &name, metrics).await {
                Ok(Some(p)) => p,
                Ok(None) => continue, // deleted meanwhile
                Err(e) => {
                    tracing::warn!(secret = %name, error = %e, "cannot re-seal a credential copy");
                    progress.failed += 1;
                    protection
                }
            }
        } else {
            protection
        };
        if let Protection::Sealed(id) = &now
            && keyring.is_none_or(|k| k.get(id).is_none())
        {
            progress.missing.insert(id.clone());
        }
        progress.tally(&now);
    }
    Ok(progress)
}

/// Re-seals one copy, re-reading it after conflicting writes. `Ok(None)`: it is gone.
async fn reseal(
    store: &CredentialStore,
    name: &str,
    metrics: &Metrics,
) -> Result<Option<Protection>, StoreError> {
    for _ in 0..ATTEMPTS {
        match store.reseal(name).await {
            Ok(Resealed::Now(id)) => {
                metrics.resealed();
                return Ok(Some(Protection::Sealed(id)));
            }
            Ok(Resealed::Unchanged(p)) => return Ok(Some(p)),
            Ok(Resealed::Gone) => return Ok(None),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict)
}

fn report(progress: &Progress, metrics: &Metrics) {
    let now = jiff::Timestamp::now();
    metrics.reseal_pass(&progress.counts, now.as_second());
    tracing::info!(
        primary = progress.primary.as_deref().unwrap_or("none"),
        records = ?progress.counts,
        remaining = progress.remaining(),
        missing_keys = ?progress.missing,
        unreadable = progress.unreadable,
        failed = progress.failed,
        "credential re-seal pass done"
    );
}

/// Server-side applies the status ConfigMap: only the numbers, never key material.
async fn publish(api: &Api<ConfigMap>, progress: &Progress) -> Result<(), kube::Error> {
    let mut data: BTreeMap<String, String> = progress
        .counts
        .iter()
        .map(|(id, n)| (format!("records.{id}"), n.to_string()))
        .collect();
    data.insert(
        "primary".into(),
        progress.primary.clone().unwrap_or_else(|| "none".into()),
    );
    data.insert("remaining".into(), progress.remaining().to_string());
    if !progress.missing.is_empty() {
        let ids: Vec<&str> = progress.missing.iter().map(String::as_str).collect();
        data.insert("missingKeys".into(), ids.join(","));
    }
    if progress.unreadable > 0 {
        data.insert("unreadable".into(), progress.unreadable.to_string());
    }
    data.insert("updatedAt".into(), jiff::Timestamp::now().to_string());
    let cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": STATUS_CONFIGMAP,
            "labels": {crate::store::MANAGED_BY.0: crate::store::MANAGED_BY.1},
        },
        "data": data,
    });
    let pp = PatchParams::apply(crate::store::FIELD_MANAGER).force();
    api.patch(STATUS_CONFIGMAP, &pp, &Patch::Apply(&cm)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn remaining_counts_everything_off_the_primary() {
        let mut p = Progress {
            primary: Some("k2".into()),
            ..Default::default()
        };
        for protection in [
            Protection::Sealed("k2".into()),
            Protection::Sealed("k1".into()),
            Protection::Plaintext,
            Protection::Empty,
            Protection::Sealed("k0".into()),
        ] {
            p.tally(&protection);
        }
        p.missing.insert("k0".into());
        assert_eq!(p.remaining(), 3);
        assert_eq!(p.missing_count(), 1);
        assert_eq!(p.counts.get("plaintext"), Some(&1));
        let none = Progress {
            counts: BTreeMap::from([("plaintext".into(), 4)]),
            ..Default::default()
        };
        assert_eq!(none.remaining(), 0);
    }
}
