//! VMR lifetime in the database: which live conferences have no window left after a cutoff
//! (candidates for expiry), and expiring one: the conference gets its deletion time, its alias
//! becomes `deleted` (never issued again), the processing log records why, and, in push mode,
//! its Infinity VMR is queued for deletion, all in one transaction serialised with the
//! integration's scheduling commits. The server's sweeper (`server/src/vmr_lifetime.rs`)
//! decides, from the meeting's whole schedule, whether a candidate has really ended.

use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use crate::push_queue::enqueue_in;
use crate::scheduling::ConferenceRecord;
use crate::scheduling::{conference_from_row, CONFERENCE_COLUMNS};
use crate::{query_err, Storage, StorageError};

/// A live conference none of whose windows ends after the cutoff, with its meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryCandidate {
    pub conference: ConferenceRecord,
    /// The meeting using the conference: `(uid, revision, state, schedule_json, item_id)`.
    pub meeting: Option<CandidateMeeting>,
    /// The latest end of its stored windows, if it has any.
    pub last_window_end: Option<i64>,
}

/// The parts of the meeting the sweeper needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateMeeting {
    pub uid: String,
    pub revision: i64,
    pub state: String,
    pub schedule_json: String,
    pub item_id: String,
}

/// Error code-less description written to `scheduling_operation` when a VMR expires.
pub const EXPIRED_DESCRIPTION: &str = "VMR removed: its last window ended and the grace passed";

impl Storage {
    /// Live conferences of `integration` (not deferred meetings) none of whose windows ends
    /// after `cutoff`, at most `limit`, oldest first.
    pub async fn expiry_candidates(
        &self,
        integration: &str,
        cutoff: i64,
        limit: u32,
    ) -> Result<Vec<ExpiryCandidate>, StorageError> {
        const DOING: &str = "listing conferences that may have expired";
        let columns = CONFERENCE_COLUMNS
            .split(", ")
            .map(|c| format!("c.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {columns}, m.uid AS m_uid, m.revision AS m_revision, m.state AS m_state, \
             m.schedule_json AS m_schedule, m.item_id AS m_item_id, \
             (SELECT MAX(w.end_time) FROM scheduled_conference w WHERE w.conference_id = c.id) \
             AS last_end \
             FROM conference c LEFT JOIN meeting m \
             ON m.integration = c.integration AND m.conference_id = c.id \
             WHERE c.integration = $1 AND c.deletion_time IS NULL \
             AND NOT EXISTS (SELECT 1 FROM scheduled_conference s \
             WHERE s.conference_id = c.id AND s.end_time > $2) \
             ORDER BY c.created_at, c.id LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(integration)
            .bind(cutoff)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(query_err(DOING))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let conference = conference_from_row(r).map_err(query_err(DOING))?;
            let uid: Option<String> = r.try_get("m_uid").map_err(query_err(DOING))?;
            let meeting = match uid {
                Some(uid) => Some(CandidateMeeting {
                    uid,
                    revision: r.try_get("m_revision").map_err(query_err(DOING))?,
                    state: r.try_get("m_state").map_err(query_err(DOING))?,
                    schedule_json: r.try_get("m_schedule").map_err(query_err(DOING))?,
                    item_id: r.try_get("m_item_id").map_err(query_err(DOING))?,
                }),
                None => None,
            };
            if meeting.as_ref().is_some_and(|m| m.state == "deferred") {
                continue;
            }
            out.push(ExpiryCandidate {
                conference,
                meeting,
                last_window_end: r.try_get("last_end").map_err(query_err(DOING))?,
            });
        }
        Ok(out)
    }

    /// Expires conference `candidate.conference` at `now`, in one transaction under the
    /// integration's commit lock: deletion time set, alias `deleted` (with its conference
    /// deletion time), the meeting's `updated_at` (so followers notice), a `scheduling_operation`
    /// row, and a push queued when the queue is on.
    /// Nothing is written (answer `false`) when, meanwhile, the conference was deleted, its
    /// meeting changed (another revision) or a window ending after `cutoff` appeared.
    pub async fn expire_conference(
        &self,
        candidate: &ExpiryCandidate,
        cutoff: i64,
        now: i64,
    ) -> Result<bool, StorageError> {
        const DOING: &str = "expiring a conference";
        let c = &candidate.conference;
        let mut tx = if self.sqlite {
            self.pool.begin_with("BEGIN IMMEDIATE").await
        } else {
            self.pool.begin().await
        }
        .map_err(query_err(DOING))?;
        let conn: &mut AnyConnection = &mut tx;
        // The same lock scheduling commits take (see `commit_scheduling`).
        sqlx::query(
            "INSERT INTO integration_status (integration, last_processed_at) VALUES ($1, NULL) \
             ON CONFLICT (integration) DO UPDATE SET \
             last_processed_at = integration_status.last_processed_at",
        )
        .bind(&c.integration)
        .execute(&mut *conn)
        .await
        .map_err(query_err(DOING))?;
        if let Some(m) = &candidate.meeting {
            let row =
                sqlx::query("SELECT revision FROM meeting WHERE integration = $1 AND uid = $2")
                    .bind(&c.integration)
                    .bind(&m.uid)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(query_err(DOING))?;
            let revision: Option<i64> = row
                .map(|r| r.try_get("revision"))
                .transpose()
                .map_err(query_err(DOING))?;
            if revision != Some(m.revision) {
                return Ok(false);
            }
        }
        let later = sqlx::query(
            "SELECT 1 AS one FROM scheduled_conference WHERE conference_id = $1 AND end_time > $2",
        )
        .bind(&c.id)
        .bind(cutoff)
        .fetch_optional(&mut *conn)
        .await
        .map_err(query_err(DOING))?;
        if later.is_some() {
            return Ok(false);
        }
        let updated = sqlx::query(
            "UPDATE conference SET deletion_time = $2 WHERE id = $1 AND deletion_time IS NULL",
        )
        .bind(&c.id)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(query_err(DOING))?;
        if updated.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE scheduled_alias SET state = 'deleted', \
             conference_deletion_time = COALESCE(conference_deletion_time, $2) WHERE id = $1",
        )
        .bind(&c.alias_id)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(query_err(DOING))?;
        if let Some(m) = &candidate.meeting {
            // Followers of `meeting.updated_at` (the policy index) see the change.
            sqlx::query("UPDATE meeting SET updated_at = $3 WHERE integration = $1 AND uid = $2")
                .bind(&c.integration)
                .bind(&m.uid)
                .bind(now)
                .execute(&mut *conn)
                .await
                .map_err(query_err(DOING))?;
        }
        let (resource_id, item_id) = match &candidate.meeting {
            Some(m) => (m.uid.clone(), m.item_id.clone()),
            None => (c.id.clone(), String::new()),
        };
        sqlx::query(
            "INSERT INTO scheduling_operation (transaction_uuid, integration, creation_time, \
             success, error_code, error_description, resource_id, item_id) \
             VALUES ($1, $2, $3, 1, '', $4, $5, $6)",
        )
        .bind(Uuid::new_v4().simple().to_string())
        .bind(&c.integration)
        .bind(now)
        .bind(EXPIRED_DESCRIPTION)
        .bind(resource_id)
        .bind(item_id)
        .execute(&mut *conn)
        .await
        .map_err(query_err(DOING))?;
        if self.push_queue_enabled() {
            enqueue_in(conn, &c.integration, std::slice::from_ref(&c.id), now).await?;
        }
        tx.commit().await.map_err(query_err(DOING))?;
        Ok(true)
    }
}
