//! The mailbox processor's storage (`vmr_store::scheduling`, `sync_state`)
//! on both engines.
//!
//! Every check runs as `<check>::sqlite` (always) and `<check>::postgres`
//! (on the server `cargo xtask test` starts; `#[ignore]`d in a plain
//! `cargo test`, failing with what is missing when run without it). Rows
//! are written through [`Storage`] as the processor will; a plain pool only
//! peeks at columns the API does not return and counts rows.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use sqlx::{AnyPool, Row};
use uuid::Uuid;
use vmr_store::scheduling::{
    ALIAS_BOUND_ELSEWHERE_CODE, ALIAS_DELETED_CODE, ALIAS_UNKNOWN_CODE, ERROR_CODE_MAX_CHARS,
    ERROR_DESCRIPTION_MAX_CHARS,
};
use vmr_store::{
    AliasBinding, Commit, CommitOutcome, MeetingRecord, NewAlias, NewConference, NewReply,
    OperationRecord, Storage, WindowRecord,
};

use crate::common;

use common::TestDb;

const INTEGRATION: &str = "default";
/// A fixed "now" (Unix ms); checks move it by hand.
const T0: i64 = 1_760_000_000_000;
const HOUR: i64 = 3_600_000;

on_both_engines!(
    full_commit_writes_binding_conference_windows_reply_and_operation,
    same_commit_twice_writes_one_reply_and_one_conference,
    lower_revision_changes_nothing,
    alias_bound_elsewhere_writes_only_the_failure,
    deleted_and_unknown_aliases_are_refused,
    conference_names_are_unique_across_integrations,
    windows_are_replaced,
    delete_conference_marks_conference_and_alias,
    operation_texts_are_cut_on_character_boundaries,
    outbox_moves_from_pending_to_sent_or_failed,
    sync_states_round_trip,
    concurrent_commits_of_one_change_write_it_once,
);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Allocates an alias row for `integration`; its id.
async fn new_alias(storage: &Storage, integration: &str) -> String {
    let id = Uuid::new_v4().simple().to_string();
    let numeric = format!("88{}", &Uuid::new_v4().as_u128().to_string()[..8]);
    let alias = format!("{numeric}@vc.example.test");
    let inserted = storage
        .insert_alias_if_new(&NewAlias {
            id: &id,
            integration,
            numeric_alias: &numeric,
            alias: &alias,
            created_at: T0,
            auth_method: "EXCHANGE_USER_ID_TOKEN",
            requester_id: "user-1",
            requester_email: None,
            organizer_email: Some("ann@example.test"),
            organizer_name: None,
            subject: Some("Weekly"),
        })
        .await
        .expect("insert alias");
    assert!(inserted, "alias {numeric} was new");
    id
}

fn meeting(uid: &str, alias_id: &str, revision: i64) -> MeetingRecord {
    MeetingRecord {
        integration: INTEGRATION.into(),
        uid: uid.into(),
        alias_id: Some(alias_id.into()),
        conference_id: None,
        state: "accepted".into(),
        is_series: true,
        sequence: revision,
        revision,
        schedule_json: format!("{{\"rev\":{revision}}}"),
        fingerprint: format!("fp-{revision}"),
        organizer_email: "ann@example.test".into(),
        subject: "Weekly".into(),
        item_id: format!("AAMk-{uid}"),
        updated_at: T0 + revision,
    }
}

fn conference(alias_id: &str, name: &str) -> NewConference {
    NewConference {
        alias_id: alias_id.into(),
        name: name.into(),
        description: "Ann's weekly".into(),
        alias: "881234@vc.example.test".into(),
        numeric_alias: "881234".into(),
        theme: Some("blue".into()),
        host_identity_provider_group: None,
        non_idp_participants: "disallow_all".into(),
    }
}

/// Daily windows of one hour from `first` on.
fn windows(count: i64, first: i64) -> Vec<WindowRecord> {
    (0..count)
        .map(|i| WindowRecord {
            occurrence_index: i,
            original_start: first + i * 24 * HOUR,
            start_time: first + i * 24 * HOUR,
            end_time: first + i * 24 * HOUR + HOUR,
            subject: format!("Weekly #{i}"),
        })
        .collect()
}

fn operation(item: &str) -> OperationRecord {
    OperationRecord {
        transaction_uuid: Uuid::new_v4().to_string(),
        success: true,
        error_code: String::new(),
        error_description: String::new(),
        item_id: item.into(),
    }
}

/// A full commit binding `alias_id` to `uid` at `revision`: conference,
/// 3 windows, series state, accept reply.
fn full_commit(uid: &str, alias_id: &str, revision: i64, name: &str) -> Commit {
    let m = meeting(uid, alias_id, revision);
    Commit {
        operation: operation(&m.item_id),
        reply: Some(NewReply {
            item_id: format!("AAMk-req-{uid}-{revision}"),
            change_key: format!("CQAA-{revision}"),
            response: "accept".into(),
            body_html: "<p>Join: 881234@vc.example.test</p>".into(),
        }),
        binding: AliasBinding::Bind {
            alias_id: alias_id.into(),
        },
        conference: Some(conference(alias_id, name)),
        windows: Some(windows(3, T0 + 24 * HOUR)),
        recurring: Some((0, false)),
        delete_conference: false,
        now: T0 + 1000 * revision,
        meeting: m,
    }
}

async fn commit(storage: &Storage, c: &Commit) -> (Option<String>, Option<String>) {
    match storage.commit_scheduling(c).await.expect("commit") {
        CommitOutcome::Committed {
            conference_id,
            reply_id,
        } => (conference_id, reply_id),
        other => panic!("expected Committed, got {other:?}"),
    }
}

async fn count(pool: &AnyPool, sql: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .try_get::<i64, _>(0)
        .expect("count")
}

/// `(state, meeting_uid, conference_deletion_time)` of an alias row.
async fn alias_row(pool: &AnyPool, id: &str) -> (String, Option<String>, Option<i64>) {
    let row = sqlx::query(
        "SELECT state, meeting_uid, conference_deletion_time FROM scheduled_alias WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .expect("alias row");
    (
        row.try_get("state").expect("state"),
        row.try_get("meeting_uid").expect("meeting_uid"),
        row.try_get("conference_deletion_time")
            .expect("conference_deletion_time"),
    )
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

async fn full_commit_writes_binding_conference_windows_reply_and_operation(db: &TestDb) {
    let e = db.engine;
    let storage = db.open(4).await;
    let raw = db.raw().await;
    let alias_id = new_alias(&storage, INTEGRATION).await;
    assert_eq!(
        storage.last_processed(INTEGRATION).await.expect("status"),
        None
    );
    let c = full_commit("uid-1", &alias_id, 1, "Weekly (Ann)");

    let (conference_id, reply_id) = commit(&storage, &c).await;
    let conference_id = conference_id.unwrap_or_else(|| panic!("[{e}] no conference id"));
    let reply_id = reply_id.unwrap_or_else(|| panic!("[{e}] no reply id"));

    assert_eq!(
        alias_row(&raw, &alias_id).await,
        ("bound".to_string(), Some("uid-1".to_string()), None),
        "[{e}] alias bound to the meeting"
    );
    let conf = storage
        .conference_for_alias(&alias_id)
        .await
        .expect("conference")
        .unwrap_or_else(|| panic!("[{e}] no conference for the alias"));
    assert_eq!(conf.id, conference_id);
    assert_eq!(conf.name, "Weekly (Ann)", "[{e}] a free name is kept");
    assert_eq!(conf.integration, INTEGRATION);
    assert_eq!(conf.theme.as_deref(), Some("blue"));
    assert_eq!(conf.host_identity_provider_group, None);
    assert_eq!(conf.non_idp_participants, "disallow_all");
    assert_eq!(conf.created_at, c.now);
    assert_eq!(conf.deletion_time, None);
    assert_eq!(
        storage.conference(&conference_id).await.expect("by id"),
        Some(conf)
    );

    let stored = storage
        .meeting(INTEGRATION, "uid-1")
        .await
        .expect("meeting")
        .unwrap_or_else(|| panic!("[{e}] meeting not stored"));
    let mut expected = c.meeting.clone();
    expected.conference_id = Some(conference_id.clone());
    assert_eq!(stored, expected, "[{e}] meeting stored as given");

    assert_eq!(
        storage
            .windows(INTEGRATION, "uid-1")
            .await
            .expect("windows"),
        windows(3, T0 + 24 * HOUR)
    );
    assert_eq!(
        count(
            &raw,
            &format!(
                "SELECT COUNT(*) FROM scheduled_conference WHERE conference_id = '{conference_id}' \
                 AND recurring_conference_id IS NOT NULL"
            )
        )
        .await,
        3,
        "[{e}] windows belong to the conference and the series"
    );
    assert_eq!(
        count(&raw, "SELECT COUNT(*) FROM recurring_conference").await,
        1
    );

    let replies = storage
        .replies_for_meeting(INTEGRATION, "uid-1")
        .await
        .expect("replies");
    assert_eq!(replies.len(), 1, "[{e}] one reply");
    let reply = &replies[0];
    assert_eq!(reply.id, reply_id);
    assert_eq!(
        (reply.revision, reply.state.as_str(), reply.attempts),
        (1, "pending", 0)
    );
    assert_eq!(reply.response, "accept");
    assert_eq!(reply.change_key, "CQAA-1");
    assert_eq!(reply.created_at, c.now);
    assert_eq!(
        storage
            .pending_replies(INTEGRATION, 10)
            .await
            .expect("pending"),
        replies
    );

    let ops = storage.operations(INTEGRATION, 10).await.expect("ops");
    assert_eq!(ops.len(), 1, "[{e}] one operation");
    assert_eq!(ops[0].operation, c.operation);
    assert_eq!(ops[0].resource_id, "uid-1");
    assert_eq!(ops[0].creation_time, c.now);

    assert_eq!(
        storage.last_processed(INTEGRATION).await.expect("status"),
        Some(c.now)
    );
    assert_eq!(
        storage
            .count_meetings_by_state(INTEGRATION)
            .await
            .expect("counts"),
        BTreeMap::from([("accepted".to_string(), 1)])
    );
}

async fn same_commit_twice_writes_one_reply_and_one_conference(db: &TestDb) {
    let e = db.engine;
    let storage = db.open(4).await;
    let raw = db.raw().await;
    let alias_id = new_alias(&storage, INTEGRATION).await;
    let c = full_commit("uid-1", &alias_id, 1, "Weekly");

    let (first_conf, first_reply) = commit(&storage, &c).await;
    let (second_conf, second_reply) = commit(&storage, &c).await;
    assert!(
        first_reply.is_some(),
        "[{e}] the first commit queues the reply"
    );
    assert_eq!(second_reply, None, "[{e}] the repeat queues none");
    assert_eq!(first_conf, second_conf, "[{e}] the conference is reused");

    assert_eq!(count(&raw, "SELECT COUNT(*) FROM conference").await, 1);
    assert_eq!(count(&raw, "SELECT COUNT(*) FROM reply_outbox").await, 1);
    assert_eq!(
        count(&raw, "SELECT COUNT(*) FROM scheduling_operation").await,
        1
    );
    assert_eq!(
        count(&raw, "SELECT COUNT(*) FROM scheduled_conference").await,
        3
    );
    assert_eq!(
        count(&raw, "SELECT COUNT(*) FROM recurring_conference").await,
        1
    );
    let conf = storage
        .conference_for_alias(&alias_id)
        .await
        .expect("conference")
        .expect("exists");
    assert_eq!(conf.name, "Weekly", "[{e}] the repeat does not rename");

    // The next change (revision 2) queues its own reply and keeps the conference.
    let next = full_commit("uid-1", &alias_id, 2, "Weekly");
    let (next_conf, next_reply) = commit(&storage, &next).await;
    assert_eq!(next_conf, first_conf);
    assert!(next_reply.is_some(), "[{e}] revision 2 gets its reply");
    let revisions: Vec<i64> = storage
        .replies_for_meeting(INTEGRATION, "uid-1")
        .await
        .expect("replies")
        .iter()
        .map(|r| r.revision)
        .collect();
    assert_eq!(revisions, vec![1, 2]);
}

async fn lower_revision_changes_nothing(db: &TestDb) {
    let e = db.engine;
    let storage = db.open(4).await;
    let raw = db.raw().await;
    let alias_id = new_alias(&storage, INTEGRATION).await;
    let newer = full_commit("uid-1", &alias_id, 3, "Weekly");
    let (conference_id, _) = commit(&storage, &newer).await;

    let mut older = full_commit("uid-1", &alias_id, 2, "Renamed");
    older.meeting.subject = "Old subject".into();
    older.meeting.state = "declined".into();
    older.windows = Some(windows(1, T0 + 100 * HOUR));
    older.delete_conference = true;
    let outcome = storage.commit_scheduling(&older).await.expect("commit");
    assert_eq!(
        outcome,
        CommitOutcome::Committed {
            conference_id: conference_id.clone(),
            reply_id: None
        },
        "[{e}] a stale commit answers with the stored conference and no reply"
    );

    let mut expected = newer.meeting.clone();
    expected.conference_id = conference_id.clone();
    assert_eq!(
        storage
            .meeting(INTEGRATION, "uid-1")
            .await
            .expect("meeting"),
        Some(expected),
        "[{e}] the meeting keeps revision 3"
    );
    assert_eq!(
        storage
            .windows(INTEGRATION, "uid-1")
            .await
            .expect("windows"),
        windows(3, T0 + 24 * HOUR),
        "[{e}] windows unchanged"
    );
    let replies = storage
        .replies_for_meeting(INTEGRATION, "uid-1")
        .await
        .expect("replies");
    assert_eq!(
        replies.iter().map(|r| r.revision).collect::<Vec<_>>(),
        vec![3]
    );
    let conf = storage
        .conference_for_alias(&alias_id)
        .await
        .expect("conference")
        .expect("exists");
    assert_eq!(
        (conf.name.as_str(), conf.deletion_time),
        ("Weekly", None),
        "[{e}] conference neither renamed nor deleted"
    );
    assert_eq!(alias_row(&raw, &alias_id).await.0, "bound");
    assert_eq!(
        storage.last_processed(INTEGRATION).await.expect("status"),
        Some(newer.now),
        "[{e}] a stale commit does not count as processing"
    );
    assert_eq!(count(&raw, "SELECT COUNT(*) FROM conference").await, 1);
    // The stale commit is logged.
    assert_eq!(
        storage
            .operations(INTEGRATION, 10)
            .await
            .expect("ops")
            .len(),
        2
    );
}

async fn alias_bound_elsewhere_writes_only_the_failure(db: &TestDb) {
    let e = db.engine;
    let storage = db.open(4).await;
    let raw = db.raw().await;
    let alias_id = new_alias(&storage, INTEGRATION).await;
    let first = full_commit("uid-a", &alias_id, 1, "Weekly");
    commit(&storage, &first).await;

    let thief = full_commit("uid-b", &alias_id, 1, "Other");
    let outcome = storage.commit_scheduling(&thief).await.expect("commit");
    assert_eq!(
        outcome,
        CommitOutcome::AliasBoundElsewhere {
            other_uid: "uid-a".into()
        },
        "[{e}]"
    );
    assert_eq!(
        storage
            .meeting(INTEGRATION, "uid-b")
            .await
            .expect("meeting"),
        None
    );
    assert!(storage
        .windows(INTEGRATION, "uid-b")
        .await
        .expect("windows")
        .is_empty());
    assert!(storage
        .replies_for_meeting(INTEGRATION, "uid-b")
        .await
        .expect("replies")
        .is_empty());
    assert_eq!(count(&raw, "SELECT COUNT(*) FROM conference").await, 1);
    assert_eq!(
        count(&raw, "SELECT COUNT(*) FROM recurring_conference").await,
        1
    );
    assert_eq!(
        alias_row(&raw, &alias_id).await,
        ("bound".to_string(), Some("uid-a".to_string()), None)
    );
    assert_eq!(
        storage.last_processed(INTEGRATION).await.expect("status"),
        Some(first.now),
        "[{e}] the refused commit is not a processed item"
    );

    let ops = storage.operations(INTEGRATION, 10).await.expect("ops");
    let failure = ops
        .iter()
        .find(|o| o.resource_id == "uid-b")
        .unwrap_or_else(|| panic!("[{e}] no operation for uid-b: {ops:?}"));
    assert!(!failure.operation.success);
    assert_eq!(failure.operation.error_code, ALIAS_BOUND_ELSEWHERE_CODE);
    assert!(
        failure.operation.error_description.contains("uid-a"),
        "{failure:?}"
    );
    assert_eq!(
        failure.operation.transaction_uuid,
        thief.operation.transaction_uuid
    );

    // The processor then declines under the same transaction uuid: the log
    // entry now says what finally happened.
    let decline = Commit {
        binding: AliasBinding::None,
        conference: None,
        windows: None,
        recurring: None,
        meeting: MeetingRecord {
            alias_id: None,
            state: "declined".into(),
            ..thief.meeting.clone()
        },
        ..thief.clone()
    };
    let (conference_id, reply_id) = commit(&storage, &decline).await;
    assert_eq!(conference_id, None);
    assert!(reply_id.is_some());
    let ops = storage.operations(INTEGRATION, 10).await.expect("ops");
    assert_eq!(ops.len(), 2, "[{e}] one entry per transaction uuid");
    assert!(ops.iter().all(|o| o.operation.success), "{ops:?}");
    assert_eq!(
        storage
            .count_meetings_by_state(INTEGRATION)
            .await
            .expect("counts"),
        BTreeMap::from([("accepted".to_string(), 1), ("declined".to_string(), 1)])
    );
}

async fn deleted_and_unknown_aliases_are_refused(db: &TestDb) {
    let e = db.engine;
    let storage = db.open(4).await;
    let raw = db.raw().await;
    let alias_id = new_alias(&storage, INTEGRATION).await;
    commit(&storage, &full_commit("uid-a", &alias_id, 1, "Weekly")).await;

    // Cancelled: the alias is retired with its conference.
    let mut cancel = full_commit("uid-a", &alias_id, 2, "Weekly");
    cancel.meeting.state = "cancelled".into();
    cancel.binding = AliasBinding::Delete {
        alias_id: alias_id.clone(),
    };
    cancel.conference = None;
    cancel.windows = Some(vec![]);
    cancel.recurring = None;
    cancel.reply = None;
    let (conference_id, reply_id) = commit(&storage, &cancel).await;
    assert_eq!(reply_id, None);
    assert!(
        conference_id.is_none(),
        "[{e}] the cancel names no conference"
    );
    assert_eq!(
        alias_row(&raw, &alias_id).await,
        (
            "deleted".to_string(),
            Some("uid-a".to_string()),
            Some(cancel.now)
        )
    );
    let conf = storage
        .conference_for_alias(&alias_id)
        .await
        .expect("conference")
        .expect("kept as a record");
    assert_eq!(conf.deletion_time, Some(cancel.now));

    // Neither the same meeting nor another may bind the deleted alias.
    for uid in ["uid-a", "uid-b"] {
        let again = full_commit(uid, &alias_id, 3, "Weekly");
        let outcome = storage.commit_scheduling(&again).await.expect("commit");
        assert_eq!(outcome, CommitOutcome::AliasDeleted, "[{e}] {uid}");
    }
    assert_eq!(
        storage
            .meeting(INTEGRATION, "uid-a")
            .await
            .expect("meeting")
            .map(|m| m.state),
        Some("cancelled".to_string()),
        "[{e}] the refused commit left the cancelled meeting"
    );
    assert_eq!(
        storage
            .meeting(INTEGRATION, "uid-b")
            .await
            .expect("meeting"),
        None
    );
    assert_eq!(count(&raw, "SELECT COUNT(*) FROM conference").await, 1);
    assert_eq!(count(&raw, "SELECT COUNT(*) FROM reply_outbox").await, 1);

    // An alias id no one issued, and one issued by another integration.
    let foreign = new_alias(&storage, "other").await;
    for id in ["0123456789abcdef0123456789abcdef", foreign.as_str()] {
        let c = full_commit("uid-c", id, 1, "Weekly");
        let outcome = storage.commit_scheduling(&c).await.expect("commit");
        assert_eq!(outcome, CommitOutcome::AliasDeleted, "[{e}] {id}");
    }
    assert_eq!(
        alias_row(&raw, &foreign).await,
        ("allocated".to_string(), None, None)
    );
    let ops = storage.operations(INTEGRATION, 20).await.expect("ops");
    let codes: HashSet<&str> = ops
        .iter()
        .filter(|o| !o.operation.success)
        .map(|o| o.operation.error_code.as_str())
        .collect();
    assert_eq!(
        codes,
        HashSet::from([ALIAS_DELETED_CODE, ALIAS_UNKNOWN_CODE]),
        "[{e}]"
    );
}

async fn conference_names_are_unique_across_integrations(db: &TestDb) {
    let e = db.engine;
    let storage = db.open(4).await;
    let mut names = Vec::new();
    for (i, integration) in ["default", "default", "default", "other"]
        .into_iter()
        .enumerate()
    {
        let alias_id = new_alias(&storage, integration).await;
        let mut c = full_commit(&format!("uid-{i}"), &alias_id, 1, "Weekly (Ann)");
        c.meeting.integration = integration.into();
        let (conference_id, _) = commit(&storage, &c).await;
        let conf = storage
            .conference(&conference_id.expect("conference id"))
            .await
            .expect("conference")
            .expect("exists");
        names.push((integration, conf.name));
    }
    assert_eq!(
        names[0].1, "Weekly (Ann)",
        "[{e}] the first keeps the base name"
    );
    for (_, name) in &names[1..] {
        let suffix = name
            .strip_prefix("Weekly (Ann) ")
            .unwrap_or_else(|| panic!("[{e}] {name:?} does not extend the base name"));
        assert!(
            suffix.len() == 5 && suffix.bytes().all(|b| b.is_ascii_digit()),
            "[{e}] {name:?}: suffix is not 5 digits"
        );
    }
    // Infinity's service names are platform-wide: another integration gets its own too.
    let distinct: HashSet<&str> = names.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(distinct.len(), 4, "[{e}] {names:?}");
}

async fn windows_are_replaced(db: &TestDb) {
    let e = db.engine;
    let storage = db.open(4).await;
    let raw = db.raw().await;
    let alias_id = new_alias(&storage, INTEGRATION).await;
    let first = full_commit("uid-1", &alias_id, 1, "Weekly");
    let (conference_id, _) = commit(&storage, &first).await;
    assert_eq!(
        storage
            .windows(INTEGRATION, "uid-1")
            .await
            .expect("w")
            .len(),
        3
    );

    // Revision 2 moves the series: two windows a week later.
    let mut moved = full_commit("uid-1", &alias_id, 2, "Weekly");
    moved.windows = Some(windows(2, T0 + 7 * 24 * HOUR));
    moved.recurring = Some((1, true));
    moved.meeting.conference_id = conference_id.clone();
    moved.conference = None;
    commit(&storage, &moved).await;
    assert_eq!(
        storage.windows(INTEGRATION, "uid-1").await.expect("w"),
        windows(2, T0 + 7 * 24 * HOUR),
        "[{e}]"
    );
    let series = sqlx::query("SELECT current_index, is_depleted FROM recurring_conference")
        .fetch_one(&raw)
        .await
        .expect("series row");
    assert_eq!(
        (
            series.try_get::<i64, _>("current_index").expect("index"),
            series.try_get::<i64, _>("is_depleted").expect("depleted")
        ),
        (1, 1),
        "[{e}] the series row is updated in place"
    );

    // None leaves them.
    let mut untouched = moved.clone();
    untouched.meeting.revision = 3;
    untouched.windows = None;
    untouched.reply = None;
    commit(&storage, &untouched).await;
    assert_eq!(
        storage
            .windows(INTEGRATION, "uid-1")
            .await
            .expect("w")
            .len(),
        2
    );

    // Some(empty) removes them.
    let mut emptied = untouched.clone();
    emptied.meeting.revision = 4;
    emptied.windows = Some(vec![]);
    commit(&storage, &emptied).await;
    assert!(storage
        .windows(INTEGRATION, "uid-1")
        .await
        .expect("w")
        .is_empty());
    assert_eq!(
        count(&raw, "SELECT COUNT(*) FROM scheduled_conference").await,
        0
    );

    // Windows without any conference are refused before anything is written.
    let mut orphan = emptied.clone();
    orphan.meeting.revision = 5;
    orphan.meeting.conference_id = None;
    orphan.windows = Some(windows(1, T0));
    orphan.recurring = None;
    let err = storage
        .commit_scheduling(&orphan)
        .await
        .expect_err("windows without a conference");
    assert!(
        err.to_string().contains("without a conference"),
        "[{e}] {err}"
    );
    assert_eq!(
        storage
            .meeting(INTEGRATION, "uid-1")
            .await
            .expect("m")
            .map(|m| m.revision),
        Some(4)
    );
}

async fn delete_conference_marks_conference_and_alias(db: &TestDb) {
    let e = db.engine;
    let storage = db.open(4).await;
    let raw = db.raw().await;
    let alias_id = new_alias(&storage, INTEGRATION).await;
    let (conference_id, _) = commit(&storage, &full_commit("uid-1", &alias_id, 1, "Weekly")).await;
    let conference_id = conference_id.expect("conference id");

    let mut cancel = full_commit("uid-1", &alias_id, 2, "Weekly");
    cancel.binding = AliasBinding::None;
    cancel.conference = None;
    cancel.meeting.conference_id = Some(conference_id.clone());
    cancel.meeting.state = "cancelled".into();
    cancel.windows = Some(vec![]);
    cancel.recurring = None;
    cancel.delete_conference = true;
    cancel.reply = Some(NewReply {
        item_id: "AAMk-cancel".into(),
        change_key: "CQAA-2".into(),
        response: "remove".into(),
        body_html: String::new(),
    });
    let (kept, reply_id) = commit(&storage, &cancel).await;
    assert_eq!(kept.as_deref(), Some(conference_id.as_str()));
    assert!(reply_id.is_some());

    let conf = storage
        .conference(&conference_id)
        .await
        .expect("conference")
        .expect("exists");
    assert_eq!(conf.deletion_time, Some(cancel.now), "[{e}]");
    assert_eq!(
        alias_row(&raw, &alias_id).await,
        (
            "deleted".to_string(),
            Some("uid-1".to_string()),
            Some(cancel.now)
        ),
        "[{e}]"
    );
    assert!(storage
        .windows(INTEGRATION, "uid-1")
        .await
        .expect("w")
        .is_empty());

    // Deleting again keeps the first deletion time.
    let mut again = cancel.clone();
    again.meeting.revision = 3;
    again.now += 5000;
    again.reply = None;
    commit(&storage, &again).await;
    let conf = storage
        .conference(&conference_id)
        .await
        .expect("conference")
        .expect("exists");
    assert_eq!(conf.deletion_time, Some(cancel.now));
    assert_eq!(alias_row(&raw, &alias_id).await.2, Some(cancel.now));
}

async fn operation_texts_are_cut_on_character_boundaries(db: &TestDb) {
    let e = db.engine;
    let storage = db.open(4).await;
    // Two-, three- and four-byte characters, longer than the limits.
    let code = "ü".repeat(ERROR_CODE_MAX_CHARS + 10);
    let description = "日本😀".repeat(ERROR_DESCRIPTION_MAX_CHARS);
    let op = OperationRecord {
        transaction_uuid: Uuid::new_v4().to_string(),
        success: false,
        error_code: code.clone(),
        error_description: description.clone(),
        item_id: "AAMk-1".into(),
    };
    storage
        .record_operation(INTEGRATION, "uid-1", &op, T0)
        .await
        .expect("record");

    // And through a commit: its operation goes through the same cut.
    let alias_id = new_alias(&storage, INTEGRATION).await;
    let mut c = full_commit("uid-2", &alias_id, 1, "Weekly");
    c.operation.success = false;
    c.operation.error_code = code.clone();
    c.operation.error_description = description.clone();
    c.binding = AliasBinding::None;
    commit(&storage, &c).await;

    let ops = storage.operations(INTEGRATION, 10).await.expect("ops");
    assert_eq!(ops.len(), 2, "[{e}]");
    for stored in &ops {
        let o = &stored.operation;
        assert_eq!(o.error_code.chars().count(), ERROR_CODE_MAX_CHARS, "[{e}]");
        assert_eq!(o.error_code, "ü".repeat(ERROR_CODE_MAX_CHARS));
        assert_eq!(
            o.error_description.chars().count(),
            ERROR_DESCRIPTION_MAX_CHARS,
            "[{e}]"
        );
        assert!(description.starts_with(&o.error_description), "[{e}]");
        assert!(!o.success);
    }
    let recorded = ops
        .iter()
        .find(|o| o.resource_id == "uid-1")
        .expect("recorded op");
    assert_eq!(recorded.creation_time, T0);
    assert_eq!(recorded.integration, INTEGRATION);

    // Short texts and NUL characters (PostgreSQL refuses NUL in text).
    let short = OperationRecord {
        transaction_uuid: Uuid::new_v4().to_string(),
        success: false,
        error_code: "EWS\0ERR".into(),
        error_description: "ok".into(),
        item_id: String::new(),
    };
    storage
        .record_operation(INTEGRATION, "uid-3", &short, T0 + 5000)
        .await
        .unwrap_or_else(|err| panic!("[{e}] NUL in an error code: {err}"));
    let ops = storage.operations(INTEGRATION, 1).await.expect("ops");
    assert_eq!(ops[0].resource_id, "uid-3", "[{e}] newest first");
    assert_eq!(ops[0].operation.error_code, "EWS\u{FFFD}ERR");
    assert_eq!(ops[0].operation.error_description, "ok");
}

async fn outbox_moves_from_pending_to_sent_or_failed(db: &TestDb) {
    let e = db.engine;
    let storage = db.open(4).await;
    let mut ids = Vec::new();
    for uid in ["uid-1", "uid-2", "uid-3"] {
        let alias_id = new_alias(&storage, INTEGRATION).await;
        let (_, reply_id) = commit(&storage, &full_commit(uid, &alias_id, 1, uid)).await;
        ids.push(reply_id.expect("reply id"));
    }
    let pending = storage.pending_replies(INTEGRATION, 10).await.expect("p");
    assert_eq!(
        pending.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        ids,
        "[{e}] oldest first"
    );
    assert_eq!(
        storage
            .pending_replies(INTEGRATION, 2)
            .await
            .expect("p")
            .len(),
        2,
        "[{e}] limit"
    );
    assert!(storage
        .pending_replies("other", 10)
        .await
        .expect("p")
        .is_empty());

    // Sent.
    assert!(storage
        .mark_reply_sent(&ids[0], T0 + 50)
        .await
        .expect("sent"));
    assert!(
        !storage
            .mark_reply_sent(&ids[0], T0 + 60)
            .await
            .expect("sent"),
        "[{e}] a sent reply is not sent again"
    );
    // A transient failure keeps it pending; giving up makes it failed.
    assert!(storage
        .mark_reply_failed(&ids[1], "ErrorServerBusy", false)
        .await
        .expect("failed"));
    assert!(storage
        .mark_reply_failed(&ids[2], "ErrorItemNotFound", true)
        .await
        .expect("failed"));
    assert!(
        !storage
            .mark_reply_failed(&ids[2], "again", true)
            .await
            .expect("failed"),
        "[{e}] a failed reply stays as it is"
    );
    assert!(!storage.mark_reply_sent(&ids[2], T0).await.expect("sent"));

    let reply = |uid: &'static str| {
        let storage = storage.clone();
        async move {
            storage
                .replies_for_meeting(INTEGRATION, uid)
                .await
                .expect("replies")
                .remove(0)
        }
    };
    let sent = reply("uid-1").await;
    assert_eq!(
        (sent.state.as_str(), sent.sent_at, sent.attempts),
        ("sent", Some(T0 + 50), 1),
        "[{e}]"
    );
    let retry = reply("uid-2").await;
    assert_eq!(
        (
            retry.state.as_str(),
            retry.attempts,
            retry.last_error.as_deref()
        ),
        ("pending", 1, Some("ErrorServerBusy")),
        "[{e}]"
    );
    let given_up = reply("uid-3").await;
    assert_eq!(
        (
            given_up.state.as_str(),
            given_up.attempts,
            given_up.last_error.as_deref(),
            given_up.sent_at
        ),
        ("failed", 1, Some("ErrorItemNotFound"), None),
        "[{e}]"
    );
    let pending = storage.pending_replies(INTEGRATION, 10).await.expect("p");
    assert_eq!(
        pending.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![ids[1].clone()],
        "[{e}] only the retried reply is still pending"
    );
}

async fn sync_states_round_trip(db: &TestDb) {
    let e = db.engine;
    let storage = db.open(4).await;
    assert_eq!(
        storage.sync_state("default", "calendar").await.expect("s"),
        None
    );
    storage
        .save_sync_state("default", "calendar", "H4sIAAAA-1", T0)
        .await
        .expect("save");
    storage
        .save_sync_state("default", "inbox", "H4sIAAAA-inbox", T0)
        .await
        .expect("save");
    storage
        .save_sync_state("other", "calendar", "H4sIAAAA-other", T0)
        .await
        .expect("save");
    assert_eq!(
        storage
            .sync_state("default", "calendar")
            .await
            .expect("s")
            .as_deref(),
        Some("H4sIAAAA-1"),
        "[{e}]"
    );
    storage
        .save_sync_state("default", "calendar", "H4sIAAAA-2", T0 + 1)
        .await
        .expect("save");
    assert_eq!(
        storage
            .sync_state("default", "calendar")
            .await
            .expect("s")
            .as_deref(),
        Some("H4sIAAAA-2"),
        "[{e}] replaced"
    );
    storage.clear_sync_states("default").await.expect("clear");
    assert_eq!(
        storage.sync_state("default", "calendar").await.expect("s"),
        None
    );
    assert_eq!(
        storage.sync_state("default", "inbox").await.expect("s"),
        None
    );
    assert_eq!(
        storage
            .sync_state("other", "calendar")
            .await
            .expect("s")
            .as_deref(),
        Some("H4sIAAAA-other"),
        "[{e}] another integration's state stays"
    );
}

/// Commits `c` from `tasks` tasks at once, alternating between the handles;
/// the conference ids they answer and how many of them created the reply.
async fn commit_concurrently(
    e: &str,
    handles: &[Storage; 2],
    c: Commit,
    tasks: usize,
) -> (HashSet<Option<String>>, usize) {
    let c = Arc::new(c);
    let running: Vec<_> = (0..tasks)
        .map(|t| {
            let storage = handles[t % 2].clone();
            let c = Arc::clone(&c);
            tokio::spawn(async move { storage.commit_scheduling(&c).await })
        })
        .collect();
    let mut conferences = HashSet::new();
    let mut replies = 0;
    for task in running {
        match task.await.expect("task").unwrap_or_else(|err| {
            panic!("[{e}] {} rev {}: {err}", c.meeting.uid, c.meeting.revision)
        }) {
            CommitOutcome::Committed {
                conference_id,
                reply_id,
            } => {
                conferences.insert(conference_id);
                replies += usize::from(reply_id.is_some());
            }
            other => panic!("[{e}] {}: {other:?}", c.meeting.uid),
        }
    }
    (conferences, replies)
}

async fn concurrent_commits_of_one_change_write_it_once(db: &TestDb) {
    let e = db.engine;
    // Two handles, as two management processes would have.
    let handles = [db.open(4).await, db.open(4).await];
    let raw = db.raw().await;
    const ROUNDS: usize = 5;
    const TASKS: usize = 8;
    for round in 0..ROUNDS {
        let uid = format!("uid-{round}");
        let alias_id = new_alias(&handles[0], INTEGRATION).await;
        // Revision 1 binds the alias and creates the conference.
        let first = full_commit(&uid, &alias_id, 1, "Weekly");
        let (conferences, replies) = commit_concurrently(e, &handles, first, TASKS).await;
        assert_eq!(conferences.len(), 1, "[{e}] round {round}: {conferences:?}");
        assert_eq!(
            replies, 1,
            "[{e}] round {round}: replies created for revision 1"
        );
        let conference_id = conferences.into_iter().next().flatten();
        assert!(
            conference_id.is_some(),
            "[{e}] round {round}: no conference"
        );

        // Revision 2 leaves the alias alone and moves the windows.
        let mut second = full_commit(&uid, &alias_id, 2, "Weekly");
        second.binding = AliasBinding::None;
        second.conference = None;
        second.meeting.conference_id = conference_id.clone();
        second.windows = Some(windows(2, T0 + 7 * 24 * HOUR));
        second.recurring = Some((1, false));
        let (conferences, replies) = commit_concurrently(e, &handles, second, TASKS).await;
        assert_eq!(
            conferences,
            HashSet::from([conference_id.clone()]),
            "[{e}] round {round}"
        );
        assert_eq!(
            replies, 1,
            "[{e}] round {round}: replies created for revision 2"
        );
        assert_eq!(
            handles[1]
                .windows(INTEGRATION, &uid)
                .await
                .expect("windows"),
            windows(2, T0 + 7 * 24 * HOUR),
            "[{e}] round {round}"
        );

        // Revisions 3 and 4 race: whatever the order, revision 4's state wins
        // (a commit that finds a newer revision stored changes nothing).
        let changed = |revision: i64, first: i64| {
            let mut c = full_commit(&uid, &alias_id, revision, "Weekly");
            c.binding = AliasBinding::None;
            c.conference = None;
            c.meeting.conference_id = conference_id.clone();
            c.windows = Some(windows(revision, first));
            c.recurring = Some((revision, false));
            c
        };
        let third = changed(3, T0 + 30 * 24 * HOUR);
        let fourth = changed(4, T0 + 60 * 24 * HOUR);
        let (third_task, fourth_task) = tokio::join!(
            commit_concurrently(e, &handles, third, TASKS / 2),
            commit_concurrently(e, &handles, fourth, TASKS / 2),
        );
        assert_eq!(fourth_task.1, 1, "[{e}] round {round}: revision 4 replies");
        assert!(third_task.1 <= 1, "[{e}] round {round}: revision 3 replies");
        let stored = handles[0]
            .meeting(INTEGRATION, &uid)
            .await
            .expect("meeting")
            .expect("stored");
        assert_eq!(stored.revision, 4, "[{e}] round {round}");
        assert_eq!(
            handles[0]
                .windows(INTEGRATION, &uid)
                .await
                .expect("windows"),
            windows(4, T0 + 60 * 24 * HOUR),
            "[{e}] round {round}: revision 4's windows"
        );
        let series =
            sqlx::query("SELECT current_index FROM recurring_conference WHERE meeting_uid = $1")
                .bind(&uid)
                .fetch_one(&raw)
                .await
                .expect("series");
        assert_eq!(
            series.try_get::<i64, _>("current_index").expect("index"),
            4,
            "[{e}] round {round}: revision 4's series state"
        );
    }
    assert_eq!(
        count(&raw, "SELECT COUNT(*) FROM conference").await,
        ROUNDS as i64
    );
    assert_eq!(
        count(
            &raw,
            "SELECT COUNT(*) FROM reply_outbox WHERE revision IN (1, 2, 4)"
        )
        .await,
        3 * ROUNDS as i64
    );
    assert_eq!(
        count(&raw, "SELECT COUNT(*) FROM meeting WHERE revision = 4").await,
        ROUNDS as i64
    );
    assert_eq!(
        count(&raw, "SELECT COUNT(*) FROM scheduled_conference").await,
        4 * ROUNDS as i64
    );
    assert_eq!(
        count(&raw, "SELECT COUNT(*) FROM recurring_conference").await,
        ROUNDS as i64
    );
    assert_eq!(
        count(&raw, "SELECT COUNT(*) FROM scheduling_operation").await,
        4 * ROUNDS as i64
    );
    let names: HashSet<String> = sqlx::query("SELECT name FROM conference")
        .fetch_all(&raw)
        .await
        .expect("names")
        .iter()
        .map(|r| r.try_get("name").expect("name"))
        .collect();
    assert_eq!(names.len(), ROUNDS, "[{e}] {names:?}");
}
