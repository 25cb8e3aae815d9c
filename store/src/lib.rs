//! Storage: one schema, two engines (SQLite by default, PostgreSQL by URL).
//!
//! Everything goes through sqlx's `Any` driver with portable SQL and `$n`
//! placeholders (SQLite accepts them too), so there is exactly one set of
//! queries and one set of migrations (`store/migrations/`), applied at
//! start. SQLite runs in WAL mode with a busy timeout so several connections
//! (and processes) can share one file.
//!
//! Only the management role opens storage; the edge never touches it.
//! [`push_queue`] holds the VMRs to push into Pexip Infinity, [`lifetime`]
//! expires VMRs after their last window and the grace.

//!
//! One module per table family: [`aliases`] (`scheduled_alias`, inserted by
//! a group-commit writer task), [`integration_secrets`] (per-integration tag
//! keys), [`deferral_nonces`] (TOK statements accepted once), [`scheduling`]
//! (meetings, conferences, windows, the processing log and reply outbox,
//! written per processed change in one transaction), [`sync_state`] (EWS
//! folder sync states), [`leases`] (which management instance leads each
//! integration's mailbox: PostgreSQL advisory locks, instance heartbeats),
//! [`admin_queries`] (the admin API's lists, extra aliases, the audit log),
//! [`policy_feed`] (what the policy server's in-memory index loads and follows).

pub mod admin_queries;
pub mod admin_sessions;
pub mod aliases;
pub mod deferral_nonces;
pub mod integration_secrets;
pub mod leases;
pub mod lifetime;
pub mod policy_feed;
pub mod push_queue;
pub mod scheduling;
pub mod sync_state;

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};
use tokio::sync::mpsc;

pub use admin_sessions::AdminSession;
use aliases::{alias_writer, InsertJob, MAX_BATCH};
pub use aliases::{NewAlias, StoredAlias};
pub use leases::{
    CommandLease, CommandLeaseError, Heartbeat, InstanceIdentity, InstanceRecord, LeaderRecord,
    Leases, Share,
};
pub use scheduling::{
    AliasBinding, Commit, CommitOutcome, ConferenceRecord, MeetingRecord, NewConference, NewReply,
    OperationRecord, ReplyRecord, StoredOperation, WindowRecord,
};

/// A storage failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("cannot apply database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error while inserting aliases: {0}")]
    Batch(String),
    #[error("cannot store the alias: its {field} contains a NUL character, which PostgreSQL cannot store in text")]
    NulInText { field: &'static str },
    #[error("database error while {doing}: {source}")]
    Query {
        doing: &'static str,
        source: sqlx::Error,
    },
}

/// The database handle (cheap to clone).
#[derive(Clone, Debug)]
pub struct Storage {
    pool: AnyPool,
    sqlite: bool,
    writer: mpsc::Sender<InsertJob>,
    /// Whether scheduling commits queue pushes to Infinity ([`push_queue`]).
    push_queue: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn query_err(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StorageError {
    move |source| StorageError::Query { doing, source }
}
impl Storage {
    /// Opens (creating a SQLite file if needed) and migrates.
    pub async fn open(url: &str, max_connections: u32) -> Result<Storage, StorageError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let connect_url = if sqlite && !url.contains("mode=") && !url.contains(":memory:") {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}mode=rwc")
        } else {
            url.to_string()
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if sqlite {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 10000;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect(&connect_url)
            .await
            .map_err(|source| StorageError::Open {
                url: redact(url),
                source,
            })?;
        // sqlx takes no migration lock on SQLite: two processes opening one
        // fresh file at once can race; the loser retries and finds it done.
        let mut attempt = 0;
        loop {
            match sqlx::migrate!("./migrations").run(&pool).await {
                Ok(()) => break,
                Err(e) if sqlite && attempt < 3 => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "migration raced; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let (writer, jobs) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(alias_writer(pool.clone(), sqlite, jobs));
        Ok(Storage {
            pool,
            sqlite,
            writer,
            push_queue: Default::default(),
        })
    }

    /// Whether this is the SQLite engine.
    pub fn is_sqlite(&self) -> bool {
        self.sqlite
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1")
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("checking the database"))?;
        Ok(())
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://vmr:secret@127.0.0.1:5432/vmr"),
            "postgres://vmr:***@127.0.0.1:5432/vmr"
        );
        assert_eq!(redact("sqlite://a.db"), "sqlite://a.db");
    }
}
