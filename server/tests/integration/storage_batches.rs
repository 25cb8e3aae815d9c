//! Group commit with bad rows in the group, on both engines, and the alias
//! API refusing control characters before anything is stored.
//!
//! The storage checks run as `<check>::sqlite` (a fresh database file, always)
//! and `<check>::postgres` (a fresh database on the server named by
//! `VMR_TEST_POSTGRES_URL`; ignored unless asked for, and failing when asked
//! for without that variable — `cargo xtask test` starts a server and sets
//! it). Each check queues all of its rows before the writer task runs (a
//! current-thread runtime runs the writer only when the test task waits), so
//! the rows form one group commit.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sqlx::{AnyConnection, Connection, Row};
use uuid::Uuid;
use vmr_core::config::{Config, Role};
use vmr_server::app::{serve, App};
use vmr_simulator::exchange_identity::IdentityClaims;
use vmr_store::{NewAlias, Storage, StorageError};

use crate::common;

use common::TestDb;

use crate::in_process;

const INTEGRATION: &str = "batches";
/// Good rows queued around the bad one (well under one group's 256 rows).
const GOOD_ROWS: usize = 120;

on_both_engines!(
    current_thread:
    a_nul_in_one_row_fails_only_that_row,
    a_row_the_database_refuses_fails_only_that_row,
    conflicting_draws_in_one_group_are_reported,
);

// ---------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------

/// The owned values of one alias row.
#[derive(Debug, Clone)]
struct TestRow {
    id: String,
    numeric_alias: String,
    alias: String,
    subject: String,
    organizer_name: String,
}

impl TestRow {
    fn new(numeric: u32) -> TestRow {
        let numeric_alias = format!("77{numeric:06}");
        TestRow {
            id: Uuid::new_v4().simple().to_string(),
            alias: format!("{numeric_alias}@vc.example.test"),
            numeric_alias,
            subject: format!("Meeting {numeric}"),
            organizer_name: "Bob Boss".into(),
        }
    }

    fn as_new(&self) -> NewAlias<'_> {
        NewAlias {
            id: &self.id,
            integration: INTEGRATION,
            numeric_alias: &self.numeric_alias,
            alias: &self.alias,
            created_at: now(),
            auth_method: "EXCHANGE_USER_ID_TOKEN",
            requester_id: "ann@example.com",
            requester_email: Some("ann@example.com"),
            organizer_email: Some("bob@example.com"),
            organizer_name: Some(&self.organizer_name),
            subject: Some(&self.subject),
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Inserts all `rows` at once: every insert is queued before the writer
/// runs, so they share one group commit. Answers in the order of `rows`.
async fn insert_together(storage: &Storage, rows: &[TestRow]) -> Vec<Result<bool, StorageError>> {
    let mut tasks = Vec::new();
    for row in rows {
        let storage = storage.clone();
        let row = row.clone();
        tasks.push(tokio::spawn(async move {
            storage.insert_alias_if_new(&row.as_new()).await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("insert task"));
    }
    answers
}

/// `GOOD_ROWS` good rows with `bad` in the middle.
fn good_rows_around(bad: TestRow) -> (Vec<TestRow>, usize) {
    let mut rows: Vec<TestRow> = (0..GOOD_ROWS as u32).map(TestRow::new).collect();
    let at = GOOD_ROWS / 2;
    rows.insert(at, bad);
    (rows, at)
}

/// The ids stored for the test integration.
async fn stored_ids(db: &TestDb) -> HashSet<String> {
    let mut conn = AnyConnection::connect(&db.url)
        .await
        .unwrap_or_else(|e| panic!("[{}] connect: {e}", db.engine));
    let rows = sqlx::query("SELECT id FROM scheduled_alias WHERE integration = $1")
        .bind(INTEGRATION)
        .fetch_all(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("[{}] select: {e}", db.engine));
    conn.close().await.ok();
    rows.iter()
        .map(|r| r.try_get::<String, _>("id").expect("id"))
        .collect()
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// One row with a NUL in its subject (PostgreSQL refuses NUL in text, which
/// used to fail the whole group): only that row fails, naming the field.
async fn a_nul_in_one_row_fails_only_that_row(db: &TestDb) {
    let storage = db.open(4).await;
    let mut bad = TestRow::new(999_999);
    bad.subject = "Weekly\0sync".into();
    let (rows, at) = good_rows_around(bad);
    let answers = insert_together(&storage, &rows).await;
    for (i, answer) in answers.iter().enumerate() {
        if i == at {
            assert!(
                matches!(answer, Err(StorageError::NulInText { field: "subject" })),
                "[{}] the NUL row: {answer:?}",
                db.engine
            );
        } else {
            assert!(
                matches!(answer, Ok(true)),
                "[{}] good row {i}: {answer:?}",
                db.engine
            );
        }
    }
    let stored = stored_ids(db).await;
    assert_eq!(stored.len(), GOOD_ROWS, "[{}]", db.engine);
    assert!(!stored.contains(&rows[at].id), "[{}]", db.engine);
    // A NUL in another column is named as such.
    let mut bad = TestRow::new(999_998);
    bad.organizer_name = "Bob\0".into();
    let answer = storage.insert_alias_if_new(&bad.as_new()).await;
    assert!(
        matches!(
            answer,
            Err(StorageError::NulInText {
                field: "organizer_name"
            })
        ),
        "[{}] {answer:?}",
        db.engine
    );
}

/// One row the database itself refuses (its id, the primary key, is taken;
/// `ON CONFLICT` covers only the alias): only that row fails, with the
/// database's error; the rest of its group is committed.
async fn a_row_the_database_refuses_fails_only_that_row(db: &TestDb) {
    let storage = db.open(4).await;
    let first = TestRow::new(500_000);
    assert!(matches!(
        storage.insert_alias_if_new(&first.as_new()).await,
        Ok(true)
    ));
    let mut bad = TestRow::new(500_001);
    bad.id = first.id.clone();
    let (rows, at) = good_rows_around(bad);
    let answers = insert_together(&storage, &rows).await;
    for (i, answer) in answers.iter().enumerate() {
        if i == at {
            assert!(
                matches!(answer, Err(StorageError::Batch(_))),
                "[{}] the row with a taken id: {answer:?}",
                db.engine
            );
        } else {
            assert!(
                matches!(answer, Ok(true)),
                "[{}] good row {i}: {answer:?}",
                db.engine
            );
        }
    }
    let stored = stored_ids(db).await;
    assert_eq!(stored.len(), GOOD_ROWS + 1, "[{}]", db.engine);
    let numeric = storage
        .numeric_aliases(INTEGRATION)
        .await
        .expect("numeric aliases");
    assert!(
        !numeric.contains(&rows[at].numeric_alias),
        "[{}] the refused row left its alias behind",
        db.engine
    );
}

/// Draws that collide with a stored alias, or with an earlier row of the same
/// group, are reported as not new (the caller draws again); nothing is
/// stored twice.
async fn conflicting_draws_in_one_group_are_reported(db: &TestDb) {
    let storage = db.open(4).await;
    let stored_before = TestRow::new(1);
    assert!(matches!(
        storage.insert_alias_if_new(&stored_before.as_new()).await,
        Ok(true)
    ));
    let mut rows: Vec<TestRow> = (10..20).map(TestRow::new).collect();
    // Index 10: the same alias as the stored row; 11: the same as row 3.
    rows.push(TestRow::new(1));
    rows.push(TestRow::new(13));
    let answers = insert_together(&storage, &rows).await;
    for (i, answer) in answers.iter().enumerate() {
        let want_new = i < 10;
        assert!(
            matches!(answer, Ok(new) if *new == want_new),
            "[{}] row {i}: {answer:?}, want Ok({want_new})",
            db.engine
        );
    }
    let numeric = storage
        .numeric_aliases(INTEGRATION)
        .await
        .expect("numeric aliases");
    assert_eq!(numeric.len(), 11, "[{}] {numeric:?}", db.engine);
    assert_eq!(
        numeric.iter().collect::<HashSet<_>>().len(),
        11,
        "[{}]",
        db.engine
    );
    let stored = stored_ids(db).await;
    assert!(!stored.contains(&rows[10].id) && !stored.contains(&rows[11].id));
}

// ---------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------

/// A control character in any free-text field is answered with 400 and a
/// message naming the field, before the token is even looked at, and no row
/// is written; the same request without it allocates.
#[tokio::test]
async fn control_characters_are_refused_with_400_and_store_nothing() {
    let (sim, dir, cert) = in_process::simulator().await;
    let db_url = format!("sqlite://{}", dir.path().join("vmr.db").display());
    let mut config = Config {
        role: Role::All,
        ..Config::default()
    };
    config.server.listen = "127.0.0.1:0".parse().expect("listen");
    config.server.public_host = "127.0.0.1".into();
    // No pane build and no local Office.js are needed for the API.
    config.server.dist_dir = dir.path().join("no-dist");
    config.server.static_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../static");
    config.server.office_js = "cdn".into();
    config.storage.url = db_url.clone();
    config.http_client.extra_ca_files = vec![cert];
    config.integrations[0].auth.exchange_metadata = vec![sim.local_addr.to_string()];
    config.validate().expect("valid config");
    let pane_url = config.integrations[0].pane_url(&config.server);
    let integration = config.integrations[0].id.clone();
    let app = App::build(config).await.expect("app builds");
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = serve(app, async {
        let _ = stopped.await;
    })
    .await
    .expect("serve");
    tokio::spawn(server);
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    let token = sim
        .simulator
        .exchange
        .identity_token(&IdentityClaims::new(pane_url, "ann@example.com"));
    let post = |body: Value| {
        let req = client
            .post(format!("https://{addr}/api/v1/alias"))
            .bearer_auth(&token)
            .json(&body);
        async move {
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let organizer = |name: &str, email: &str| json!({ "name": name, "email": email });
    let cases = [
        (
            json!({ "integration": integration, "subject": "Weekly\u{0}sync" }),
            "field_control_character",
            "`subject` contains the control character U+0000 at character 6",
        ),
        (
            json!({ "integration": integration, "subject": "a\u{1b}[2J" }),
            "field_control_character",
            "`subject` contains the control character U+001B at character 1",
        ),
        (
            json!({
                "integration": integration,
                "subject": "ok",
                "organizer": organizer("Bob\u{7}", "bob@example.com"),
            }),
            "field_control_character",
            "`organizer.name` contains the control character U+0007 at character 3",
        ),
        (
            json!({
                "integration": integration,
                "subject": "ok",
                "organizer": organizer("Bob", "bob@example.com\n"),
            }),
            "field_control_character",
            "`organizer.email` contains the control character U+000A at character 15",
        ),
        (
            json!({ "integration": integration, "subject": "s".repeat(1025) }),
            "field_too_long",
            "`subject` is 1025 characters long; at most 1024 are allowed",
        ),
    ];
    for (body, code, message) in cases {
        let (status, answer) = post(body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["code"], code, "{body}: {answer}");
        assert_eq!(answer["message"], message, "{body}: {answer}");
    }
    let storage = Storage::open(&db_url, 1).await.expect("open db");
    assert_eq!(
        storage.count_aliases(&integration).await.expect("count"),
        0,
        "a refused request stored a row"
    );
    // The same requests without the bad characters allocate.
    let (status, answer) = post(json!({
        "integration": integration,
        "subject": "Weekly\tsync",
        "organizer": organizer("Bob\tBoss", "bob@example.com"),
    }))
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(storage.count_aliases(&integration).await.expect("count"), 1);
}
