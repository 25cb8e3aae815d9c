//! Push mode and VMR lifetime against the simulated Infinity management API
//! (`vmr_simulator::infinity`, served in-process over HTTP): scheduling commits queue the
//! conference, the pusher creates, repairs and deletes its VMR; Infinity down, refusing one
//! VMR, drifting, and holding VMRs we did not create; the sweeper expiring a VMR after its
//! last window and the grace (time from a `ManualClock`). Every check runs on SQLite and, from
//! `cargo xtask test`, on PostgreSQL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;
use vmr_core::clock::{Clock, ManualClock, SharedClock};
use vmr_core::config::{InfinityConfig, PolicyServiceOptions};
use vmr_core::scheduling::Schedule;
use vmr_core::secret::Secret;
use vmr_server::infinity_push::{InfinityClient, InfinityPusher, PushTarget};
use vmr_server::vmr_lifetime::{LifetimeSweeper, SweptIntegration};
use vmr_simulator::infinity::{
    InfinityFault, InfinityServer, DEFAULT_ADMIN, DEFAULT_ADMIN_PASSWORD,
};
use vmr_store::{
    AliasBinding, Commit, CommitOutcome, MeetingRecord, NewAlias, NewConference, OperationRecord,
    Storage, WindowRecord,
};

use crate::common;

use common::TestDb;

const INTEGRATION: &str = "sales";
const TAG: &str = "VMR Scheduling for Exchange: sales";
/// A fixed "now" (Unix ms); checks move the clock by hand.
const T0: i64 = 1_760_000_000_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
/// `retry_max_secs` of the tests' pusher.
const RETRY_MAX_SECS: u64 = 30;

on_both_engines!(
    infinity_down_during_accept_the_vmr_appears_when_it_returns,
    drift_is_repaired_both_ways_and_foreign_vmrs_are_untouched,
    a_vmr_we_did_not_create_is_never_touched,
    a_refused_vmr_does_not_block_the_others,
    cancel_deletes_the_vmr_and_repairs_keep_admin_aliases,
    grace_expiry_deletes_the_conference_and_its_vmr,
    endless_series_never_expire_and_finite_ones_do,
    themes_and_groups_are_pushed_as_infinitys_uris,
    a_slow_infinity_counts_as_unreachable,
    a_row_claimed_by_a_crashed_instance_is_taken_up_after_the_claim,
    extra_aliases_added_and_removed_by_admins_follow_into_infinity,
    vmrs_of_a_retired_integration_are_deleted_and_no_others,
);

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// The simulated Infinity on a loopback port, which can be stopped (connections refused) and
/// started again on the same port.
struct Infinity {
    server: Arc<InfinityServer>,
    port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Infinity {
    /// A port with nothing listening yet.
    fn reserved() -> Infinity {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        Infinity {
            server: Arc::new(InfinityServer::default()),
            port,
            task: None,
        }
    }

    async fn running() -> Infinity {
        let mut i = Infinity::reserved();
        i.start().await;
        i
    }

    async fn start(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("rebind the Infinity port");
        let app = vmr_simulator::infinity::router(self.server.clone());
        self.task = Some(tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        }));
    }

    fn config(&self) -> InfinityConfig {
        InfinityConfig {
            enabled: true,
            url: Some(format!("http://127.0.0.1:{}", self.port)),
            username: Some(DEFAULT_ADMIN.into()),
            password: Some(Secret::new(DEFAULT_ADMIN_PASSWORD)),
            allow_insecure_http: true,
            timeout_secs: 3,
            retry_initial_ms: 100,
            retry_max_secs: RETRY_MAX_SECS,
            poll_interval_ms: 50,
            ..InfinityConfig::default()
        }
    }

    fn pusher(&self, storage: &Storage, clock: SharedClock) -> InfinityPusher {
        self.pusher_with(storage, clock, self.config())
    }

    fn pusher_with(
        &self,
        storage: &Storage,
        clock: SharedClock,
        config: InfinityConfig,
    ) -> InfinityPusher {
        let client = InfinityClient::new(&config).expect("client");
        let mut targets = BTreeMap::new();
        targets.insert(
            INTEGRATION.to_owned(),
            PushTarget {
                tag: InfinityConfig::origin_tag(INTEGRATION),
                service: PolicyServiceOptions::default(),
            },
        );
        InfinityPusher::new(storage.clone(), client, clock, config, targets)
    }

    /// `(method, uri)` of every request that changed something (not a GET).
    fn writes(&self) -> Vec<(String, String)> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .map(|r| (r.method, r.uri))
            .collect()
    }
}

impl Drop for Infinity {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn manual_clock() -> (Arc<ManualClock>, SharedClock) {
    let clock = ManualClock::at_unix(T0 / 1000);
    let shared: SharedClock = clock.clone();
    (clock, shared)
}

async fn open(db: &TestDb) -> Storage {
    let storage = db.open(4).await;
    storage.enable_push_queue();
    storage
}

/// A scheduled meeting: an issued alias bound to it, its conference, its windows.
struct Scheduled {
    uid: String,
    alias_id: String,
    conference_id: String,
    name: String,
    alias: String,
    numeric_alias: String,
}

fn single(start: i64, end: i64) -> Schedule {
    Schedule {
        start,
        end,
        time_zone: None,
        recurrence: None,
        moved: Vec::new(),
        deleted: Vec::new(),
    }
}

/// Accepts a meeting named `name` with `schedule` and `windows`, as the mailbox worker commits.
async fn accept(
    storage: &Storage,
    name: &str,
    schedule: &Schedule,
    windows: Vec<WindowRecord>,
    now: i64,
) -> Scheduled {
    accept_themed(storage, name, schedule, windows, now, None, None).await
}

/// [`accept`] with the conference's theme and host IdP group names.
async fn accept_themed(
    storage: &Storage,
    name: &str,
    schedule: &Schedule,
    windows: Vec<WindowRecord>,
    now: i64,
    theme: Option<&str>,
    group: Option<&str>,
) -> Scheduled {
    let alias_id = Uuid::new_v4().simple().to_string();
    let numeric = format!("88{}", &Uuid::new_v4().as_u128().to_string()[..8]);
    let alias = format!("{numeric}@vc.example.test");
    let inserted = storage
        .insert_alias_if_new(&NewAlias {
            id: &alias_id,
            integration: INTEGRATION,
            numeric_alias: &numeric,
            alias: &alias,
            created_at: now,
            auth_method: "EXCHANGE_USER_ID_TOKEN",
            requester_id: "user-1",
            requester_email: None,
            organizer_email: Some("ann@example.test"),
            organizer_name: None,
            subject: Some(name),
        })
        .await
        .expect("insert alias");
    assert!(inserted);
    let uid = format!("uid-{}", Uuid::new_v4().simple());
    let is_series = schedule.is_series();
    let commit = Commit {
        meeting: MeetingRecord {
            integration: INTEGRATION.into(),
            uid: uid.clone(),
            alias_id: Some(alias_id.clone()),
            conference_id: None,
            state: "accepted".into(),
            is_series,
            sequence: 0,
            revision: 1,
            schedule_json: serde_json::to_string(schedule).expect("schedule json"),
            fingerprint: "fp-1".into(),
            organizer_email: "ann@example.test".into(),
            subject: name.into(),
            item_id: format!("AAMk-{uid}"),
            updated_at: now,
        },
        binding: AliasBinding::Bind {
            alias_id: alias_id.clone(),
        },
        conference: Some(NewConference {
            alias_id: alias_id.clone(),
            name: name.into(),
            description: format!("{name}: scheduled by Ann"),
            alias: alias.clone(),
            numeric_alias: numeric.clone(),
            theme: theme.map(str::to_owned),
            host_identity_provider_group: group.map(str::to_owned),
            non_idp_participants: "disallow_all".into(),
        }),
        windows: Some(windows),
        recurring: is_series.then_some((0, false)),
        delete_conference: false,
        operation: operation(&uid),
        reply: None,
        now,
    };
    let CommitOutcome::Committed {
        conference_id: Some(conference_id),
        ..
    } = storage.commit_scheduling(&commit).await.expect("commit")
    else {
        panic!("the accept was not committed with a conference");
    };
    Scheduled {
        uid,
        alias_id,
        conference_id,
        name: name.into(),
        alias,
        numeric_alias: numeric,
    }
}

fn operation(uid: &str) -> OperationRecord {
    OperationRecord {
        transaction_uuid: Uuid::new_v4().to_string(),
        success: true,
        error_code: String::new(),
        error_description: String::new(),
        item_id: format!("AAMk-{uid}"),
    }
}

fn window(start: i64, end: i64) -> WindowRecord {
    WindowRecord {
        occurrence_index: 0,
        original_start: start,
        start_time: start,
        end_time: end,
        subject: "s".into(),
    }
}

/// Cancels `s` as the mailbox worker commits a cancellation.
async fn cancel(storage: &Storage, s: &Scheduled, now: i64) {
    let stored = storage
        .meeting(INTEGRATION, &s.uid)
        .await
        .expect("read")
        .expect("meeting");
    let commit = Commit {
        meeting: MeetingRecord {
            state: "cancelled".into(),
            revision: stored.revision + 1,
            updated_at: now,
            ..stored
        },
        binding: AliasBinding::Delete {
            alias_id: s.alias_id.clone(),
        },
        conference: None,
        windows: Some(Vec::new()),
        recurring: None,
        delete_conference: true,
        operation: operation(&s.uid),
        reply: None,
        now,
    };
    storage.commit_scheduling(&commit).await.expect("cancel");
}

fn assert_ours(vmr: &Value, s: &Scheduled) {
    assert_eq!(vmr["tag"], TAG, "{vmr}");
    assert_eq!(vmr["service_type"], "conference");
    assert_eq!(vmr["description"], format!("{}: scheduled by Ann", s.name));
    let mut aliases: Vec<&str> = vmr["aliases"]
        .as_array()
        .expect("aliases")
        .iter()
        .filter_map(|a| a["alias"].as_str())
        .collect();
    aliases.sort_unstable();
    let mut expected = vec![s.alias.as_str(), s.numeric_alias.as_str()];
    expected.sort_unstable();
    assert_eq!(aliases, expected, "both generated aliases");
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

async fn infinity_down_during_accept_the_vmr_appears_when_it_returns(db: &TestDb) {
    let (clock, shared) = manual_clock();
    // Queue off: commits queue nothing (pull-mode sites never fill the table).
    let plain = db.open(2).await;
    accept(
        &plain,
        "Pull mode",
        &single(T0 + HOUR, T0 + 2 * HOUR),
        vec![window(T0 + HOUR, T0 + 2 * HOUR)],
        T0,
    )
    .await;
    assert!(plain.push_queue().await.expect("queue").is_empty());
    drop(plain);

    let storage = open(db).await;
    let mut infinity = Infinity::reserved();
    let pusher = infinity.pusher(&storage, shared.clone());
    let s = accept(
        &storage,
        "Planning (Ann)",
        &single(T0 + HOUR, T0 + 2 * HOUR),
        vec![window(T0 + HOUR, T0 + 2 * HOUR)],
        T0,
    )
    .await;
    let queued = storage.push_queue().await.expect("queue");
    assert_eq!(
        queued.len(),
        1,
        "the accept queued its conference in the same commit"
    );
    assert_eq!(queued[0].conference_id, s.conference_id);

    // Nothing listens: the push fails as "unreachable", the row stays, with the reason.
    let report = pusher.drain_once().await.expect("drain");
    assert!(report.unreachable, "{report:?}");
    let health = pusher.health().snapshot();
    assert_eq!(health.unreachable_since_ms, Some(T0), "{health:?}");
    assert!(health.last_error.is_some_and(|e| e.contains("unreachable")));
    assert_eq!(report.pushed, 0);
    let queued = storage.push_queue().await.expect("queue");
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].attempts, 1);
    assert!(
        queued[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("unreachable")),
        "{queued:?}"
    );

    // The queue survives a restart (a new handle on the same database).
    drop(pusher);
    drop(storage);
    let storage = open(db).await;
    assert_eq!(
        storage
            .push_queue_depth()
            .await
            .expect("depth")
            .values()
            .sum::<u64>(),
        1
    );
    clock.advance(Duration::from_secs(5));

    // Infinity returns: the next drain creates the VMR with both aliases.
    infinity.start().await;
    let pusher = infinity.pusher(&storage, shared.clone());
    let report = pusher.drain_once().await.expect("drain");
    assert_eq!(report.pushed, 1, "{report:?}");
    assert!(pusher.health().reachable());
    assert_eq!(pusher.health().snapshot().last_ok_ms, Some(T0 + 5000));
    let vmr = infinity
        .server
        .conference_named("Planning (Ann)")
        .expect("the VMR appeared");
    assert_ours(&vmr, &s);
    assert_eq!(
        storage
            .push_queue_depth()
            .await
            .expect("depth")
            .values()
            .sum::<u64>(),
        0
    );
    assert!(
        infinity.server.conference_named("Pull mode").is_none(),
        "unqueued conferences wait for reconcile"
    );

    // The background loop, timed: Infinity answering 503 while a meeting is accepted, then
    // back; the VMR appears within one back-off pause (100 ms doubling).
    infinity.server.set_down(true);
    let loop_pusher = Arc::new(infinity.pusher(&storage, vmr_core::clock::system()));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(vmr_server::infinity_push::run(loop_pusher, stop));
    let s2 = accept(
        &storage,
        "Review (Ann)",
        &single(T0 + HOUR, T0 + 2 * HOUR),
        vec![window(T0 + HOUR, T0 + 2 * HOUR)],
        vmr_core::clock::system().now_unix_ms(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(infinity.server.conference_named("Review (Ann)").is_none());
    infinity.server.set_down(false);
    let back = Instant::now();
    let vmr = loop {
        if let Some(v) = infinity.server.conference_named("Review (Ann)") {
            break v;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "the VMR never appeared"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = back.elapsed();
    eprintln!(
        "[{}] VMR appeared {took:?} after Infinity returned",
        db.engine
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_ours(&vmr, &s2);
    // The start-up reconcile also brought in the pull-mode conference.
    let start = Instant::now();
    while infinity.server.conference_named("Pull mode").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "reconcile did not queue it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    task.await.expect("loop ends");
}

async fn drift_is_repaired_both_ways_and_foreign_vmrs_are_untouched(db: &TestDb) {
    let (_clock, shared) = manual_clock();
    let storage = open(db).await;
    let infinity = Infinity::running().await;
    let pusher = infinity.pusher(&storage, shared);
    let a = accept(
        &storage,
        "Alpha",
        &single(T0 + HOUR, T0 + 2 * HOUR),
        vec![window(T0 + HOUR, T0 + 2 * HOUR)],
        T0,
    )
    .await;
    let b = accept(
        &storage,
        "Beta",
        &single(T0 + HOUR, T0 + 2 * HOUR),
        vec![window(T0 + HOUR, T0 + 2 * HOUR)],
        T0,
    )
    .await;
    assert_eq!(pusher.drain_once().await.expect("drain").pushed, 2);

    // Drift: Alpha deleted by hand; a stale VMR with our tag left from a lost database; VMRs
    // of other origins (no tag, another integration's tag, our tag text inside another).
    assert!(infinity.server.delete_conference_named("Alpha"));
    infinity
        .server
        .create_conference(json!({"name": "Old meeting", "tag": TAG, "aliases": [{"alias": "old@vc.example.test"}]}))
        .expect("stale");
    let foreign = [
        json!({"name": "CEO room", "tag": "", "aliases": [{"alias": "ceo@vc.example.test"}]}),
        json!({"name": "Support", "tag": "VMR Scheduling for Exchange: support"}),
        json!({"name": "Look-alike", "tag": format!("{TAG} (copy)")}),
    ];
    for f in &foreign {
        infinity
            .server
            .create_conference(f.clone())
            .expect("foreign");
    }
    let before: Vec<Value> = ["CEO room", "Support", "Look-alike"]
        .iter()
        .map(|n| infinity.server.conference_named(n).expect("present"))
        .collect();
    let writes_before = infinity.writes().len();

    let report = pusher.reconcile().await.expect("reconcile");
    assert_eq!(report.queued, 1, "{report:?}");
    assert_eq!(report.stale_deleted, 1, "{report:?}");
    assert!(infinity.server.conference_named("Old meeting").is_none());
    assert_eq!(pusher.drain_once().await.expect("drain").pushed, 1);
    assert_ours(
        &infinity
            .server
            .conference_named("Alpha")
            .expect("recreated"),
        &a,
    );
    assert_ours(&infinity.server.conference_named("Beta").expect("kept"), &b);
    for (n, old) in ["CEO room", "Support", "Look-alike"].iter().zip(&before) {
        assert_eq!(
            &infinity.server.conference_named(n).expect("still there"),
            old,
            "{n} untouched"
        );
    }
    let writes: Vec<(String, String)> = infinity.writes().split_off(writes_before);
    assert_eq!(
        writes.len(),
        2,
        "one delete (stale) and one create (Alpha): {writes:?}"
    );
    for f in &before {
        let uri = f["resource_uri"].as_str().expect("uri");
        assert!(writes.iter().all(|(_, u)| !u.contains(uri)), "{writes:?}");
    }
    // In line now: a second pass changes nothing.
    let again = pusher.reconcile().await.expect("reconcile");
    assert_eq!((again.queued, again.stale_deleted), (0, 0));
}

async fn a_vmr_we_did_not_create_is_never_touched(db: &TestDb) {
    let (clock, shared) = manual_clock();
    let storage = open(db).await;
    let infinity = Infinity::running().await;
    let pusher = infinity.pusher(&storage, shared);
    // An administrator's own VMR has the name our conference gets.
    infinity
        .server
        .create_conference(json!({"name": "Board (Ann)", "description": "hand made", "aliases": [{"alias": "board@vc.example.test"}]}))
        .expect("foreign");
    let original = infinity
        .server
        .conference_named("Board (Ann)")
        .expect("there");
    let s = accept(
        &storage,
        "Board (Ann)",
        &single(T0 + HOUR, T0 + 2 * HOUR),
        vec![window(T0 + HOUR, T0 + 2 * HOUR)],
        T0,
    )
    .await;
    let report = pusher.drain_once().await.expect("drain");
    assert_eq!((report.pushed, report.refused), (0, 1), "{report:?}");
    let row = &storage.push_queue().await.expect("queue")[0];
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("without our tag")),
        "{row:?}"
    );
    assert_eq!(
        row.next_attempt_at,
        clock.now_unix_ms() + 1000 * RETRY_MAX_SECS as i64
    );
    // Cancelled: its deletion must not take the administrator's VMR either.
    clock.advance(Duration::from_secs(60));
    cancel(&storage, &s, T0 + MINUTE).await;
    let report = pusher.drain_once().await.expect("drain");
    assert_eq!(report.pushed, 1, "nothing of ours to delete: done");
    assert_eq!(
        pusher.reconcile().await.expect("reconcile").stale_deleted,
        0
    );
    assert_eq!(
        infinity
            .server
            .conference_named("Board (Ann)")
            .expect("kept"),
        original
    );
    assert!(
        infinity.writes().is_empty(),
        "not one write request reached Infinity: {:?}",
        infinity.writes()
    );
}

async fn vmrs_of_a_retired_integration_are_deleted_and_no_others(db: &TestDb) {
    let (_clock, shared) = manual_clock();
    let storage = open(db).await;
    let infinity = Infinity::running().await;
    // Ours, live: pushed.
    accept(
        &storage,
        "Standup (Ann)",
        &single(T0 + HOUR, T0 + 2 * HOUR),
        vec![window(T0 + HOUR, T0 + 2 * HOUR)],
        T0,
    )
    .await;
    let config = InfinityConfig {
        retired_integrations: vec!["old-site".into()],
        ..infinity.config()
    };
    let pusher = infinity.pusher_with(&storage, shared, config);
    assert_eq!(pusher.drain_once().await.expect("drain").pushed, 1);
    // Left by the removed integration `old-site` (two), by another deployment's integration
    // (a tag we do not retire), and by an administrator (no tag).
    let made = |name: &str, tag: &str| {
        infinity
            .server
            .create_conference(json!({"name": name, "tag": tag, "aliases": [{"alias": format!("{name}@vc.example.test")}]}))
            .expect("seeded VMR");
    };
    made("old-1", &InfinityConfig::origin_tag("old-site"));
    made("old-2", &InfinityConfig::origin_tag("old-site"));
    made("theirs", &InfinityConfig::origin_tag("other-deployment"));
    made("hand-made", "");
    // A tag that merely starts like the retired one is not it.
    made(
        "near-miss",
        &format!("{} (copy)", InfinityConfig::origin_tag("old-site")),
    );

    let report = pusher.reconcile().await.expect("reconcile");
    assert_eq!(
        (report.retired_deleted, report.stale_deleted, report.queued),
        (2, 0, 0),
        "{report:?}"
    );
    for gone in ["old-1", "old-2"] {
        assert!(
            infinity.server.conference_named(gone).is_none(),
            "{gone} kept"
        );
    }
    for kept in ["Standup (Ann)", "theirs", "hand-made", "near-miss"] {
        assert!(
            infinity.server.conference_named(kept).is_some(),
            "{kept} deleted"
        );
    }
    // Nothing left to retire: the next pass deletes nothing.
    assert_eq!(
        pusher.reconcile().await.expect("reconcile").retired_deleted,
        0
    );
}

async fn a_refused_vmr_does_not_block_the_others(db: &TestDb) {
    let (clock, shared) = manual_clock();
    let storage = open(db).await;
    let infinity = Infinity::running().await;
    let pusher = infinity.pusher(&storage, shared);
    infinity.server.inject(InfinityFault {
        method: Some("POST".into()),
        body_contains: Some("Broken".into()),
        status: Some(400),
        body: Some(r#"{"conference": {"name": ["injected refusal"]}}"#.into()),
        ..InfinityFault::default()
    });
    let w = || vec![window(T0 + HOUR, T0 + 2 * HOUR)];
    let sched = single(T0 + HOUR, T0 + 2 * HOUR);
    accept(&storage, "Broken one", &sched, w(), T0).await;
    let ok1 = accept(&storage, "Fine one", &sched, w(), T0).await;
    let ok2 = accept(&storage, "Fine two", &sched, w(), T0).await;
    let report = pusher.drain_once().await.expect("drain");
    assert_eq!(
        (report.pushed, report.refused, report.unreachable),
        (2, 1, false),
        "{report:?}"
    );
    assert_ours(
        &infinity
            .server
            .conference_named("Fine one")
            .expect("pushed"),
        &ok1,
    );
    assert_ours(
        &infinity
            .server
            .conference_named("Fine two")
            .expect("pushed"),
        &ok2,
    );
    let row = &storage.push_queue().await.expect("queue")[0];
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("400") && e.contains("injected refusal")),
        "{row:?}"
    );
    // Not due before the back-off passes, even with the fault gone.
    infinity.server.clear_faults();
    assert_eq!(pusher.drain_once().await.expect("drain").pushed, 0);
    clock.advance(Duration::from_secs(RETRY_MAX_SECS));
    assert_eq!(pusher.drain_once().await.expect("drain").pushed, 1);
    assert!(infinity.server.conference_named("Broken one").is_some());
    assert_eq!(
        storage
            .push_queue_depth()
            .await
            .expect("depth")
            .values()
            .sum::<u64>(),
        0
    );
}

async fn cancel_deletes_the_vmr_and_repairs_keep_admin_aliases(db: &TestDb) {
    let (clock, shared) = manual_clock();
    let storage = open(db).await;
    let infinity = Infinity::running().await;
    let pusher = infinity.pusher(&storage, shared);
    let s = accept(
        &storage,
        "Standup",
        &single(T0 + HOUR, T0 + 2 * HOUR),
        vec![window(T0 + HOUR, T0 + 2 * HOUR)],
        T0,
    )
    .await;
    pusher.drain_once().await.expect("drain");
    // An administrator adds an alias in Infinity and removes a generated one by mistake.
    assert!(infinity
        .server
        .add_alias("Standup", "standup@vc.example.test"));
    let vmr = infinity.server.conference_named("Standup").expect("vmr");
    let numeric_uri = vmr["aliases"]
        .as_array()
        .expect("aliases")
        .iter()
        .find(|a| a["alias"] == s.numeric_alias.as_str())
        .and_then(|a| a["resource_uri"].as_str())
        .expect("numeric alias")
        .to_owned();
    let client = InfinityClient::new(&infinity.config()).expect("client");
    client
        .delete(&numeric_uri, "test")
        .await
        .expect("delete alias");
    assert_eq!(pusher.reconcile().await.expect("reconcile").queued, 1);
    pusher.drain_once().await.expect("drain");
    let mut expected = vec![
        s.alias.clone(),
        s.numeric_alias.clone(),
        "standup@vc.example.test".to_owned(),
    ];
    expected.sort();
    assert_eq!(
        infinity.server.alias_names_of("Standup"),
        expected,
        "generated alias back, admin's kept"
    );

    clock.advance(Duration::from_secs(60));
    cancel(&storage, &s, T0 + MINUTE).await;
    let alias = storage
        .alias_by_id(&s.alias_id)
        .await
        .expect("read")
        .expect("alias");
    assert_eq!(alias.state, "deleted");
    assert_eq!(pusher.drain_once().await.expect("drain").pushed, 1);
    assert!(
        infinity.server.conference_named("Standup").is_none(),
        "cancelled → VMR deleted"
    );
}

async fn extra_aliases_added_and_removed_by_admins_follow_into_infinity(db: &TestDb) {
    let (clock, shared) = manual_clock();
    let storage = open(db).await;
    let infinity = Infinity::running().await;
    let pusher = infinity.pusher(&storage, shared);
    let s = accept(
        &storage,
        "Board",
        &single(T0 + HOUR, T0 + 2 * HOUR),
        vec![window(T0 + HOUR, T0 + 2 * HOUR)],
        T0,
    )
    .await;
    pusher.drain_once().await.expect("drain");
    // An alias added in Infinity by hand is not ours to remove.
    assert!(infinity
        .server
        .add_alias("Board", "board-lobby@vc.example.test"));

    // Added on our admin page: queued in the same transaction, then pushed.
    storage
        .add_extra_alias(
            &s.conference_id,
            "board@vc.example.test",
            "Boardroom",
            "ann",
            T0,
        )
        .await
        .expect("extra alias");
    assert_eq!(
        storage.push_queue().await.expect("queue").len(),
        1,
        "the admin's change is queued"
    );
    assert_eq!(pusher.drain_once().await.expect("drain").pushed, 1);
    let mut expected = vec![
        s.alias.clone(),
        s.numeric_alias.clone(),
        "board-lobby@vc.example.test".to_owned(),
        "board@vc.example.test".to_owned(),
    ];
    expected.sort();
    assert_eq!(infinity.server.alias_names_of("Board"), expected);
    let vmr = infinity.server.conference_named("Board").expect("vmr");
    let described = vmr["aliases"]
        .as_array()
        .expect("aliases")
        .iter()
        .find(|a| a["alias"] == "board@vc.example.test")
        .and_then(|a| a["description"].as_str())
        .expect("extra alias")
        .to_owned();
    assert!(described.contains("Boardroom"), "{described}");
    // In line: the reconcile queues nothing.
    assert_eq!(pusher.reconcile().await.expect("reconcile").queued, 0);

    // Removed on our admin page: removed in Infinity; the hand-made one stays.
    storage
        .remove_extra_alias(
            &s.conference_id,
            "board@vc.example.test",
            "ann",
            T0 + MINUTE,
        )
        .await
        .expect("removed");
    clock.advance(Duration::from_secs(60));
    assert_eq!(pusher.drain_once().await.expect("drain").pushed, 1);
    expected.retain(|a| a != "board@vc.example.test");
    assert_eq!(infinity.server.alias_names_of("Board"), expected);
}

async fn grace_expiry_deletes_the_conference_and_its_vmr(db: &TestDb) {
    let (clock, shared) = manual_clock();
    let storage = open(db).await;
    let infinity = Infinity::running().await;
    let pusher = infinity.pusher(&storage, shared.clone());
    let buffer_after = 60 * MINUTE;
    let grace = 24 * HOUR;
    let sweeper = LifetimeSweeper::new(
        storage.clone(),
        shared,
        grace,
        vec![SweptIntegration {
            id: INTEGRATION.into(),
            buffer_after_ms: buffer_after,
        }],
    );
    let (start, end) = (T0 + HOUR, T0 + 2 * HOUR);
    let s = accept(
        &storage,
        "Quarterly",
        &single(start, end),
        vec![window(start, end)],
        T0,
    )
    .await;
    pusher.drain_once().await.expect("drain");
    assert!(infinity.server.conference_named("Quarterly").is_some());

    let expires_at = end + buffer_after + grace;
    clock.set_unix((expires_at - 1000) / 1000);
    let report = sweeper.sweep_once().await.expect("sweep");
    assert_eq!(
        report.expired, 0,
        "1 s before the grace ends: kept ({report:?})"
    );
    assert!(storage
        .conference(&s.conference_id)
        .await
        .expect("read")
        .expect("c")
        .deletion_time
        .is_none());

    clock.set_unix(expires_at / 1000);
    let report = sweeper.sweep_once().await.expect("sweep");
    assert_eq!(report.expired, 1, "{report:?}");
    let c = storage
        .conference(&s.conference_id)
        .await
        .expect("read")
        .expect("c");
    assert_eq!(c.deletion_time, Some(expires_at));
    let alias = storage
        .alias_by_id(&s.alias_id)
        .await
        .expect("read")
        .expect("alias");
    assert_eq!(
        alias.state, "deleted",
        "the alias is retired, never issued again"
    );
    let meeting = storage
        .meeting(INTEGRATION, &s.uid)
        .await
        .expect("read")
        .expect("meeting");
    assert_eq!(
        meeting.updated_at, expires_at,
        "followers of updated_at see the expiry"
    );
    let ops = storage.operations(INTEGRATION, 10).await.expect("ops");
    assert!(
        ops.iter()
            .any(|o| o.operation.error_description == vmr_store::lifetime::EXPIRED_DESCRIPTION),
        "the expiry is in the processing log"
    );
    assert_eq!(
        storage
            .push_queue_depth()
            .await
            .expect("depth")
            .values()
            .sum::<u64>(),
        1,
        "its VMR deletion is queued"
    );
    assert_eq!(pusher.drain_once().await.expect("drain").pushed, 1);
    assert!(
        infinity.server.conference_named("Quarterly").is_none(),
        "VMR deleted in Infinity"
    );
    // A second sweep finds nothing.
    assert_eq!(
        sweeper.sweep_once().await.expect("sweep"),
        Default::default()
    );
}

async fn endless_series_never_expire_and_finite_ones_do(db: &TestDb) {
    use chrono::NaiveDate;
    use vmr_core::recurrence::{Pattern, Range, Recurrence};
    let (clock, shared) = manual_clock();
    let storage = open(db).await;
    let sweeper = LifetimeSweeper::new(
        storage.clone(),
        shared,
        24 * HOUR,
        vec![SweptIntegration {
            id: INTEGRATION.into(),
            buffer_after_ms: 0,
        }],
    );
    let day0 = chrono::DateTime::from_timestamp_millis(T0)
        .expect("t0")
        .date_naive();
    let daily = |range: Range| Schedule {
        start: T0,
        end: T0 + HOUR,
        time_zone: None,
        recurrence: Some(Recurrence {
            pattern: Pattern::Daily { interval: 1 },
            range,
        }),
        moved: Vec::new(),
        deleted: Vec::new(),
    };
    let endless = daily(Range::NoEnd { start: day0 });
    let three = daily(Range::Numbered {
        start: day0,
        count: 3,
    });
    // Only the first window stored (as if the horizon had not rolled yet).
    let e = accept(
        &storage,
        "Endless",
        &endless,
        vec![window(T0, T0 + HOUR)],
        T0,
    )
    .await;
    let f = accept(
        &storage,
        "Three days",
        &three,
        vec![window(T0, T0 + HOUR)],
        T0,
    )
    .await;
    let _ = NaiveDate::MIN;

    // Two days on: both have no stored window after the cutoff, but both have occurrences.
    clock.set_unix((T0 + 2 * 24 * HOUR + 2 * HOUR) / 1000);
    let report = sweeper.sweep_once().await.expect("sweep");
    assert_eq!(report.expired, 0, "{report:?}");
    // The third occurrence ends on day 2 + 1 h; a day of grace later the finite one expires.
    clock.set_unix((T0 + 3 * 24 * HOUR + HOUR) / 1000);
    let report = sweeper.sweep_once().await.expect("sweep");
    assert_eq!(report.expired, 1, "{report:?}");
    assert!(storage
        .conference(&f.conference_id)
        .await
        .expect("r")
        .expect("c")
        .deletion_time
        .is_some());
    assert!(storage
        .conference(&e.conference_id)
        .await
        .expect("r")
        .expect("c")
        .deletion_time
        .is_none());
    clock.advance(Duration::from_secs(400 * 24 * 3600));
    assert_eq!(
        sweeper.sweep_once().await.expect("sweep").expired,
        0,
        "a series without end never expires"
    );
}

async fn themes_and_groups_are_pushed_as_infinitys_uris(db: &TestDb) {
    let (clock, shared) = manual_clock();
    let storage = open(db).await;
    let infinity = Infinity::running().await;
    let pusher = infinity.pusher(&storage, shared);
    let theme = infinity.server.add_ivr_theme("Corporate").expect("theme");
    let group = infinity
        .server
        .add_identity_provider_group("Staff")
        .expect("group");
    let sched = single(T0 + HOUR, T0 + 2 * HOUR);
    let w = || vec![window(T0 + HOUR, T0 + 2 * HOUR)];
    let s = accept_themed(
        &storage,
        "Themed",
        &sched,
        w(),
        T0,
        Some("Corporate"),
        Some("Staff"),
    )
    .await;
    accept_themed(
        &storage,
        "Unknown theme",
        &sched,
        w(),
        T0,
        Some("Retro"),
        None,
    )
    .await;
    let report = pusher.drain_once().await.expect("drain");
    assert_eq!((report.pushed, report.refused), (1, 1), "{report:?}");
    let vmr = infinity.server.conference_named("Themed").expect("pushed");
    assert_ours(&vmr, &s);
    assert_eq!(vmr["ivr_theme"], theme.as_str());
    assert_eq!(vmr["host_identity_provider_group"], group.as_str());
    let row = &storage.push_queue().await.expect("queue")[0];
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("no ivr_theme named \"Retro\"")),
        "{row:?}"
    );
    // The theme uploaded later: the VMR goes in on the next attempt.
    infinity.server.add_ivr_theme("Retro").expect("theme");
    clock.advance(Duration::from_secs(RETRY_MAX_SECS));
    assert_eq!(pusher.drain_once().await.expect("drain").pushed, 1);
    assert!(infinity.server.conference_named("Unknown theme").is_some());
    // In line: reconcile queues nothing.
    assert_eq!(pusher.reconcile().await.expect("reconcile").queued, 0);
}

async fn a_slow_infinity_counts_as_unreachable(db: &TestDb) {
    let (_clock, shared) = manual_clock();
    let storage = open(db).await;
    let infinity = Infinity::running().await;
    let config = InfinityConfig {
        timeout_secs: 1,
        ..infinity.config()
    };
    let pusher = infinity.pusher_with(&storage, shared, config);
    infinity.server.inject(InfinityFault {
        delay_ms: 1_500,
        times: Some(1),
        ..InfinityFault::default()
    });
    let s = accept(
        &storage,
        "Slow",
        &single(T0 + HOUR, T0 + 2 * HOUR),
        vec![window(T0 + HOUR, T0 + 2 * HOUR)],
        T0,
    )
    .await;
    let started = Instant::now();
    let report = pusher.drain_once().await.expect("drain");
    assert!(report.unreachable, "{report:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1_450),
        "the timeout cut the wait"
    );
    let row = &storage.push_queue().await.expect("queue")[0];
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("unreachable")),
        "{row:?}"
    );
    assert_eq!(pusher.drain_once().await.expect("drain").pushed, 1);
    assert_ours(
        &infinity.server.conference_named("Slow").expect("pushed"),
        &s,
    );
}

async fn a_row_claimed_by_a_crashed_instance_is_taken_up_after_the_claim(db: &TestDb) {
    let (clock, shared) = manual_clock();
    let storage = open(db).await;
    let infinity = Infinity::running().await;
    let pusher = infinity.pusher(&storage, shared);
    let s = accept(
        &storage,
        "Orphaned",
        &single(T0 + HOUR, T0 + 2 * HOUR),
        vec![window(T0 + HOUR, T0 + 2 * HOUR)],
        T0,
    )
    .await;
    // Another instance claimed the row and died before finishing.
    let row = storage.push_queue().await.expect("queue").remove(0);
    let claim = 3 * 6 + 10; // timeout_secs × requests per push + 10 s
    assert!(storage
        .claim_push(&row, T0 + claim * 1000)
        .await
        .expect("claim"));
    assert!(
        !storage.claim_push(&row, T0 + 1).await.expect("claim"),
        "claimed once only"
    );
    assert_eq!(
        pusher.drain_once().await.expect("drain").pushed,
        0,
        "held by the claim"
    );
    clock.advance(Duration::from_secs(claim as u64));
    assert_eq!(pusher.drain_once().await.expect("drain").pushed, 1);
    assert_ours(
        &infinity
            .server
            .conference_named("Orphaned")
            .expect("pushed"),
        &s,
    );
}
