//! What the policy server's in-memory index reads (`vmr_server::policy`):
//! everything once at start, then only what changed.
//!
//! Change tracking needs no extra bookkeeping in the writers: every
//! scheduling commit (`Storage::commit_scheduling`) rewrites the meeting row
//! (`updated_at`) in the same transaction as its windows and conference, so
//! "meetings written since T" names every meeting whose windows, conference
//! or state may have changed; aliases are never changed once issued, so
//! "aliases issued since T" is all that is new there. Both reads use the
//! indexes of migration `0006_policy.sql`. The caller re-reads what was
//! written within a margin of its clock's now, so commits that were still in
//! flight (or written with a slightly earlier clock) are not missed. Extra aliases admins add
//! (`conference_extra_alias`) are few and can be removed, so they are read
//! whole each time.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::scheduling::{conference_from_row, ConferenceRecord, CONFERENCE_COLUMNS};
use crate::{query_err, Storage, StorageError};

/// An alias an integration issued (allocated, bound or deleted: ours either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedAlias {
    pub integration: String,
    /// The dialable alias (`88123456@vc.example.com`).
    pub alias: String,
    /// The numeric alias (`88123456`).
    pub numeric_alias: String,
    /// When it was issued (Unix seconds).
    pub created_at: i64,
}

/// What the index needs to know about one meeting to tell whether it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingStamp {
    pub integration: String,
    pub uid: String,
    pub conference_id: Option<String>,
    /// `accepted`, `declined`, `cancelled` or `deferred`.
    pub state: String,
    pub revision: i64,
    /// Unix ms of the last commit that wrote the meeting.
    pub updated_at: i64,
}

/// One stored window of a meeting (an occurrence, or the whole meeting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpan {
    /// Unix ms.
    pub start_time: i64,
    /// Unix ms.
    pub end_time: i64,
}

/// An extra alias an admin added to a VMR (stored in lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraAlias {
    pub conference_id: String,
    pub alias: String,
}

const DOING_ALIASES: &str = "reading issued aliases for the policy index";
const DOING_MEETINGS: &str = "reading changed meetings for the policy index";
const DOING_WINDOWS: &str = "reading windows for the policy index";
const DOING_CONFERENCES: &str = "reading conferences for the policy index";
const DOING_EXTRA: &str = "reading extra aliases for the policy index";

fn stamp_from_row(r: &AnyRow) -> Result<MeetingStamp, sqlx::Error> {
    Ok(MeetingStamp {
        integration: r.try_get("integration")?,
        uid: r.try_get("uid")?,
        conference_id: r.try_get("conference_id")?,
        state: r.try_get("state")?,
        revision: r.try_get("revision")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Storage {
    /// Aliases issued after `created_after` (Unix seconds), oldest first.
    pub async fn policy_aliases_after(
        &self,
        created_after: i64,
    ) -> Result<Vec<IssuedAlias>, StorageError> {
        sqlx::query(
            "SELECT integration, alias, numeric_alias, created_at FROM scheduled_alias \
             WHERE created_at > $1 ORDER BY created_at",
        )
        .bind(created_after)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err(DOING_ALIASES))?
        .iter()
        .map(|r| -> Result<IssuedAlias, sqlx::Error> {
            Ok(IssuedAlias {
                integration: r.try_get("integration")?,
                alias: r.try_get("alias")?,
                numeric_alias: r.try_get("numeric_alias")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect::<Result<_, _>>()
        .map_err(query_err(DOING_ALIASES))
    }

    /// Meetings written after `updated_after` (Unix ms), oldest first.
    pub async fn policy_meetings_after(
        &self,
        updated_after: i64,
    ) -> Result<Vec<MeetingStamp>, StorageError> {
        sqlx::query(
            "SELECT integration, uid, conference_id, state, revision, updated_at FROM meeting \
             WHERE updated_at > $1 ORDER BY updated_at",
        )
        .bind(updated_after)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err(DOING_MEETINGS))?
        .iter()
        .map(stamp_from_row)
        .collect::<Result<_, _>>()
        .map_err(query_err(DOING_MEETINGS))
    }

    /// Every conference (deleted ones too): the index's first load.
    pub async fn policy_all_conferences(&self) -> Result<Vec<ConferenceRecord>, StorageError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CONFERENCE_COLUMNS} FROM conference"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(query_err(DOING_CONFERENCES))?
        .iter()
        .map(conference_from_row)
        .collect::<Result<_, _>>()
        .map_err(query_err(DOING_CONFERENCES))
    }

    /// Every window as `(integration, meeting uid, span)`: the index's first load.
    pub async fn policy_all_windows(
        &self,
    ) -> Result<Vec<(String, String, WindowSpan)>, StorageError> {
        sqlx::query(
            "SELECT integration, meeting_uid, start_time, end_time FROM scheduled_conference",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err(DOING_WINDOWS))?
        .iter()
        .map(|r| -> Result<_, sqlx::Error> {
            Ok((
                r.try_get("integration")?,
                r.try_get("meeting_uid")?,
                WindowSpan {
                    start_time: r.try_get("start_time")?,
                    end_time: r.try_get("end_time")?,
                },
            ))
        })
        .collect::<Result<_, _>>()
        .map_err(query_err(DOING_WINDOWS))
    }

    /// One meeting's windows and its conference (by the meeting's
    /// `conference_id`), read in one snapshot: what the index re-reads for a
    /// changed meeting.
    pub async fn policy_meeting_detail(
        &self,
        integration: &str,
        uid: &str,
        conference_id: Option<&str>,
    ) -> Result<(Option<ConferenceRecord>, Vec<WindowSpan>), StorageError> {
        let mut tx = self.pool.begin().await.map_err(query_err(DOING_WINDOWS))?;
        let conference = match conference_id {
            Some(id) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {CONFERENCE_COLUMNS} FROM conference WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query_err(DOING_CONFERENCES))?
            .map(|r| conference_from_row(&r))
            .transpose()
            .map_err(query_err(DOING_CONFERENCES))?,
            None => None,
        };
        let windows = sqlx::query(
            "SELECT start_time, end_time FROM scheduled_conference \
             WHERE integration = $1 AND meeting_uid = $2 ORDER BY start_time",
        )
        .bind(integration)
        .bind(uid)
        .fetch_all(&mut *tx)
        .await
        .map_err(query_err(DOING_WINDOWS))?
        .iter()
        .map(|r| -> Result<WindowSpan, sqlx::Error> {
            Ok(WindowSpan {
                start_time: r.try_get("start_time")?,
                end_time: r.try_get("end_time")?,
            })
        })
        .collect::<Result<_, _>>()
        .map_err(query_err(DOING_WINDOWS))?;
        tx.commit().await.map_err(query_err(DOING_WINDOWS))?;
        Ok((conference, windows))
    }

    /// Every extra alias admins added to VMRs.
    pub async fn policy_extra_aliases(&self) -> Result<Vec<ExtraAlias>, StorageError> {
        sqlx::query("SELECT conference_id, alias FROM conference_extra_alias")
            .fetch_all(&self.pool)
            .await
            .map_err(query_err(DOING_EXTRA))?
            .iter()
            .map(|r| -> Result<ExtraAlias, sqlx::Error> {
                Ok(ExtraAlias {
                    conference_id: r.try_get("conference_id")?,
                    alias: r.try_get("alias")?,
                })
            })
            .collect::<Result<_, _>>()
            .map_err(query_err(DOING_EXTRA))
    }
}
