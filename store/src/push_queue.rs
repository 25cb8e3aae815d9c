//! The push queue (`push_queue`): conferences whose VMR in Pexip Infinity must be brought in
//! line with ours, for sites that keep their VMRs in Infinity (`[infinity] enabled`).
//!
//! A scheduling commit ([`Storage::commit_scheduling`]) that creates, changes or deletes a
//! conference queues it in the same transaction (when the queue is switched on with
//! [`Storage::enable_push_queue`]), and so does the lifetime sweeper when it expires one
//! ([`Storage::expire_conference`]). A row names only the conference: the pusher
//! (`server/src/infinity_push.rs`) reads the conference's state when it runs, so a row queued
//! twice is pushed once. Rows survive restarts; one is removed only when a push of its latest
//! `version` succeeded. `next_attempt_at` carries the back-off and a short claim, so several
//! management instances never push one row at the same time.

use std::sync::atomic::Ordering;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::scheduling::{conference_from_row, ConferenceRecord, CONFERENCE_COLUMNS};
use crate::{query_err, Storage, StorageError};

/// Most characters of a push's `last_error` stored.
pub const PUSH_ERROR_MAX_CHARS: usize = 500;

/// One queued push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushItem {
    pub conference_id: String,
    pub integration: String,
    /// Bumped by every enqueue of the conference.
    pub version: i64,
    /// Failed pushes since the row was last queued.
    pub attempts: i64,
    /// When the row is due (Unix ms).
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
}

const PUSH_COLUMNS: &str =
    "conference_id, integration, version, attempts, next_attempt_at, last_error, created_at";

fn push_from_row(r: &AnyRow) -> Result<PushItem, sqlx::Error> {
    Ok(PushItem {
        conference_id: r.try_get("conference_id")?,
        integration: r.try_get("integration")?,
        version: r.try_get("version")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
    })
}

/// Queues a push of each of `conference_ids` inside the caller's transaction: a new row is
/// due at once; an existing one gets a new version, is due at once and starts its back-off
/// again.
pub(crate) async fn enqueue_in(
    conn: &mut AnyConnection,
    integration: &str,
    conference_ids: &[String],
    now: i64,
) -> Result<(), StorageError> {
    for id in conference_ids {
        sqlx::query(
            "INSERT INTO push_queue (conference_id, integration, version, attempts, \
             next_attempt_at, last_error, created_at, updated_at) \
             VALUES ($1, $2, 1, 0, $3, NULL, $3, $3) \
             ON CONFLICT (conference_id) DO UPDATE SET version = push_queue.version + 1, \
             attempts = 0, next_attempt_at = excluded.next_attempt_at, \
             updated_at = excluded.updated_at",
        )
        .bind(id)
        .bind(integration)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(query_err("queueing a push to Infinity"))?;
    }
    Ok(())
}

fn clip(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
        .collect()
}

impl Storage {
    /// Switches the push queue on for this handle and its clones: from now on every
    /// scheduling commit that touches a conference queues it (role management with
    /// `[infinity] enabled`).
    pub fn enable_push_queue(&self) {
        self.push_queue.store(true, Ordering::SeqCst);
    }

    /// Whether scheduling commits queue pushes.
    pub fn push_queue_enabled(&self) -> bool {
        self.push_queue.load(Ordering::SeqCst)
    }

    /// Queues a push of each of `conference_ids` (the reconcile pass and tests; scheduling
    /// commits queue inside their own transaction).
    pub async fn enqueue_push(
        &self,
        integration: &str,
        conference_ids: &[String],
        now: i64,
    ) -> Result<(), StorageError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_err("queueing a push to Infinity"))?;
        enqueue_in(&mut tx, integration, conference_ids, now).await?;
        tx.commit()
            .await
            .map_err(query_err("queueing a push to Infinity"))
    }

    /// Rows due at `now`, oldest due first, at most `limit`.
    pub async fn due_pushes(&self, now: i64, limit: u32) -> Result<Vec<PushItem>, StorageError> {
        let sql = format!(
            "SELECT {PUSH_COLUMNS} FROM push_queue WHERE next_attempt_at <= $1 \
             ORDER BY next_attempt_at, conference_id LIMIT $2"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("reading due pushes"))?
            .iter()
            .map(push_from_row)
            .collect::<Result<_, _>>()
            .map_err(query_err("reading due pushes"))
    }

    /// Every queued row, by conference id (inspection and tests).
    pub async fn push_queue(&self) -> Result<Vec<PushItem>, StorageError> {
        let sql = format!("SELECT {PUSH_COLUMNS} FROM push_queue ORDER BY conference_id");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("reading the push queue"))?
            .iter()
            .map(push_from_row)
            .collect::<Result<_, _>>()
            .map_err(query_err("reading the push queue"))
    }

    /// How many pushes are queued, per integration (integrations with none are absent).
    pub async fn push_queue_depth(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, StorageError> {
        let rows =
            sqlx::query("SELECT integration, COUNT(*) AS n FROM push_queue GROUP BY integration")
                .fetch_all(&self.pool)
                .await
                .map_err(query_err("counting queued pushes"))?;
        let mut depth = std::collections::BTreeMap::new();
        for row in rows {
            let integration: String = row
                .try_get("integration")
                .map_err(query_err("counting queued pushes"))?;
            let n: i64 = row
                .try_get("n")
                .map_err(query_err("counting queued pushes"))?;
            depth.insert(integration, u64::try_from(n).unwrap_or(0));
        }
        Ok(depth)
    }

    /// Claims `item` until `until` (its `next_attempt_at` moved there), unless another
    /// instance claimed it or a commit re-queued it since it was read; whether it was claimed.
    pub async fn claim_push(&self, item: &PushItem, until: i64) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "UPDATE push_queue SET next_attempt_at = $4 WHERE conference_id = $1 \
             AND version = $2 AND next_attempt_at = $3",
        )
        .bind(&item.conference_id)
        .bind(item.version)
        .bind(item.next_attempt_at)
        .bind(until)
        .execute(&self.pool)
        .await
        .map_err(query_err("claiming a push"))?;
        Ok(done.rows_affected() == 1)
    }

    /// The push of `item` succeeded: its row goes, unless a commit queued a newer version
    /// meanwhile (which stays, due as that commit set it).
    pub async fn finish_push(&self, item: &PushItem) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM push_queue WHERE conference_id = $1 AND version = $2")
            .bind(&item.conference_id)
            .bind(item.version)
            .execute(&self.pool)
            .await
            .map_err(query_err("removing a finished push"))?;
        Ok(())
    }

    /// The push of `item` failed: one more attempt counted, due again at `at`, `error` kept.
    /// A row re-queued meanwhile (newer version) is left as the commit set it.
    pub async fn retry_push(
        &self,
        item: &PushItem,
        at: i64,
        error: &str,
        now: i64,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "UPDATE push_queue SET attempts = attempts + 1, next_attempt_at = $3, \
             last_error = $4, updated_at = $5 WHERE conference_id = $1 AND version = $2",
        )
        .bind(&item.conference_id)
        .bind(item.version)
        .bind(at)
        .bind(clip(error, PUSH_ERROR_MAX_CHARS))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_err("recording a failed push"))?;
        Ok(())
    }

    /// Gives a claimed `item` back, due at `at`, without counting an attempt (the push was
    /// not tried: Infinity was found unreachable on another row).
    pub async fn release_push(&self, item: &PushItem, at: i64) -> Result<(), StorageError> {
        sqlx::query(
            "UPDATE push_queue SET next_attempt_at = $3 WHERE conference_id = $1 AND version = $2",
        )
        .bind(&item.conference_id)
        .bind(item.version)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(query_err("releasing a push"))?;
        Ok(())
    }

    /// The conferences of `integration`, live ones (no deletion time) or deleted ones, by name.
    pub async fn conferences_of(
        &self,
        integration: &str,
        live: bool,
    ) -> Result<Vec<ConferenceRecord>, StorageError> {
        let which = if live { "IS NULL" } else { "IS NOT NULL" };
        let sql = format!(
            "SELECT {CONFERENCE_COLUMNS} FROM conference WHERE integration = $1 \
             AND deletion_time {which} ORDER BY name"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(integration)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing an integration's conferences"))?
            .iter()
            .map(conference_from_row)
            .collect::<Result<_, _>>()
            .map_err(query_err("listing an integration's conferences"))
    }
}
