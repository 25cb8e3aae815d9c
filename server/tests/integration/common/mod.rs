//! Test databases shared by the storage test files: a fresh SQLite file, or a
//! fresh database on the PostgreSQL server `cargo xtask test` starts, and a
//! macro that runs one check on both engines.
#![allow(dead_code)]

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Connection, Executor};
use uuid::Uuid;
use vmr_store::Storage;

/// Set by `cargo xtask test`: a PostgreSQL server the tests may create databases on.
pub const PG_ENV: &str = "VMR_TEST_POSTGRES_URL";

// ---------------------------------------------------------------------------
// Test databases
// ---------------------------------------------------------------------------

/// A fresh, empty database for one test.
pub struct TestDb {
    pub engine: &'static str,
    pub url: String,
    /// Keeps the SQLite file alive.
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: the server URL we connected to and the database we created.
    created: Option<(String, String)>,
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("vmr.db");
        TestDb {
            engine: "sqlite",
            url: format!("sqlite://{}", path.display()),
            _dir: Some(dir),
            created: None,
        }
    }

    /// A new database on the test server named by `VMR_TEST_POSTGRES_URL`.
    /// Panics when the variable is unset: a PostgreSQL test never passes
    /// without PostgreSQL.
    pub async fn postgres() -> TestDb {
        sqlx::any::install_default_drivers();
        let server = match std::env::var(PG_ENV) {
            Ok(url) if !url.trim().is_empty() => url,
            _ => panic!(
                "{PG_ENV} is not set: this test needs a PostgreSQL server to create databases \
                 on. Run it through `cargo xtask test`, which starts a throwaway server and sets \
                 the variable, or set it yourself (postgres://user@host:port/db)"
            ),
        };
        let name = format!("vmr_t_{}", Uuid::new_v4().simple());
        let mut admin = AnyConnection::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {PG_ENV}: {e}"));
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("CREATE DATABASE");
        admin.close().await.ok();
        TestDb {
            engine: "postgres",
            url: with_database(&server, &name),
            _dir: None,
            created: Some((server, name)),
        }
    }

    pub async fn open(&self, max_connections: u32) -> Storage {
        Storage::open(&self.url, max_connections)
            .await
            .unwrap_or_else(|e| panic!("[{}] open: {e}", self.engine))
    }

    /// A plain pool on the same database, for what `Storage` does not offer
    /// (bulk fills, state changes, peeking at columns).
    pub async fn raw(&self) -> AnyPool {
        let sqlite = self.engine == "sqlite";
        AnyPoolOptions::new()
            .max_connections(2)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        conn.execute("PRAGMA busy_timeout = 10000;").await?;
                    }
                    Ok(())
                })
            })
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("[{}] raw pool: {e}", self.engine))
    }

    /// Drops the test's PostgreSQL database (best effort: left behind on a
    /// failed test, which dies with the throwaway server anyway).
    pub async fn finish(self) {
        if let Some((server, name)) = &self.created {
            if let Ok(mut admin) = AnyConnection::connect(server).await {
                let _ = admin
                    .execute(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .await;
                admin.close().await.ok();
            }
        }
    }
}

/// `url` with its database (path) replaced by `db`, query string kept.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[host_start..]
        .find('/')
        .map_or(base.len(), |i| host_start + i);
    format!("{}/{db}{query}", &base[..path_start])
}

/// Runs each named `async fn check(&TestDb)` as `check::sqlite` and `check::postgres`,
/// on a 4-thread runtime, or with `current_thread:` first on a single-threaded one
/// (where spawned tasks start in the order they were spawned).
#[macro_export]
macro_rules! on_both_engines {
    (@flavor $flavor:tt; $($check:ident),* $(,)?) => {$(
        mod $check {
            #[tokio::test $flavor]
            async fn sqlite() {
                let db = super::TestDb::sqlite();
                super::$check(&db).await;
                db.finish().await;
            }

            #[tokio::test $flavor]
            #[ignore = "needs PostgreSQL: run by cargo xtask test"]
            pub async fn postgres() {
                let db = super::TestDb::postgres().await;
                super::$check(&db).await;
                db.finish().await;
            }
        }
    )*};
    // Checks whose spawned tasks must run in the order they were spawned.
    (current_thread: $($check:ident),* $(,)?) => {
        on_both_engines!(@flavor (flavor = "current_thread"); $($check),*);
    };
    ($($check:ident),* $(,)?) => {
        on_both_engines!(@flavor (flavor = "multi_thread", worker_threads = 4); $($check),*);
    };
}
