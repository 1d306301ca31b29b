//! The in-memory cache of broker answers, per account.
//!
//! Guarantees: an entry is used only until shortly before its token expires ([`lifetime`]); misses
//! for one key share one fetch (callers wait on the key's lock, then find the fresh entry); a
//! credential the provider rejected is replaced at most once however many calls saw the rejection
//! ([`Cache::replace`]); errors are never cached. The cache holds at most `capacity` keys: when
//! full, expired entries go first, then arbitrary idle ones (it is only a cache).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest time an answer is reused, however long its token lives: bounds how late a
/// disconnection or revoked `use` grant is noticed.
pub const MAX_LIFETIME: Duration = Duration::from_secs(300);
/// Reuse of a credential without `expires_in` (an API key).
pub const NO_EXPIRY_LIFETIME: Duration = Duration::from_secs(60);
/// A token is dropped this long before it expires, so no call goes out with one about to lapse.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// How long a broker answer with `expires_in` (seconds) may be reused.
pub fn lifetime(expires_in: Option<u64>) -> Duration {
    match expires_in {
        Some(s) => Duration::from_secs(s)
            .saturating_sub(EXPIRY_MARGIN)
            .min(MAX_LIFETIME),
        None => NO_EXPIRY_LIFETIME,
    }
}

struct Entry<V> {
    value: Arc<V>,
    until: Instant,
}

type Slot<V> = Arc<tokio::sync::Mutex<Option<Entry<V>>>>;

pub struct Cache<K, V> {
    slots: Mutex<HashMap<K, Slot<V>>>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> Cache<K, V> {
    pub fn new(capacity: usize) -> Cache<K, V> {
        Cache {
            slots: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The cached value of `key`, or the one `fetch` gets (with how long it may be reused).
    pub async fn get<E, F>(&self, key: &K, fetch: impl FnOnce() -> F) -> Result<Arc<V>, E>
    where
        F: Future<Output = Result<(V, Duration), E>>,
    {
        self.get_at(key, Instant::now, None, fetch).await
    }

    /// Like [`Self::get`], but a cached value that is `stale` (the one the provider rejected) is
    /// fetched anew; a value someone else fetched meanwhile is used as it is.
    pub async fn replace<E, F>(&self, key: &K, stale: &Arc<V>, fetch: impl FnOnce() -> F) -> Result<Arc<V>, E>
    where
        F: Future<Output = Result<(V, Duration), E>>,
    {
        self.get_at(key, Instant::now, Some(stale), fetch).await
    }

    async fn get_at<E, F>(
        &self,
        key: &K,
        now: impl Fn() -> Instant,
        stale: Option<&Arc<V>>,
        fetch: impl FnOnce() -> F,
    ) -> Result<Arc<V>, E>
    where
        F: Future<Output = Result<(V, Duration), E>>,
    {
        let slot = self.slot(key, now());
        let mut entry = slot.lock().await;
        if let Some(e) = entry.as_ref()
            && e.until > now()
            && !stale.is_some_and(|s| Arc::ptr_eq(s, &e.value))
        {
            return Ok(e.value.clone());
        }
        *entry = None;
        let (value, lifetime) = fetch().await?;
        let value = Arc::new(value);
        *entry = Some(Entry {
            value: value.clone(),
            until: now() + lifetime,
        });
        Ok(value)
    }

    /// The key's slot, made room for when new.
    fn slot(&self, key: &K, now: Instant) -> Slot<V> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.get(key) {
            return s.clone();
        }
        if slots.len() >= self.capacity {
            // A slot whose lock is taken is being fetched or used: keep it.
            let idle_expired = |s: &Slot<V>| {
                s.try_lock()
                    .is_ok_and(|e| e.as_ref().is_none_or(|e| e.until <= now))
            };
            slots.retain(|_, s| !idle_expired(s));
            while slots.len() >= self.capacity {
                let Some(k) = slots
                    .iter()
                    .find(|(_, s)| s.try_lock().is_ok())
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                slots.remove(&k);
            }
        }
        slots.entry(key.clone()).or_default().clone()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.lock().map(|s| s.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn lifetimes() {
        assert_eq!(lifetime(Some(3600)), MAX_LIFETIME);
        assert_eq!(lifetime(Some(90)), Duration::from_secs(60));
        assert_eq!(lifetime(Some(10)), Duration::ZERO);
        assert_eq!(lifetime(None), NO_EXPIRY_LIFETIME);
    }

    #[tokio::test]
    async fn entries_expire_are_replaced_once_and_stay_bounded() {
        let cache: Cache<&str, u32> = Cache::new(2);
        let calls = AtomicUsize::new(0);
        let t0 = Instant::now();
        let fetch = |v: u32, secs: u64| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, ()>((v, Duration::from_secs(secs))) }
        };
        let at = |s: u64| move || t0 + Duration::from_secs(s);
        let a = cache.get_at(&"a", at(0), None, || fetch(1, 60)).await.unwrap();
        assert_eq!(
            *cache.get_at(&"a", at(59), None, || fetch(2, 60)).await.unwrap(),
            1
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Expired: fetched again.
        let b = cache.get_at(&"a", at(61), None, || fetch(2, 60)).await.unwrap();
        assert_eq!((*b, calls.load(Ordering::SeqCst)), (2, 2));
        // Replacing a stale value someone already replaced fetches nothing.
        assert_eq!(
            *cache
                .get_at(&"a", at(62), Some(&a), || fetch(3, 60))
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            *cache
                .get_at(&"a", at(62), Some(&b), || fetch(3, 60))
                .await
                .unwrap(),
            3
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Errors are not cached.
        let e: Result<_, &str> = cache.get_at(&"x", at(62), None, || async { Err("down") }).await;
        assert!(e.is_err());
        assert_eq!(
            *cache.get_at(&"x", at(62), None, || fetch(9, 60)).await.unwrap(),
            9
        );
        // Full: a third key evicts one.
        cache.get_at(&"y", at(62), None, || fetch(5, 60)).await.unwrap();
        assert_eq!(cache.len(), 2);
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_fetch() {
        let cache: Arc<Cache<&str, u32>> = Arc::new(Cache::new(10));
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, wait) = tokio::sync::watch::channel(false);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, calls, mut wait) = (cache.clone(), calls.clone(), wait.clone());
                tokio::spawn(async move {
                    cache
                        .get(&"k", || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            let _ = wait.wait_for(|r| *r).await;
                            Ok::<_, ()>((7, Duration::from_secs(60)))
                        })
                        .await
                })
            })
            .collect();
        release.send_replace(true);
        for t in tasks {
            assert_eq!(*t.await.unwrap().unwrap(), 7);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
