//! The mailbox worker: for each integration with an `[integration.exchange]` table, a task
//! that keeps the resource mailbox and the database in step.
//!
//! One cycle: send the replies left in the outbox, then for the Inbox and the Calendar fetch
//! the changes since the stored sync state ([`Mailbox::sync`]), read the items in full
//! ([`Mailbox::fetch`]), process each ([`processor`]), store the new sync state only after
//! the whole page is applied, and send the replies the page produced ([`replies`]); then
//! complete the deferred (TOK) meetings as their organizers ([`deferred`]). Between
//! cycles it waits for the server's change notifications (or the poll interval); every
//! re-sync interval it forgets the sync states and reads both folders from the start, which
//! processing tolerates because it is idempotent. Every hour it rolls the windows of accepted
//! series forward to the horizon ([`horizon`]).
//!
//! Failures: a throttled mailbox is left alone for as long as the server asked; other mailbox
//! and database failures back off exponentially up to the poll interval. Nothing is lost: an
//! unapplied page is fetched again because its sync state was not stored.

pub mod connect;
pub mod deferred;
pub mod horizon;
pub mod leadership;
pub mod organizer_copy;
pub mod processor;
pub mod replies;

use std::sync::Arc;
use std::time::Duration;

use vmr_core::clock::SharedClock;
use vmr_core::deferral::DeferralKeys;
use vmr_exchange::mailbox::{Change, Fetched, Folder, ItemRef, Mailbox, MailboxError};
use vmr_store::{Storage, StorageError};

use crate::integration::Integration;

/// Items read per `fetch` call (the backend batches further itself).
const FETCH_CHUNK: usize = 50;
/// How often series windows are rolled forward to the horizon.
const ROLL_FORWARD_INTERVAL: Duration = Duration::from_secs(3600);
/// Longest pause after a failure that gave no back-off of its own.
const MAX_FAILURE_BACK_OFF: Duration = Duration::from_secs(60);

/// What processing needs, per integration.
#[derive(Clone)]
pub struct WorkerContext {
    pub integration: Arc<Integration>,
    pub storage: Storage,
    pub deferral_keys: Option<Arc<DeferralKeys>>,
    pub clock: SharedClock,
    /// How far ahead series windows are materialised, in ms.
    pub horizon_ms: i64,
    /// The add-in server's public host (in joining instructions the worker writes).
    pub public_host: String,
    /// Allocation counters (deferred meetings draw aliases too).
    pub alias_stats: Arc<crate::alias_service::AliasStats>,
}

/// How much of a folder [`read_folder`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pages {
    /// The first page of a sync from scratch (a sample).
    First,
    /// Every item.
    All,
}

/// The meeting items of `folder`, read from the start (no stored sync state): for the
/// operator commands (`check`, `recover`), which look without processing.
pub async fn read_folder(
    mailbox: &dyn Mailbox,
    folder: Folder,
    pages: Pages,
) -> Result<Vec<vmr_core::meeting::MeetingItem>, MailboxError> {
    let mut items = Vec::new();
    let mut state: Option<String> = None;
    loop {
        let batch = mailbox.sync(folder, state.as_deref()).await?;
        let refs: Vec<ItemRef> = batch
            .changes
            .into_iter()
            .filter_map(|c| match c {
                Change::Upsert(item) => Some(item),
                Change::Delete { .. } => None,
            })
            .collect();
        for chunk in refs.chunks(FETCH_CHUNK) {
            for fetched in mailbox.fetch(chunk).await? {
                if let Fetched::Meeting(item) = fetched {
                    items.push(*item);
                }
            }
        }
        if batch.complete || pages == Pages::First {
            return Ok(items);
        }
        state = Some(batch.state);
    }
}

impl WorkerContext {
    /// Draws an alias the mailbox side needs itself (a deferred meeting's, or recovery's
    /// replacement for a lost one), for `requester`; `via` names the path and the alias's
    /// fixed id.
    pub async fn draw_alias(
        &self,
        requester: &vmr_core::identity::Identity,
        subject: &str,
        via: crate::alias_service::Requested<'_>,
    ) -> Result<(), crate::alias_service::AllocateError> {
        let request = crate::alias_service::AliasContext {
            identity: requester,
            subject,
            now_unix: self.clock.now_unix(),
            via,
        };
        crate::alias_service::allocate(
            &self.storage,
            &self.integration,
            &request,
            &self.public_host,
            &self.alias_stats,
        )
        .await?;
        Ok(())
    }
}

/// How often the worker looks.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Longest wait for a change notification before syncing anyway.
    pub poll_interval: Duration,
    /// Full re-sync safety net.
    pub resync_interval: Duration,
}

/// Why a cycle stopped early.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error(transparent)]
    Mailbox(#[from] MailboxError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<replies::SendError> for CycleError {
    fn from(e: replies::SendError) -> Self {
        match e {
            replies::SendError::Mailbox(e) => CycleError::Mailbox(e),
            replies::SendError::Storage(e) => CycleError::Storage(e),
        }
    }
}

/// Counts of one cycle (for logs and tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CycleReport {
    pub items: usize,
    pub changed: usize,
    pub replies_sent: usize,
    /// Deferred (TOK) meetings completed as their organizer or declined.
    pub deferred_completed: usize,
}

/// Runs the worker until `stop` turns true.
pub async fn run(
    ctx: WorkerContext,
    mailbox: Arc<dyn Mailbox>,
    pace: Pace,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let integration = ctx.integration.config.id.clone();
    let mut last_resync = tokio::time::Instant::now();
    let mut next_roll = tokio::time::Instant::now();
    let mut failures: u32 = 0;
    tracing::info!(%integration, "mailbox worker started");
    loop {
        if *stop.borrow() {
            break;
        }
        if tokio::time::Instant::now() >= next_roll {
            match horizon::roll_forward(&ctx).await {
                Ok(rolled) => {
                    next_roll = tokio::time::Instant::now() + ROLL_FORWARD_INTERVAL;
                    if rolled > 0 {
                        tracing::info!(%integration, rolled, "series windows rolled forward");
                    }
                }
                Err(e) => tracing::warn!(%integration, error = %e, "rolling series forward failed"),
            }
        }
        let pause = match cycle(&ctx, mailbox.as_ref()).await {
            Ok(report) => {
                failures = 0;
                if report.items > 0 || report.replies_sent > 0 {
                    tracing::info!(%integration, ?report, "mailbox cycle");
                }
                None
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let pause = failure_pause(&e, failures, pace.poll_interval);
                tracing::warn!(%integration, error = %e, ?pause, "mailbox cycle failed");
                if let CycleError::Mailbox(mailbox_error) = &e {
                    crate::metrics::service().record_ews_error(
                        &integration,
                        mailbox_error,
                        ctx.clock.now_unix_ms(),
                    );
                }
                Some(pause)
            }
        };
        if let Some(pause) = pause {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        if last_resync.elapsed() >= pace.resync_interval {
            last_resync = tokio::time::Instant::now();
            tracing::info!(%integration, "full re-sync");
            if let Err(e) = ctx.storage.clear_sync_states(&integration).await {
                tracing::warn!(%integration, error = %e, "cannot reset the sync states");
            }
            continue;
        }
        let wait = pace
            .poll_interval
            .min(pace.resync_interval.saturating_sub(last_resync.elapsed()));
        tokio::select! {
            woke = mailbox.wait_for_changes(wait) => {
                if let Err(e) = woke {
                    tracing::debug!(%integration, error = %e, "notifications unavailable");
                    let pause = failure_pause(&CycleError::Mailbox(e), 1, pace.poll_interval);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
            _ = stop.changed() => {}
        }
    }
    tracing::info!(%integration, "mailbox worker stopped");
}

/// How long to wait after a failed cycle.
fn failure_pause(error: &CycleError, failures: u32, poll: Duration) -> Duration {
    match error {
        CycleError::Mailbox(MailboxError::Throttled(back_off)) => *back_off,
        _ => {
            let exp = Duration::from_millis(500u64.saturating_mul(1 << failures.min(10)));
            exp.min(poll.max(Duration::from_secs(1)))
                .min(MAX_FAILURE_BACK_OFF)
        }
    }
}

/// One pass: outbox, both folders, outbox.
pub async fn cycle(ctx: &WorkerContext, mailbox: &dyn Mailbox) -> Result<CycleReport, CycleError> {
    let mut report = CycleReport {
        replies_sent: replies::send_pending(ctx, mailbox).await?,
        ..CycleReport::default()
    };
    for folder in Folder::ALL {
        sync_folder(ctx, mailbox, folder, &mut report).await?;
    }
    report.deferred_completed = deferred::complete_pending(ctx, mailbox).await?;
    report.replies_sent += replies::send_pending(ctx, mailbox).await?;
    Ok(report)
}

/// Applies every change of `folder` since its stored sync state.
async fn sync_folder(
    ctx: &WorkerContext,
    mailbox: &dyn Mailbox,
    folder: Folder,
    report: &mut CycleReport,
) -> Result<(), CycleError> {
    let integration = ctx.integration.config.id.as_str();
    loop {
        let state = ctx
            .storage
            .sync_state(integration, folder.as_str())
            .await?
            .filter(|s| !s.is_empty());
        let batch = match mailbox.sync(folder, state.as_deref()).await {
            Err(MailboxError::InvalidSyncState(why)) => {
                tracing::warn!(integration, folder = folder.as_str(), %why, "sync state refused; starting the folder over");
                mailbox.sync(folder, None).await?
            }
            other => other?,
        };
        let upserts: Vec<ItemRef> = batch
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Upsert(item) => Some(item.clone()),
                Change::Delete { .. } => None,
            })
            .collect();
        for chunk in upserts.chunks(FETCH_CHUNK) {
            for fetched in mailbox.fetch(chunk).await? {
                report.items += 1;
                match fetched {
                    Fetched::Meeting(item) => {
                        if let processor::Processed::Changed { .. } =
                            processor::process(ctx, &item).await?
                        {
                            report.changed += 1;
                        }
                    }
                    Fetched::Other { id, item_class } => {
                        tracing::debug!(integration, %id, %item_class, "not a meeting; ignored");
                    }
                    Fetched::Gone { .. } => {}
                }
            }
        }
        ctx.storage
            .save_sync_state(
                integration,
                folder.as_str(),
                &batch.state,
                ctx.clock.now_unix_ms(),
            )
            .await?;
        // Replies of this page go out before the next page is read, so a long backlog is
        // answered progressively.
        report.replies_sent += replies::send_pending(ctx, mailbox).await?;
        if batch.complete {
            return Ok(());
        }
    }
}

/// What one integration's worker needs: its context, its mailbox and its pace.
pub type WorkerParts = (WorkerContext, Arc<dyn Mailbox>, Pace);

/// The worker parts of every integration that has an `[integration.exchange]` table (for
/// the workers, and for `vmr-scheduler recover`). Fails (naming the config key) if a mailbox
/// cannot be set up.
pub fn workers(state: &crate::app::ManagementState) -> anyhow::Result<Vec<WorkerParts>> {
    let shared = &state.shared;
    let mut parts = Vec::new();
    for (i, ic) in shared.config.integrations.iter().enumerate() {
        let (Some(exchange), Some(watched)) = (&ic.exchange, ic.watched_mailbox()) else {
            continue;
        };
        let Some(integration) = shared.integrations.get(&ic.id) else {
            continue;
        };
        let key = format!("integration[{i}].exchange");
        let mailbox = connect::ews_mailbox(&key, exchange, watched, shared.clock.clone())?;
        let ctx = WorkerContext {
            integration: integration.clone(),
            storage: state.storage.clone(),
            deferral_keys: state.deferral_keys.clone(),
            clock: shared.clock.clone(),
            horizon_ms: i64::from(exchange.horizon_days) * 24 * 3_600_000,
            public_host: shared.config.server.public_host.clone(),
            alias_stats: state.stats.clone(),
        };
        let pace = Pace {
            poll_interval: exchange.poll_interval(),
            resync_interval: exchange.resync_interval(),
        };
        tracing::info!(integration = %ic.id, mailbox = watched, url = %exchange.ews_url, "watching the resource mailbox");
        parts.push((ctx, mailbox, pace));
    }
    Ok(parts)
}

/// Prepares one worker per integration that has an `[integration.exchange]` table and starts
/// the [`leadership`] coordinator, which runs the workers of the integrations this instance
/// leads (one instance per integration at a time, through the database); everything stops
/// when `stop` turns true. Fails (naming the config key) if a mailbox cannot be set up.
pub fn spawn_all(
    state: &crate::app::ManagementState,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let shared = &state.shared;
    let candidates: Vec<leadership::Candidate> = workers(state)?
        .into_iter()
        .map(|(ctx, mailbox, pace)| leadership::Candidate { ctx, mailbox, pace })
        .collect();
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let me = leadership::this_instance(&shared.clock);
    tracing::info!(instance = %me.instance_id, host = %me.host, pid = me.pid, "management instance started");
    Ok(vec![tokio::spawn(leadership::lead(
        state.storage.clone(),
        me,
        candidates,
        shared.clock.clone(),
        stop,
    ))])
}
