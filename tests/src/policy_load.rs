//! The policy benchmark's harness (`cargo xtask bench --only policy`): a
//! database filled with scheduled conferences in the shape the mailbox
//! worker writes them (the load itself comes from wrk, see `xtask/src/bench.rs`).
//!
//! Filling goes around the scheduling commit on purpose: 100,000 commits one
//! by one would take minutes, and the bench measures the read side. Each
//! meeting gets the rows `commit_scheduling` writes for an accepted single
//! meeting: its alias (`bound`), its conference, its meeting row and one
//! window, in multi-row `INSERT`s of [`FILL_BATCH`] rows per transaction.

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
                created = now_ms / 1000 - 8 * 86_400 + i as i64,
            ));
            conferences.push(format!(
                "('{conference_id}', 'default', '{alias_id}', 'Bench {i} (Bench)', \
                 'Scheduled conference', '{alias}', '{numeric}', NULL, NULL, 'disallow_all', \
                 {now_ms}, NULL)"
            ));
            meetings.push(format!(
                "('default', '{uid}', '{alias_id}', '{conference_id}', 'accepted', 0, 0, 1, '{{}}', \
                 'fp', 'bench@example.com', 'Bench {i}', 'AAMk-{i}', {updated})",
                updated = now_ms - 7 * 86_400_000 + i as i64 * 1000,
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
