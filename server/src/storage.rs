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
    #[error("cannot store the alias: its {field} contains a NUL character, which PostgreSQL cannot store in text")]
    NulInText { field: &'static str },
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

impl NewAlias<'_> {
    /// The name of the first text column whose value holds a NUL character.
    fn field_with_nul(&self) -> Option<&'static str> {
        [
            ("id", Some(self.id)),
            ("integration", Some(self.integration)),
            ("numeric_alias", Some(self.numeric_alias)),
            ("alias", Some(self.alias)),
            ("auth_method", Some(self.auth_method)),
            ("requester_id", Some(self.requester_id)),
            ("requester_email", self.requester_email),
            ("organizer_email", self.organizer_email),
            ("organizer_name", self.organizer_name),
            ("subject", self.subject),
        ]
        .into_iter()
        .find(|(_, value)| value.is_some_and(|v| v.contains('\0')))
        .map(|(field, _)| field)
    }
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

/// Most inserts one group commit carries (each is its own execution of one
/// prepared statement; they share the transaction and its commit).
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
        let rows: Vec<&OwnedAlias> = batch.iter().map(|j| &j.row).collect();
        let answers = match insert_batch(&pool, &rows).await {
            Ok(inserted) => inserted.into_iter().map(Ok).collect(),
            Err(e) => {
                // One bad row (or a failed commit) undoes the whole group:
                // PostgreSQL refuses every statement after an error in a
                // transaction. Retry each row in its own transaction so only
                // the rows that fail on their own fail.
                tracing::warn!(error = %e, rows = rows.len(), "group commit failed; retrying its rows one by one");
                let mut answers = Vec::with_capacity(rows.len());
                for row in &rows {
                    answers.push(
                        insert_batch(&pool, std::slice::from_ref(row))
                            .await
                            .map(|inserted| inserted.first().copied().unwrap_or(false))
                            .map_err(|e| StorageError::Batch(e.to_string())),
                    );
                }
                answers
            }
        };
        for (job, answer) in batch.into_iter().zip(answers) {
            let _ = job.reply.send(answer);
        }
    }
}

/// Inserts one alias row unless its `(integration, numeric_alias)` was issued
/// before. The text never changes, so each connection prepares it once and
/// then only binds and executes it.
const INSERT_ALIAS: &str = "INSERT INTO scheduled_alias (id, integration, numeric_alias, alias, \
     state, created_at, auth_method, requester_id, requester_email, organizer_email, \
     organizer_name, subject) VALUES ($1, $2, $3, $4, 'allocated', $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (integration, numeric_alias) DO NOTHING";

/// Inserts `rows` in one transaction, one execution of the prepared
/// [`INSERT_ALIAS`] per row, and commits once. Per row, whether it went in:
/// a row whose numeric alias is already taken (before, or by an earlier row
/// of the same group) is skipped by `ON CONFLICT DO NOTHING` and reported as
/// not new, so its caller draws again. Any error rolls the whole group back.
async fn insert_batch(pool: &AnyPool, rows: &[&OwnedAlias]) -> Result<Vec<bool>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut inserted = Vec::with_capacity(rows.len());
    for a in rows {
        let done = sqlx::query(INSERT_ALIAS)
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
            .bind(&a.subject)
            .execute(&mut *tx)
            .await?;
        inserted.push(done.rows_affected() == 1);
    }
    tx.commit().await?;
    Ok(inserted)
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
    /// A row with a NUL character in any text is refused here, on both
    /// engines, before it can join a group; a row that fails in the database
    /// fails alone (the group is retried row by row).
    pub async fn insert_alias_if_new(&self, a: &NewAlias<'_>) -> Result<bool, StorageError> {
        if let Some(field) = a.field_with_nul() {
            return Err(StorageError::NulInText { field });
        }
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

    /// Accepts a deferral statement's `nonce` for the meeting `meeting_uid`:
    /// `true` when the nonce is new (recorded now) or was already accepted for
    /// this same meeting (a re-run after a crash), `false` when another meeting
    /// used it first (a replayed or copied TOK).
    pub async fn accept_deferral_nonce(
        &self,
        nonce: &str,
        integration: &str,
        meeting_uid: &str,
        requester_id: &str,
        now: i64,
    ) -> Result<bool, StorageError> {
        sqlx::query(
            "INSERT INTO deferral_nonce (nonce, integration, meeting_uid, requester_id, accepted_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (nonce) DO NOTHING",
        )
        .bind(nonce)
        .bind(integration)
        .bind(meeting_uid)
        .bind(requester_id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_err("recording a deferral nonce"))?;
        let row = sqlx::query("SELECT meeting_uid FROM deferral_nonce WHERE nonce = $1")
            .bind(nonce)
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("reading a deferral nonce"))?;
        let owner: String = row
            .try_get("meeting_uid")
            .map_err(query_err("reading a deferral nonce"))?;
        Ok(owner == meeting_uid)
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
