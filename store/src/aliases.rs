//! The `scheduled_alias` table: every alias ever handed out, one row each,
//! never reused (states allocated → bound → deleted).
//!
//! Inserts go through one writer task per [`Storage`] handle that commits
//! whatever has queued up in one transaction (group commit).

use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use crate::{query_err, Storage, StorageError};

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
    /// The meeting that uses the alias, once bound.
    pub meeting_uid: Option<String>,
}

/// Most inserts one group commit carries (each is its own execution of one
/// prepared statement; they share the transaction and its commit).
pub(crate) const MAX_BATCH: usize = 256;

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
pub(crate) struct InsertJob {
    row: OwnedAlias,
    reply: oneshot::Sender<Result<bool, StorageError>>,
}

/// Commits queued inserts in batches until every [`Storage`] clone is gone.
pub(crate) async fn alias_writer(pool: AnyPool, sqlite: bool, mut jobs: mpsc::Receiver<InsertJob>) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let rows: Vec<&OwnedAlias> = batch.iter().map(|j| &j.row).collect();
        let answers = match insert_batch(&pool, sqlite, &rows).await {
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
                        insert_batch(&pool, sqlite, std::slice::from_ref(row))
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

/// Rows per INSERT statement a group is cut into, largest first. A fixed set
/// of statement texts keeps them in every connection's prepared-statement
/// cache, and short statements keep SQLite's per-bind parameter lookup cheap
/// (with one statement for the whole group it was quadratic in the group size).
const CHUNKS: [usize; 6] = [32, 16, 8, 4, 2, 1];

/// Values per row.
const COLUMNS: usize = 11;

/// The multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING id` for `rows`
/// rows (one of [`CHUNKS`]). SQLite gets anonymous `?` parameters (bound by
/// position, no name lookup); PostgreSQL needs `$n`.
fn insert_sql(sqlite: bool, rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<[Vec<String>; 2]> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        let build = |sqlite: bool| {
            CHUNKS
                .iter()
                .map(|&rows| {
                    let mut sql = String::from(
                        "INSERT INTO scheduled_alias (id, integration, numeric_alias, alias, \
                         state, created_at, auth_method, requester_id, requester_email, \
                         organizer_email, organizer_name, subject) VALUES ",
                    );
                    for row in 0..rows {
                        if row > 0 {
                            sql.push_str(", ");
                        }
                        let p: Vec<String> = (1..=COLUMNS)
                            .map(|c| {
                                if sqlite {
                                    "?".to_owned()
                                } else {
                                    format!("${}", row * COLUMNS + c)
                                }
                            })
                            .collect();
                        sql.push_str(&format!(
                            "({}, {}, {}, {}, 'allocated', {})",
                            p[0],
                            p[1],
                            p[2],
                            p[3],
                            p[4..].join(", ")
                        ));
                    }
                    sql.push_str(
                        " ON CONFLICT (integration, numeric_alias) DO NOTHING RETURNING id",
                    );
                    sql
                })
                .collect()
        };
        [build(false), build(true)]
    });
    let i = CHUNKS
        .iter()
        .position(|&c| c == rows)
        .unwrap_or(CHUNKS.len() - 1);
    &all[usize::from(sqlite)][i]
}

/// Inserts `batch` in one transaction, cut into statements of [`CHUNKS`]
/// rows, and commits once. Per row, whether it went in: a row whose numeric
/// alias is already taken (before, or by an earlier row of the same group) is
/// skipped by `ON CONFLICT DO NOTHING` (or here, within the group) and
/// reported as not new, so its caller draws again. Any error rolls the whole
/// group back.
async fn insert_batch(
    pool: &AnyPool,
    sqlite: bool,
    batch: &[&OwnedAlias],
) -> Result<Vec<bool>, sqlx::Error> {
    let mut seen = std::collections::HashSet::new();
    let first: Vec<bool> = batch
        .iter()
        .map(|r| seen.insert((r.integration.as_str(), r.numeric_alias.as_str())))
        .collect();
    let rows: Vec<&OwnedAlias> = batch
        .iter()
        .zip(&first)
        .filter(|(_, first)| **first)
        .map(|(r, _)| *r)
        .collect();
    let mut tx = pool.begin().await?;
    let mut inserted = std::collections::HashSet::new();
    let mut rest = &rows[..];
    while !rest.is_empty() {
        let n = CHUNKS
            .iter()
            .copied()
            .find(|&c| c <= rest.len())
            .unwrap_or(1);
        let (chunk, tail) = rest.split_at(n);
        let mut query = sqlx::query(insert_sql(sqlite, n));
        for a in chunk {
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
        for row in query.fetch_all(&mut *tx).await? {
            inserted.insert(row.try_get::<String, _>("id")?);
        }
        rest = tail;
    }
    tx.commit().await?;
    Ok(batch
        .iter()
        .zip(first)
        .map(|(r, first)| first && inserted.contains(&r.id))
        .collect())
}

impl Storage {
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
             organizer_email, meeting_uid FROM scheduled_alias WHERE id = $1",
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
                meeting_uid: r.try_get("meeting_uid")?,
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
}
