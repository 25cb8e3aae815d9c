//! Storage: one schema, two engines (SQLite by default, PostgreSQL by URL).
//!
//! Everything goes through sqlx's `Any` driver with portable SQL and `$n`
//! placeholders (SQLite accepts them too), so there is exactly one set of
//! queries and one set of migrations (`server/migrations/`), applied at
//! start. SQLite runs in WAL mode with a busy timeout so several connections
//! (and processes) can share one file.
//!
//! Only the management role opens storage; the edge never touches it.

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor, Row};
use tokio::sync::{mpsc, oneshot};

/// A storage failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("cannot apply database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error while inserting aliases: {0}")]
    Batch(String),
    #[error("database error while {doing}: {source}")]
    Query {
        doing: &'static str,
        source: sqlx::Error,
    },
}

/// An alias row about to be inserted.
#[derive(Debug, Clone)]
pub struct NewAlias<'a> {
    pub id: &'a str,
    pub integration: &'a str,
    pub numeric_alias: &'a str,
    pub alias: &'a str,
    pub created_at: i64,
    pub auth_method: &'a str,
    pub requester_id: &'a str,
    pub requester_email: Option<&'a str>,
    pub organizer_email: Option<&'a str>,
    pub organizer_name: Option<&'a str>,
    pub subject: Option<&'a str>,
}

/// A stored alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAlias {
    pub id: String,
    pub integration: String,
    pub numeric_alias: String,
    pub alias: String,
    pub state: String,
    pub requester_id: String,
    pub requester_email: Option<String>,
    pub organizer_email: Option<String>,
}

/// The database handle (cheap to clone).
#[derive(Clone, Debug)]
pub struct Storage {
    pool: AnyPool,
    sqlite: bool,
    writer: mpsc::Sender<InsertJob>,
}

/// Most inserts one group commit carries (11 parameters each: well under
/// SQLite's and PostgreSQL's limits).
const MAX_BATCH: usize = 256;

/// An alias row queued for the writer task.
#[derive(Debug)]
struct OwnedAlias {
    id: String,
    integration: String,
    numeric_alias: String,
    alias: String,
    created_at: i64,
    auth_method: String,
    requester_id: String,
    requester_email: Option<String>,
    organizer_email: Option<String>,
    organizer_name: Option<String>,
    subject: Option<String>,
}

impl From<&NewAlias<'_>> for OwnedAlias {
    fn from(a: &NewAlias<'_>) -> Self {
        let own = |s: Option<&str>| s.map(str::to_string);
        OwnedAlias {
            id: a.id.to_string(),
            integration: a.integration.to_string(),
            numeric_alias: a.numeric_alias.to_string(),
            alias: a.alias.to_string(),
            created_at: a.created_at,
            auth_method: a.auth_method.to_string(),
            requester_id: a.requester_id.to_string(),
            requester_email: own(a.requester_email),
            organizer_email: own(a.organizer_email),
            organizer_name: own(a.organizer_name),
            subject: own(a.subject),
        }
    }
}

#[derive(Debug)]
struct InsertJob {
    row: OwnedAlias,
    reply: oneshot::Sender<Result<bool, StorageError>>,
}

/// Commits queued inserts in batches until every [`Storage`] clone is gone.
async fn alias_writer(pool: AnyPool, mut jobs: mpsc::Receiver<InsertJob>) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match insert_batch(&pool, &batch).await {
            Ok(inserted) => {
                for (job, ok) in batch.into_iter().zip(inserted) {
                    let _ = job.reply.send(Ok(ok));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for job in batch {
                    let _ = job.reply.send(Err(StorageError::Batch(message.clone())));
                }
            }
        }
    }
}

/// Inserts a batch with one multi-row statement; per row, whether it was
/// new. `RETURNING id` names the rows that went in (conflicting ones are
/// skipped by `ON CONFLICT DO NOTHING`); SQLite ≥ 3.35 and PostgreSQL agree.
async fn insert_batch(pool: &AnyPool, batch: &[InsertJob]) -> Result<Vec<bool>, sqlx::Error> {
    // Two draws of the same alias in one batch: only the first may go in.
    let mut seen = std::collections::HashSet::new();
    let first: Vec<bool> = batch
        .iter()
        .map(|j| seen.insert((j.row.integration.as_str(), j.row.numeric_alias.as_str())))
        .collect();
    let rows: Vec<&OwnedAlias> = batch
        .iter()
        .zip(&first)
        .filter(|(_, first)| **first)
        .map(|(j, _)| &j.row)
        .collect();
    let mut sql = String::from(
        "INSERT INTO scheduled_alias (id, integration, numeric_alias, alias, state, created_at, \
         auth_method, requester_id, requester_email, organizer_email, organizer_name, subject) VALUES ",
    );
    for i in 0..rows.len() {
        let n = i * 11;
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}, 'allocated', ${}, ${}, ${}, ${}, ${}, ${}, ${})",
            n + 1,
            n + 2,
            n + 3,
            n + 4,
            n + 5,
            n + 6,
            n + 7,
            n + 8,
            n + 9,
            n + 10,
            n + 11
        ));
    }
    sql.push_str(" ON CONFLICT (integration, numeric_alias) DO NOTHING RETURNING id");
    let mut query = sqlx::query(&sql);
    for a in &rows {
        query = query
            .bind(&a.id)
            .bind(&a.integration)
            .bind(&a.numeric_alias)
            .bind(&a.alias)
            .bind(a.created_at)
            .bind(&a.auth_method)
            .bind(&a.requester_id)
            .bind(&a.requester_email)
            .bind(&a.organizer_email)
            .bind(&a.organizer_name)
            .bind(&a.subject);
    }
    let inserted: std::collections::HashSet<String> = query
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>("id"))
        .collect::<Result<_, _>>()?;
    Ok(batch
        .iter()
        .zip(first)
        .map(|(j, first)| first && inserted.contains(&j.row.id))
        .collect())
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
        tokio::spawn(alias_writer(pool.clone(), jobs));
        Ok(Storage {
            pool,
            sqlite,
            writer,
        })
    }

    /// Whether this is the SQLite engine.
    pub fn is_sqlite(&self) -> bool {
        self.sqlite
    }

    /// Inserts `alias` unless its numeric alias was ever issued before in its
    /// integration. Returns whether the row was inserted.
    ///
    /// Inserts go through one writer task per handle that commits whatever
    /// has queued up in one transaction (group commit): under load one
    /// commit carries many allocations instead of each waiting for its own.
    pub async fn insert_alias_if_new(&self, a: &NewAlias<'_>) -> Result<bool, StorageError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = InsertJob {
            row: OwnedAlias::from(a),
            reply,
        };
        let closed = || StorageError::Query {
            doing: "inserting an alias",
            source: sqlx::Error::PoolClosed,
        };
        self.writer.send(job).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Removes an alias row that was inserted but never handed out (its
    /// instructions failed to render). Only rows still `allocated` go.
    pub async fn forget_unissued_alias(&self, id: &str) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM scheduled_alias WHERE id = $1 AND state = 'allocated'")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(query_err("removing an unissued alias"))?;
        Ok(())
    }

    /// How many aliases an integration ever issued (deleted ones included).
    pub async fn count_aliases(&self, integration: &str) -> Result<u64, StorageError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM scheduled_alias WHERE integration = $1")
            .bind(integration)
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("counting aliases"))?;
        let n: i64 = row.try_get("n").map_err(query_err("counting aliases"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The alias with this uuid (32 hex digits).
    pub async fn alias_by_id(&self, id: &str) -> Result<Option<StoredAlias>, StorageError> {
        let row = sqlx::query(
            "SELECT id, integration, numeric_alias, alias, state, requester_id, requester_email, \
             organizer_email FROM scheduled_alias WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("reading an alias"))?;
        row.map(|r| -> Result<StoredAlias, sqlx::Error> {
            Ok(StoredAlias {
                id: r.try_get("id")?,
                integration: r.try_get("integration")?,
                numeric_alias: r.try_get("numeric_alias")?,
                alias: r.try_get("alias")?,
                state: r.try_get("state")?,
                requester_id: r.try_get("requester_id")?,
                requester_email: r.try_get("requester_email")?,
                organizer_email: r.try_get("organizer_email")?,
            })
        })
        .transpose()
        .map_err(query_err("reading an alias"))
    }

    /// All numeric aliases of an integration (tests and audits).
    pub async fn numeric_aliases(&self, integration: &str) -> Result<Vec<String>, StorageError> {
        let rows = sqlx::query("SELECT numeric_alias FROM scheduled_alias WHERE integration = $1")
            .bind(integration)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing aliases"))?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("numeric_alias"))
            .collect::<Result<_, _>>()
            .map_err(query_err("listing aliases"))
    }

    /// The integration's tag key, creating `candidate` as the key if none is
    /// stored yet. Concurrent first starts agree on one key.
    pub async fn tag_key(
        &self,
        integration: &str,
        candidate: &str,
        now: i64,
    ) -> Result<String, StorageError> {
        sqlx::query(
            "INSERT INTO integration_secret (integration, tag_key, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (integration) DO NOTHING",
        )
        .bind(integration)
        .bind(candidate)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_err("storing the tag key"))?;
        let row = sqlx::query("SELECT tag_key FROM integration_secret WHERE integration = $1")
            .bind(integration)
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("reading the tag key"))?;
        row.try_get("tag_key")
            .map_err(query_err("reading the tag key"))
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
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..s + 3], user, &url[at..])
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
