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
use vmr_server::integration::Integration;
use vmr_server::mailbox_worker::processor::{process, Processed};
use vmr_server::mailbox_worker::{horizon, WorkerContext};
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

on_both_engines!(series_windows_roll_forward);
