//! Allocation throughput of the storage layer alone (no HTTP, no tokens):
//! [`CLIENTS`] tasks insert distinct aliases through
//! [`Storage::insert_alias_if_new`] as fast as the writer task commits them,
//! and the rate is printed. A measurement, not a test (it only checks that
//! every row went in), so `cargo test` does not run it:
//!
//! ```text
//! cargo bench -p vmr-server --bench storage_alloc              # SQLite
//! VMR_TEST_POSTGRES_URL=postgres://… cargo bench -p vmr-server --bench storage_alloc -- postgres
//! ```
//!
//! `postgres` needs `VMR_TEST_POSTGRES_URL` (a server it may create a
//! database on) and fails without it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::{AnyConnection, Connection, Executor};
use uuid::Uuid;
use vmr_store::{NewAlias, Storage};

const PG_ENV: &str = "VMR_TEST_POSTGRES_URL";
/// Concurrent inserting tasks (like wrk's 64 connections in `cargo xtask bench`).
const CLIENTS: usize = 64;
/// Rows each task inserts per round.
const ROWS_PER_CLIENT: usize = 1000;
const ROUNDS: usize = 3;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Inserts `CLIENTS * ROWS_PER_CLIENT` distinct rows; returns the time taken.
async fn round(storage: &Storage, round: usize) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let storage = storage.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..ROWS_PER_CLIENT {
                let n = (round * CLIENTS + client) * ROWS_PER_CLIENT + i;
                let numeric = format!("{n:09}");
                let id = Uuid::new_v4().simple().to_string();
                let alias = format!("{numeric}@vc.example.test");
                let row = NewAlias {
                    id: &id,
                    integration: "bench",
                    numeric_alias: &numeric,
                    alias: &alias,
                    created_at: now(),
                    auth_method: "EXCHANGE_USER_ID_TOKEN",
                    requester_id: "ann@example.com",
                    requester_email: Some("ann@example.com"),
                    organizer_email: Some("bob@example.com"),
                    organizer_name: Some("Bob Boss"),
                    subject: Some("Weekly sync"),
                };
                let inserted = storage.insert_alias_if_new(&row).await;
                assert!(matches!(inserted, Ok(true)), "row {n}: {inserted:?}");
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    start.elapsed()
}

async fn bench(engine: &str, url: &str) {
    let storage = Arc::new(Storage::open(url, 8).await.expect("open"));
    let rows = CLIENTS * ROWS_PER_CLIENT;
    for r in 0..ROUNDS {
        let took = round(&storage, r).await;
        eprintln!(
            "[{engine}] round {r}: {rows} allocations in {took:.2?} = {:.0}/s",
            rows as f64 / took.as_secs_f64()
        );
    }
    let count = storage.count_aliases("bench").await.expect("count");
    assert_eq!(count, (ROUNDS * rows) as u64);
}

async fn sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    bench("sqlite", &url).await;
}

async fn postgres() {
    let server = match std::env::var(PG_ENV) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!("{PG_ENV} is not set: this benchmark needs a PostgreSQL server"),
    };
    let name = format!("vmr_bench_{}", Uuid::new_v4().simple());
    let mut admin = AnyConnection::connect(&server).await.expect("connect");
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("CREATE DATABASE");
    let (base, _) = server.rsplit_once('/').expect("a database in the URL");
    bench("postgres", &format!("{base}/{name}")).await;
    let _ = admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .await;
}

/// Runs the engine named on the command line (`sqlite`, the default, or
/// `postgres`); other arguments (cargo passes `--bench`) are ignored.
fn main() {
    sqlx::any::install_default_drivers();
    let postgres_wanted = std::env::args().any(|a| a == "postgres");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if postgres_wanted {
        runtime.block_on(postgres());
    } else {
        runtime.block_on(sqlite());
    }
}
