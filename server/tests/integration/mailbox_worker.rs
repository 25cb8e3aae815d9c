//! The mailbox worker's processing on both database engines, with time moved by a
//! `ManualClock`: a series is accepted with windows up to the horizon, seeing it again changes
//! nothing, and as the clock moves on its windows roll forward (no reply, same revision).

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Weekday;
use common::TestDb;
use vmr_core::clock::{Clock, ManualClock};
use vmr_core::config::{IntegrationConfig, ServerConfig};
use vmr_core::meeting::{
    Body, ItemType, MeetingItem, MessageKind, MyResponse, Person, RequestType,
};
use vmr_core::meeting_tag::TagKey;
use vmr_core::recurrence::{Pattern, Range, Recurrence};
use vmr_core::templates::TemplateSet;
use vmr_exchange::mailbox::{
    Fetched, Folder, ItemRef, Mailbox, MailboxError, Response, SyncBatch, Wake,
};
use vmr_server::integration::Integration;
use vmr_server::mailbox_worker::processor::{process, Processed};
use vmr_server::mailbox_worker::{deferred, horizon, WorkerContext};
use vmr_store::NewAlias;

const DAY_MS: i64 = 86_400_000;
/// 2027-01-04T09:00:00Z, a Monday.
const MONDAY_9: i64 = 1_799_053_200_000;
const ALIAS_ID: &str = "0123456789abcdef0123456789abcdef";

async fn context(db: &TestDb, clock: Arc<ManualClock>) -> (WorkerContext, String) {
    let storage = db.open(4).await;
    let config = IntegrationConfig::default();
    let templates = TemplateSet::compile(&config.templates).expect("templates");
    let key = TagKey::new(vec![7u8; 32]);
    let tag = key.issue(ALIAS_ID).to_tag();
    storage
        .insert_alias_if_new(&NewAlias {
            id: ALIAS_ID,
            integration: &config.id,
            numeric_alias: "88123456",
            alias: "88123456@vc.example.com",
            created_at: clock.now_unix(),
            auth_method: "exchange_identity",
            requester_id: "alice",
            requester_email: Some("alice@example.com"),
            organizer_email: Some("alice@example.com"),
            organizer_name: Some("Alice"),
            subject: Some("Weekly"),
        })
        .await
        .expect("alias stored");
    let integration = Arc::new(Integration::new(
        config,
        templates,
        &ServerConfig::default(),
        key,
        1,
    ));
    let ctx = WorkerContext {
        integration,
        storage,
        deferral_keys: None,
        clock,
        horizon_ms: 30 * DAY_MS,
        public_host: "addin.example.com".into(),
        alias_stats: Default::default(),
    };
    (ctx, tag)
}

fn weekly_series(tag: &str) -> MeetingItem {
    MeetingItem {
        item_id: "AAMkAD-req".into(),
        change_key: "ck".into(),
        kind: MessageKind::Request(RequestType::New),
        item_type: ItemType::RecurringMaster,
        uid: "040000008200E00074C5B7101A82E00800000000FEED".into(),
        recurrence_id: None,
        subject: "Weekly".into(),
        body: Body {
            html: true,
            content: format!("<p>Join</p><p>{tag}</p>"),
        },
        organizer: Person {
            name: "Alice".into(),
            email: "alice@example.com".into(),
        },
        sender: None,
        attendees: vec![],
        resources: vec![],
        start: MONDAY_9,
        end: MONDAY_9 + 3_600_000,
        time_zone: Some("UTC".into()),
        recurrence: Some(Recurrence {
            pattern: Pattern::Weekly {
                interval: 1,
                days: vec![Weekday::Mon],
                first_day_of_week: Weekday::Sun,
            },
            range: Range::NoEnd {
                start: chrono::NaiveDate::from_ymd_opt(2027, 1, 4).expect("date"),
            },
        }),
        moved_occurrences: vec![],
        deleted_occurrences: vec![],
        sequence: 0,
        is_cancelled: false,
        my_response: MyResponse::NoResponseReceived,
        last_modified: MONDAY_9 - 7 * DAY_MS,
    }
}

async fn series_windows_roll_forward(db: &TestDb) {
    let clock = ManualClock::at_unix(MONDAY_9 / 1000 - 2 * 86_400);
    let (ctx, tag) = context(db, clock.clone()).await;
    let item = weekly_series(&tag);
    let processed = process(&ctx, &item).await.expect("processed");
    assert_eq!(
        processed,
        Processed::Changed {
            outcome: "accept_new_recurring_series",
            reply: true
        }
    );
    let uid = item.uid.as_str();
    // A series without end: only the horizon's worth (30 days from Saturday 2 January →
    // the Mondays 4, 11, 18 and 25 January).
    let windows = ctx.storage.windows("default", uid).await.expect("windows");
    assert_eq!(windows.len(), 4, "{windows:?}");
    assert_eq!(windows[0].start_time, MONDAY_9);
    // Seen again: nothing to do, no second reply.
    let again = process(&ctx, &item).await.expect("processed");
    assert!(matches!(again, Processed::Unchanged { .. }), "{again:?}");
    assert_eq!(
        ctx.storage
            .pending_replies("default", 10)
            .await
            .expect("outbox")
            .len(),
        1
    );
    // Nothing to roll yet.
    assert_eq!(horizon::roll_forward(&ctx).await.expect("roll"), 0);
    // Three weeks later (Saturday 23 January): three Mondays have passed, three new ones
    // (1, 8 and 15 February) came within reach.
    clock.advance(Duration::from_secs(21 * 86_400));
    assert_eq!(horizon::roll_forward(&ctx).await.expect("roll"), 1);
    let rolled = ctx.storage.windows("default", uid).await.expect("windows");
    let now = MONDAY_9 - 2 * DAY_MS + 21 * DAY_MS;
    assert!(
        rolled.iter().all(|w| w.end_time > now - DAY_MS),
        "{rolled:?}"
    );
    assert!(
        rolled.iter().all(|w| w.start_time < now + 30 * DAY_MS),
        "{rolled:?}"
    );
    assert_eq!(rolled.first().map(|w| w.occurrence_index), Some(3));
    assert_eq!(rolled.len(), 4, "{rolled:?}");
    // Rolling again at the same time changes nothing, and no reply was added.
    assert_eq!(horizon::roll_forward(&ctx).await.expect("roll"), 0);
    let meeting = ctx
        .storage
        .meeting("default", uid)
        .await
        .expect("read")
        .expect("meeting");
    assert_eq!(meeting.revision, 1);
    assert_eq!(
        ctx.storage
            .pending_replies("default", 10)
            .await
            .expect("outbox")
            .len(),
        1
    );
}

on_both_engines!(
    series_windows_roll_forward,
    stuck_deferred_meetings_do_not_starve_the_others
);

/// A resource mailbox in which every item asked for is gone (deleted by hand); it records
/// which items were asked for, cycle by cycle.
#[derive(Default)]
struct GoneMailbox {
    fetched: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Mailbox for GoneMailbox {
    async fn sync(&self, _: Folder, _: Option<&str>) -> Result<SyncBatch, MailboxError> {
        Err(MailboxError::Transient("not used here".into()))
    }

    async fn fetch(&self, items: &[ItemRef]) -> Result<Vec<Fetched>, MailboxError> {
        let mut fetched = self.fetched.lock().expect("lock");
        Ok(items
            .iter()
            .map(|i| {
                fetched.push(i.id.clone());
                Fetched::Gone { id: i.id.clone() }
            })
            .collect())
    }

    async fn respond(&self, _: &ItemRef, _: Response, _: &str) -> Result<(), MailboxError> {
        Err(MailboxError::Transient("not used here".into()))
    }

    async fn wait_for_changes(&self, _: Duration) -> Result<Wake, MailboxError> {
        Ok(Wake::Timeout)
    }

    async fn organizer_item(&self, _: &str, _: &str) -> Result<Option<MeetingItem>, MailboxError> {
        Err(MailboxError::Transient("not used here".into()))
    }

    async fn update_organizer_body(
        &self,
        _: &str,
        _: &ItemRef,
        _: &str,
    ) -> Result<ItemRef, MailboxError> {
        Err(MailboxError::Transient("not used here".into()))
    }
}

/// One more deferred meeting than a cycle looks at, every item gone: the second cycle must
/// reach the meeting the first one had no room for (the looked-at ones go to the back of the
/// line), not look at the same stuck ones again.
async fn stuck_deferred_meetings_do_not_starve_the_others(db: &TestDb) {
    let clock = ManualClock::at_unix(MONDAY_9 / 1000);
    let (ctx, _) = context(db, clock.clone()).await;
    let raw = db.raw().await;
    let waiting = i64::from(deferred::PER_CYCLE) + 1;
    for i in 0..waiting {
        sqlx::query(
            "INSERT INTO meeting (integration, uid, state, is_series, sequence, revision, \
             schedule_json, fingerprint, organizer_email, subject, item_id, updated_at) \
             VALUES ('default', $1, 'deferred', 0, 0, 0, '{}', 'f', 'alice@example.com', 's', $2, $3)",
        )
        .bind(format!("uid-{i:02}"))
        .bind(format!("gone-{i:02}"))
        .bind(MONDAY_9 - (waiting - i) * 1000)
        .execute(&raw)
        .await
        .expect("deferred meeting row");
    }
    let mailbox = GoneMailbox::default();
    assert_eq!(
        deferred::complete_pending(&ctx, &mailbox)
            .await
            .expect("cycle 1"),
        0
    );
    let first: Vec<String> = std::mem::take(&mut *mailbox.fetched.lock().expect("lock"));
    assert_eq!(first.len(), deferred::PER_CYCLE as usize);
    assert_eq!(first[0], "gone-00");
    assert!(!first.contains(&"gone-50".to_owned()));

    clock.advance(Duration::from_secs(5));
    deferred::complete_pending(&ctx, &mailbox)
        .await
        .expect("cycle 2");
    let second = mailbox.fetched.lock().expect("lock").clone();
    assert_eq!(
        second.first().map(String::as_str),
        Some("gone-50"),
        "the meeting left out of cycle 1 comes first in cycle 2: {second:?}"
    );
    // Still deferred, waiting for a newer item: nothing was declined or deleted.
    let still: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM meeting WHERE state = 'deferred'")
        .fetch_one(&raw)
        .await
        .expect("count");
    assert_eq!(still, waiting);
}
