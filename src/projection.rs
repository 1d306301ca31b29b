//! A watch kept in memory as a small projection of each object rather than the object itself:
//! the gateway keeps a few hundred bytes per account, the broker the little it answers from.
//!
//! Guarantees: a relist builds a fresh projection and swaps it in only when the list completes
//! (so objects deleted while the watch was down disappear, and readers never see half a list);
//! [`Projected::synced`] turns true after the first complete list and stays true.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

/// What is kept of each object of kind `K`.
pub trait Projection<K>: Default + Send + Sync + 'static {
    /// `object` was created or changed.
    fn upsert(&mut self, object: &K);
    /// `object` was deleted.
    fn remove(&mut self, object: &K);
}

/// A projection kept current by a watch.
pub struct Projected<P> {
    state: Arc<RwLock<P>>,
    synced: Arc<AtomicBool>,
}

impl<P> Clone for Projected<P> {
    fn clone(&self) -> Self {
        Projected {
            state: self.state.clone(),
            synced: self.synced.clone(),
        }
    }
}

impl<P> Default for Projected<P>
where
    P: Default,
{
    fn default() -> Self {
        Projected {
            state: Arc::default(),
            synced: Arc::default(),
        }
    }
}

impl<P> Projected<P> {
    /// A projection that has listed `p` and watches nothing (for tests).
    #[cfg(test)]
    pub fn of(p: P) -> Self {
        Projected {
            state: Arc::new(RwLock::new(p)),
            synced: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The current projection (`None` if a writer panicked, which nothing here does).
    pub fn read(&self) -> Option<RwLockReadGuard<'_, P>> {
        self.state.read().ok()
    }

    /// The first complete list has been applied.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Watches `api` in the background (with backoff, forever) and keeps this projection current.
    pub fn watch<K>(&self, api: kube::Api<K>, config: watcher::Config)
    where
        P: Projection<K>,
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    {
        let (state, synced) = (self.state.clone(), self.synced.clone());
        tokio::spawn(async move {
            let stream = watcher::watcher(api, config).default_backoff();
            futures::pin_mut!(stream);
            let mut relist = P::default();
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                match event {
                    Event::Init => relist = P::default(),
                    Event::InitApply(o) => relist.upsert(&o),
                    Event::InitDone => {
                        let Ok(mut s) = state.write() else { return };
                        *s = std::mem::take(&mut relist);
                        synced.store(true, Ordering::Release);
                    }
                    Event::Apply(o) => {
                        let Ok(mut s) = state.write() else { return };
                        s.upsert(&o);
                    }
                    Event::Delete(o) => {
                        let Ok(mut s) = state.write() else { return };
                        s.remove(&o);
                    }
                }
            }
        });
    }
}
