//! Leadership of the mailbox workers: several management instances share the
//! integrations through the database, and each integration's mailbox is worked on by
//! exactly one of them at a time.
//!
//! One coordinator task per process ([`lead`]) registers the instance (a uuid generated
//! at start-up, logged) with [`vmr_store::Leases`], then every [`TICK`]:
//!
//! 1. verifies the lease session and writes the heartbeat; if the session was lost, every
//!    worker of this instance is aborted at once (like a crash, which processing survives:
//!    invariant 14), since another instance may already lead its mailbox;
//! 2. computes its fair share (`ceil(integrations / live instances)` on PostgreSQL; all or
//!    nothing on SQLite, see [`vmr_store::leases`]);
//! 3. leading more than its share, hands the excess over: the worker is asked to stop, and
//!    only once it has stopped is the lease released, so two instances never work on one
//!    mailbox;
//! 4. leading less, tries to take the lease of each integration it does not lead and
//!    starts [`super::run`] for each one it gets.
//!
//! So a second instance is a standby for a single integration and a scale-out for many,
//! and when an instance dies (its lease session closes, PostgreSQL drops its locks) the
//! others take its integrations at their next tick: a few seconds, well within 30.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use vmr_core::clock::SharedClock;
use vmr_exchange::mailbox::Mailbox;
use vmr_store::{Heartbeat, InstanceIdentity, Leases, Storage};

use super::{run, Pace, WorkerContext};

/// How often leases are verified, heartbeats written and the share re-balanced; also the
/// standby's retry interval.
pub const TICK: Duration = Duration::from_secs(2);
/// Longest wait for a worker to finish its cycle when handing over or shutting down;
/// after it the worker is aborted (as a crash would stop it) and the lease released.
const STOP_GRACE: Duration = Duration::from_secs(60);

/// One integration's worker, ready to run whenever this instance leads its mailbox.
pub struct Candidate {
    pub ctx: WorkerContext,
    pub mailbox: Arc<dyn Mailbox>,
    pub pace: Pace,
}

impl Candidate {
    fn integration(&self) -> &str {
        &self.ctx.integration.config.id
    }
}

/// This machine's name (`HOSTNAME`, else the kernel's), as instances record it.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// Who this process is: a fresh uuid, the host name, the pid and the start time.
pub fn this_instance(clock: &SharedClock) -> InstanceIdentity {
    InstanceIdentity {
        instance_id: uuid::Uuid::new_v4().to_string(),
        host: host_name(),
        pid: std::process::id(),
        started_at: clock.now_unix_ms(),
    }
}

/// Where one integration stands in this instance.
enum Slot {
    /// Not led here (another instance leads it, or nobody yet).
    Standby,
    /// Led here: the worker runs until `stop` is sent.
    Leading {
        stop: watch::Sender<bool>,
        task: JoinHandle<()>,
    },
    /// Being handed over: the task waits for the worker to stop, then releases the lease.
    HandingOver(JoinHandle<()>),
}

/// The coordinator: leads this instance's share of `candidates` until `stop` turns true,
/// then stops the workers and gives the leases back.
pub async fn lead(
    storage: Storage,
    me: InstanceIdentity,
    candidates: Vec<Candidate>,
    clock: SharedClock,
    mut stop: watch::Receiver<bool>,
) {
    let instance = me.instance_id.clone();
    let leases = loop {
        match Leases::register(&storage, me.clone(), clock.now_unix_ms()).await {
            Ok(leases) => break Arc::new(leases),
            Err(e) => {
                tracing::warn!(%instance, error = %e, "cannot register this management instance; retrying");
                let sender_gone = tokio::select! {
                    _ = tokio::time::sleep(TICK) => false,
                    changed = stop.changed() => changed.is_err(),
                };
                if sender_gone || *stop.borrow() {
                    return;
                }
            }
        }
    };
    tracing::info!(%instance, host = %me.host, pid = me.pid, sqlite = storage.is_sqlite(), integrations = candidates.len(), "management instance registered for mailbox leadership");
    let mut coordinator = Coordinator {
        leases: leases.clone(),
        candidates,
        slots: BTreeMap::new(),
        clock,
        blocked_by: None,
    };
    loop {
        if *stop.borrow() {
            break;
        }
        coordinator.tick().await;
        let sender_gone = tokio::select! {
            _ = tokio::time::sleep(TICK) => false,
            changed = stop.changed() => changed.is_err(),
        };
        if sender_gone {
            break;
        }
    }
    coordinator.stop_all().await;
    drop(coordinator);
    match Arc::try_unwrap(leases) {
        Ok(leases) => {
            if let Err(e) = leases.close().await {
                tracing::warn!(%instance, error = %e, "cannot give the mailbox leases back; they go when the process exits");
            }
        }
        Err(_) => {
            tracing::warn!(%instance, "mailbox leases still in use at shutdown; they go when the process exits")
        }
    }
    tracing::info!(%instance, "mailbox leadership stopped");
}

struct Coordinator {
    leases: Arc<Leases>,
    candidates: Vec<Candidate>,
    /// By index into `candidates`.
    slots: BTreeMap<usize, Slot>,
    clock: SharedClock,
    /// SQLite: the instance this one stands by for (warned about once per change).
    blocked_by: Option<String>,
}

impl Coordinator {
    fn instance(&self) -> &str {
        &self.leases.instance().instance_id
    }

    /// Integrations led or being handed over here.
    fn held(&self) -> usize {
        self.slots
            .values()
            .filter(|s| !matches!(s, Slot::Standby))
            .count()
    }

    async fn tick(&mut self) {
        if !self.verify().await {
            return;
        }
        self.reap().await;
        let now = self.clock.now_unix_ms();
        let share = match self.leases.fair_share(self.candidates.len(), now).await {
            Ok(share) => share,
            Err(e) => {
                tracing::warn!(instance = %self.instance(), error = %e, "cannot count the live management instances");
                return;
            }
        };
        let blocked_by = share.blocked_by.as_ref().map(|i| i.instance_id.clone());
        if blocked_by != self.blocked_by {
            if let Some(other) = &share.blocked_by {
                tracing::warn!(
                    instance = %self.instance(),
                    other = %other.instance_id, other_host = %other.host, other_pid = other.pid,
                    "another management instance is live on this SQLite database: SQLite supports \
                     one management instance per database, so this one stays standby and leads no \
                     mailbox until the other stops (use PostgreSQL to share the mailboxes among \
                     instances)"
                );
            }
            self.blocked_by = blocked_by;
        }
        let leading: Vec<usize> = self
            .slots
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Leading { .. }))
            .map(|(&i, _)| i)
            .collect();
        if leading.len() > share.lead {
            for &i in leading.iter().rev().take(leading.len() - share.lead) {
                self.hand_over(i, share.live);
            }
        } else if self.held() < share.lead {
            for i in 0..self.candidates.len() {
                if self.held() >= share.lead {
                    break;
                }
                if !matches!(self.slots.get(&i), None | Some(Slot::Standby)) {
                    continue;
                }
                let integration = self.candidates[i].integration().to_owned();
                match self.leases.try_acquire(&integration, now).await {
                    Ok(true) => self.start(i, share.live),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(instance = %self.instance(), %integration, error = %e, "cannot take the mailbox lease");
                        self.verify().await;
                        return;
                    }
                }
            }
        }
    }

    /// Verifies the lease session; on a lost session aborts every worker. `false` when
    /// nothing more should be done this tick.
    async fn verify(&mut self) -> bool {
        match self.leases.heartbeat(self.clock.now_unix_ms()).await {
            Ok(Heartbeat::Kept) => true,
            Ok(Heartbeat::Lost) => {
                let led: Vec<&str> = self
                    .slots
                    .iter()
                    .filter(|(_, s)| !matches!(s, Slot::Standby))
                    .map(|(&i, _)| self.candidates[i].integration())
                    .collect();
                tracing::error!(instance = %self.instance(), ?led, "the database lease session was lost: every mailbox lease of this instance is gone, so its workers stop now");
                for slot in std::mem::take(&mut self.slots).into_values() {
                    match slot {
                        Slot::Leading { task, .. } | Slot::HandingOver(task) => task.abort(),
                        Slot::Standby => {}
                    }
                }
                false
            }
            Err(e) => {
                // The session answered (or nothing was held); the heartbeat row could not be
                // written. Keep working; others may count this instance out meanwhile, which
                // only makes them take unled integrations sooner.
                tracing::warn!(instance = %self.instance(), error = %e, "cannot write the instance heartbeat");
                true
            }
        }
    }

    /// Notices workers that ended on their own (a panic) and hand-overs that finished.
    async fn reap(&mut self) {
        let finished: Vec<usize> = self
            .slots
            .iter()
            .filter(|(_, s)| match s {
                Slot::Leading { task, .. } | Slot::HandingOver(task) => task.is_finished(),
                Slot::Standby => false,
            })
            .map(|(&i, _)| i)
            .collect();
        for i in finished {
            if let Some(Slot::Leading { .. }) = self.slots.insert(i, Slot::Standby) {
                let integration = self.candidates[i].integration().to_owned();
                tracing::error!(instance = %self.instance(), %integration, "mailbox worker ended unexpectedly; releasing its lease");
                if let Err(e) = self.leases.release(&integration).await {
                    tracing::warn!(instance = %self.instance(), %integration, error = %e, "cannot release the mailbox lease");
                }
            }
        }
    }

    /// Starts the worker of candidate `i`, whose lease this instance just took.
    fn start(&mut self, i: usize, live: usize) {
        let candidate = &self.candidates[i];
        let (stop, stopped) = watch::channel(false);
        tracing::info!(instance = %self.instance(), integration = %candidate.integration(), live_instances = live, "leading the mailbox");
        let task = tokio::spawn(run(
            candidate.ctx.clone(),
            candidate.mailbox.clone(),
            candidate.pace,
            stopped,
        ));
        self.slots.insert(i, Slot::Leading { stop, task });
    }

    /// Stops the worker of candidate `i` and, once it has stopped, releases its lease.
    fn hand_over(&mut self, i: usize, live: usize) {
        let Some(Slot::Leading { stop, task }) = self.slots.remove(&i) else {
            return;
        };
        let integration = self.candidates[i].integration().to_owned();
        let instance = self.instance().to_owned();
        tracing::info!(%instance, %integration, live_instances = live, "handing the mailbox over (more than a fair share led here)");
        let leases = self.leases.clone();
        let handing = tokio::spawn(async move {
            stop_worker(stop, task, &integration).await;
            if let Err(e) = leases.release(&integration).await {
                tracing::warn!(%instance, %integration, error = %e, "cannot release the mailbox lease");
            }
        });
        self.slots.insert(i, Slot::HandingOver(handing));
    }

    /// Shutdown: every worker stopped (gracefully, within [`STOP_GRACE`]), hand-overs done.
    async fn stop_all(&mut self) {
        let mut waiting = Vec::new();
        for (i, slot) in std::mem::take(&mut self.slots) {
            let integration = self.candidates[i].integration().to_owned();
            match slot {
                Slot::Leading { stop, task } => waiting.push(tokio::spawn(async move {
                    stop_worker(stop, task, &integration).await;
                })),
                Slot::HandingOver(task) => waiting.push(task),
                Slot::Standby => {}
            }
        }
        for task in waiting {
            let _ = task.await;
        }
    }
}

/// Asks a worker to stop and waits for it (aborting it after [`STOP_GRACE`]).
async fn stop_worker(stop: watch::Sender<bool>, mut task: JoinHandle<()>, integration: &str) {
    let _ = stop.send(true);
    if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
        tracing::warn!(%integration, "mailbox worker did not stop in time; aborting it");
        task.abort();
        let _ = task.await;
    }
}
