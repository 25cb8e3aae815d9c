//! TTL cache of fetched documents (Exchange auth metadata, OIDC metadata, JWKS),
//! one slot per URL.
//!
//! A lookup uses the cached document while it is younger than the integration's
//! `metadata_cache_ttl`. When the wanted key is not in a fresh document, the
//! document is fetched again — but at most once per lookup and not more often than
//! the validator's minimum refetch interval per URL, so tokens with made-up key ids
//! cannot turn the server into a request amplifier. Concurrent lookups of one URL
//! wait for a single fetch (per-slot async mutex). If a refresh fails while an
//! expired document still holds the key, the old key is used (and a warning logged).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::TokenError;

/// One cached document per URL.
pub struct UrlCache<T> {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot<T>>>>>,
}

impl<T> Default for UrlCache<T> {
    fn default() -> Self {
        UrlCache {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

struct Slot<T> {
    value: Option<Arc<T>>,
    fetched_at: Option<Instant>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            value: None,
            fetched_at: None,
        }
    }
}

impl<T> UrlCache<T> {
    /// Find something in the document cached for `url` with `find`, fetching the
    /// document with `fetch` when there is none, it is older than `ttl`, or `find`
    /// fails on it and it is older than `min_refetch`. `Ok(None)` means the
    /// (possibly refreshed) document does not have it.
    pub async fn lookup<R, Fut>(
        &self,
        url: &str,
        ttl: Duration,
        min_refetch: Duration,
        find: impl Fn(&T) -> Option<R>,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<Option<R>, TokenError>
    where
        Fut: Future<Output = Result<T, TokenError>>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(slots.entry(url.to_owned()).or_default())
        };
        let mut slot = slot.lock().await;
        let mut stale_hit = None;
        if let (Some(value), Some(at)) = (&slot.value, slot.fetched_at) {
            let age = at.elapsed();
            let found = find(value);
            if age < ttl {
                if found.is_some() {
                    return Ok(found);
                }
                if age < min_refetch {
                    tracing::debug!(url, "key not in cached document; refetched too recently");
                    return Ok(None);
                }
            } else {
                stale_hit = found;
            }
        }
        match fetch().await {
            Ok(value) => {
                let found = find(&value);
                slot.value = Some(Arc::new(value));
                slot.fetched_at = Some(Instant::now());
                Ok(found)
            }
            Err(e) => match stale_hit {
                Some(found) => {
                    tracing::warn!(url, error = %e, "metadata refresh failed; using the expired copy");
                    Ok(Some(found))
                }
                None => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn caches_and_limits_refetch() {
        let cache: UrlCache<Vec<u32>> = UrlCache::default();
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            fetches.fetch_add(1, Ordering::SeqCst);
            Ok(vec![1, 2])
        };
        let ttl = Duration::from_secs(60);
        let min = Duration::from_secs(30);
        let find = |n: u32| move |v: &Vec<u32>| v.contains(&n).then_some(n);
        assert_eq!(
            cache.lookup("u", ttl, min, find(1), fetch).await.unwrap(),
            Some(1)
        );
        assert_eq!(
            cache.lookup("u", ttl, min, find(2), fetch).await.unwrap(),
            Some(2)
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // Unknown, but the document is younger than the minimum refetch interval.
        assert_eq!(
            cache.lookup("u", ttl, min, find(3), fetch).await.unwrap(),
            None
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // With no minimum interval, an unknown id refetches exactly once.
        let zero = Duration::ZERO;
        assert_eq!(
            cache.lookup("u", ttl, zero, find(3), fetch).await.unwrap(),
            None
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // TTL zero: always refetch.
        assert_eq!(
            cache.lookup("u", zero, min, find(1), fetch).await.unwrap(),
            Some(1)
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
    }
}
