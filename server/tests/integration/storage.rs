//! Storage and alias-service tests on both engines.
//!
//! Every check runs twice, as `<check>::sqlite` (a fresh database file in a
//! temp dir, always) and `<check>::postgres` (a fresh database created for
//! the test on the server named by `VMR_TEST_POSTGRES_URL`, which
//! `cargo xtask test` starts and sets). The PostgreSQL half is `#[ignore]`d so
//! that a plain `cargo test` reports it as ignored rather than passed;
//! `cargo xtask test` runs it with `--include-ignored`, and run without the
//! variable it fails, naming what is missing.
//!
//! Bulk fills write rows directly (multi-row `INSERT`s in one transaction) so
//! the exhaustion paths can be reached in seconds; everything else goes
//! through [`Storage`] and [`allocate`] as the server does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{AnyPool, Row};
use uuid::Uuid;
use vmr_auth::Identity;
use vmr_core::config::{IntegrationConfig, ServerConfig};
use vmr_core::meeting_tag::TagKey;
use vmr_core::templates::TemplateSet;
use vmr_protocol::{AliasResponse, AuthMethod};
use vmr_server::alias_service::{allocate, AliasContext, AliasStats, AllocateError, Requested};
use vmr_server::integration::Integration;
use vmr_store::{NewAlias, Storage};

use crate::common;

use common::TestDb;

const HOST: &str = "vmr.example.test";

on_both_engines!(
    migrations_apply_and_reopen_is_idempotent,
    aliases_stay_unique_across_restarts_and_deletion,
    concurrent_allocation_never_duplicates,
    exhausted_space_is_refused,
    concurrent_first_tag_key_callers_agree,
    requester_and_organizer_are_recorded,
);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn integration(id: &str, prefix: &str, digits: u32, issued: u64) -> Integration {
    let config = IntegrationConfig {
        id: id.into(),
        alias_prefix: prefix.into(),
        alias_digits: digits,
        alias_domain: "vc.example.test".into(),
        ..IntegrationConfig::default()
    };
    Integration::new(
        config,
        TemplateSet::compile(&BTreeMap::new()).expect("default templates"),
        &ServerConfig::default(),
        TagKey::new(vec![7; 32]),
        issued,
    )
}

fn identity(user_id: &str, email: Option<&str>, method: AuthMethod) -> Identity {
    Identity {
        user_id: user_id.into(),
        email: email.map(str::to_string),
        display_name: Some("Test User".into()),
        method,
        expires_at: now() + 3600,
    }
}

/// Allocated alias: (numeric alias, alias uuid).
async fn allocate_one(
    storage: &Storage,
    integration: &Integration,
    stats: &AliasStats,
) -> Result<(String, String), AllocateError> {
    let who = identity(
        "user-1",
        Some("user1@example.test"),
        AuthMethod::ExchangeUserIdToken,
    );
    let ctx = AliasContext {
        identity: &who,
        subject: "Weekly sync",
        now_unix: now(),
        via: Requested::Pane,
    };
    match allocate(storage, integration, &ctx, HOST, stats).await? {
        AliasResponse::Allocated {
            numeric_alias,
            alias_uuid,
            ..
        } => Ok((numeric_alias, alias_uuid)),
        other => panic!("expected an allocation, got {other:?}"),
    }
}

fn row<'a>(id: &'a str, integration: &'a str, numeric: &'a str, alias: &'a str) -> NewAlias<'a> {
    NewAlias {
        id,
        integration,
        numeric_alias: numeric,
        alias,
        created_at: now(),
        auth_method: "EXCHANGE_USER_ID_TOKEN",
        requester_id: "manual",
        requester_email: None,
        organizer_email: None,
        organizer_name: None,
        subject: None,
    }
}

/// Inserts `prefix` + each number (zero-padded to `digits`) for `integration`
/// in one transaction, skipping numbers already taken. Returns rows inserted.
async fn bulk_insert(
    pool: &AnyPool,
    integration: &str,
    prefix: &str,
    digits: usize,
    numbers: impl Iterator<Item = u64>,
) -> u64 {
    let numbers: Vec<u64> = numbers.collect();
    let mut tx = pool.begin().await.expect("begin");
    let mut inserted = 0;
    for chunk in numbers.chunks(1000) {
        let mut sql = String::from(
            "INSERT INTO scheduled_alias (id, integration, numeric_alias, alias, state, \
             created_at, auth_method, requester_id) VALUES ",
        );
        for (i, n) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            let numeric = format!("{prefix}{n:0digits$}");
            write!(
                sql,
                "('{}', '{integration}', '{numeric}', '{numeric}@bulk.test', 'allocated', 0, \
                 'EXCHANGE_USER_ID_TOKEN', 'bulk')",
                Uuid::new_v4().simple()
            )
            .expect("write to string");
        }
        sql.push_str(" ON CONFLICT (integration, numeric_alias) DO NOTHING");
        inserted += sqlx::query(sqlx::AssertSqlSafe(sql))
            .persistent(false)
            .execute(&mut *tx)
            .await
            .expect("bulk insert")
            .rows_affected();
    }
    tx.commit().await.expect("commit");
    inserted
}

async fn count_where(pool: &AnyPool, sql: &str, bind: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(bind)
        .fetch_one(pool)
        .await
        .expect("count query")
        .try_get::<i64, _>(0)
        .expect("count")
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

async fn migrations_apply_and_reopen_is_idempotent(db: &TestDb) {
    let e = db.engine;
    let storage = db.open(4).await;
    assert_eq!(storage.is_sqlite(), e == "sqlite");
    storage.ping().await.expect("ping");
    assert_eq!(storage.count_aliases("default").await.expect("count"), 0);
    let id = Uuid::new_v4().simple().to_string();
    assert!(storage
        .insert_alias_if_new(&row(&id, "default", "88123456", "88123456@vc.example.test"))
        .await
        .expect("insert"));
    drop(storage);

    let migration_files =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../store/migrations"))
            .expect("migrations dir")
            .filter(|f| {
                f.as_ref()
                    .is_ok_and(|f| f.path().extension().is_some_and(|x| x == "sql"))
            })
            .count() as i64;
    for round in 0..3 {
        // Sequential reopens and, in the last round, two at once.
        let handles = if round < 2 {
            vec![db.open(4).await]
        } else {
            let (a, b) = tokio::join!(db.open(2), db.open(2));
            vec![a, b]
        };
        for storage in &handles {
            assert_eq!(
                storage.count_aliases("default").await.expect("count"),
                1,
                "[{e}] reopening must keep the data"
            );
            let stored = storage.alias_by_id(&id).await.expect("read").expect("row");
            assert_eq!(stored.numeric_alias, "88123456");
            assert_eq!(stored.state, "allocated");
        }
    }
    let raw = db.raw().await;
    let applied: i64 = sqlx::query("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&raw)
        .await
        .expect("migrations table")
        .try_get(0)
        .expect("count");
    assert_eq!(
        applied, migration_files,
        "[{e}] every migration applied exactly once"
    );
}

async fn aliases_stay_unique_across_restarts_and_deletion(db: &TestDb) {
    let e = db.engine;
    const ID: &str = "restart";
    const FIRST: usize = 200;
    const SECOND: usize = 500;

    // First "process": allocate some aliases.
    let storage = db.open(4).await;
    let issued = storage.count_aliases(ID).await.expect("count");
    let first = integration(ID, "7", 5, issued);
    let stats = AliasStats::default();
    let mut before: HashMap<String, String> = HashMap::new();
    for _ in 0..FIRST {
        let (numeric, uuid) = allocate_one(&storage, &first, &stats)
            .await
            .expect("allocate");
        assert!(numeric.starts_with('7') && numeric.len() == 6, "{numeric}");
        assert!(
            before.insert(numeric.clone(), uuid).is_none(),
            "[{e}] {numeric} issued twice"
        );
    }

    // A deleted alias keeps its number.
    let raw = db.raw().await;
    let (victim, victim_id) = before
        .iter()
        .next()
        .map(|(n, u)| (n.clone(), u.clone()))
        .expect("one");
    sqlx::query("UPDATE scheduled_alias SET state = 'deleted' WHERE id = $1")
        .bind(&victim_id)
        .execute(&raw)
        .await
        .expect("mark deleted");
    let again = Uuid::new_v4().simple().to_string();
    let victim_alias = format!("{victim}@vc.example.test");
    assert!(
        !storage
            .insert_alias_if_new(&row(&again, ID, &victim, &victim_alias))
            .await
            .expect("insert"),
        "[{e}] a deleted alias must not be issued again"
    );
    drop(first);
    drop(storage);

    // Restart: a new handle and a new in-memory counter.
    let storage = db.open(4).await;
    assert_eq!(
        storage.count_aliases(ID).await.expect("count"),
        FIRST as u64
    );
    let stored: HashSet<String> = storage
        .numeric_aliases(ID)
        .await
        .expect("list")
        .into_iter()
        .collect();
    assert_eq!(stored, before.keys().cloned().collect::<HashSet<_>>());
    let victim_row = storage
        .alias_by_id(&victim_id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(victim_row.state, "deleted");
    assert!(
        !storage
            .insert_alias_if_new(&row(&again, ID, &victim, &victim_alias))
            .await
            .expect("insert"),
        "[{e}] a deleted alias must not be issued again after a restart"
    );
    assert!(
        storage.alias_by_id(&again).await.expect("read").is_none(),
        "[{e}] the refused row must not exist"
    );
    // The same number is free in another integration.
    let other_id = Uuid::new_v4().simple().to_string();
    assert!(storage
        .insert_alias_if_new(&row(&other_id, "other", &victim, &victim_alias))
        .await
        .expect("insert"));

    // Half the space taken by deleted rows: most draws now collide.
    let bulk = bulk_insert(&raw, ID, "7", 5, (0..100_000).step_by(2)).await;
    sqlx::query("UPDATE scheduled_alias SET state = 'deleted' WHERE integration = $1 AND requester_id = 'bulk'")
        .bind(ID)
        .execute(&raw)
        .await
        .expect("mark deleted");
    let taken: HashSet<String> = storage
        .numeric_aliases(ID)
        .await
        .expect("list")
        .into_iter()
        .collect();
    assert_eq!(taken.len() as u64, FIRST as u64 + bulk);

    let issued = storage.count_aliases(ID).await.expect("count");
    let second = integration(ID, "7", 5, issued);
    let stats = AliasStats::default();
    let mut after = HashSet::new();
    for _ in 0..SECOND {
        let (numeric, _) = allocate_one(&storage, &second, &stats)
            .await
            .expect("allocate");
        assert!(
            !taken.contains(&numeric),
            "[{e}] {numeric} was issued (or deleted) before"
        );
        assert!(
            after.insert(numeric.clone()),
            "[{e}] {numeric} issued twice"
        );
    }
    assert!(
        stats.collisions.load(Ordering::Relaxed) > 0,
        "[{e}] with half the space taken, some draws must have collided"
    );
    let all = storage.numeric_aliases(ID).await.expect("list");
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(
        all.len(),
        unique.len(),
        "[{e}] duplicate numeric aliases stored"
    );
    assert_eq!(all.len(), taken.len() + SECOND);
    assert_eq!(
        second.issued.load(Ordering::Relaxed),
        (taken.len() + SECOND) as u64
    );
}

async fn concurrent_allocation_never_duplicates(db: &TestDb) {
    let e = db.engine;
    const TASKS: usize = 8;
    const PER_TASK: usize = 100;

    // One process, eight concurrent requests at a time; then two processes
    // (two pools, two in-memory counters) on the same database.
    for (id, handles) in [("conc-one", 1usize), ("conc-two", 2)] {
        let mut storages = Vec::new();
        let mut integrations = Vec::new();
        for _ in 0..handles {
            storages.push(db.open(8 / handles as u32).await);
            integrations.push(Arc::new(integration(id, "5", 5, 0)));
        }
        let stats = Arc::new(AliasStats::default());
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let storage = storages[t % handles].clone();
            let integ = integrations[t % handles].clone();
            let stats = stats.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::with_capacity(PER_TASK);
                for _ in 0..PER_TASK {
                    got.push(
                        allocate_one(&storage, &integ, &stats)
                            .await
                            .expect("allocate")
                            .0,
                    );
                }
                got
            }));
        }
        let mut seen = HashSet::new();
        for task in tasks {
            for numeric in task.await.expect("task") {
                assert!(
                    seen.insert(numeric.clone()),
                    "[{e}] {id}: {numeric} issued twice"
                );
            }
        }
        let total = (TASKS * PER_TASK) as u64;
        assert_eq!(seen.len() as u64, total);
        assert_eq!(stats.allocated.load(Ordering::Relaxed), total);
        let issued: u64 = integrations
            .iter()
            .map(|i| i.issued.load(Ordering::Relaxed))
            .sum();
        assert_eq!(issued, total, "[{e}] {id}: per-process counters add up");
        for storage in &storages {
            assert_eq!(storage.count_aliases(id).await.expect("count"), total);
            let stored: HashSet<String> = storage
                .numeric_aliases(id)
                .await
                .expect("list")
                .into_iter()
                .collect();
            assert_eq!(
                stored, seen,
                "[{e}] {id}: stored aliases are the issued ones"
            );
        }
    }
}

async fn exhausted_space_is_refused(db: &TestDb) {
    let e = db.engine;
    const ID: &str = "full";
    let storage = db.open(4).await;
    let raw = db.raw().await;
    let started = std::time::Instant::now();
    assert_eq!(bulk_insert(&raw, ID, "9", 5, 0..95_000).await, 95_000);
    eprintln!("[{e}] 95,000 rows in {:?}", started.elapsed());

    // 95% used, as counted at start: refused before any draw.
    let used = storage.count_aliases(ID).await.expect("count");
    assert_eq!(used, 95_000);
    let integ = integration(ID, "9", 5, used);
    let stats = AliasStats::default();
    let err = allocate_one(&storage, &integ, &stats)
        .await
        .expect_err("must refuse at 95%");
    match &err {
        AllocateError::SpaceExhausted {
            integration,
            used,
            space,
        } => {
            assert_eq!((integration.as_str(), *used, *space), (ID, 95_000, 100_000));
        }
        other => panic!("[{e}] expected SpaceExhausted, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("95000 of 100000") && message.contains(ID),
        "[{e}] message: {message}"
    );
    assert_eq!(stats.refused_exhausted.load(Ordering::Relaxed), 1);
    assert_eq!(stats.collisions.load(Ordering::Relaxed), 0);
    assert_eq!(storage.count_aliases(ID).await.expect("count"), 95_000);

    // Another process filled the rest while our counter says empty: every
    // draw collides, and the bounded loop gives up with a fresh count.
    assert_eq!(bulk_insert(&raw, ID, "9", 5, 95_000..100_000).await, 5_000);
    let stale = integration(ID, "9", 5, 0);
    let stats = AliasStats::default();
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        allocate_one(&storage, &stale, &stats),
    )
    .await
    .expect("the draw loop must be bounded")
    .expect_err("a full space must be refused");
    match &err {
        AllocateError::SpaceExhausted { used, space, .. } => {
            assert_eq!((*used, *space), (100_000, 100_000), "[{e}]");
        }
        other => panic!("[{e}] expected SpaceExhausted, got {other:?}"),
    }
    assert!(err.to_string().contains("100000 of 100000"), "{err}");
    assert_eq!(
        stats.collisions.load(Ordering::Relaxed),
        32,
        "[{e}] 32 draws"
    );
    assert_eq!(stats.refused_exhausted.load(Ordering::Relaxed), 1);
    assert_eq!(stats.allocated.load(Ordering::Relaxed), 0);
    assert_eq!(
        stale.issued.load(Ordering::Relaxed),
        100_000,
        "[{e}] counter refreshed"
    );
    assert_eq!(storage.count_aliases(ID).await.expect("count"), 100_000);

    // With the refreshed counter the next request is refused without drawing.
    allocate_one(&storage, &stale, &stats)
        .await
        .expect_err("still full");
    assert_eq!(stats.collisions.load(Ordering::Relaxed), 32);
    assert_eq!(stats.refused_exhausted.load(Ordering::Relaxed), 2);
    assert_eq!(
        count_where(
            &raw,
            "SELECT COUNT(*) FROM scheduled_alias WHERE requester_id = $1",
            "user-1"
        )
        .await,
        0,
        "[{e}] refused requests insert nothing"
    );
}

async fn concurrent_first_tag_key_callers_agree(db: &TestDb) {
    let e = db.engine;
    const CALLERS: usize = 16;
    let a = db.open(4).await;
    let b = db.open(4).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(CALLERS));
    let candidates: Vec<String> = (0..CALLERS).map(|i| format!("{:064x}", i + 1)).collect();
    let mut tasks = Vec::new();
    for (i, candidate) in candidates.iter().cloned().enumerate() {
        let storage = if i % 2 == 0 { a.clone() } else { b.clone() };
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            storage
                .tag_key("tags", &candidate, now())
                .await
                .expect("tag key")
        }));
    }
    let mut keys = HashSet::new();
    for task in tasks {
        keys.insert(task.await.expect("task"));
    }
    assert_eq!(
        keys.len(),
        1,
        "[{e}] concurrent first callers got different keys: {keys:?}"
    );
    let key = keys.into_iter().next().expect("one key");
    assert!(
        candidates.contains(&key),
        "[{e}] the key is one of the candidates"
    );

    // Later callers (other process, after a restart) get the stored key.
    assert_eq!(
        a.tag_key("tags", &"f".repeat(64), now())
            .await
            .expect("tag key"),
        key
    );
    drop((a, b));
    let c = db.open(2).await;
    assert_eq!(
        c.tag_key("tags", &"e".repeat(64), now())
            .await
            .expect("tag key"),
        key
    );
    // Each integration has its own key.
    assert_eq!(
        c.tag_key("other", &"d".repeat(64), now())
            .await
            .expect("tag key"),
        "d".repeat(64)
    );
    let raw = db.raw().await;
    assert_eq!(
        count_where(
            &raw,
            "SELECT COUNT(*) FROM integration_secret WHERE integration = $1",
            "tags"
        )
        .await,
        1
    );
}

async fn requester_and_organizer_are_recorded(db: &TestDb) {
    let e = db.engine;
    let storage = db.open(2).await;
    let integ = integration("ident", "88", 6, 0);
    let stats = AliasStats::default();

    // A delegate books for their manager. The body may claim any organizer;
    // what is recorded is who the token proves (the mailbox binds the real
    // organizer from Exchange later).
    let delegate = identity(
        "AAMkADk0@https://mail.example.test/autodiscover/metadata/json/1",
        Some("assistant@example.test"),
        AuthMethod::ExchangeUserIdToken,
    );
    let ctx = AliasContext {
        identity: &delegate,
        subject: "Board meeting",
        now_unix: now(),
        via: Requested::Pane,
    };
    let AliasResponse::Allocated {
        alias,
        numeric_alias,
        alias_uuid,
        ..
    } = allocate(&storage, &integ, &ctx, HOST, &stats)
        .await
        .expect("allocate")
    else {
        panic!("expected an allocation");
    };
    let stored = storage
        .alias_by_id(&alias_uuid)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(stored.id, alias_uuid);
    assert_eq!(stored.integration, "ident");
    assert_eq!(stored.numeric_alias, numeric_alias);
    assert_eq!(stored.alias, alias);
    assert_eq!(alias, format!("{numeric_alias}@vc.example.test"));
    assert_eq!(stored.state, "allocated");
    assert_eq!(stored.requester_id, delegate.user_id, "[{e}]");
    assert_eq!(
        stored.requester_email.as_deref(),
        Some("assistant@example.test")
    );
    assert_eq!(
        stored.organizer_email.as_deref(),
        Some("assistant@example.test")
    );

    let raw = db.raw().await;
    let extra = sqlx::query(
        "SELECT organizer_name, subject, auth_method FROM scheduled_alias WHERE id = $1",
    )
    .bind(&alias_uuid)
    .fetch_one(&raw)
    .await
    .expect("row");
    assert_eq!(
        extra
            .try_get::<Option<String>, _>("organizer_name")
            .expect("organizer_name")
            .as_deref(),
        Some("Test User")
    );
    assert_eq!(
        extra
            .try_get::<Option<String>, _>("subject")
            .expect("subject")
            .as_deref(),
        Some("Board meeting")
    );
    assert_eq!(
        extra
            .try_get::<String, _>("auth_method")
            .expect("auth_method"),
        "EXCHANGE_USER_ID_TOKEN"
    );

    // The organizer themself, with a token that carries no e-mail: nothing invented.
    let naa = identity("tenant-1/object-1", None, AuthMethod::NaaToken);
    let ctx = AliasContext {
        identity: &naa,
        subject: "1:1",
        now_unix: now(),
        via: Requested::Pane,
    };
    let AliasResponse::Allocated { alias_uuid, .. } =
        allocate(&storage, &integ, &ctx, HOST, &stats)
            .await
            .expect("allocate")
    else {
        panic!("expected an allocation");
    };
    let stored = storage
        .alias_by_id(&alias_uuid)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(stored.requester_id, "tenant-1/object-1");
    assert_eq!(stored.requester_email, None);
    assert_eq!(stored.organizer_email, None);

    assert!(storage
        .alias_by_id(&"0".repeat(32))
        .await
        .expect("read")
        .is_none());
}
