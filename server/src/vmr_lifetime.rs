//! VMR lifetime: a scheduled VMR exists from acceptance until its meeting's last window closes
//! (the last occurrence's end + the integration's `meeting_buffer_after`), and is removed
//! `[lifetime] grace_hours` later (default 24 h, as Pexip's scheduled-conference list keeps a
//! day of past meetings). The sweeper runs every `sweep_interval_secs` on the injected
//! [`Clock`](vmr_core::clock::Clock): it asks the store for live conferences with no window
//! after the cutoff, confirms from the meeting's whole schedule that nothing comes later (a
//! series without end never expires; a finite series expires after its last occurrence, even
//! when its windows were not all materialised), and expires each in one transaction
//! (`Storage::expire_conference`: deletion time, alias `deleted` and never reissued, a
//! processing-log row and, in push mode, the Infinity deletion queued).
//!
//! Cancelled meetings do not wait for the sweeper: their conference and alias are deleted by
//! the mailbox worker's commit when the cancellation is processed.

use std::sync::Arc;
use std::time::Duration;

use vmr_core::clock::SharedClock;
use vmr_core::scheduling::Schedule;
use vmr_store::lifetime::ExpiryCandidate;
use vmr_store::{Storage, StorageError};

/// Candidates read per integration per sweep.
const CANDIDATES_PER_SWEEP: u32 = 500;

/// One integration as the sweeper sees it.
#[derive(Debug, Clone)]
pub struct SweptIntegration {
    pub id: String,
    /// `meeting_buffer_after` in milliseconds.
    pub buffer_after_ms: i64,
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Conferences expired.
    pub expired: usize,
    /// Candidates kept (a later occurrence, an endless series, a schedule that cannot be read).
    pub kept: usize,
}

/// Expires conferences whose last window closed more than the grace ago.
pub struct LifetimeSweeper {
    storage: Storage,
    clock: SharedClock,
    grace_ms: i64,
    integrations: Vec<SweptIntegration>,
}

impl LifetimeSweeper {
    /// A sweeper over `integrations` with `grace_ms` of grace.
    pub fn new(
        storage: Storage,
        clock: SharedClock,
        grace_ms: i64,
        integrations: Vec<SweptIntegration>,
    ) -> LifetimeSweeper {
        LifetimeSweeper {
            storage,
            clock,
            grace_ms,
            integrations,
        }
    }

    /// A sweeper for every integration of `config`, with its `[lifetime]` grace.
    pub fn from_config(
        storage: Storage,
        clock: SharedClock,
        config: &vmr_core::config::Config,
    ) -> LifetimeSweeper {
        let integrations = config
            .integrations
            .iter()
            .map(|i| SweptIntegration {
                id: i.id.clone(),
                buffer_after_ms: i64::from(i.meeting_buffer_after) * 60_000,
            })
            .collect();
        LifetimeSweeper::new(storage, clock, config.lifetime.grace_ms(), integrations)
    }

    /// Whether `candidate` has nothing after `cutoff` (its schedule decides; without a
    /// meeting, its stored windows and creation time).
    fn has_ended(candidate: &ExpiryCandidate, cutoff: i64) -> bool {
        let Some(meeting) = &candidate.meeting else {
            return candidate
                .last_window_end
                .unwrap_or(candidate.conference.created_at)
                <= cutoff;
        };
        if meeting.state != "accepted" {
            // Declined or cancelled with the conference still live: nothing will use it once
            // its stored windows (if any) are past.
            return candidate
                .last_window_end
                .unwrap_or(candidate.conference.created_at)
                <= cutoff;
        }
        let schedule: Schedule = match serde_json::from_str(&meeting.schedule_json) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(uid = %meeting.uid, error = %e, "stored schedule unreadable; VMR kept");
                return false;
            }
        };
        match schedule.last_end() {
            Ok(Some(end)) => end <= cutoff,
            // A series without end: its windows roll forward for ever.
            Ok(None) => false,
            Err(e) => {
                tracing::error!(uid = %meeting.uid, error = %e, "cannot expand the series; VMR kept");
                false
            }
        }
    }

    /// One pass over every integration.
    pub async fn sweep_once(&self) -> Result<SweepReport, StorageError> {
        let mut report = SweepReport::default();
        for integration in &self.integrations {
            let now = self.clock.now_unix_ms();
            let cutoff = now
                .saturating_sub(integration.buffer_after_ms)
                .saturating_sub(self.grace_ms);
            let candidates = self
                .storage
                .expiry_candidates(&integration.id, cutoff, CANDIDATES_PER_SWEEP)
                .await?;
            for candidate in candidates {
                if !Self::has_ended(&candidate, cutoff) {
                    report.kept += 1;
                    continue;
                }
                if self
                    .storage
                    .expire_conference(&candidate, cutoff, now)
                    .await?
                {
                    tracing::info!(
                        integration = %integration.id,
                        conference = %candidate.conference.id,
                        name = %candidate.conference.name,
                        "VMR expired after its last window and the grace"
                    );
                    report.expired += 1;
                } else {
                    report.kept += 1;
                }
            }
        }
        Ok(report)
    }
}

/// Sweeps every `interval` until `stop` turns true.
pub async fn run(
    sweeper: Arc<LifetimeSweeper>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            break;
        }
        match sweeper.sweep_once().await {
            Ok(report) if report.expired > 0 => tracing::info!(?report, "VMR lifetime sweep"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "VMR lifetime sweep failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Runs the sweeper in the background (management role and `all`).
pub fn spawn(state: &crate::app::ManagementState, stop: tokio::sync::watch::Receiver<bool>) {
    let config = &state.shared.config;
    let sweeper = Arc::new(LifetimeSweeper::from_config(
        state.storage.clone(),
        state.shared.clock.clone(),
        config,
    ));
    let interval = Duration::from_secs(config.lifetime.sweep_interval_secs);
    tokio::spawn(run(sweeper, interval, stop));
}
