//! The database side of mailbox processing: meetings, the VMRs (`conference`)
//! created for their aliases, the windows in which a VMR may be used
//! (`scheduled_conference`, `recurring_conference`), the processing log
//! (`scheduling_operation`), the outbox of meeting responses (`reply_outbox`)
//! and when each integration last processed an item (`integration_status`).
//!
//! The mailbox processor decides what a calendar change means (in the server);
//! everything it writes for one processed change goes through
//! [`Storage::commit_scheduling`] in ONE transaction, so a crash leaves either
//! all of it or none of it, and re-processing the same change after a crash
//! writes nothing twice (one conference per alias, one reply per change).
//!
//! Commits of one integration are serialised: SQLite takes the write lock at
//! `BEGIN IMMEDIATE`, PostgreSQL locks the integration's `integration_status`
//! row first. The checks inside (alias still free, stored revision) therefore
//! see every earlier commit. Nothing relies on catching a constraint error
//! (PostgreSQL aborts the transaction after one): conflicts are handled with
//! `ON CONFLICT … DO NOTHING` and `RETURNING`.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row, Transaction};
use uuid::Uuid;

use crate::{query_err, Storage, StorageError};

/// Most characters of [`OperationRecord::error_code`] stored (longer codes are cut).
pub const ERROR_CODE_MAX_CHARS: usize = 50;
/// Most characters of [`OperationRecord::error_description`] stored (longer ones are cut).
pub const ERROR_DESCRIPTION_MAX_CHARS: usize = 250;
/// Most characters of a reply's `last_error` stored.
pub const REPLY_ERROR_MAX_CHARS: usize = 1000;
/// Error code recorded when a commit finds its alias bound to another meeting.
pub const ALIAS_BOUND_ELSEWHERE_CODE: &str = "ALIAS_BOUND_ELSEWHERE";
/// Error code recorded when a commit finds its alias deleted.
pub const ALIAS_DELETED_CODE: &str = "ALIAS_DELETED";
/// Error code recorded when a commit names an alias its integration never issued.
pub const ALIAS_UNKNOWN_CODE: &str = "ALIAS_UNKNOWN";
/// Names tried with a random 5-digit suffix before falling back to the
/// conference's uuid as the suffix.
const RANDOM_NAME_ATTEMPTS: usize = 16;

/// A meeting (single or series) as last processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingRecord {
    pub integration: String,
    /// The calendar item's UID (iCalendar UID / EWS `UID`).
    pub uid: String,
    /// The alias the meeting uses, if any.
    pub alias_id: Option<String>,
    /// The VMR the meeting uses, if any. When the commit creates or reuses a
    /// conference ([`Commit::conference`]), the stored value is that one's id.
    pub conference_id: Option<String>,
    /// `accepted`, `declined`, `cancelled` or `deferred`.
    pub state: String,
    pub is_series: bool,
    /// The organizer's iCalendar SEQUENCE.
    pub sequence: i64,
    /// How many changes of this meeting have been answered.
    pub revision: i64,
    /// The meeting's schedule, serialised by the caller (opaque here).
    pub schedule_json: String,
    /// What the processor compares to tell a real change from a repeat.
    pub fingerprint: String,
    pub organizer_email: String,
    pub subject: String,
    /// The EWS item id of the calendar item.
    pub item_id: String,
    pub updated_at: i64,
}

/// A VMR to create for an alias that has none yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConference {
    pub alias_id: String,
    /// The base name rendered from the template; made unique across integrations
    /// by appending `" "` and 5 random digits when taken.
    pub name: String,
    pub description: String,
    pub alias: String,
    pub numeric_alias: String,
    pub theme: Option<String>,
    pub host_identity_provider_group: Option<String>,
    pub non_idp_participants: String,
}

/// A stored VMR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConferenceRecord {
    pub id: String,
    pub integration: String,
    pub alias_id: String,
    /// The unique name actually stored.
    pub name: String,
    pub description: String,
    pub alias: String,
    pub numeric_alias: String,
    pub theme: Option<String>,
    pub host_identity_provider_group: Option<String>,
    pub non_idp_participants: String,
    pub created_at: i64,
    /// When the conference was deleted, if it was.
    pub deletion_time: Option<i64>,
}

/// One window in which a meeting's conference may be used: the whole
/// meeting, or one occurrence of a series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRecord {
    pub occurrence_index: i64,
    /// The occurrence's start as the recurrence defines it (its identity).
    pub original_start: i64,
    pub start_time: i64,
    pub end_time: i64,
    pub subject: String,
}

/// A meeting response to queue for this change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReply {
    /// The meeting request's EWS item id and change key the response refers to.
    pub item_id: String,
    pub change_key: String,
    /// `accept`, `decline` or `remove`.
    pub response: String,
    pub body_html: String,
}

/// A queued meeting response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRecord {
    pub id: String,
    pub integration: String,
    pub meeting_uid: String,
    /// The meeting revision this response answers.
    pub revision: i64,
    pub item_id: String,
    pub change_key: String,
    pub response: String,
    pub body_html: String,
    /// `pending`, `sent` or `failed` (given up).
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

/// One entry of the processing log, as the processor reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRecord {
    pub transaction_uuid: String,
    pub success: bool,
    /// Cut to [`ERROR_CODE_MAX_CHARS`] characters when stored.
    pub error_code: String,
    /// Cut to [`ERROR_DESCRIPTION_MAX_CHARS`] characters when stored.
    pub error_description: String,
    pub item_id: String,
}

/// A stored entry of the processing log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOperation {
    pub integration: String,
    /// The meeting uid the entry is about.
    pub resource_id: String,
    pub creation_time: i64,
    /// As stored: texts cut to their limits.
    pub operation: OperationRecord,
}

/// What a commit does to the meeting's alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasBinding {
    /// Leave aliases alone.
    None,
    /// Bind the alias to this meeting (it must exist in the integration, not
    /// be deleted and not be bound to another meeting).
    Bind { alias_id: String },
    /// Retire the alias (state `deleted`) and delete its conference, if it
    /// has one. Refused when the alias is bound to another meeting or the
    /// integration never issued it.
    Delete { alias_id: String },
}

/// Everything one processed change writes, committed together by
/// [`Storage::commit_scheduling`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub meeting: MeetingRecord,
    pub binding: AliasBinding,
    /// Create this conference if its alias has none; reuse the alias's
    /// existing conference otherwise.
    pub conference: Option<NewConference>,
    /// `Some`: replace all of this meeting's windows (`Some(vec![])` removes
    /// them); `None`: leave them.
    pub windows: Option<Vec<WindowRecord>>,
    /// A series' `(current_index, is_depleted)`.
    pub recurring: Option<(i64, bool)>,
    /// Delete the meeting's conference (`deletion_time` set) and retire its
    /// alias.
    pub delete_conference: bool,
    pub operation: OperationRecord,
    /// The response to queue; its revision is `meeting.revision`.
    pub reply: Option<NewReply>,
    pub now: i64,
}

/// What [`Storage::commit_scheduling`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Written. `conference_id` is the meeting's conference; `reply_id` the
    /// reply row this commit created (`None` when there was no reply, when
    /// the same change was already committed, or when the commit's revision
    /// is lower than the stored one and nothing was changed).
    Committed {
        conference_id: Option<String>,
        reply_id: Option<String>,
    },
    /// The alias is bound to another meeting: only the operation row was
    /// written (as a failure, [`ALIAS_BOUND_ELSEWHERE_CODE`]).
    AliasBoundElsewhere { other_uid: String },
    /// The alias can no longer be used: it is deleted (the operation row is
    /// written as a failure, [`ALIAS_DELETED_CODE`]) or this integration never
    /// issued it ([`ALIAS_UNKNOWN_CODE`]). Nothing else was written.
    AliasDeleted,
}

/// `text` cut to at most `max` characters (never inside a character), NUL
/// characters (which PostgreSQL cannot store in text) replaced by U+FFFD.
fn clip(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
        .collect()
}

fn new_id() -> String {
    Uuid::new_v4().simple().to_string()
}

/// Five random digits (from a v4 uuid's random bits).
fn random_digits() -> String {
    format!("{:05}", Uuid::new_v4().as_u128() % 100_000)
}

/// A failure the caller's commit causes before any database work.
fn invalid_commit(doing: &'static str, what: &str) -> StorageError {
    StorageError::Query {
        doing,
        source: sqlx::Error::InvalidArgument(what.to_string()),
    }
}

/// What the alias check inside a commit found.
enum AliasCheck {
    /// The alias may be bound to (or retired by) this meeting.
    Usable,
    /// It may not; the commit writes only the failure.
    Refused {
        outcome: CommitOutcome,
        code: &'static str,
        description: String,
    },
}

/// `conference` columns as [`conference_from_row`] reads them.
pub(crate) const CONFERENCE_COLUMNS: &str = "id, integration, alias_id, name, description, alias, \
     numeric_alias, theme, host_identity_provider_group, non_idp_participants, created_at, \
     deletion_time";

const MEETING_COLUMNS: &str = "integration, uid, alias_id, conference_id, state, is_series, \
     sequence, revision, schedule_json, fingerprint, organizer_email, subject, item_id, updated_at";

const REPLY_COLUMNS: &str = "id, integration, meeting_uid, revision, item_id, change_key, \
     response, body_html, state, attempts, last_error, created_at, sent_at";

/// A `conference` row selected with [`CONFERENCE_COLUMNS`].
pub(crate) fn conference_from_row(r: &AnyRow) -> Result<ConferenceRecord, sqlx::Error> {
    Ok(ConferenceRecord {
        id: r.try_get("id")?,
        integration: r.try_get("integration")?,
        alias_id: r.try_get("alias_id")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        alias: r.try_get("alias")?,
        numeric_alias: r.try_get("numeric_alias")?,
        theme: r.try_get("theme")?,
        host_identity_provider_group: r.try_get("host_identity_provider_group")?,
        non_idp_participants: r.try_get("non_idp_participants")?,
        created_at: r.try_get("created_at")?,
        deletion_time: r.try_get("deletion_time")?,
    })
}

fn meeting_from_row(r: &AnyRow) -> Result<MeetingRecord, sqlx::Error> {
    Ok(MeetingRecord {
        integration: r.try_get("integration")?,
        uid: r.try_get("uid")?,
        alias_id: r.try_get("alias_id")?,
        conference_id: r.try_get("conference_id")?,
        state: r.try_get("state")?,
        is_series: r.try_get::<i64, _>("is_series")? != 0,
        sequence: r.try_get("sequence")?,
        revision: r.try_get("revision")?,
        schedule_json: r.try_get("schedule_json")?,
        fingerprint: r.try_get("fingerprint")?,
        organizer_email: r.try_get("organizer_email")?,
        subject: r.try_get("subject")?,
        item_id: r.try_get("item_id")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn reply_from_row(r: &AnyRow) -> Result<ReplyRecord, sqlx::Error> {
    Ok(ReplyRecord {
        id: r.try_get("id")?,
        integration: r.try_get("integration")?,
        meeting_uid: r.try_get("meeting_uid")?,
        revision: r.try_get("revision")?,
        item_id: r.try_get("item_id")?,
        change_key: r.try_get("change_key")?,
        response: r.try_get("response")?,
        body_html: r.try_get("body_html")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        sent_at: r.try_get("sent_at")?,
    })
}

fn window_from_row(r: &AnyRow) -> Result<WindowRecord, sqlx::Error> {
    Ok(WindowRecord {
        occurrence_index: r.try_get("occurrence_index")?,
        original_start: r.try_get("original_start")?,
        start_time: r.try_get("start_time")?,
        end_time: r.try_get("end_time")?,
        subject: r.try_get("subject")?,
    })
}

fn operation_from_row(r: &AnyRow) -> Result<StoredOperation, sqlx::Error> {
    Ok(StoredOperation {
        integration: r.try_get("integration")?,
        resource_id: r.try_get("resource_id")?,
        creation_time: r.try_get("creation_time")?,
        operation: OperationRecord {
            transaction_uuid: r.try_get("transaction_uuid")?,
            success: r.try_get::<i64, _>("success")? != 0,
            error_code: r.try_get("error_code")?,
            error_description: r.try_get("error_description")?,
            item_id: r.try_get("item_id")?,
        },
    })
}

/// Writes (or, for the same transaction uuid, overwrites) a log entry. The
/// first `creation_time` stays.
async fn upsert_operation(
    conn: &mut AnyConnection,
    integration: &str,
    resource_id: &str,
    op: &OperationRecord,
    now: i64,
) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO scheduling_operation (transaction_uuid, integration, creation_time, success, \
         error_code, error_description, resource_id, item_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (transaction_uuid) DO UPDATE SET success = excluded.success, \
         error_code = excluded.error_code, error_description = excluded.error_description, \
         resource_id = excluded.resource_id, item_id = excluded.item_id",
    )
    .bind(&op.transaction_uuid)
    .bind(integration)
    .bind(now)
    .bind(i64::from(op.success))
    .bind(clip(&op.error_code, ERROR_CODE_MAX_CHARS))
    .bind(clip(&op.error_description, ERROR_DESCRIPTION_MAX_CHARS))
    .bind(resource_id)
    .bind(&op.item_id)
    .execute(&mut *conn)
    .await
    .map_err(query_err("recording a scheduling operation"))?;
    Ok(())
}

/// Whether the alias `alias_id` may be used by meeting `uid` of `integration`.
async fn check_alias(
    conn: &mut AnyConnection,
    integration: &str,
    alias_id: &str,
    uid: &str,
    refuse_deleted: bool,
) -> Result<AliasCheck, StorageError> {
    const DOING: &str = "checking the meeting's alias";
    let row = sqlx::query(
        "SELECT state, meeting_uid, conference_deletion_time FROM scheduled_alias \
         WHERE id = $1 AND integration = $2",
    )
    .bind(alias_id)
    .bind(integration)
    .fetch_optional(&mut *conn)
    .await
    .map_err(query_err(DOING))?;
    let Some(row) = row else {
        return Ok(AliasCheck::Refused {
            outcome: CommitOutcome::AliasDeleted,
            code: ALIAS_UNKNOWN_CODE,
            description: format!("alias {alias_id} was never issued by integration {integration}"),
        });
    };
    let state: String = row.try_get("state").map_err(query_err(DOING))?;
    let bound_to: Option<String> = row.try_get("meeting_uid").map_err(query_err(DOING))?;
    let deleted_at: Option<i64> = row
        .try_get("conference_deletion_time")
        .map_err(query_err(DOING))?;
    if refuse_deleted && (state == "deleted" || deleted_at.is_some()) {
        return Ok(AliasCheck::Refused {
            outcome: CommitOutcome::AliasDeleted,
            code: ALIAS_DELETED_CODE,
            description: format!("alias {alias_id} is deleted"),
        });
    }
    match bound_to {
        Some(other) if other != uid => Ok(AliasCheck::Refused {
            description: format!("alias {alias_id} is bound to another meeting ({other})"),
            outcome: CommitOutcome::AliasBoundElsewhere { other_uid: other },
            code: ALIAS_BOUND_ELSEWHERE_CODE,
        }),
        _ => Ok(AliasCheck::Usable),
    }
}

/// The id of the conference of `alias_id`, if it has one.
async fn conference_id_for_alias(
    conn: &mut AnyConnection,
    alias_id: &str,
) -> Result<Option<String>, StorageError> {
    const DOING: &str = "looking up the alias's conference";
    let row = sqlx::query("SELECT id FROM conference WHERE alias_id = $1")
        .bind(alias_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(query_err(DOING))?;
    row.map(|r| r.try_get("id"))
        .transpose()
        .map_err(query_err(DOING))
}

/// Marks the alias deleted (its conference's deletion time set), keeping an
/// earlier deletion time.
async fn retire_alias(
    conn: &mut AnyConnection,
    alias_id: &str,
    now: i64,
) -> Result<(), StorageError> {
    sqlx::query(
        "UPDATE scheduled_alias SET state = 'deleted', \
         conference_deletion_time = COALESCE(conference_deletion_time, $2) WHERE id = $1",
    )
    .bind(alias_id)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(query_err("marking an alias deleted"))?;
    Ok(())
}

/// Marks the conference deleted (keeping an earlier deletion time) and
/// retires its alias.
async fn delete_conference(
    conn: &mut AnyConnection,
    conference_id: &str,
    now: i64,
) -> Result<(), StorageError> {
    const DOING: &str = "marking a conference deleted";
    let row = sqlx::query(
        "UPDATE conference SET deletion_time = COALESCE(deletion_time, $2) WHERE id = $1 \
         RETURNING alias_id",
    )
    .bind(conference_id)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await
    .map_err(query_err(DOING))?;
    if let Some(row) = row {
        let alias_id: String = row.try_get("alias_id").map_err(query_err(DOING))?;
        retire_alias(conn, &alias_id, now).await?;
    }
    Ok(())
}

/// The conference of `nc.alias_id`, created under a name unique across all integrations
/// (as Infinity's service names must be) when the alias has none.
async fn ensure_conference(
    conn: &mut AnyConnection,
    integration: &str,
    nc: &NewConference,
    now: i64,
) -> Result<String, StorageError> {
    const DOING: &str = "creating the conference";
    if let Some(id) = conference_id_for_alias(conn, &nc.alias_id).await? {
        return Ok(id);
    }
    let id = new_id();
    for attempt in 0..=RANDOM_NAME_ATTEMPTS + 1 {
        let name = match attempt {
            0 => nc.name.clone(),
            n if n <= RANDOM_NAME_ATTEMPTS => format!("{} {}", nc.name, random_digits()),
            _ => format!("{} {id}", nc.name),
        };
        let inserted = sqlx::query(
            "INSERT INTO conference (id, integration, alias_id, name, description, alias, \
             numeric_alias, theme, host_identity_provider_group, non_idp_participants, \
             created_at, deletion_time) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL) \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(&id)
        .bind(integration)
        .bind(&nc.alias_id)
        .bind(&name)
        .bind(&nc.description)
        .bind(&nc.alias)
        .bind(&nc.numeric_alias)
        .bind(&nc.theme)
        .bind(&nc.host_identity_provider_group)
        .bind(&nc.non_idp_participants)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await
        .map_err(query_err(DOING))?;
        if inserted.is_some() {
            return Ok(id);
        }
        tracing::debug!(%name, attempt, "conference name taken; trying another");
    }
    Err(invalid_commit(
        DOING,
        &format!(
            "no free conference name for base name {:?} after {} attempts",
            nc.name,
            RANDOM_NAME_ATTEMPTS + 2
        ),
    ))
}

async fn upsert_meeting(
    conn: &mut AnyConnection,
    m: &MeetingRecord,
    conference_id: Option<&str>,
) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO meeting (integration, uid, alias_id, conference_id, state, is_series, \
         sequence, revision, schedule_json, fingerprint, organizer_email, subject, item_id, \
         updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (integration, uid) DO UPDATE SET alias_id = excluded.alias_id, \
         conference_id = excluded.conference_id, state = excluded.state, \
         is_series = excluded.is_series, sequence = excluded.sequence, \
         revision = excluded.revision, schedule_json = excluded.schedule_json, \
         fingerprint = excluded.fingerprint, organizer_email = excluded.organizer_email, \
         subject = excluded.subject, item_id = excluded.item_id, \
         updated_at = excluded.updated_at \
         WHERE meeting.revision <= excluded.revision",
    )
    .bind(&m.integration)
    .bind(&m.uid)
    .bind(&m.alias_id)
    .bind(conference_id)
    .bind(&m.state)
    .bind(i64::from(m.is_series))
    .bind(m.sequence)
    .bind(m.revision)
    .bind(&m.schedule_json)
    .bind(&m.fingerprint)
    .bind(&m.organizer_email)
    .bind(&m.subject)
    .bind(&m.item_id)
    .bind(m.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(query_err("storing the meeting"))?;
    Ok(())
}

/// The series row of the meeting: written when `recurring` is given, else the
/// existing one's id (if any).
async fn recurring_id(
    conn: &mut AnyConnection,
    m: &MeetingRecord,
    conference_id: Option<&str>,
    recurring: Option<(i64, bool)>,
) -> Result<Option<String>, StorageError> {
    const DOING: &str = "storing the series";
    let row = match (recurring, conference_id) {
        (Some((current_index, is_depleted)), Some(conference_id)) => sqlx::query(
            "INSERT INTO recurring_conference (id, integration, conference_id, meeting_uid, \
             current_index, is_depleted, subject) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (integration, meeting_uid) DO UPDATE SET \
             conference_id = excluded.conference_id, current_index = excluded.current_index, \
             is_depleted = excluded.is_depleted, subject = excluded.subject \
             RETURNING id",
        )
        .bind(new_id())
        .bind(&m.integration)
        .bind(conference_id)
        .bind(&m.uid)
        .bind(current_index)
        .bind(i64::from(is_depleted))
        .bind(&m.subject)
        .fetch_optional(&mut *conn)
        .await
        .map_err(query_err(DOING))?,
        _ => sqlx::query(
            "SELECT id FROM recurring_conference WHERE integration = $1 AND meeting_uid = $2",
        )
        .bind(&m.integration)
        .bind(&m.uid)
        .fetch_optional(&mut *conn)
        .await
        .map_err(query_err(DOING))?,
    };
    row.map(|r| r.try_get("id"))
        .transpose()
        .map_err(query_err(DOING))
}

async fn replace_windows(
    conn: &mut AnyConnection,
    m: &MeetingRecord,
    conference_id: Option<&str>,
    recurring_id: Option<&str>,
    windows: &[WindowRecord],
) -> Result<(), StorageError> {
    const DOING: &str = "replacing the meeting's windows";
    sqlx::query("DELETE FROM scheduled_conference WHERE integration = $1 AND meeting_uid = $2")
        .bind(&m.integration)
        .bind(&m.uid)
        .execute(&mut *conn)
        .await
        .map_err(query_err(DOING))?;
    let Some(conference_id) = conference_id else {
        // Checked before the transaction began: no windows without a conference.
        return Ok(());
    };
    for w in windows {
        sqlx::query(
            "INSERT INTO scheduled_conference (id, integration, conference_id, meeting_uid, \
             recurring_conference_id, occurrence_index, original_start, start_time, end_time, \
             subject) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(new_id())
        .bind(&m.integration)
        .bind(conference_id)
        .bind(&m.uid)
        .bind(recurring_id)
        .bind(w.occurrence_index)
        .bind(w.original_start)
        .bind(w.start_time)
        .bind(w.end_time)
        .bind(&w.subject)
        .execute(&mut *conn)
        .await
        .map_err(query_err(DOING))?;
    }
    Ok(())
}

/// Queues the reply for `(integration, uid, revision)` unless one is queued
/// already; the new row's id, if this call created it.
async fn queue_reply(
    conn: &mut AnyConnection,
    m: &MeetingRecord,
    reply: &NewReply,
    now: i64,
) -> Result<Option<String>, StorageError> {
    const DOING: &str = "queueing the meeting response";
    let row = sqlx::query(
        "INSERT INTO reply_outbox (id, integration, meeting_uid, revision, item_id, change_key, \
         response, body_html, state, attempts, last_error, created_at, sent_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, NULL, $9, NULL) \
         ON CONFLICT (integration, meeting_uid, revision) DO NOTHING RETURNING id",
    )
    .bind(new_id())
    .bind(&m.integration)
    .bind(&m.uid)
    .bind(m.revision)
    .bind(&reply.item_id)
    .bind(&reply.change_key)
    .bind(&reply.response)
    .bind(&reply.body_html)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await
    .map_err(query_err(DOING))?;
    row.map(|r| r.try_get("id"))
        .transpose()
        .map_err(query_err(DOING))
}

impl Storage {
    /// A write transaction: on SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so a later write never fails on a stale snapshot.
    async fn begin_write(&self) -> Result<Transaction<'static, Any>, StorageError> {
        let begun = if self.sqlite {
            self.pool.begin_with("BEGIN IMMEDIATE").await
        } else {
            self.pool.begin().await
        };
        begun.map_err(query_err("starting a scheduling transaction"))
    }

    /// Writes everything one processed change decided, in one transaction.
    ///
    /// In order, after taking the integration's commit lock:
    /// 1. Stale commit: when the stored meeting has a HIGHER revision than
    ///    `c.meeting.revision` (an old change re-processed after a crash),
    ///    only the operation row is written and the answer is `Committed`
    ///    with the stored meeting's conference and `reply_id: None`.
    /// 2. The binding: `Bind` refuses an alias the integration never issued
    ///    or a deleted one (both [`CommitOutcome::AliasDeleted`], told apart
    ///    by the operation's error code) or one bound to another meeting
    ///    ([`CommitOutcome::AliasBoundElsewhere`]); then it is `bound` to
    ///    this meeting. `Delete` refuses unknown aliases (`AliasDeleted`) and
    ///    aliases of other meetings, and retires the alias and its conference. A refusal
    ///    writes only the operation row, as a failure with the matching
    ///    `ALIAS_…_CODE`, whatever `c.operation` said.
    /// 3. The conference: the alias's existing one, or a new one whose name
    ///    is the base name, else the base name + `" "` + 5 random digits
    ///    (16 tries), else + its uuid.
    /// 4. The meeting upsert (guarded again by revision), the series row,
    ///    the windows (replaced), the conference deletion, the operation row
    ///    (its transaction uuid identifies it: a repeat overwrites it), the
    ///    reply (at most one per `(integration, uid, revision)`: committing
    ///    the same change twice queues one reply, and the second commit
    ///    answers `reply_id: None`) and `last_processed_at = now`; in push
    ///    mode ([`Storage::enable_push_queue`]) a `push_queue` row for each
    ///    conference the change touched.
    ///
    /// Windows or a series given without any conference (neither
    /// `c.conference` nor `c.meeting.conference_id`) are refused before
    /// anything is written.
    pub async fn commit_scheduling(&self, c: &Commit) -> Result<CommitOutcome, StorageError> {
        let m = &c.meeting;
        let has_conference = c.conference.is_some() || m.conference_id.is_some();
        if !has_conference && c.windows.as_ref().is_some_and(|w| !w.is_empty()) {
            return Err(invalid_commit(
                "committing a scheduling change",
                "windows were given for a meeting without a conference",
            ));
        }
        if !has_conference && c.recurring.is_some() {
            return Err(invalid_commit(
                "committing a scheduling change",
                "a series state was given for a meeting without a conference",
            ));
        }
        let mut tx = self.begin_write().await?;
        let conn: &mut AnyConnection = &mut tx;

        // The commit lock: PostgreSQL holds this row's lock until the end of
        // the transaction (SQLite holds the write lock already).
        sqlx::query(
            "INSERT INTO integration_status (integration, last_processed_at) VALUES ($1, NULL) \
             ON CONFLICT (integration) DO UPDATE SET \
             last_processed_at = integration_status.last_processed_at",
        )
        .bind(&m.integration)
        .execute(&mut *conn)
        .await
        .map_err(query_err("locking the integration for a scheduling commit"))?;

        let stored = sqlx::query(
            "SELECT revision, conference_id FROM meeting WHERE integration = $1 AND uid = $2",
        )
        .bind(&m.integration)
        .bind(&m.uid)
        .fetch_optional(&mut *conn)
        .await
        .map_err(query_err("reading the stored meeting"))?;
        if let Some(row) = stored {
            let revision: i64 = row
                .try_get("revision")
                .map_err(query_err("reading the stored meeting"))?;
            if revision > m.revision {
                let conference_id: Option<String> = row
                    .try_get("conference_id")
                    .map_err(query_err("reading the stored meeting"))?;
                upsert_operation(conn, &m.integration, &m.uid, &c.operation, c.now).await?;
                tx.commit()
                    .await
                    .map_err(query_err("committing a scheduling change"))?;
                tracing::debug!(uid = %m.uid, stored = revision, given = m.revision, "stale scheduling commit ignored");
                return Ok(CommitOutcome::Committed {
                    conference_id,
                    reply_id: None,
                });
            }
        }

        let (alias_id, refuse_deleted) = match &c.binding {
            AliasBinding::None => (None, false),
            AliasBinding::Bind { alias_id } => (Some(alias_id), true),
            AliasBinding::Delete { alias_id } => (Some(alias_id), false),
        };
        if let Some(alias_id) = alias_id {
            let check = check_alias(conn, &m.integration, alias_id, &m.uid, refuse_deleted).await?;
            if let AliasCheck::Refused {
                outcome,
                code,
                description,
            } = check
            {
                let failure = OperationRecord {
                    success: false,
                    error_code: code.to_string(),
                    error_description: description,
                    ..c.operation.clone()
                };
                upsert_operation(conn, &m.integration, &m.uid, &failure, c.now).await?;
                tx.commit()
                    .await
                    .map_err(query_err("committing a scheduling change"))?;
                return Ok(outcome);
            }
        }
        match &c.binding {
            AliasBinding::None => {}
            AliasBinding::Bind { alias_id } => {
                sqlx::query(
                    "UPDATE scheduled_alias SET state = 'bound', meeting_uid = $2 WHERE id = $1",
                )
                .bind(alias_id)
                .bind(&m.uid)
                .execute(&mut *conn)
                .await
                .map_err(query_err("binding the alias to the meeting"))?;
            }
            AliasBinding::Delete { alias_id } => {
                retire_alias(conn, alias_id, c.now).await?;
                if let Some(conference_id) = conference_id_for_alias(conn, alias_id).await? {
                    delete_conference(conn, &conference_id, c.now).await?;
                }
            }
        }

        let conference_id = match &c.conference {
            Some(nc) => Some(ensure_conference(conn, &m.integration, nc, c.now).await?),
            None => m.conference_id.clone(),
        };
        upsert_meeting(conn, m, conference_id.as_deref()).await?;
        let series = recurring_id(conn, m, conference_id.as_deref(), c.recurring).await?;
        if let Some(windows) = &c.windows {
            replace_windows(
                conn,
                m,
                conference_id.as_deref(),
                series.as_deref(),
                windows,
            )
            .await?;
        }
        if c.delete_conference {
            let target = match (&conference_id, alias_id) {
                (Some(id), _) => Some(id.clone()),
                (None, Some(alias_id)) => conference_id_for_alias(conn, alias_id).await?,
                (None, None) => None,
            };
            match (target, alias_id) {
                (Some(id), _) => delete_conference(conn, &id, c.now).await?,
                (None, Some(alias_id)) => retire_alias(conn, alias_id, c.now).await?,
                (None, None) => {}
            }
        }
        if self.push_queue_enabled() {
            // Push mode: Infinity's copy of every conference this change touched is redone.
            let mut touched: Vec<String> = conference_id.iter().cloned().collect();
            if let Some(alias_id) = alias_id {
                if let Some(id) = conference_id_for_alias(conn, alias_id).await? {
                    if !touched.contains(&id) {
                        touched.push(id);
                    }
                }
            }
            crate::push_queue::enqueue_in(conn, &m.integration, &touched, c.now).await?;
        }
        upsert_operation(conn, &m.integration, &m.uid, &c.operation, c.now).await?;
        let reply_id = match &c.reply {
            Some(reply) => queue_reply(conn, m, reply, c.now).await?,
            None => None,
        };
        sqlx::query("UPDATE integration_status SET last_processed_at = $2 WHERE integration = $1")
            .bind(&m.integration)
            .bind(c.now)
            .execute(&mut *conn)
            .await
            .map_err(query_err("recording when the integration last processed"))?;
        tx.commit()
            .await
            .map_err(query_err("committing a scheduling change"))?;
        Ok(CommitOutcome::Committed {
            conference_id,
            reply_id,
        })
    }

    /// Logs an operation that changes nothing else (a failure before any
    /// decision). A repeat with the same transaction uuid overwrites it.
    pub async fn record_operation(
        &self,
        integration: &str,
        resource_id: &str,
        op: &OperationRecord,
        now: i64,
    ) -> Result<(), StorageError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(query_err("recording a scheduling operation"))?;
        upsert_operation(&mut conn, integration, resource_id, op, now).await
    }

    /// The stored meeting.
    pub async fn meeting(
        &self,
        integration: &str,
        uid: &str,
    ) -> Result<Option<MeetingRecord>, StorageError> {
        let sql =
            format!("SELECT {MEETING_COLUMNS} FROM meeting WHERE integration = $1 AND uid = $2");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(integration)
            .bind(uid)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("reading a meeting"))?
            .map(|r| meeting_from_row(&r))
            .transpose()
            .map_err(query_err("reading a meeting"))
    }

    /// The deferred (TOK) meetings of `integration` still waiting to be completed, oldest
    /// first, at most `limit`.
    pub async fn deferred_meetings(
        &self,
        integration: &str,
        limit: u32,
    ) -> Result<Vec<MeetingRecord>, StorageError> {
        let sql = format!(
            "SELECT {MEETING_COLUMNS} FROM meeting WHERE integration = $1 AND state = 'deferred' \
             ORDER BY updated_at LIMIT $2"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(integration)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("reading deferred meetings"))?
            .iter()
            .map(meeting_from_row)
            .collect::<Result<_, _>>()
            .map_err(query_err("reading deferred meetings"))
    }

    /// Puts the deferred meeting `uid` at the back of [`Storage::deferred_meetings`]'s line
    /// (its item could not be read this time), so meetings that stay stuck never keep the
    /// others from their turn.
    pub async fn postpone_deferred_meeting(
        &self,
        integration: &str,
        uid: &str,
        now: i64,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "UPDATE meeting SET updated_at = $3 WHERE integration = $1 AND uid = $2 \
             AND state = 'deferred'",
        )
        .bind(integration)
        .bind(uid)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_err("postponing a deferred meeting"))?;
        Ok(())
    }

    /// The conference of an alias, deleted or not.
    pub async fn conference_for_alias(
        &self,
        alias_id: &str,
    ) -> Result<Option<ConferenceRecord>, StorageError> {
        let sql = format!("SELECT {CONFERENCE_COLUMNS} FROM conference WHERE alias_id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(alias_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("reading a conference"))?
            .map(|r| conference_from_row(&r))
            .transpose()
            .map_err(query_err("reading a conference"))
    }

    /// The conference with this id, deleted or not.
    pub async fn conference(&self, id: &str) -> Result<Option<ConferenceRecord>, StorageError> {
        let sql = format!("SELECT {CONFERENCE_COLUMNS} FROM conference WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("reading a conference"))?
            .map(|r| conference_from_row(&r))
            .transpose()
            .map_err(query_err("reading a conference"))
    }

    /// The meeting's windows, by original start.
    pub async fn windows(
        &self,
        integration: &str,
        uid: &str,
    ) -> Result<Vec<WindowRecord>, StorageError> {
        sqlx::query(
            "SELECT occurrence_index, original_start, start_time, end_time, subject \
             FROM scheduled_conference WHERE integration = $1 AND meeting_uid = $2 \
             ORDER BY original_start",
        )
        .bind(integration)
        .bind(uid)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("reading a meeting's windows"))?
        .iter()
        .map(window_from_row)
        .collect::<Result<_, _>>()
        .map_err(query_err("reading a meeting's windows"))
    }

    /// Up to `limit` replies still to send, oldest first.
    pub async fn pending_replies(
        &self,
        integration: &str,
        limit: i64,
    ) -> Result<Vec<ReplyRecord>, StorageError> {
        let sql = format!(
            "SELECT {REPLY_COLUMNS} FROM reply_outbox WHERE integration = $1 AND state = 'pending' \
             ORDER BY created_at, meeting_uid, revision LIMIT $2"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(integration)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing pending replies"))?
            .iter()
            .map(reply_from_row)
            .collect::<Result<_, _>>()
            .map_err(query_err("listing pending replies"))
    }

    /// Every reply queued for a meeting, by revision.
    pub async fn replies_for_meeting(
        &self,
        integration: &str,
        uid: &str,
    ) -> Result<Vec<ReplyRecord>, StorageError> {
        let sql = format!(
            "SELECT {REPLY_COLUMNS} FROM reply_outbox WHERE integration = $1 AND meeting_uid = $2 \
             ORDER BY revision"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(integration)
            .bind(uid)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing a meeting's replies"))?
            .iter()
            .map(reply_from_row)
            .collect::<Result<_, _>>()
            .map_err(query_err("listing a meeting's replies"))
    }

    /// Marks a pending reply sent. Whether it was pending (a reply already
    /// sent or given up is left as it is).
    pub async fn mark_reply_sent(&self, id: &str, now: i64) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "UPDATE reply_outbox SET state = 'sent', sent_at = $2, attempts = attempts + 1 \
             WHERE id = $1 AND state = 'pending'",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_err("marking a reply sent"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failed attempt to send a pending reply (attempts + 1, the
    /// error cut to [`REPLY_ERROR_MAX_CHARS`] characters); with `give_up` the
    /// reply becomes `failed` and is no longer pending. Whether it was pending.
    pub async fn mark_reply_failed(
        &self,
        id: &str,
        error: &str,
        give_up: bool,
    ) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "UPDATE reply_outbox SET attempts = attempts + 1, last_error = $2, \
             state = CASE WHEN $3 = 1 THEN 'failed' ELSE state END \
             WHERE id = $1 AND state = 'pending'",
        )
        .bind(id)
        .bind(clip(error, REPLY_ERROR_MAX_CHARS))
        .bind(i64::from(give_up))
        .execute(&self.pool)
        .await
        .map_err(query_err("recording a failed reply"))?;
        Ok(done.rows_affected() == 1)
    }

    /// The integration's most recent log entries, newest first.
    pub async fn operations(
        &self,
        integration: &str,
        limit: i64,
    ) -> Result<Vec<StoredOperation>, StorageError> {
        sqlx::query(
            "SELECT transaction_uuid, integration, creation_time, success, error_code, \
             error_description, resource_id, item_id FROM scheduling_operation \
             WHERE integration = $1 ORDER BY creation_time DESC, transaction_uuid LIMIT $2",
        )
        .bind(integration)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("listing scheduling operations"))?
        .iter()
        .map(operation_from_row)
        .collect::<Result<_, _>>()
        .map_err(query_err("listing scheduling operations"))
    }

    /// When the integration last processed an item successfully.
    pub async fn last_processed(&self, integration: &str) -> Result<Option<i64>, StorageError> {
        let row =
            sqlx::query("SELECT last_processed_at FROM integration_status WHERE integration = $1")
                .bind(integration)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_err("reading when the integration last processed"))?;
        match row {
            Some(r) => r
                .try_get("last_processed_at")
                .map_err(query_err("reading when the integration last processed")),
            None => Ok(None),
        }
    }

    /// The integration's accepted series (their windows roll forward with the horizon).
    pub async fn accepted_series(
        &self,
        integration: &str,
    ) -> Result<Vec<MeetingRecord>, StorageError> {
        let sql = format!(
            "SELECT {MEETING_COLUMNS} FROM meeting WHERE integration = $1 AND is_series = 1 \
             AND state = 'accepted' ORDER BY uid"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(integration)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing accepted series"))?
            .iter()
            .map(meeting_from_row)
            .collect::<Result<_, _>>()
            .map_err(query_err("listing accepted series"))
    }

    /// How many meetings the integration has in each state.
    pub async fn count_meetings_by_state(
        &self,
        integration: &str,
    ) -> Result<BTreeMap<String, u64>, StorageError> {
        const DOING: &str = "counting meetings";
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM meeting WHERE integration = $1 GROUP BY state",
        )
        .bind(integration)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err(DOING))?;
        rows.iter()
            .map(|r| -> Result<(String, u64), sqlx::Error> {
                let n: i64 = r.try_get("n")?;
                Ok((r.try_get("state")?, u64::try_from(n).unwrap_or(0)))
            })
            .collect::<Result<_, _>>()
            .map_err(query_err(DOING))
    }
}

#[cfg(test)]
mod tests {
    use super::{clip, random_digits};

    #[test]
    fn clip_counts_characters_and_never_splits_one() {
        assert_eq!(clip("abc", 2), "ab");
        let long = "é".repeat(300);
        let cut = clip(&long, 250);
        assert_eq!(cut.chars().count(), 250);
        assert_eq!(cut.len(), 500);
        assert_eq!(clip("a\0b", 5), "a\u{FFFD}b");
        assert_eq!(clip("😀😀😀", 2), "😀😀");
    }

    #[test]
    fn random_digits_are_five_digits() {
        for _ in 0..100 {
            let d = random_digits();
            assert_eq!(d.len(), 5, "{d}");
            assert!(d.bytes().all(|b| b.is_ascii_digit()), "{d}");
        }
    }
}
