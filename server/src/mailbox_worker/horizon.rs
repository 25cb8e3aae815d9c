//! Rolling series forward: a series' occurrence windows are materialised only up to the
//! integration's horizon (`horizon_days`), so as time passes the worker recomputes the windows
//! of every accepted series and stores them when they changed (new occurrences came within
//! the horizon, old ones dropped out of the kept day of history). Same meeting revision, no
//! reply: nothing about the meeting changed, only how far ahead it is written out.

use vmr_core::scheduling::Schedule;
use vmr_store::{AliasBinding, Commit, OperationRecord, StorageError, WindowRecord};

use super::{processor, WorkerContext};

/// Recomputes every accepted series' windows; returns how many series were updated.
pub async fn roll_forward(ctx: &WorkerContext) -> Result<usize, StorageError> {
    let integration = ctx.integration.config.id.as_str();
    let now = ctx.clock.now_unix_ms();
    let mut rolled = 0;
    for record in ctx.storage.accepted_series(integration).await? {
        let schedule: Schedule = match serde_json::from_str(&record.schedule_json) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(uid = %record.uid, error = %e, "stored schedule unreadable; not rolled");
                continue;
            }
        };
        let (windows, recurring) = processor::materialise(ctx, &schedule, &record.subject, now);
        let stored = ctx.storage.windows(integration, &record.uid).await?;
        if same_windows(&stored, &windows) {
            continue;
        }
        let commit = Commit {
            meeting: vmr_store::MeetingRecord {
                updated_at: now,
                ..record.clone()
            },
            binding: AliasBinding::None,
            conference: None,
            windows: Some(windows),
            recurring,
            delete_conference: false,
            operation: OperationRecord {
                transaction_uuid: uuid::Uuid::new_v4().simple().to_string(),
                success: true,
                error_code: String::new(),
                error_description: "occurrence windows rolled forward to the horizon".into(),
                item_id: record.item_id.clone(),
            },
            reply: None,
            now,
        };
        ctx.storage.commit_scheduling(&commit).await?;
        rolled += 1;
    }
    Ok(rolled)
}

fn same_windows(stored: &[WindowRecord], computed: &[WindowRecord]) -> bool {
    let key = |w: &WindowRecord| (w.original_start, w.start_time, w.end_time);
    let mut a: Vec<_> = stored.iter().map(key).collect();
    let mut b: Vec<_> = computed.iter().map(key).collect();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}
