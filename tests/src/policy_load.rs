//! The policy benchmark's harness (`cargo xtask bench --only policy`): a
//! database filled with scheduled conferences in the shape the mailbox
//! worker writes them, and an open-loop load generator that asks Infinity's
//! policy question at a fixed rate over HTTPS and records each latency.
//!
//! Filling goes around the scheduling commit on purpose: 100,000 commits one
//! by one would take minutes, and the bench measures the read side. Each
//! meeting gets the rows `commit_scheduling` writes for an accepted single
//! meeting: its alias (`bound`), its conference, its meeting row and one
//! window, in multi-row `INSERT`s of [`FILL_BATCH`] rows per transaction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sqlx::any::AnyPoolOptions;
use sqlx::Executor;

/// Rows per `INSERT` while filling.
pub const FILL_BATCH: usize = 1_000;

/// A filled database: the aliases to dial, by kind.
#[derive(Debug, Clone)]
pub struct FilledAliases {
    /// `<numeric>@vc.example.com` of meetings whose window is open at fill time.
    pub open: Vec<String>,
    /// Of meetings whose window is not open at fill time.
    pub closed: Vec<String>,
}

/// Fills the (migrated) database at `url` with `count` accepted meetings of
/// integration `default`, each with its alias `88nnnnnn@vc.example.com`, VMR
/// and one window. Windows are spread over 4 days around `now_ms`, every 30
/// minutes, one hour long, so about one in 32 is open at `now_ms`.
pub async fn fill_scheduled_conferences(
    url: &str,
    count: usize,
    now_ms: i64,
) -> Result<FilledAliases> {
    if count > 1_000_000 {
        bail!("at most 1,000,000 conferences fit in the 88nnnnnn aliases");
    }
    // Opening through the store applies the migrations.
    vmr_store::Storage::open(url, 2)
        .await
        .with_context(|| format!("opening {url}"))?;
    let sqlite = url.starts_with("sqlite:");
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    conn.execute("PRAGMA busy_timeout = 10000;").await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let half_hour = 30 * 60_000;
    let first = now_ms - 2 * 24 * 3_600_000;
    let mut filled = FilledAliases {
        open: Vec::new(),
        closed: Vec::new(),
    };
    for batch_start in (0..count).step_by(FILL_BATCH) {
        let batch_end = (batch_start + FILL_BATCH).min(count);
        let mut aliases = Vec::new();
        let mut conferences = Vec::new();
        let mut meetings = Vec::new();
        let mut windows = Vec::new();
        for i in batch_start..batch_end {
            let numeric = format!("88{i:06}");
            let alias = format!("{numeric}@vc.example.com");
            let alias_id = format!("a{i:031}");
            let conference_id = format!("c{i:031}");
            let window_id = format!("w{i:031}");
            let uid = format!("BENCH-UID-{i:08}");
            // 192 half-hour slots = 4 days.
            let start = first + (i as i64 % 192) * half_hour;
            let end = start + 2 * half_hour;
            // The default buffers: 30 minutes before, 60 after.
            if (start - half_hour..end + 2 * half_hour).contains(&now_ms) {
                filled.open.push(alias.clone());
            } else {
                filled.closed.push(alias.clone());
            }
            aliases.push(format!(
                "('{alias_id}', 'default', '{numeric}', '{alias}', 'bound', {created}, \
                 'EXCHANGE_USER_ID_TOKEN', 'bench', 'bench@example.com', 'bench@example.com', \
                 'Bench', 'Bench {i}', '{uid}')",
                created = now_ms / 1000 - 7 * 86_400,
            ));
            conferences.push(format!(
                "('{conference_id}', 'default', '{alias_id}', 'Bench {i} (Bench)', \
                 'Scheduled conference', '{alias}', '{numeric}', NULL, NULL, 'disallow_all', \
                 {now_ms}, NULL)"
            ));
            meetings.push(format!(
                "('default', '{uid}', '{alias_id}', '{conference_id}', 'accepted', 0, 0, 1, '{{}}', \
                 'fp', 'bench@example.com', 'Bench {i}', 'AAMk-{i}', {updated})",
                updated = now_ms - 86_400_000,
            ));
            windows.push(format!(
                "('{window_id}', 'default', '{conference_id}', '{uid}', NULL, 0, {start}, {start}, \
                 {end}, 'Bench {i}')"
            ));
        }
        let mut tx = pool.begin().await?;
        for (table, columns, rows) in [
            (
                "scheduled_alias",
                "id, integration, numeric_alias, alias, state, created_at, auth_method, \
                 requester_id, requester_email, organizer_email, organizer_name, subject, \
                 meeting_uid",
                &aliases,
            ),
            (
                "conference",
                "id, integration, alias_id, name, description, alias, numeric_alias, theme, \
                 host_identity_provider_group, non_idp_participants, created_at, deletion_time",
                &conferences,
            ),
            (
                "meeting",
                "integration, uid, alias_id, conference_id, state, is_series, sequence, \
                 revision, schedule_json, fingerprint, organizer_email, subject, item_id, \
                 updated_at",
                &meetings,
            ),
            (
                "scheduled_conference",
                "id, integration, conference_id, meeting_uid, recurring_conference_id, \
                 occurrence_index, original_start, start_time, end_time, subject",
                &windows,
            ),
        ] {
            let sql = format!("INSERT INTO {table} ({columns}) VALUES {}", rows.join(", "));
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .with_context(|| format!("filling {table}"))?;
        }
        tx.commit().await?;
    }
    pool.close().await;
    Ok(filled)
}

/// What one run of [`constant_rate`] measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Latencies of the 200 answers, request dispatch → body read, sorted (ms).
    pub latencies_ms: Vec<f64>,
    /// Answers that were not 200 or did not arrive.
    pub failures: u64,
    /// Answered requests per second over the run.
    pub achieved_rate: f64,
    /// `continue` with a result / `reject` / `continue` without one.
    pub services: u64,
    pub rejects: u64,
    pub continues: u64,
}

impl LoadResult {
    /// The `p`-quantile latency (0..=1), in ms.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.latencies_ms.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_ms.len() - 1) as f64 * p).round() as usize;
        self.latencies_ms[i.min(self.latencies_ms.len() - 1)]
    }
}

/// Asks `GET {origin}/policy/v1/service/configuration?local_alias=…` (basic
/// auth `user`/`password`) `rate` times a second for `length`, open loop: each
/// request leaves on schedule whether or not earlier ones were answered. The
/// dialled aliases cycle through `aliases`.
pub async fn constant_rate(
    origin: &str,
    user: &str,
    password: &str,
    aliases: Arc<Vec<String>>,
    rate: u32,
    length: Duration,
) -> Result<LoadResult> {
    if aliases.is_empty() || rate == 0 {
        bail!("nothing to ask");
    }
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(5))
        .build()?;
    let url = Arc::new(format!("{origin}/policy/v1/service/configuration"));
    let user = Arc::new(user.to_owned());
    let password = Arc::new(password.to_owned());
    let total = (f64::from(rate) * length.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for k in 0..total {
        let due = started + interval * k as u32;
        tokio::time::sleep_until(due.into()).await;
        let (client, url, user, password) =
            (client.clone(), url.clone(), user.clone(), password.clone());
        let alias = aliases[k % aliases.len()].clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let r = client
                .get(url.as_str())
                .basic_auth(user.as_str(), Some(password.as_str()))
                .query(&[
                    ("local_alias", alias.as_str()),
                    ("remote_alias", "sip:caller@example.com"),
                    ("call_direction", "dial_in"),
                    ("protocol", "sip"),
                ])
                .send()
                .await
                .ok()?;
            if r.status() != 200 {
                return None;
            }
            let body = r.bytes().await.ok()?;
            let elapsed = sent.elapsed();
            let text = String::from_utf8_lossy(&body);
            let kind = if text.contains("\"result\"") {
                0
            } else if text.contains("\"reject\"") {
                1
            } else {
                2
            };
            Some((elapsed, kind))
        }));
    }
    let mut result = LoadResult {
        latencies_ms: Vec::with_capacity(total),
        failures: 0,
        achieved_rate: 0.0,
        services: 0,
        rejects: 0,
        continues: 0,
    };
    for t in tasks {
        match t.await.ok().flatten() {
            Some((elapsed, kind)) => {
                result.latencies_ms.push(elapsed.as_secs_f64() * 1000.0);
                match kind {
                    0 => result.services += 1,
                    1 => result.rejects += 1,
                    _ => result.continues += 1,
                }
            }
            None => result.failures += 1,
        }
    }
    let wall = started.elapsed().as_secs_f64();
    result.achieved_rate = result.latencies_ms.len() as f64 / wall;
    result.latencies_ms.sort_by(f64::total_cmp);
    Ok(result)
}
