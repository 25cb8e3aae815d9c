//! Infinity's external policy API against a real server (in-process, HTTPS on
//! loopback, time from a `ManualClock`), on both database engines.
//!
//! Meetings are written through the store as the mailbox worker writes them
//! (`Storage::commit_scheduling`: alias bound, VMR created, windows replaced,
//! cancellation); the index is brought up to date with `PolicyService::refresh`
//! (one check proves the background follower does it alone). Every check asks
//! over HTTP, with Infinity's query fields, and reads the JSON answer.
//!
//! Every check runs as `<check>::sqlite` and `<check>::postgres` (the latter on
//! the server `cargo xtask test` starts).

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use vmr_core::clock::ManualClock;
use vmr_core::config::{Config, IntegrationConfig, Role, UnknownAliasAction};
use vmr_server::app::{serve, App};
use vmr_server::policy::PolicyService;
use vmr_store::{
    AliasBinding, Commit, CommitOutcome, MeetingRecord, NewAlias, NewConference, OperationRecord,
    Storage, WindowRecord,
};

use crate::common;

use common::TestDb;

/// 2027-03-01T09:00:00Z (Unix s): the meetings' day.
const START_S: i64 = 1_803_978_000;
const MIN: i64 = 60;
const HOUR: i64 = 3_600;
const USER: &str = "infinity";
const PASSWORD: &str = "policy-password-1";
/// SHA-256 of "hashed-password".
const HASHED_PASSWORD_SHA256: &str =
    "fb59a3d960ec6f3f85771b15cb3174ea44033647599fe0b89690754ea1093c35";

on_both_engines!(
    window_edges_with_the_default_buffers,
    buffers_come_from_the_integration,
    a_moved_meeting_answers_at_its_new_time_only,
    a_cancelled_occurrence_and_a_cancelled_meeting_are_rejected,
    unknown_aliases_continue_or_reject_as_configured,
    every_dialled_form_reaches_the_vmr,
    callers_without_credentials_or_from_elsewhere_are_refused,
    pins_and_guests_come_from_the_configuration,
    the_follower_picks_up_commits_by_itself,
);

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

struct PolicyServer {
    origin: String,
    storage: Storage,
    clock: Arc<ManualClock>,
    policy: Arc<PolicyService>,
    client: reqwest::Client,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

/// A server (role `all`) on `db` with `[policy]` on (basic auth, loopback
/// allowed), the clock at [`START_S`] − 1 day, after `tweak`.
async fn start(db: &TestDb, tweak: impl FnOnce(&mut Config)) -> PolicyServer {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut config = Config {
        role: Role::All,
        ..Config::default()
    };
    config.server.listen = "127.0.0.1:0".parse().expect("listen");
    config.server.public_host = "127.0.0.1".into();
    config.server.dist_dir = root.join("dist");
    config.server.static_dir = root.join("static");
    config.storage.url = db.url.clone();
    config.policy.enabled = true;
    config.policy.basic_auth_user = Some(USER.into());
    config.policy.basic_auth_password = Some(PASSWORD.into());
    config.policy.allow_from = vec![
        "127.0.0.0/8".parse().expect("cidr"),
        "::1".parse().expect("cidr"),
    ];
    tweak(&mut config);
    config.validate().expect("valid config");
    let clock = ManualClock::at_unix(START_S - 24 * HOUR);
    let app = App::build_with_clock(config, clock.clone())
        .await
        .expect("app builds");
    let App::Management(state) = &app else {
        panic!("role all builds the management state");
    };
    let policy = state.policy.clone().expect("[policy] enabled");
    let storage = state.storage.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, fut) = serve(app, async {
        let _ = rx.await;
    })
    .await
    .expect("serve");
    tokio::spawn(fut);
    PolicyServer {
        origin: format!("https://{addr}"),
        storage,
        clock,
        policy,
        client: reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .expect("client"),
        _shutdown: tx,
    }
}

impl PolicyServer {
    /// The answer to `local_alias` at `at` (Unix s), with Infinity's other fields.
    async fn ask_at(&self, local_alias: &str, at: i64) -> Value {
        self.clock.set_unix(at);
        let r = self
            .client
            .get(format!("{}/policy/v1/service/configuration", self.origin))
            .basic_auth(USER, Some(PASSWORD))
            .query(&[
                ("local_alias", local_alias),
                ("remote_alias", "sip:alice@example.com"),
                ("remote_display_name", "Alice"),
                ("call_direction", "dial_in"),
                ("protocol", "sip"),
                ("trigger", "invite"),
                ("bandwidth", "0"),
                ("vendor", "Pexip Infinity Connect"),
                ("node_ip", "10.0.0.5"),
                ("version_id", "35"),
            ])
            .send()
            .await
            .expect("policy request");
        assert_eq!(r.status(), 200, "policy answer for {local_alias:?}");
        r.json().await.expect("JSON")
    }

    /// Only the action of the answer (`continue` with a result is `service`).
    async fn action_at(&self, local_alias: &str, at: i64) -> &'static str {
        let v = self.ask_at(local_alias, at).await;
        assert_eq!(v["status"], "success", "{v}");
        match (v["action"].as_str(), v.get("result")) {
            (Some("continue"), Some(_)) => "service",
            (Some("continue"), None) => "continue",
            (Some("reject"), None) => "reject",
            _ => panic!("unexpected answer {v}"),
        }
    }

    async fn refresh(&self) {
        self.policy.refresh().await.expect("index follows");
    }
}

/// A meeting as the worker stores it, with its alias.
struct Scheduled {
    uid: String,
    alias_id: String,
    numeric: String,
    alias: String,
    conference_id: String,
    revision: i64,
}

/// Issues alias `numeric`@vc.example.com (as the pane would) and commits an
/// accepted meeting with `windows` (Unix s) through the store.
async fn schedule(s: &PolicyServer, numeric: &str, windows: &[(i64, i64)]) -> Scheduled {
    let alias_id = issue(&s.storage, numeric).await;
    let uid = format!("UID-{numeric}");
    let alias = format!("{numeric}@vc.example.com");
    let commit = Commit {
        meeting: meeting(&uid, &alias_id, None, "accepted", 1),
        binding: AliasBinding::Bind {
            alias_id: alias_id.clone(),
        },
        conference: Some(NewConference {
            alias_id: alias_id.clone(),
            name: format!("Planning {numeric}"),
            description: "Planning (Alice)".into(),
            alias: alias.clone(),
            numeric_alias: numeric.into(),
            theme: Some("Corporate".into()),
            host_identity_provider_group: None,
            non_idp_participants: "disallow_all".into(),
        }),
        windows: Some(window_records(windows)),
        recurring: None,
        delete_conference: false,
        operation: operation(),
        reply: None,
        now: START_S * 1000,
    };
    let CommitOutcome::Committed {
        conference_id: Some(conference_id),
        ..
    } = s.storage.commit_scheduling(&commit).await.expect("commit")
    else {
        panic!("the meeting was not committed with a conference");
    };
    Scheduled {
        uid,
        alias_id,
        numeric: numeric.into(),
        alias,
        conference_id,
        revision: 1,
    }
}

/// Rewrites the meeting's windows (a move, an occurrence deleted) as the next revision.
async fn reschedule(s: &PolicyServer, m: &mut Scheduled, windows: &[(i64, i64)]) {
    m.revision += 1;
    let commit = Commit {
        meeting: meeting(
            &m.uid,
            &m.alias_id,
            Some(&m.conference_id),
            "accepted",
            m.revision,
        ),
        binding: AliasBinding::None,
        conference: None,
        windows: Some(window_records(windows)),
        recurring: None,
        delete_conference: false,
        operation: operation(),
        reply: None,
        now: START_S * 1000,
    };
    s.storage.commit_scheduling(&commit).await.expect("commit");
}

/// Cancels the meeting as the worker does: windows removed, VMR and alias deleted.
async fn cancel(s: &PolicyServer, m: &mut Scheduled) {
    m.revision += 1;
    let commit = Commit {
        meeting: meeting(
            &m.uid,
            &m.alias_id,
            Some(&m.conference_id),
            "cancelled",
            m.revision,
        ),
        binding: AliasBinding::Delete {
            alias_id: m.alias_id.clone(),
        },
        conference: None,
        windows: Some(Vec::new()),
        recurring: None,
        delete_conference: true,
        operation: operation(),
        reply: None,
        now: START_S * 1000,
    };
    s.storage.commit_scheduling(&commit).await.expect("commit");
}

async fn issue(storage: &Storage, numeric: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let alias = format!("{numeric}@vc.example.com");
    let inserted = storage
        .insert_alias_if_new(&NewAlias {
            id: &id,
            integration: "default",
            numeric_alias: numeric,
            alias: &alias,
            created_at: START_S - 2 * 24 * HOUR,
            auth_method: "EXCHANGE_USER_ID_TOKEN",
            requester_id: "alice",
            requester_email: Some("alice@example.com"),
            organizer_email: Some("alice@example.com"),
            organizer_name: Some("Alice"),
            subject: Some("Planning"),
        })
        .await
        .expect("insert alias");
    assert!(inserted, "alias {numeric} is new");
    id
}

fn meeting(
    uid: &str,
    alias_id: &str,
    conference_id: Option<&str>,
    state: &str,
    revision: i64,
) -> MeetingRecord {
    MeetingRecord {
        integration: "default".into(),
        uid: uid.into(),
        alias_id: Some(alias_id.into()),
        conference_id: conference_id.map(str::to_owned),
        state: state.into(),
        is_series: false,
        sequence: revision,
        revision,
        schedule_json: "{}".into(),
        fingerprint: format!("fp-{revision}"),
        organizer_email: "alice@example.com".into(),
        subject: "Planning".into(),
        item_id: format!("AAMk-{uid}"),
        // Later commits are written later, as with a real clock.
        updated_at: START_S * 1000 + revision,
    }
}

fn window_records(windows: &[(i64, i64)]) -> Vec<WindowRecord> {
    windows
        .iter()
        .enumerate()
        .map(|(i, &(start, end))| WindowRecord {
            occurrence_index: i as i64,
            original_start: start * 1000,
            start_time: start * 1000,
            end_time: end * 1000,
            subject: "Planning".into(),
        })
        .collect()
}

fn operation() -> OperationRecord {
    OperationRecord {
        transaction_uuid: uuid::Uuid::new_v4().simple().to_string(),
        success: true,
        error_code: String::new(),
        error_description: String::new(),
        item_id: "AAMk".into(),
    }
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

async fn window_edges_with_the_default_buffers(db: &TestDb) {
    let s = start(db, |_| {}).await;
    let (start_s, end_s) = (START_S, START_S + HOUR);
    let m = schedule(&s, "88123456", &[(start_s, end_s)]).await;
    s.refresh().await;
    let alias = m.alias.as_str();
    let open = start_s - 30 * MIN;
    let close = end_s + 60 * MIN;
    assert_eq!(
        s.action_at(alias, open - 1).await,
        "reject",
        "1 s before the buffer"
    );
    let first = s.ask_at(alias, open).await;
    assert_eq!(
        first,
        json!({
            "status": "success",
            "action": "continue",
            "result": {
                "service_type": "conference",
                "name": "Planning 88123456",
                "service_tag": format!("sched-{}", m.conference_id),
                "description": "Planning (Alice)",
                "ivr_theme_name": "Corporate",
                "non_idp_participants": "disallow_all",
            }
        }),
        "first second inside: the VMR, null fields left out"
    );
    assert_eq!(
        s.action_at(alias, start_s + 10 * MIN).await,
        "service",
        "during the meeting"
    );
    assert_eq!(
        s.action_at(alias, close - 1).await,
        "service",
        "last second inside"
    );
    assert_eq!(
        s.action_at(alias, close).await,
        "reject",
        "the window has closed"
    );
    assert_eq!(s.action_at(alias, close + 1).await, "reject", "1 s after");
}

async fn buffers_come_from_the_integration(db: &TestDb) {
    let s = start(db, |c| {
        c.integrations[0].meeting_buffer_before = 0;
        c.integrations[0].meeting_buffer_after = 180;
    })
    .await;
    let (start_s, end_s) = (START_S, START_S + HOUR);
    let m = schedule(&s, "88200001", &[(start_s, end_s)]).await;
    s.refresh().await;
    let a = m.alias.as_str();
    assert_eq!(s.action_at(a, start_s - 1).await, "reject");
    assert_eq!(s.action_at(a, start_s).await, "service");
    assert_eq!(s.action_at(a, end_s + 180 * MIN - 1).await, "service");
    assert_eq!(s.action_at(a, end_s + 180 * MIN).await, "reject");
}

async fn a_moved_meeting_answers_at_its_new_time_only(db: &TestDb) {
    let s = start(db, |_| {}).await;
    let mut m = schedule(&s, "88300001", &[(START_S, START_S + HOUR)]).await;
    s.refresh().await;
    assert_eq!(s.action_at(&m.alias, START_S).await, "service");
    let moved = START_S + 5 * HOUR;
    reschedule(&s, &mut m, &[(moved, moved + HOUR)]).await;
    assert_eq!(
        s.policy.refresh().await.expect("refresh"),
        1,
        "one meeting re-read"
    );
    assert_eq!(s.action_at(&m.alias, START_S).await, "reject", "old time");
    assert_eq!(
        s.action_at(&m.alias, START_S + HOUR + 59 * MIN).await,
        "reject",
        "old window's buffer"
    );
    assert_eq!(
        s.action_at(&m.alias, moved - 30 * MIN).await,
        "service",
        "new time's buffer"
    );
    assert_eq!(
        s.action_at(&m.alias, moved + 30 * MIN).await,
        "service",
        "new time"
    );
}

async fn a_cancelled_occurrence_and_a_cancelled_meeting_are_rejected(db: &TestDb) {
    let s = start(db, |_| {}).await;
    let day = 24 * HOUR;
    let occurrence = |i: i64| (START_S + i * day, START_S + i * day + HOUR);
    let mut m = schedule(
        &s,
        "88400001",
        &[occurrence(0), occurrence(1), occurrence(2)],
    )
    .await;
    s.refresh().await;
    for i in 0..3 {
        assert_eq!(
            s.action_at(&m.numeric, occurrence(i).0).await,
            "service",
            "occurrence {i}"
        );
    }
    // The organizer deletes the middle occurrence: the worker rewrites the windows.
    reschedule(&s, &mut m, &[occurrence(0), occurrence(2)]).await;
    s.refresh().await;
    assert_eq!(s.action_at(&m.numeric, occurrence(0).0).await, "service");
    assert_eq!(
        s.action_at(&m.numeric, occurrence(1).0).await,
        "reject",
        "cancelled occurrence"
    );
    assert_eq!(s.action_at(&m.numeric, occurrence(2).0).await, "service");
    // The whole series is cancelled: our alias, so reject (not "unknown: continue").
    cancel(&s, &mut m).await;
    s.refresh().await;
    for i in [0, 2] {
        assert_eq!(
            s.action_at(&m.numeric, occurrence(i).0).await,
            "reject",
            "occurrence {i}"
        );
        assert_eq!(
            s.action_at(&m.alias, occurrence(i).0).await,
            "reject",
            "occurrence {i}"
        );
    }
}

async fn unknown_aliases_continue_or_reject_as_configured(db: &TestDb) {
    let s = start(db, |c| {
        assert_eq!(c.policy.unknown_alias, UnknownAliasAction::Continue)
    })
    .await;
    let m = schedule(&s, "88500001", &[(START_S, START_S + HOUR)]).await;
    // Issued to the pane but never scheduled: ours, so reject.
    issue(&s.storage, "88500002").await;
    s.refresh().await;
    let unknown = s.ask_at("sip:77000001@vc.example.com", START_S).await;
    assert_eq!(unknown, json!({"status": "success", "action": "continue"}));
    assert_eq!(
        s.action_at("sip:88500002@vc.example.com", START_S).await,
        "reject"
    );
    assert_eq!(s.action_at("88500002", START_S).await, "reject");
    assert_eq!(s.action_at(&m.alias, START_S).await, "service");
    drop(s);

    let s = start(db, |c| c.policy.unknown_alias = UnknownAliasAction::Reject).await;
    let unknown = s.ask_at("sip:77000001@vc.example.com", START_S).await;
    assert_eq!(unknown, json!({"status": "success", "action": "reject"}));
    assert_eq!(
        s.action_at(&m.alias, START_S).await,
        "service",
        "loaded at start"
    );
}

async fn every_dialled_form_reaches_the_vmr(db: &TestDb) {
    let s = start(db, |_| {}).await;
    let m = schedule(&s, "88600001", &[(START_S, START_S + HOUR)]).await;
    s.refresh().await;
    assert_eq!(m.numeric, "88600001");
    for dialled in [
        "88600001@vc.example.com",
        "88600001",
        "sip:88600001@vc.example.com",
        "sips:88600001@vc.example.com:5061;transport=tls",
        "SIP:88600001@VC.EXAMPLE.COM",
        "sip:88600001@10.0.0.1",
        "88600001@vc.example.com:5061",
        "h323:88600001@vc.example.com",
        "tel:+88600001",
        "\"Alice\" <sip:88600001@vc.example.com>",
    ] {
        assert_eq!(s.action_at(dialled, START_S).await, "service", "{dialled}");
    }
    assert_eq!(
        s.action_at("88600002", START_S).await,
        "continue",
        "a neighbour is unknown"
    );
    assert_eq!(
        s.action_at("sip:886000011@vc.example.com", START_S).await,
        "continue",
        "a longer number is unknown"
    );
}

async fn callers_without_credentials_or_from_elsewhere_are_refused(db: &TestDb) {
    let s = start(db, |_| {}).await;
    let url = format!(
        "{}/policy/v1/service/configuration?local_alias=88123456",
        s.origin
    );
    let r = s.client.get(&url).send().await.expect("request");
    assert_eq!(r.status(), 401, "no basic auth");
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .expect("header")
        .starts_with("Basic "));
    let body: Value = r.json().await.expect("JSON error");
    assert_eq!(body["code"], "unauthorized", "{body}");
    for (user, password) in [(USER, "wrong"), ("someone", PASSWORD), (USER, "")] {
        let r = s
            .client
            .get(&url)
            .basic_auth(user, Some(password))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 401, "{user}:{password}");
    }
    let r = s
        .client
        .get(&url)
        .bearer_auth(PASSWORD)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401, "not basic");
    let r = s
        .client
        .get(format!(
            "{}/policy/v1/participant/properties?local_alias=88123456&remote_alias=x",
            s.origin
        ))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.expect("JSON"),
        json!({"status": "success", "action": "continue"})
    );
    let r = s
        .client
        .get(format!("{}/policy/v1/service/configuration", s.origin))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 400, "no local_alias");
    drop(s);

    // Loopback is not in the allow-list: refused even with the right password.
    let s = start(db, |c| {
        c.policy.allow_from = vec!["10.0.0.0/8".parse().expect("cidr")]
    })
    .await;
    let r = s
        .client
        .get(format!(
            "{}/policy/v1/service/configuration?local_alias=88123456",
            s.origin
        ))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.expect("JSON error");
    assert_eq!(body["code"], "address_not_allowed", "{body}");
    drop(s);

    // Address only: no password needed from loopback.
    let s = start(db, |c| {
        c.policy.basic_auth_user = None;
        c.policy.basic_auth_password = None;
    })
    .await;
    let r = s
        .client
        .get(format!(
            "{}/policy/v1/service/configuration?local_alias=1",
            s.origin
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    drop(s);

    // The password configured as its SHA-256 only.
    let s = start(db, |c| {
        c.policy.basic_auth_password = None;
        c.policy.basic_auth_password_sha256 = Some(HASHED_PASSWORD_SHA256.into());
    })
    .await;
    let ask = |password: &'static str| {
        s.client
            .get(format!(
                "{}/policy/v1/service/configuration?local_alias=1",
                s.origin
            ))
            .basic_auth(USER, Some(password))
            .send()
    };
    assert_eq!(ask("hashed-password").await.expect("request").status(), 200);
    assert_eq!(ask(PASSWORD).await.expect("request").status(), 401);
}

async fn pins_and_guests_come_from_the_configuration(db: &TestDb) {
    let s = start(db, |c| {
        c.policy.pin = Some("1234".into());
        c.policy.guest_pin = Some("5678".into());
        c.policy.allow_guests = Some(true);
        c.integrations.push(IntegrationConfig {
            id: "other".into(),
            resource_email: "other@example.com".into(),
            ..IntegrationConfig::default()
        });
        c.policy.integration.insert(
            "other".into(),
            vmr_core::config::PolicyServiceConfig {
                pin: Some("4321".into()),
                guest_pin: None,
                allow_guests: Some(false),
            },
        );
    })
    .await;
    let m = schedule(&s, "88700001", &[(START_S, START_S + HOUR)]).await;
    s.refresh().await;
    let v = s.ask_at(&m.alias, START_S).await;
    assert_eq!(v["result"]["pin"], "1234", "{v}");
    assert_eq!(v["result"]["guest_pin"], "5678", "{v}");
    assert_eq!(v["result"]["allow_guests"], true, "{v}");
    drop(s);

    // `[policy.integration.default]` wins over `[policy]` for that integration's VMRs.
    let s = start(db, |c| {
        c.policy.pin = Some("1234".into());
        c.policy.integration.insert(
            "default".into(),
            vmr_core::config::PolicyServiceConfig {
                pin: Some("4321".into()),
                guest_pin: None,
                allow_guests: Some(false),
            },
        );
    })
    .await;
    let v = s.ask_at(&m.alias, START_S).await;
    assert_eq!(v["result"]["pin"], "4321", "{v}");
    assert_eq!(v["result"]["allow_guests"], false, "{v}");
    assert!(v["result"].get("guest_pin").is_none(), "{v}");
}

async fn the_follower_picks_up_commits_by_itself(db: &TestDb) {
    let s = start(db, |_| {}).await;
    let mut m = schedule(&s, "88800001", &[(START_S, START_S + HOUR)]).await;
    let seen = async {
        for _ in 0..50 {
            if s.action_at(&m.alias, START_S).await == "service" {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    };
    assert!(seen.await, "the new meeting was not answered within 5 s");
    cancel(&s, &mut m).await;
    let gone = async {
        for _ in 0..50 {
            if s.action_at(&m.alias, START_S).await == "reject" {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    };
    assert!(gone.await, "the cancellation was not followed within 5 s");
}
