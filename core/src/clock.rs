//! Time, injected: everything that must be moved through windows, expiries and
//! back-offs in tests reads the time from a [`Clock`] instead of the system.
//!
//! Production code uses [`SystemClock`]; tests use [`ManualClock`], which only
//! moves when told to.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Allowed difference between our clock and a token or statement issuer's, in
/// seconds (5 minutes).
pub const CLOCK_SKEW_SECS: i64 = 300;

/// A source of wall-clock time in Unix milliseconds.
pub trait Clock: Send + Sync + Debug {
    /// Milliseconds since the Unix epoch.
    fn now_unix_ms(&self) -> i64;

    /// Seconds since the Unix epoch.
    fn now_unix(&self) -> i64 {
        self.now_unix_ms().div_euclid(1000)
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// The system clock as a [`SharedClock`].
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock for tests: starts where it is told and moves only by [`ManualClock::advance`]
/// or [`ManualClock::set_unix`].
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `unix` seconds.
    pub fn at_unix(unix: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            now_ms: AtomicI64::new(unix.saturating_mul(1000)),
        })
    }

    /// A clock standing at the current system time.
    pub fn starting_now() -> Arc<ManualClock> {
        Arc::new(ManualClock {
            now_ms: AtomicI64::new(SystemClock.now_unix_ms()),
        })
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Puts the clock at `unix` seconds.
    pub fn set_unix(&self, unix: i64) {
        self.now_ms
            .store(unix.saturating_mul(1000), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::at_unix(1_000);
        assert_eq!(clock.now_unix(), 1_000);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now_unix_ms(), 1_001_500);
        assert_eq!(clock.now_unix(), 1_001);
        clock.set_unix(5);
        assert_eq!(clock.now_unix(), 5);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_unix() > 1_577_836_800);
    }
}
