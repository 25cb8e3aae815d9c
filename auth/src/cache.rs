//! Cache of fetched documents (Exchange auth metadata, OIDC metadata, JWKS),
//! one slot per canonical URL, bounded and hardened against forged tokens.
//!
//! A lookup uses the cached document while it is younger than the integration's
//! `metadata_cache_ttl`. When the wanted key is not in a fresh document, the
//! document is fetched again — but at most once per lookup and not more often
//! than the validator's minimum refetch interval per URL, so tokens with made-up
//! key ids cannot turn the server into a request amplifier. Further limits:
//!
//! * slots are keyed by the canonical URL the caller resolved (the Exchange
//!   path checks an `amurl` against the allow-list and hands over the allowed
//!   URL, never the token's own spelling), and there are at most [`MAX_SLOTS`]
//!   of them, least recently used evicted first;
//! * a failed fetch is remembered: the slot answers with that failure, without
//!   fetching, until a back-off (the minimum refetch interval, doubling per
//!   failure up to [`MAX_FAILURE_BACKOFF`]) has passed;
//! * at most [`MAX_FETCHES_PER_HOST`] fetches per host start within one
//!   minimum refetch interval, whatever the URLs;
//! * when a refresh fails, an expired document still holding the key is used
//!   only within [`STALE_GRACE`] after its TTL ran out.
//!
//! Concurrent lookups of one URL wait for a single fetch (per-slot async mutex).
//! Ages come from the validator's injected [`Clock`](vmr_core::clock::Clock), so
//! tests move through TTLs and back-offs without sleeping.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lru::LruCache;

use super::TokenError;

/// Most documents cached at once (one per metadata / JWKS URL).
pub const MAX_SLOTS: usize = 256;
/// Most fetches to one host that may start within one minimum refetch interval.
pub const MAX_FETCHES_PER_HOST: usize = 4;
/// Longest wait after repeated fetch failures before the next attempt.
pub const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(600);
/// How long past its TTL an expired document may still serve keys while
/// refreshing it fails.
pub const STALE_GRACE: Duration = Duration::from_secs(3600);

/// One cached document per canonical URL.
pub struct UrlCache<T> {
    slots: Mutex<LruCache<String, Arc<tokio::sync::Mutex<Slot<T>>>>>,
    /// Start times (Unix ms) of recent fetches, per host.
    host_fetches: Mutex<HashMap<String, VecDeque<i64>>>,
}

impl<T> Default for UrlCache<T> {
    fn default() -> Self {
        UrlCache {
            slots: Mutex::new(LruCache::new(
                NonZeroUsize::new(MAX_SLOTS).unwrap_or(NonZeroUsize::MIN),
            )),
            host_fetches: Mutex::new(HashMap::new()),
        }
    }
}

struct Slot<T> {
    value: Option<Arc<T>>,
    /// Unix ms of the last successful fetch.
    fetched_at: Option<i64>,
    /// Failures since the last success.
    failures: u32,
    /// Unix ms before which no new fetch is tried after a failure.
    retry_at: i64,
    /// What the last failure said.
    last_error: Option<String>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            value: None,
            fetched_at: None,
            failures: 0,
            retry_at: i64::MIN,
            last_error: None,
        }
    }
}

/// How one lookup behaves.
#[derive(Debug, Clone, Copy)]
pub struct LookupPolicy {
    /// How long a fetched document is trusted.
    pub ttl: Duration,
    /// Minimum interval between refetches of one URL (and the first failure back-off).
    pub min_refetch: Duration,
    /// The time of the lookup, Unix ms.
    pub now_ms: i64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl<T> UrlCache<T> {
    /// Find something in the document cached for `url` (canonical, as resolved by
    /// the caller; `host` is its host and port) with `find`, fetching the document
    /// with `fetch` when there is none, it is older than the TTL, or `find` fails on
    /// it and it is older than the minimum refetch interval. `Ok(None)` means the
    /// (possibly refreshed) document does not have it.
    pub async fn lookup<R, Fut>(
        &self,
        url: &str,
        host: &str,
        policy: LookupPolicy,
        find: impl Fn(&T) -> Option<R>,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<Option<R>, TokenError>
    where
        Fut: Future<Output = Result<T, TokenError>>,
    {
        let now = policy.now_ms;
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(slots.get_or_insert(url.to_owned(), Default::default))
        };
        let mut slot = slot.lock().await;
        let mut stale_hit = None;
        if let (Some(value), Some(at)) = (&slot.value, slot.fetched_at) {
            let age = now.saturating_sub(at);
            let found = find(value);
            if age < ms(policy.ttl) {
                if found.is_some() {
                    return Ok(found);
                }
                if age < ms(policy.min_refetch) {
                    tracing::debug!(url, "key not in cached document; refetched too recently");
                    return Ok(None);
                }
            } else if age < ms(policy.ttl).saturating_add(ms(STALE_GRACE)) {
                stale_hit = found;
            }
        }
        let remembered_failure = |slot: &Slot<T>| TokenError::MetadataFetch {
            url: url.to_owned(),
            detail: format!(
                "{} (remembered; next attempt in {} s)",
                slot.last_error.as_deref().unwrap_or("fetch failed"),
                (slot.retry_at.saturating_sub(now) + 999) / 1000
            ),
        };
        if now < slot.retry_at {
            return match stale_hit {
                Some(found) => Ok(Some(found)),
                None => Err(remembered_failure(&slot)),
            };
        }
        if !self.may_fetch(host, now, ms(policy.min_refetch)) {
            tracing::warn!(url, host, "metadata fetches to this host are rate-limited");
            return match stale_hit {
                Some(found) => Ok(Some(found)),
                None => Err(TokenError::MetadataFetch {
                    url: url.to_owned(),
                    detail: format!(
                        "more than {MAX_FETCHES_PER_HOST} fetches to {host} within {} s; try again later",
                        policy.min_refetch.as_secs()
                    ),
                }),
            };
        }
        match fetch().await {
            Ok(value) => {
                let found = find(&value);
                slot.value = Some(Arc::new(value));
                slot.fetched_at = Some(now);
                slot.failures = 0;
                slot.retry_at = i64::MIN;
                slot.last_error = None;
                Ok(found)
            }
            Err(e) => {
                slot.failures = slot.failures.saturating_add(1);
                let backoff = ms(policy.min_refetch)
                    .max(1000)
                    .saturating_mul(1i64 << slot.failures.saturating_sub(1).min(16))
                    .min(ms(MAX_FAILURE_BACKOFF));
                slot.retry_at = now.saturating_add(backoff);
                slot.last_error = Some(e.to_string());
                match stale_hit {
                    Some(found) => {
                        tracing::warn!(url, error = %e, "metadata refresh failed; using the expired copy");
                        Ok(Some(found))
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// Records a fetch to `host` at `now` if fewer than [`MAX_FETCHES_PER_HOST`]
    /// started within the last `window` ms.
    fn may_fetch(&self, host: &str, now: i64, window: i64) -> bool {
        let mut hosts = self.host_fetches.lock().unwrap_or_else(|p| p.into_inner());
        // Forget hosts with no recent fetch, so the map stays as small as the
        // set of hosts actually fetched from recently.
        hosts.retain(|_, times| times.back().is_some_and(|t| now - t < window));
        let times = hosts.entry(host.to_owned()).or_default();
        while times.front().is_some_and(|t| now - t >= window) {
            times.pop_front();
        }
        if times.len() >= MAX_FETCHES_PER_HOST {
            return false;
        }
        times.push_back(now);
        true
    }

    /// Number of cached slots (for tests and metrics).
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn policy(ttl: u64, min: u64, now_ms: i64) -> LookupPolicy {
        LookupPolicy {
            ttl: Duration::from_secs(ttl),
            min_refetch: Duration::from_secs(min),
            now_ms,
        }
    }

    #[tokio::test]
    async fn caches_and_limits_refetch() {
        let cache: UrlCache<Vec<u32>> = UrlCache::default();
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            fetches.fetch_add(1, Ordering::SeqCst);
            Ok(vec![1, 2])
        };
        let find = |n: u32| move |v: &Vec<u32>| v.contains(&n).then_some(n);
        let at = |s: i64| policy(60, 30, s * 1000);
        assert_eq!(
            cache.lookup("u", "h", at(0), find(1), fetch).await.unwrap(),
            Some(1)
        );
        assert_eq!(
            cache.lookup("u", "h", at(1), find(2), fetch).await.unwrap(),
            Some(2)
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // Unknown, but the document is younger than the minimum refetch interval.
        assert_eq!(
            cache
                .lookup("u", "h", at(29), find(3), fetch)
                .await
                .unwrap(),
            None
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // Older than that: an unknown id refetches exactly once.
        assert_eq!(
            cache
                .lookup("u", "h", at(30), find(3), fetch)
                .await
                .unwrap(),
            None
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // Past the TTL: fetched again even for a known id.
        assert_eq!(
            cache
                .lookup("u", "h", at(91), find(1), fetch)
                .await
                .unwrap(),
            Some(1)
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn failures_are_remembered_with_backoff() {
        let cache: UrlCache<Vec<u32>> = UrlCache::default();
        let fetches = AtomicUsize::new(0);
        let failing = || async {
            fetches.fetch_add(1, Ordering::SeqCst);
            Err::<Vec<u32>, _>(TokenError::MetadataFetch {
                url: "u".into(),
                detail: "connection refused".into(),
            })
        };
        let find = |v: &Vec<u32>| v.first().copied();
        for s in 0..30 {
            let e = cache
                .lookup("u", "h", policy(60, 30, s * 1000), find, failing)
                .await
                .unwrap_err();
            assert!(e.to_string().contains("connection refused"), "{e}");
        }
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "one attempt per back-off"
        );
        // After 30 s the next attempt; it fails again, so the back-off doubles.
        let _ = cache
            .lookup("u", "h", policy(60, 30, 30_000), find, failing)
            .await;
        let _ = cache
            .lookup("u", "h", policy(60, 30, 89_000), find, failing)
            .await;
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        let _ = cache
            .lookup("u", "h", policy(60, 30, 90_000), find, failing)
            .await;
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn stale_documents_serve_only_within_the_grace() {
        let cache: UrlCache<Vec<u32>> = UrlCache::default();
        let ok = || async { Ok(vec![7]) };
        let failing = || async {
            Err::<Vec<u32>, _>(TokenError::MetadataFetch {
                url: "u".into(),
                detail: "down".into(),
            })
        };
        let find = |v: &Vec<u32>| v.first().copied();
        let ttl = 60;
        assert_eq!(
            cache
                .lookup("u", "h", policy(ttl, 30, 0), find, ok)
                .await
                .unwrap(),
            Some(7)
        );
        // Expired, refresh fails: still served within the grace.
        let inside = (ttl as i64 + 10) * 1000;
        assert_eq!(
            cache
                .lookup("u", "h", policy(ttl, 30, inside), find, failing)
                .await
                .unwrap(),
            Some(7)
        );
        // Beyond TTL + grace: the failure is reported.
        let beyond = (ttl as i64 + STALE_GRACE.as_secs() as i64 + 1) * 1000;
        assert!(cache
            .lookup("u", "h", policy(ttl, 30, beyond), find, failing)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn slots_are_bounded_and_hosts_capped() {
        let cache: UrlCache<Vec<u32>> = UrlCache::default();
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            fetches.fetch_add(1, Ordering::SeqCst);
            Ok(vec![1])
        };
        let find = |v: &Vec<u32>| v.first().copied();
        for i in 0..(MAX_SLOTS * 4) {
            let _ = cache
                .lookup(&format!("u{i}"), "h", policy(60, 30, 0), find, fetch)
                .await;
        }
        assert!(cache.len() <= MAX_SLOTS);
        assert_eq!(fetches.load(Ordering::SeqCst), MAX_FETCHES_PER_HOST);
    }
}
