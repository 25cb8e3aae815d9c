//! Allocation limits: how many aliases one requester, and everyone together,
//! may ask for — so that one stolen or scripted token cannot burn through an
//! integration's alias space.
//!
//! Both limits are GCRA rate limiters (`governor`): per requester, a burst of
//! `allocations_per_requester_per_hour` and then one per `3600 / n` seconds;
//! globally, `allocations_per_second` with a burst of the same size. The
//! requester key is the verified identity's normalised user id, so respelling
//! a token's metadata URL does not make a new requester. A refusal carries the
//! time after which the request would be admitted (`Retry-After`).
//!
//! Limits live in memory, per process: management enforces them for live
//! requests, and each edge for the deferrals it signs. Time comes from the
//! injected [`Clock`](crate::clock::Clock).

use std::num::NonZeroU32;
use std::ops::Add;
use std::time::Duration;

use governor::clock::{Clock as GovernorClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::clock::SharedClock;
use crate::config::LimitsConfig;

/// Requesters remembered before idle entries are dropped.
const MAX_TRACKED_REQUESTERS: usize = 100_000;

/// A point in time of the injected clock, in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClockInstant(u64);

impl Add<Nanos> for ClockInstant {
    type Output = ClockInstant;
    fn add(self, other: Nanos) -> ClockInstant {
        ClockInstant(self.0.saturating_add(other.as_u64()))
    }
}

impl Reference for ClockInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_sub(earlier.0))
    }
    fn saturating_sub(&self, duration: Nanos) -> Self {
        ClockInstant(self.0.saturating_sub(duration.as_u64()))
    }
}

/// `governor`'s view of our [`SharedClock`].
#[derive(Debug, Clone)]
pub struct LimiterClock(SharedClock);

impl GovernorClock for LimiterClock {
    type Instant = ClockInstant;
    fn now(&self) -> ClockInstant {
        let ms = u64::try_from(self.0.now_unix_ms()).unwrap_or(0);
        ClockInstant(ms.saturating_mul(1_000_000))
    }
}

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, LimiterClock, NoOpMiddleware<ClockInstant>>;
type Direct = RateLimiter<NotKeyed, InMemoryState, LimiterClock, NoOpMiddleware<ClockInstant>>;

/// A refused allocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// This requester asked for too many aliases.
    #[error("too many video meeting rooms requested; try again in {} s", .retry_after.as_secs().max(1))]
    Requester {
        /// When the next request would be admitted.
        retry_after: Duration,
    },
    /// Everyone together asked for too many.
    #[error("the service is busy; try again in {} s", .retry_after.as_secs().max(1))]
    Global {
        /// When the next request would be admitted.
        retry_after: Duration,
    },
}

impl LimitExceeded {
    /// When to try again.
    pub fn retry_after(&self) -> Duration {
        match self {
            LimitExceeded::Requester { retry_after } | LimitExceeded::Global { retry_after } => {
                *retry_after
            }
        }
    }
}

/// The allocation limits of one process.
pub struct AllocationLimits {
    clock: LimiterClock,
    per_requester: Option<Keyed>,
    global: Option<Direct>,
}

impl std::fmt::Debug for AllocationLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AllocationLimits")
            .field("per_requester", &self.per_requester.is_some())
            .field("global", &self.global.is_some())
            .finish()
    }
}

impl AllocationLimits {
    /// Limits as configured (0 switches a limit off), reading time from `clock`.
    pub fn new(config: &LimitsConfig, clock: SharedClock) -> AllocationLimits {
        let clock = LimiterClock(clock);
        let per_requester =
            NonZeroU32::new(config.allocations_per_requester_per_hour).and_then(|n| {
                let period = Duration::from_secs(3600) / n.get();
                Quota::with_period(period).map(|q| {
                    RateLimiter::new(
                        q.allow_burst(n),
                        DefaultKeyedStateStore::default(),
                        clock.clone(),
                    )
                })
            });
        let global = NonZeroU32::new(config.allocations_per_second).map(|n| {
            RateLimiter::direct_with_clock(Quota::per_second(n).allow_burst(n), clock.clone())
        });
        AllocationLimits {
            clock,
            per_requester,
            global,
        }
    }

    /// Admits one allocation for `requester`, or says when to try again.
    pub fn check(&self, requester: &str) -> Result<(), LimitExceeded> {
        if let Some(limiter) = &self.per_requester {
            if limiter.len() > MAX_TRACKED_REQUESTERS {
                limiter.retain_recent();
            }
            if let Err(not_until) = limiter.check_key(&requester.to_owned()) {
                return Err(LimitExceeded::Requester {
                    retry_after: not_until.wait_time_from(self.clock.now()),
                });
            }
        }
        if let Some(limiter) = &self.global {
            if let Err(not_until) = limiter.check() {
                return Err(LimitExceeded::Global {
                    retry_after: not_until.wait_time_from(self.clock.now()),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn limits(per_hour: u32, per_second: u32) -> (AllocationLimits, std::sync::Arc<ManualClock>) {
        let clock = ManualClock::at_unix(1_000_000);
        let config = LimitsConfig {
            allocations_per_requester_per_hour: per_hour,
            allocations_per_second: per_second,
            ..LimitsConfig::default()
        };
        (AllocationLimits::new(&config, clock.clone()), clock)
    }

    #[test]
    fn a_requester_gets_the_hourly_burst_then_one_per_interval() {
        let (l, clock) = limits(60, 0);
        for _ in 0..60 {
            l.check("alice").expect("within the burst");
        }
        let e = l.check("alice").expect_err("61st in the same minute");
        assert!(matches!(e, LimitExceeded::Requester { .. }));
        assert!(e.retry_after() <= Duration::from_secs(60) && e.retry_after() > Duration::ZERO);
        // Others are not affected.
        l.check("bob").expect("bob has his own quota");
        // One more a minute later.
        clock.advance(Duration::from_secs(60));
        l.check("alice").expect("replenished");
        assert!(l.check("alice").is_err());
    }

    #[test]
    fn the_global_limit_covers_everyone() {
        let (l, clock) = limits(0, 5);
        for i in 0..5 {
            l.check(&format!("user{i}")).expect("within");
        }
        let e = l.check("user99").expect_err("global");
        assert!(matches!(e, LimitExceeded::Global { .. }));
        clock.advance(Duration::from_secs(1));
        l.check("user99").expect("next second");
    }

    #[test]
    fn zero_switches_limits_off() {
        let (l, _) = limits(0, 0);
        for _ in 0..10_000 {
            l.check("alice").expect("unlimited");
        }
    }
}
