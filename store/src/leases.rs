//! Leadership of each integration's mailbox among management instances: exactly one
//! instance at a time works on an integration's mailbox; the others stand by for it.
//!
//! **PostgreSQL** is the coordination engine. The lease on an integration is a
//! session-level advisory lock (`pg_try_advisory_lock`) on a stable 64-bit key derived
//! from the integration id ([`integration_lease_key`]), held on one connection taken out
//! of the pool for as long as this instance lives (its *lease session*; the pool opens a
//! replacement, so an instance uses one connection more than `max_connections`). When a process
//! dies, even by SIGKILL, its socket closes and PostgreSQL drops its locks at once, so
//! another instance can take the lease on its next attempt. [`Leases::heartbeat`]
//! verifies the session every few seconds; when it fails (or a lease query on it
//! fails), every lease of this instance is reported [`Heartbeat::Lost`] and the caller
//! must stop the workers before they do more work. Each instance also locks a key of
//! its own id on the same session, which makes "is that instance alive?" a question for
//! PostgreSQL (`pg_locks`) rather than for clocks.
//!
//! Two tables serve spreading and people looking (migration `0004_leadership.sql`):
//! `management_instance` (id, host, pid, start, heartbeat) and `integration_leader`
//! (integration → instance, since, heartbeat). [`Leases::fair_share`] is
//! `ceil(integrations / live instances)`: an instance leading more releases the excess,
//! one leading fewer takes unled integrations.
//!
//! **SQLite** holds one management instance per database: leases are granted in-process
//! ([`Leases::try_acquire`] always succeeds). If another process with a live heartbeat
//! registered on the same file earlier, [`Leases::fair_share`] names it in
//! [`Share::blocked_by`] and grants nothing, so the later process stays standby (and the
//! caller warns). A registered process on this host whose pid is gone counts as dead at
//! once, so a restart after a crash takes over without waiting for its heartbeat to age.
//!
//! A one-off command that writes what the worker writes (`vmr-scheduler recover`) takes a
//! [`CommandLease`] instead: the same advisory lock on PostgreSQL, or, on SQLite, the
//! assurance that no management instance runs on the database.

use std::collections::BTreeSet;
use std::time::Duration;

use sqlx::{AnyConnection, Connection, Row};
use tokio::sync::Mutex;

use crate::{query_err, Storage, StorageError};

/// An instance whose heartbeat is older than this is not live (ms).
pub const INSTANCE_STALE_AFTER_MS: i64 = 10_000;
/// Rows of instances silent for longer than this are deleted at registration (ms).
const INSTANCE_FORGOTTEN_AFTER_MS: i64 = 24 * 3_600_000;
/// Longest wait for the lease session to answer a check.
const SESSION_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The advisory-lock key of an integration's mailbox lease: FNV-1a (64 bits) of
/// `vmr-scheduler/mailbox/<integration>`, the same in every version and process.
pub fn integration_lease_key(integration: &str) -> i64 {
    lease_key("mailbox", integration)
}

/// The advisory-lock key an instance holds while it lives.
fn instance_lease_key(instance_id: &str) -> i64 {
    lease_key("instance", instance_id)
}

fn lease_key(kind: &str, name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "vmr-scheduler/"
        .bytes()
        .chain(kind.bytes())
        .chain(std::iter::once(b'/'))
        .chain(name.bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

/// Who this management instance is (the instance id is generated at start-up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceIdentity {
    pub instance_id: String,
    pub host: String,
    pub pid: u32,
    /// Unix ms.
    pub started_at: i64,
}

/// A `management_instance` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    pub instance_id: String,
    pub host: String,
    pub pid: i64,
    pub started_at: i64,
    pub heartbeat_at: i64,
}

/// An `integration_leader` row: who took the integration's lease last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderRecord {
    pub integration: String,
    pub instance_id: String,
    pub since: i64,
    pub heartbeat_at: i64,
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Every lease held before is still held.
    Kept,
    /// The lease session failed: every lease held before is gone (another instance may
    /// hold them already). The workers must stop now.
    Lost,
}

/// How many integrations this instance should lead now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Integrations to lead: `ceil(integrations / live)` on PostgreSQL; all or none on
    /// SQLite.
    pub lead: usize,
    /// Live instances, this one included.
    pub live: usize,
    /// SQLite only: the earlier live instance on this database that leads everything
    /// while this one stands by.
    pub blocked_by: Option<InstanceRecord>,
}

/// The lease session and what it holds.
#[derive(Default)]
struct Session {
    /// PostgreSQL: the connection holding the advisory locks.
    conn: Option<AnyConnection>,
    /// Integrations whose lease this instance holds.
    held: BTreeSet<String>,
    /// A lease query found the session broken while leases were held: the next
    /// heartbeat reports [`Heartbeat::Lost`].
    lost: bool,
}

impl Session {
    /// The session broke: forget it and everything it held.
    fn broken(&mut self) {
        self.conn = None;
        if !self.held.is_empty() {
            self.lost = true;
        }
        self.held.clear();
    }
}

/// One management instance's leases (see the module comment).
pub struct Leases {
    storage: Storage,
    me: InstanceIdentity,
    session: Mutex<Session>,
}

impl Leases {
    /// Registers this instance (`management_instance` row; on PostgreSQL, the lease
    /// session with the instance's own lock).
    pub async fn register(
        storage: &Storage,
        me: InstanceIdentity,
        now: i64,
    ) -> Result<Leases, StorageError> {
        sqlx::query("DELETE FROM management_instance WHERE heartbeat_at < $1")
            .bind(now - INSTANCE_FORGOTTEN_AFTER_MS)
            .execute(&storage.pool)
            .await
            .map_err(query_err("forgetting long-gone management instances"))?;
        let leases = Leases {
            storage: storage.clone(),
            me,
            session: Mutex::new(Session::default()),
        };
        leases.beat(now).await?;
        if !storage.sqlite {
            let mut session = leases.session.lock().await;
            leases.open_session(&mut session).await?;
        }
        Ok(leases)
    }

    /// This instance.
    pub fn instance(&self) -> &InstanceIdentity {
        &self.me
    }

    /// Integrations whose lease this instance holds.
    pub async fn held(&self) -> BTreeSet<String> {
        self.session.lock().await.held.clone()
    }

    /// Takes a connection out of the pool for good and locks this instance's key on it.
    async fn open_session(&self, session: &mut Session) -> Result<(), StorageError> {
        const DOING: &str = "opening the lease session";
        let mut conn = self
            .storage
            .pool
            .acquire()
            .await
            .map_err(query_err(DOING))?
            .detach();
        sqlx::query("SELECT pg_try_advisory_lock($1)")
            .bind(instance_lease_key(&self.me.instance_id))
            .fetch_one(&mut conn)
            .await
            .map_err(query_err(DOING))?;
        session.conn = Some(conn);
        Ok(())
    }

    /// Writes this instance's heartbeat (and its leader rows').
    async fn beat(&self, now: i64) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO management_instance (instance_id, host, pid, started_at, heartbeat_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (instance_id) DO UPDATE SET \
             heartbeat_at = excluded.heartbeat_at",
        )
        .bind(&self.me.instance_id)
        .bind(&self.me.host)
        .bind(i64::from(self.me.pid))
        .bind(self.me.started_at)
        .bind(now)
        .execute(&self.storage.pool)
        .await
        .map_err(query_err("writing the instance heartbeat"))?;
        sqlx::query("UPDATE integration_leader SET heartbeat_at = $1 WHERE instance_id = $2")
            .bind(now)
            .bind(&self.me.instance_id)
            .execute(&self.storage.pool)
            .await
            .map_err(query_err("writing the leaders' heartbeat"))?;
        Ok(())
    }

    /// Verifies the lease session (PostgreSQL) and writes the heartbeats. Call it every
    /// few seconds; on [`Heartbeat::Lost`] stop every worker at once. A session that
    /// broke is opened again here (holding nothing).
    pub async fn heartbeat(&self, now: i64) -> Result<Heartbeat, StorageError> {
        let mut outcome = Heartbeat::Kept;
        if !self.storage.sqlite {
            let mut session = self.session.lock().await;
            if let Some(conn) = session.conn.as_mut() {
                let check = tokio::time::timeout(SESSION_CHECK_TIMEOUT, conn.ping()).await;
                if !matches!(check, Ok(Ok(()))) {
                    session.broken();
                }
            }
            if std::mem::take(&mut session.lost) {
                outcome = Heartbeat::Lost;
            }
            if session.conn.is_none() {
                let opened = self.open_session(&mut session).await;
                if outcome == Heartbeat::Kept {
                    opened?;
                }
            }
        }
        if outcome == Heartbeat::Lost {
            // Best effort: the loss is what the caller must hear about. The rows still
            // naming this instance are no longer true.
            let _ = sqlx::query("DELETE FROM integration_leader WHERE instance_id = $1")
                .bind(&self.me.instance_id)
                .execute(&self.storage.pool)
                .await;
            let _ = self.beat(now).await;
            return Ok(outcome);
        }
        self.beat(now).await?;
        Ok(outcome)
    }

    /// Takes the integration's lease if nobody holds it; `true` if this instance holds
    /// it now (also when it held it already). On SQLite, always granted.
    pub async fn try_acquire(&self, integration: &str, now: i64) -> Result<bool, StorageError> {
        const DOING: &str = "taking a mailbox lease";
        let mut session = self.session.lock().await;
        if session.held.contains(integration) {
            return Ok(true);
        }
        if !self.storage.sqlite {
            if session.conn.is_none() {
                self.open_session(&mut session).await?;
            }
            let Some(conn) = session.conn.as_mut() else {
                return Ok(false);
            };
            let locked = sqlx::query("SELECT pg_try_advisory_lock($1) AS locked")
                .bind(integration_lease_key(integration))
                .fetch_one(conn)
                .await
                .and_then(|row| row.try_get::<bool, _>("locked"));
            match locked {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                Err(source) => {
                    session.broken();
                    return Err(StorageError::Query {
                        doing: DOING,
                        source,
                    });
                }
            }
        }
        session.held.insert(integration.to_owned());
        sqlx::query(
            "INSERT INTO integration_leader (integration, instance_id, since, heartbeat_at) \
             VALUES ($1, $2, $3, $3) ON CONFLICT (integration) DO UPDATE SET \
             instance_id = excluded.instance_id, since = excluded.since, \
             heartbeat_at = excluded.heartbeat_at",
        )
        .bind(integration)
        .bind(&self.me.instance_id)
        .bind(now)
        .execute(&self.storage.pool)
        .await
        .map_err(query_err("recording the mailbox leader"))?;
        Ok(true)
    }

    /// Gives the integration's lease back (its worker must have stopped already).
    pub async fn release(&self, integration: &str) -> Result<(), StorageError> {
        const DOING: &str = "releasing a mailbox lease";
        let mut session = self.session.lock().await;
        if !session.held.remove(integration) {
            return Ok(());
        }
        if let Some(conn) = session.conn.as_mut() {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(integration_lease_key(integration))
                .fetch_one(conn)
                .await;
            if let Err(source) = unlocked {
                session.broken();
                return Err(StorageError::Query {
                    doing: DOING,
                    source,
                });
            }
        }
        drop(session);
        sqlx::query("DELETE FROM integration_leader WHERE integration = $1 AND instance_id = $2")
            .bind(integration)
            .bind(&self.me.instance_id)
            .execute(&self.storage.pool)
            .await
            .map_err(query_err("clearing the mailbox leader"))?;
        Ok(())
    }

    /// Live instances, this one included if its heartbeat is fresh: on PostgreSQL a
    /// fresh heartbeat and a lease session PostgreSQL still sees (its instance lock in
    /// `pg_locks`); on SQLite a fresh heartbeat and, on this host, a running pid.
    pub async fn live_instances(&self, now: i64) -> Result<Vec<InstanceRecord>, StorageError> {
        let fresh = self.storage.fresh_instances(now).await?;
        if self.storage.sqlite {
            return Ok(fresh
                .into_iter()
                .filter(|i| i.instance_id == self.me.instance_id || self.other_process_runs(i))
                .collect());
        }
        let locked = self.storage.advisory_locks_held().await?;
        Ok(fresh
            .into_iter()
            .filter(|i| locked.contains(&instance_lease_key(&i.instance_id)))
            .collect())
    }

    /// SQLite: whether a registered process other than this one may still run.
    fn other_process_runs(&self, other: &InstanceRecord) -> bool {
        process_may_run(other, &self.me.host, self.me.pid)
    }

    /// How many of `integrations` this instance should lead now (see [`Share`]).
    pub async fn fair_share(&self, integrations: usize, now: i64) -> Result<Share, StorageError> {
        let live = self.live_instances(now).await?;
        let count =
            live.len() + usize::from(!live.iter().any(|i| i.instance_id == self.me.instance_id));
        if self.storage.sqlite {
            let first = live
                .into_iter()
                .filter(|i| i.instance_id != self.me.instance_id)
                .filter(|i| {
                    (i.started_at, &i.instance_id) < (self.me.started_at, &self.me.instance_id)
                })
                .min_by(|a, b| (a.started_at, &a.instance_id).cmp(&(b.started_at, &b.instance_id)));
            return Ok(match first {
                Some(other) => Share {
                    lead: 0,
                    live: count,
                    blocked_by: Some(other),
                },
                None => Share {
                    lead: integrations,
                    live: count,
                    blocked_by: None,
                },
            });
        }
        Ok(Share {
            lead: integrations.div_ceil(count),
            live: count,
            blocked_by: None,
        })
    }

    /// Gives every lease back and removes this instance's row (graceful shutdown).
    pub async fn close(self) -> Result<(), StorageError> {
        let held: Vec<String> = self.held().await.into_iter().collect();
        for integration in &held {
            self.release(integration).await?;
        }
        sqlx::query("DELETE FROM management_instance WHERE instance_id = $1")
            .bind(&self.me.instance_id)
            .execute(&self.storage.pool)
            .await
            .map_err(query_err("removing the instance row"))?;
        if let Some(conn) = self.session.into_inner().conn {
            let _ = conn.close().await;
        }
        Ok(())
    }
}

/// SQLite: whether the registered process `other` may still run, asked by process `pid` on
/// `host`. Another host's process: only its heartbeat can tell (yes). This host's: its pid
/// must exist; one's own pid is an earlier life of it (pid 1 in a restarted container).
fn process_may_run(other: &InstanceRecord, host: &str, pid: u32) -> bool {
    if other.host != host {
        return true;
    }
    if other.pid == i64::from(pid) {
        return false;
    }
    let proc = std::path::Path::new("/proc");
    !proc.join("self").exists() || proc.join(other.pid.to_string()).exists()
}

/// A mailbox lease held by a one-off command (`vmr-scheduler recover`) while it writes what
/// the mailbox worker writes, so that no management instance works on the same mailbox
/// meanwhile.
///
/// On PostgreSQL it is the integration's advisory lock ([`integration_lease_key`]) on a
/// connection of its own: a management instance's [`Leases::try_acquire`] finds it held and
/// stands by until [`CommandLease::release`] (or the command's exit) frees it. On SQLite,
/// where one management instance leads every mailbox, it is granted only while no management
/// instance runs on the database; an instance started while the command runs is not held
/// back, so the command must be quick or the service stopped (the recover docs say so).
pub struct CommandLease {
    /// PostgreSQL: the connection holding the advisory lock.
    conn: Option<AnyConnection>,
    key: i64,
}

/// Why a command could not take a mailbox lease.
#[derive(Debug, thiserror::Error)]
pub enum CommandLeaseError {
    /// Someone works on the mailbox now; the text says who.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl CommandLease {
    /// Gives the lease back.
    pub async fn release(self) -> Result<(), StorageError> {
        if let Some(mut conn) = self.conn {
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(self.key)
                .fetch_one(&mut conn)
                .await
                .map_err(query_err("releasing a command's mailbox lease"))?;
            let _ = conn.close().await;
        }
        Ok(())
    }
}

impl Storage {
    /// Takes `integration`'s mailbox lease for a one-off command run by process `pid` on
    /// `host` (see [`CommandLease`]); [`CommandLeaseError::Busy`] names the management
    /// instance that works on the mailbox instead.
    pub async fn take_command_lease(
        &self,
        integration: &str,
        host: &str,
        pid: u32,
        now: i64,
    ) -> Result<CommandLease, CommandLeaseError> {
        const DOING: &str = "taking a command's mailbox lease";
        let key = integration_lease_key(integration);
        let describe = |i: &InstanceRecord| {
            format!(
                "management instance {} on {} (pid {}, last heartbeat {} s ago)",
                i.instance_id,
                i.host,
                i.pid,
                (now - i.heartbeat_at).max(0) / 1000
            )
        };
        if self.sqlite {
            let running: Vec<InstanceRecord> = self
                .fresh_instances(now)
                .await?
                .into_iter()
                .filter(|i| process_may_run(i, host, pid))
                .collect();
            return match running.first() {
                Some(first) => Err(CommandLeaseError::Busy(format!(
                    "{} runs on this database and leads every mailbox",
                    describe(first)
                ))),
                None => Ok(CommandLease { conn: None, key }),
            };
        }
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(query_err(DOING))?
            .detach();
        let locked: bool = sqlx::query("SELECT pg_try_advisory_lock($1) AS locked")
            .bind(key)
            .fetch_one(&mut conn)
            .await
            .and_then(|row| row.try_get("locked"))
            .map_err(query_err(DOING))?;
        if locked {
            return Ok(CommandLease {
                conn: Some(conn),
                key,
            });
        }
        let _ = conn.close().await;
        let leader = self
            .mailbox_leaders()
            .await?
            .into_iter()
            .find(|l| l.integration == integration);
        let instances = self.management_instances().await?;
        let holder = leader.and_then(|l| instances.iter().find(|i| i.instance_id == l.instance_id));
        Err(CommandLeaseError::Busy(match holder {
            Some(i) => format!(
                "the mailbox of integration {integration} is led by {}",
                describe(i)
            ),
            None => format!(
                "another session holds the mailbox lease of integration {integration} \
                 (another recover, or an instance that has not recorded itself yet)"
            ),
        }))
    }

    /// Registered management instances whose heartbeat is fresh at `now` (not older than
    /// [`INSTANCE_STALE_AFTER_MS`]).
    async fn fresh_instances(&self, now: i64) -> Result<Vec<InstanceRecord>, StorageError> {
        Ok(self
            .management_instances()
            .await?
            .into_iter()
            .filter(|i| i.heartbeat_at >= now - INSTANCE_STALE_AFTER_MS)
            .collect())
    }

    /// Every registered management instance.
    pub async fn management_instances(&self) -> Result<Vec<InstanceRecord>, StorageError> {
        const DOING: &str = "reading the management instances";
        let rows = sqlx::query(
            "SELECT instance_id, host, pid, started_at, heartbeat_at FROM management_instance \
             ORDER BY started_at, instance_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err(DOING))?;
        rows.iter()
            .map(|r| {
                Ok(InstanceRecord {
                    instance_id: r.try_get("instance_id")?,
                    host: r.try_get("host")?,
                    pid: r.try_get("pid")?,
                    started_at: r.try_get("started_at")?,
                    heartbeat_at: r.try_get("heartbeat_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_err(DOING))
    }

    /// Who leads each integration's mailbox (the last instance that took its lease).
    pub async fn mailbox_leaders(&self) -> Result<Vec<LeaderRecord>, StorageError> {
        const DOING: &str = "reading the mailbox leaders";
        let rows = sqlx::query(
            "SELECT integration, instance_id, since, heartbeat_at FROM integration_leader \
             ORDER BY integration",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err(DOING))?;
        rows.iter()
            .map(|r| {
                Ok(LeaderRecord {
                    integration: r.try_get("integration")?,
                    instance_id: r.try_get("instance_id")?,
                    since: r.try_get("since")?,
                    heartbeat_at: r.try_get("heartbeat_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_err(DOING))
    }

    /// PostgreSQL: whether some session holds the integration's lease right now (the
    /// lock itself, not the `integration_leader` row). Always `false` on SQLite.
    pub async fn mailbox_lease_held(&self, integration: &str) -> Result<bool, StorageError> {
        if self.sqlite {
            return Ok(false);
        }
        Ok(self
            .advisory_locks_held()
            .await?
            .contains(&integration_lease_key(integration)))
    }

    /// PostgreSQL: the keys of the session advisory locks granted in this database.
    async fn advisory_locks_held(&self) -> Result<BTreeSet<i64>, StorageError> {
        const DOING: &str = "reading the advisory locks";
        let rows = sqlx::query(
            "SELECT classid::bigint AS hi, objid::bigint AS lo FROM pg_locks \
             WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err(DOING))?;
        rows.iter()
            .map(|r| {
                let hi: i64 = r.try_get("hi")?;
                let lo: i64 = r.try_get("lo")?;
                Ok((((hi as u64) << 32) | (lo as u64 & 0xffff_ffff)) as i64)
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_err(DOING))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use sqlx::{AnyConnection, Connection, Executor};

    use super::*;

    const T0: i64 = 1_700_000_000_000;

    fn identity(id: &str, pid: u32, started_at: i64) -> InstanceIdentity {
        InstanceIdentity {
            instance_id: id.to_owned(),
            host: "host-a".to_owned(),
            pid,
            started_at,
        }
    }

    #[test]
    fn lease_keys_are_stable_and_distinct() {
        // FNV-1a of "vmr-scheduler/mailbox/default": a changed derivation would let two
        // versions lead one mailbox at once during a rolling upgrade.
        assert_eq!(
            integration_lease_key("default"),
            lease_key("mailbox", "default")
        );
        assert_eq!(lease_key("", ""), {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in b"vmr-scheduler//" {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            h as i64
        });
        let keys: BTreeSet<i64> = (0..1000)
            .map(|i| integration_lease_key(&format!("integration-{i}")))
            .collect();
        assert_eq!(keys.len(), 1000);
        assert_ne!(integration_lease_key("a"), instance_lease_key("a"));
    }

    #[tokio::test]
    async fn on_sqlite_the_first_live_process_leads_everything_and_a_later_one_stands_by() {
        sqlx::any::install_default_drivers();
        let path = std::env::temp_dir().join(format!("vmr-leases-{}.db", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}", path.display());
        let storage = Storage::open(&url, 2).await.expect("open sqlite");
        // A pid that surely runs on this host (pid 1) and one that surely does not (a child
        // that exited).
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let dead_pid = child.id();
        child.wait().expect("wait true");

        let first = Leases::register(&storage, identity("first", 1, T0), T0)
            .await
            .expect("register first");
        let me = std::process::id();
        let second = Leases::register(&storage, identity("second", me, T0 + 1000), T0 + 1000)
            .await
            .expect("register second");
        let now = T0 + 2000;
        assert_eq!(
            first.fair_share(6, now).await.expect("share"),
            Share {
                lead: 6,
                live: 2,
                blocked_by: None
            }
        );
        let blocked = second.fair_share(6, now).await.expect("share");
        assert_eq!(blocked.lead, 0);
        assert_eq!(
            blocked.blocked_by.map(|i| i.instance_id),
            Some("first".to_owned())
        );
        // Granted in-process, whoever asks.
        assert!(first.try_acquire("a", now).await.expect("acquire"));
        assert!(first.try_acquire("a", now).await.expect("acquire again"));
        assert_eq!(first.heartbeat(now).await.expect("beat"), Heartbeat::Kept);
        let leaders = storage.mailbox_leaders().await.expect("leaders");
        assert_eq!(leaders.len(), 1);
        assert_eq!(leaders[0].instance_id, "first");
        assert!(!storage.mailbox_lease_held("a").await.expect("held"));

        // The first instance's heartbeat ages: the second leads.
        let later = T0 + 2000 + INSTANCE_STALE_AFTER_MS + 1;
        second.heartbeat(later).await.expect("beat");
        assert_eq!(second.fair_share(6, later).await.expect("share").lead, 6);

        // A process of this host whose pid is gone is dead at once, heartbeat or not.
        let crashed = Leases::register(&storage, identity("crashed", dead_pid, T0 - 5000), later)
            .await
            .expect("register crashed");
        let share = second.fair_share(6, later).await.expect("share");
        assert_eq!((share.lead, share.blocked_by), (6, None));
        // So is an earlier life of one's own pid (pid 1 in a restarted container).
        let reborn = Leases::register(&storage, identity("reborn", dead_pid, T0 + 9000), later)
            .await
            .expect("register reborn");
        assert_eq!(
            reborn
                .fair_share(6, later)
                .await
                .expect("share")
                .blocked_by
                .map(|i| i.instance_id),
            Some("second".to_owned())
        );

        first.release("a").await.expect("release");
        assert!(storage.mailbox_leaders().await.expect("leaders").is_empty());
        crashed.close().await.expect("close");
        assert_eq!(
            storage
                .management_instances()
                .await
                .expect("instances")
                .len(),
            3
        );
        let _ = std::fs::remove_file(&path);
    }

    /// A fresh database on the server `VMR_TEST_POSTGRES_URL` names; returns its URL.
    async fn fresh_postgres() -> (String, String, String) {
        sqlx::any::install_default_drivers();
        let server = std::env::var("VMR_TEST_POSTGRES_URL").unwrap_or_default();
        assert!(
            !server.trim().is_empty(),
            "VMR_TEST_POSTGRES_URL is not set: this test needs a PostgreSQL server; run it \
             through `cargo xtask test`, which starts one"
        );
        let name = format!("vmr_lease_{}", uuid::Uuid::new_v4().simple());
        let mut admin = AnyConnection::connect(&server)
            .await
            .expect("connect to PostgreSQL");
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("CREATE DATABASE");
        admin.close().await.ok();
        let mut parsed = url::Url::parse(&server).expect("VMR_TEST_POSTGRES_URL is a URL");
        parsed.set_path(&format!("/{name}"));
        (parsed.to_string(), server, name)
    }

    async fn drop_database(server: &str, name: &str) {
        if let Ok(mut admin) = AnyConnection::connect(server).await {
            let _ = admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await;
        }
    }

    /// Polls `attempt` every 50 ms for up to 10 s; returns how long it took.
    async fn within_10s<F, Fut>(what: &str, mut attempt: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        while !attempt().await {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{what} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        started.elapsed()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: run by cargo xtask test"]
    async fn on_postgresql_a_held_lease_is_exclusive_until_its_session_ends() {
        let (url, server, name) = fresh_postgres().await;
        let storage_a = Storage::open(&url, 2).await.expect("open a");
        let storage_b = Storage::open(&url, 2).await.expect("open b");
        let a = Leases::register(&storage_a, identity("a", 11, T0), T0)
            .await
            .expect("register a");
        let b = Leases::register(&storage_b, identity("b", 12, T0), T0)
            .await
            .expect("register b");

        // Both live: three integrations each of six.
        let live = b.live_instances(T0).await.expect("live");
        assert_eq!(
            live.iter()
                .map(|i| i.instance_id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(a.fair_share(6, T0).await.expect("share").lead, 3);
        assert_eq!(a.fair_share(7, T0).await.expect("share").lead, 4);

        assert!(a.try_acquire("x", T0).await.expect("a takes x"));
        assert!(a.try_acquire("x", T0).await.expect("a holds x"));
        assert!(
            !b.try_acquire("x", T0).await.expect("b tries x"),
            "x is a's"
        );
        assert!(b.try_acquire("y", T0).await.expect("b takes y"));
        assert!(
            !a.try_acquire("y", T0).await.expect("a tries y"),
            "y is b's"
        );
        assert!(storage_b.mailbox_lease_held("x").await.expect("held"));
        assert_eq!(a.heartbeat(T0 + 1).await.expect("beat"), Heartbeat::Kept);
        let leaders = storage_b.mailbox_leaders().await.expect("leaders");
        assert_eq!(
            leaders
                .iter()
                .map(|l| (l.integration.as_str(), l.instance_id.as_str()))
                .collect::<Vec<_>>(),
            [("x", "a"), ("y", "b")]
        );

        // A release hands over at once, and the row goes.
        a.release("x").await.expect("release x");
        assert!(b.try_acquire("x", T0 + 2).await.expect("b takes x"));
        b.release("x").await.expect("b gives x back");
        assert!(a.try_acquire("x", T0 + 3).await.expect("a takes x again"));

        // The holder's session killed (as a crash or a network cut would): its heartbeat
        // says Lost and the other instance can take the lease.
        let mut admin = AnyConnection::connect(&url).await.expect("admin");
        let key = integration_lease_key("x");
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
             AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1",
        )
        .bind(((key as u64) >> 32) as i64)
        .bind((key as u64 & 0xffff_ffff) as i64)
        .fetch_all(&mut admin)
        .await
        .expect("terminate a's session");
        let took = within_10s("b takes x after a's session ended", || async {
            b.try_acquire("x", T0 + 4).await.expect("b tries x")
        })
        .await;
        eprintln!(
            "lease moved {:.0} ms after the holder's session was terminated",
            took.as_secs_f64() * 1000.0
        );
        assert_eq!(a.heartbeat(T0 + 5).await.expect("beat"), Heartbeat::Lost);
        assert!(a.held().await.is_empty());
        let leaders = storage_b.mailbox_leaders().await.expect("leaders");
        assert_eq!(
            leaders
                .iter()
                .map(|l| (l.integration.as_str(), l.instance_id.as_str()))
                .collect::<Vec<_>>(),
            [("x", "b"), ("y", "b")],
            "a's rows went with its leases"
        );
        // A's new session holds nothing but is live again.
        assert_eq!(a.heartbeat(T0 + 6).await.expect("beat"), Heartbeat::Kept);
        assert_eq!(b.live_instances(T0 + 6).await.expect("live").len(), 2);
        assert!(!a.try_acquire("x", T0 + 6).await.expect("a tries x"));

        // An instance whose process is gone (its Leases dropped: the connection closes):
        // its leases free up and it is no longer live, even with a fresh heartbeat.
        drop(b);
        within_10s("a takes x after b's connection closed", || async {
            a.try_acquire("x", T0 + 7).await.expect("a tries x")
        })
        .await;
        let live = a.live_instances(T0 + 7).await.expect("live");
        assert_eq!(
            live.iter()
                .map(|i| i.instance_id.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(a.fair_share(6, T0 + 7).await.expect("share").lead, 6);
        assert!(a.try_acquire("y", T0 + 7).await.expect("a takes y"));

        a.close().await.expect("close a");
        assert!(!storage_a.mailbox_lease_held("x").await.expect("held"));
        assert!(storage_a
            .mailbox_leaders()
            .await
            .expect("leaders")
            .is_empty());
        drop_database(&server, &name).await;
    }

    fn busy_text(result: Result<CommandLease, CommandLeaseError>) -> String {
        match result {
            Err(CommandLeaseError::Busy(text)) => text,
            Err(e) => panic!("a storage error instead of Busy: {e}"),
            Ok(_) => panic!("the command lease was granted"),
        }
    }

    #[tokio::test]
    async fn on_sqlite_a_command_lease_is_refused_while_a_management_instance_runs() {
        sqlx::any::install_default_drivers();
        let path = std::env::temp_dir().join(format!("vmr-cmdlease-{}.db", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}", path.display());
        let storage = Storage::open(&url, 2).await.expect("open sqlite");
        let me = std::process::id();
        // No instance: granted.
        let lease = storage
            .take_command_lease("x", "host-a", me, T0)
            .await
            .expect("granted on an idle database");
        lease.release().await.expect("release");
        // A running instance (pid 1 surely runs on this host): refused, and named.
        let running = Leases::register(&storage, identity("running", 1, T0), T0)
            .await
            .expect("register");
        let text = busy_text(
            storage
                .take_command_lease("x", "host-a", me, T0 + 1000)
                .await,
        );
        assert!(
            text.contains("management instance running on host-a (pid 1, last heartbeat 1 s ago)"),
            "{text}"
        );
        // Its heartbeat aged (it was killed elsewhere): granted.
        let later = T0 + INSTANCE_STALE_AFTER_MS + 1;
        assert!(storage
            .take_command_lease("x", "host-a", me, later)
            .await
            .is_ok());
        // Stopped gracefully: its row is gone, granted.
        running.close().await.expect("close");
        assert!(storage
            .take_command_lease("x", "host-a", me, T0 + 1000)
            .await
            .is_ok());
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: run by cargo xtask test"]
    async fn on_postgresql_a_command_lease_and_an_instance_exclude_each_other() {
        let (url, server, name) = fresh_postgres().await;
        let storage = Storage::open(&url, 2).await.expect("open");
        let a = Leases::register(&storage, identity("a", 11, T0), T0)
            .await
            .expect("register a");
        assert!(a.try_acquire("x", T0).await.expect("a takes x"));
        // x is a's: the command is refused and told who leads it; y is free.
        let text = busy_text(
            storage
                .take_command_lease("x", "host-b", 99, T0 + 2000)
                .await,
        );
        assert!(
            text.contains("the mailbox of integration x is led by management instance a on host-a (pid 11, last heartbeat 2 s ago)"),
            "{text}"
        );
        let y = storage
            .take_command_lease("y", "host-b", 99, T0)
            .await
            .expect("y is free");
        // While the command holds y, the instance cannot take it; then it can.
        assert!(!a.try_acquire("y", T0).await.expect("a tries y"));
        let text = busy_text(storage.take_command_lease("y", "host-b", 99, T0).await);
        assert!(text.contains("another session holds"), "{text}");
        y.release().await.expect("release y");
        assert!(a.try_acquire("y", T0).await.expect("a takes y"));
        // The instance gives x back: the command gets it.
        a.release("x").await.expect("release x");
        let x = storage
            .take_command_lease("x", "host-b", 99, T0)
            .await
            .expect("x is free now");
        // A command that exits without releasing (its connection drops) frees the lease.
        drop(x);
        within_10s(
            "a takes x after the command's connection closed",
            || async { a.try_acquire("x", T0).await.expect("a tries x") },
        )
        .await;
        a.close().await.expect("close a");
        drop_database(&server, &name).await;
    }
}
