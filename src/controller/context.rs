//! What reconciles share: per process ([`Shared`]: limits, in-memory outcomes, Event workers)
//! and per set of controllers ([`Context`]: client, caches, signer). Per-account memory is
//! dropped when the account is deleted ([`Shared::forget`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::Resource;
use kube::api::PartialObjectMeta;
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};

use super::decide::RefreshFailure;
use super::{Error, RECONCILE_CONCURRENCY, account, attempt, events};
use crate::api::{ConnectedAccount, GuardedAccount, GuardedClusterConnection, GuardedConnection};
use crate::config::Config;
use crate::signer::Signer;
use crate::store::operator_copy::CredentialStore;

/// What every set of controllers (one per watched namespace) and every leadership term of the
/// process share, so that limits hold per process and nothing a refresh brought back is dropped
/// with a term that ended.
pub struct Shared {
    /// Bounds concurrent token-endpoint calls (`--refresh-concurrency`).
    pub token_calls: Arc<tokio::sync::Semaphore>,
    /// Refreshed records the API did not accept yet (outage): written before anything else.
    pending: Mutex<HashMap<String, crate::store::Record>>,
    /// Refreshes whose answer is still read after their reconcile returned, by account UID.
    in_flight: Mutex<HashMap<String, attempt::InFlight>>,
    /// The last transient failure to get each account a credential (the backoff), by UID.
    failures: Mutex<HashMap<String, RefreshFailure>>,
    /// Per account UID: the resourceVersion before and after this process's last status write.
    status_writes: Mutex<HashMap<String, (String, Option<String>)>>,
    /// Bounds account reconciles in flight across every set of controllers.
    pub reconciles: Arc<tokio::sync::Semaphore>,
    /// The few workers that write Events.
    events: events::EventQueue,
}

impl Shared {
    /// Starts the Event workers: call from within the runtime.
    pub fn new(client: &Client, config: &Config) -> Arc<Shared> {
        let reporter = Reporter {
            controller: "agent-auth-operator".into(),
            instance: Some(config.instance.clone()),
        };
        Arc::new(Shared {
            token_calls: Arc::new(tokio::sync::Semaphore::new(config.refresh_concurrency.max(1))),
            reconciles: Arc::new(tokio::sync::Semaphore::new(usize::from(RECONCILE_CONCURRENCY))),
            events: events::EventQueue::start(Recorder::new(client.clone(), reporter)),
            pending: Mutex::default(),
            in_flight: Mutex::default(),
            failures: Mutex::default(),
            status_writes: Mutex::default(),
        })
    }

    /// Forgets a deleted account: nothing is kept per account once it is gone.
    pub(super) fn forget(&self, uid: &str) {
        if let Ok(mut m) = self.failures.lock() {
            m.remove(uid);
        }
        if let Ok(mut m) = self.pending.lock() {
            m.remove(uid);
        }
        if let Ok(mut m) = self.status_writes.lock() {
            m.remove(uid);
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub config: Arc<Config>,
    pub signer: Signer,
    pub http: crate::egress::EgressClient,
    pub credentials: CredentialStore,
    pub connections: Store<GuardedConnection>,
    pub cluster_connections: Store<GuardedClusterConnection>,
    /// Namespace labels, for ClusterConnections' `namespaceSelector`.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub records: Store<Secret>,
    pub agent_secrets: Store<Secret>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub(super) synced: tokio::sync::watch::Receiver<bool>,
    /// What outlives this set of controllers.
    pub shared: Arc<Shared>,
    /// Asks for a reconcile of an account (a late refresh answer was settled).
    pub(super) wake: futures::channel::mpsc::UnboundedSender<ObjectRef<GuardedAccount>>,
}

impl Context {
    /// Waits until every cache has synced. Reconciles wait on a watch channel that one task
    /// sets (`Store::wait_until_ready` wakes only its most recent waiter, so concurrent waiters
    /// on one store could sleep until their timeout).
    pub(super) async fn wait_for_caches(&self) -> Result<(), Error> {
        let mut synced = self.synced.clone();
        match tokio::time::timeout(Duration::from_secs(30), synced.wait_for(|s| *s)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::NotSynced),
        }
    }

    pub(super) fn failure(&self, uid: &str) -> Option<RefreshFailure> {
        self.shared.failures.lock().ok().and_then(|f| f.get(uid).cloned())
    }

    /// Notes one more failed attempt to get `uid` a credential; the next try waits
    /// `wait(attempts)`. Returns the attempt number.
    pub(super) fn note_failure(
        &self,
        uid: &str,
        message: String,
        now: jiff::Timestamp,
        wait: impl FnOnce(u32) -> Duration,
    ) -> u32 {
        let attempts = self.failure(uid).map_or(1, |f| f.attempts + 1);
        let retry_at = now + jiff::SignedDuration::try_from(wait(attempts)).unwrap_or_default();
        if let Ok(mut f) = self.shared.failures.lock() {
            f.insert(
                uid.to_owned(),
                RefreshFailure {
                    message,
                    attempts,
                    retry_at,
                },
            );
        }
        attempts
    }

    pub(super) fn pending(&self, uid: &str) -> Option<crate::store::Record> {
        self.shared.pending.lock().ok().and_then(|p| p.get(uid).cloned())
    }

    pub(super) fn set_pending(&self, uid: &str, record: crate::store::Record) {
        if let Ok(mut p) = self.shared.pending.lock() {
            p.insert(uid.to_owned(), record);
        }
    }

    pub(super) fn clear_pending(&self, uid: &str) {
        if let Ok(mut p) = self.shared.pending.lock() {
            p.remove(uid);
        }
    }

    /// Whether the cached account (`rv`) predates this process's own last status write of it.
    pub(super) fn stale_status(&self, uid: &str, rv: Option<&str>) -> bool {
        let Some(rv) = rv else { return false };
        self.shared
            .status_writes
            .lock()
            .ok()
            .and_then(|m| m.get(uid).cloned())
            .is_some_and(|(before, after)| before == rv && after.as_deref() != Some(rv))
    }

    pub(super) fn wrote_status(&self, uid: &str, before: Option<String>, after: Option<String>) {
        if let (Some(before), Ok(mut m)) = (before, self.shared.status_writes.lock()) {
            m.insert(uid.to_owned(), (before, after));
        }
    }

    pub(super) fn in_flight(&self, uid: &str) -> Option<attempt::InFlight> {
        self.shared
            .in_flight
            .lock()
            .ok()
            .and_then(|f| f.get(uid).cloned())
    }

    pub(super) fn set_in_flight(&self, uid: &str, call: attempt::InFlight) {
        if let Ok(mut f) = self.shared.in_flight.lock() {
            f.insert(uid.to_owned(), call);
        }
    }

    /// Forgets the refresh `call` once settled; a newer one of the same account stays.
    pub(super) fn clear_in_flight(&self, uid: &str, call: &attempt::InFlight) {
        if let Ok(mut f) = self.shared.in_flight.lock()
            && f.get(uid) == Some(call)
        {
            f.remove(uid);
        }
    }

    pub(super) fn wake(&self, account: ObjectRef<GuardedAccount>) {
        let _ = self.wake.unbounded_send(account);
    }

    pub(super) fn clear_failure(&self, uid: &str) {
        if let Ok(mut f) = self.shared.failures.lock() {
            f.remove(uid);
        }
    }

    /// Queues an Event on the account; recorded in the background, failures logged, never fatal.
    pub(super) async fn event(
        &self,
        account: &ConnectedAccount,
        kind: EventType,
        reason: crate::api::Reason,
        action: &str,
        note: String,
    ) {
        self.event_on(account.object_ref(&()), kind, reason, action, note);
    }

    /// Queues an Event on any object (a Connection, a ClusterConnection).
    pub(super) fn event_on(
        &self,
        reference: k8s_openapi::api::core::v1::ObjectReference,
        kind: EventType,
        reason: crate::api::Reason,
        action: &str,
        note: String,
    ) {
        let ev = account::event(kind, reason, action, note);
        self.shared.events.push(ev, reference);
    }
}
