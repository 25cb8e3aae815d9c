//! The admin API (`/api/admin/v1/`) against a real server (in-process, HTTPS on
//! loopback) on a database filled directly: filters, search, paging, auth,
//! extra aliases (and the refusal to touch the generated two), audit rows,
//! integration status, `/readyz/detail` and the new metrics.
//!
//! Runs on SQLite always and on PostgreSQL from `VMR_TEST_POSTGRES_URL`
//! (`#[ignore]`d without it, panicking when run without it).

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::AnyPool;
use vmr_core::config::{AdminTokenConfig, IntegrationConfig, Role};

use crate::common;
use crate::in_process;
use common::TestDb;

/// A token listed in `admin.api_token_sha256` (audited as `token-<8 hex>`).
const UNNAMED_TOKEN: &str = "admin-api-test-unnamed-token";
/// A token of `[[admin.token]]` with label `alice`.
const ALICE_TOKEN: &str = "admin-api-test-alice-token";
/// 2030-01-01T00:00:00Z in Unix ms: the first window's start.
const BASE: i64 = 1_893_456_000_000;
const HOUR: i64 = 3_600_000;
/// Conferences seeded in integration `default` (one of them a series with 3 windows) and `second`.
const DEFAULT_CONFERENCES: i64 = 60;
const SECOND_CONFERENCES: i64 = 5;
const ALL_WINDOWS: i64 = DEFAULT_CONFERENCES + 2 + SECOND_CONFERENCES;

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

struct Harness {
    origin: String,
    client: reqwest::Client,
    raw: AnyPool,
    _server: in_process::Running,
}

async fn start(db: &TestDb) -> Harness {
    let mut config = in_process::config(Role::All, &db.url);
    config.admin.api_token_sha256 = vec![sha256_hex(UNNAMED_TOKEN)];
    config.admin.tokens = vec![AdminTokenConfig {
        label: "alice".into(),
        sha256: sha256_hex(ALICE_TOKEN),
    }];
    let second = IntegrationConfig {
        id: "second".into(),
        resource_email: "vmr-second@example.com".into(),
        alias_prefix: "77".into(),
        addin_id: "0b7f5a43-5f1e-4a0c-9d1e-1a2b3c4d5e6f".into(),
        ..config.integrations[0].clone()
    };
    config.integrations.push(second);
    let server = in_process::start(config).await;
    let raw = db.raw().await;
    seed(&raw).await;
    Harness {
        origin: server.origin.clone(),
        client: in_process::client(true),
        raw,
        _server: server,
    }
}

async fn exec(pool: &AnyPool, sql: &str, args: Vec<Value>) {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    for a in &args {
        q = match a {
            Value::String(s) => q.bind(s.clone()),
            Value::Number(n) => q.bind(n.as_i64().expect("integer")),
            Value::Null => q.bind(Option::<i64>::None),
            other => panic!("unsupported bind {other}"),
        };
    }
    q.execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Conference `i` of `integration`: alias, VMR, meeting and its window(s).
async fn seed_conference(pool: &AnyPool, integration: &str, prefix: &str, i: i64, windows: i64) {
    let id = format!("{integration}-{i:03}");
    let numeric = format!("{prefix}00{i:04}");
    let alias = format!("{numeric}@vc.example.com");
    let organizer = if i % 3 == 0 {
        "carol@example.com"
    } else {
        "dave@example.com"
    };
    let subject = match i {
        7 => "Budget 100% review".to_owned(),
        8 => "Budget 1000 review".to_owned(),
        _ => format!("Team <sync> & plans #{i}"),
    };
    let uid = format!("uid-{id}");
    let start = BASE + i * HOUR;
    exec(
        pool,
        "INSERT INTO scheduled_alias (id, integration, numeric_alias, alias, state, created_at, \
         auth_method, requester_id, organizer_email, meeting_uid) \
         VALUES ($1, $2, $3, $4, 'bound', $5, 'exchange_identity', 'r', $6, $7)",
        vec![
            json!(format!("alias-{id}")),
            json!(integration),
            json!(numeric),
            json!(alias),
            json!(start - HOUR),
            json!(organizer),
            json!(uid),
        ],
    )
    .await;
    exec(
        pool,
        "INSERT INTO conference (id, integration, alias_id, name, description, alias, numeric_alias, \
         non_idp_participants, created_at) VALUES ($1, $2, $3, $4, 'desc', $5, $6, 'disallow_all', $7)",
        vec![json!(format!("conf-{id}")), json!(integration), json!(format!("alias-{id}")), json!(format!("VMR {id}")), json!(alias), json!(numeric), json!(start - HOUR)],
    )
    .await;
    exec(
        pool,
        "INSERT INTO meeting (integration, uid, alias_id, conference_id, state, is_series, sequence, \
         revision, schedule_json, fingerprint, organizer_email, subject, item_id, updated_at) \
         VALUES ($1, $2, $3, $4, 'accepted', $5, 0, 1, '{}', 'f', $6, $7, 'item', $8)",
        vec![json!(integration), json!(uid), json!(format!("alias-{id}")), json!(format!("conf-{id}")), json!(i64::from(windows > 1)), json!(organizer), json!(subject), json!(start)],
    )
    .await;
    let recurring = if windows > 1 {
        let rid = format!("rec-{id}");
        exec(
            pool,
            "INSERT INTO recurring_conference (id, integration, conference_id, meeting_uid, \
             current_index, is_depleted, subject) VALUES ($1, $2, $3, $4, 0, 0, $5)",
            vec![
                json!(rid),
                json!(integration),
                json!(format!("conf-{id}")),
                json!(uid),
                json!(subject),
            ],
        )
        .await;
        Value::String(rid)
    } else {
        Value::Null
    };
    for w in 0..windows {
        let ws = start + w * 7 * 24 * HOUR;
        exec(
            pool,
            "INSERT INTO scheduled_conference (id, integration, conference_id, meeting_uid, \
             recurring_conference_id, occurrence_index, original_start, start_time, end_time, subject) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9)",
            vec![json!(format!("win-{id}-{w}")), json!(integration), json!(format!("conf-{id}")), json!(uid), recurring.clone(), json!(w), json!(ws), json!(ws + HOUR / 2), json!(subject)],
        )
        .await;
    }
}

async fn seed(pool: &AnyPool) {
    for i in 0..DEFAULT_CONFERENCES {
        seed_conference(pool, "default", "88", i, if i == 0 { 3 } else { 1 }).await;
    }
    for i in 0..SECOND_CONFERENCES {
        seed_conference(pool, "second", "77", i, 1).await;
    }
    // One alias allocated but never bound.
    exec(
        pool,
        "INSERT INTO scheduled_alias (id, integration, numeric_alias, alias, state, created_at, \
         auth_method, requester_id) VALUES ('alias-free', 'default', '889999999', \
         '889999999@vc.example.com', 'allocated', $1, 'exchange_identity', 'r')",
        vec![json!(BASE)],
    )
    .await;
    for n in 0..13i64 {
        let ok = n < 10;
        exec(
            pool,
            "INSERT INTO scheduling_operation (transaction_uuid, integration, creation_time, success, \
             error_code, error_description, resource_id, item_id) VALUES ($1, 'default', $2, $3, $4, $5, $6, 'item')",
            vec![json!(format!("tx-{n:02}")), json!(BASE + n * 1000), json!(i64::from(ok)), json!(if ok { "" } else { "reject_alias_conflict" }), json!(if ok { "" } else { "alias bound to another meeting" }), json!(format!("uid-default-{n:03}"))],
        )
        .await;
    }
    exec(
        pool,
        "INSERT INTO sync_state (integration, folder, state, updated_at) VALUES ('default', 'inbox', 's', $1)",
        vec![json!(BASE)],
    )
    .await;
}

impl Harness {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}/api/admin/v1/{path}", self.origin));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self
            .call(reqwest::Method::GET, path, Some(UNNAMED_TOKEN), None)
            .await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn count(&self, sql: &str) -> i64 {
        use sqlx::Row;
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.raw)
            .await
            .expect(sql)
            .try_get::<i64, _>(0)
            .expect("count")
    }
}

fn total(v: &Value) -> i64 {
    v["total"].as_i64().unwrap_or(-1)
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

async fn admin_api(db: TestDb) {
    let h = start(&db).await;

    // --- Auth: no token, a wrong token, both configured tokens.
    for token in [None, Some("not-an-admin-token"), Some("")] {
        let (status, body) = h
            .call(reqwest::Method::GET, "conferences", token, None)
            .await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert_eq!(body["code"], "admin_token_required");
    }
    for token in [UNNAMED_TOKEN, ALICE_TOKEN] {
        let (status, _) = h
            .call(reqwest::Method::GET, "conferences", Some(token), None)
            .await;
        assert_eq!(status, 200);
    }
    let (status, _) = h
        .call(
            reqwest::Method::POST,
            "conferences/conf-default-001/aliases",
            None,
            Some(json!({"alias": "x@y"})),
        )
        .await;
    assert_eq!(status, 401, "writes need a token too");

    // --- Paging with a total.
    let all = h.get("conferences").await;
    assert_eq!(total(&all), ALL_WINDOWS);
    assert_eq!(items(&all).len(), 50, "default limit");
    let last = h.get("conferences?limit=25&offset=50").await;
    assert_eq!(
        (total(&last), items(&last).len() as i64),
        (ALL_WINDOWS, ALL_WINDOWS - 50)
    );
    assert_eq!(last["limit"], 25);
    let beyond = h.get("conferences?offset=1000").await;
    assert_eq!((total(&beyond), items(&beyond).len()), (ALL_WINDOWS, 0));
    // Pages do not overlap and cover everything.
    let mut seen = std::collections::BTreeSet::new();
    for offset in (0..ALL_WINDOWS).step_by(20) {
        for item in items(
            &h.get(&format!("conferences?limit=20&offset={offset}"))
                .await,
        ) {
            assert!(
                seen.insert(item["id"].as_str().unwrap_or_default().to_owned()),
                "{item}"
            );
        }
    }
    assert_eq!(seen.len() as i64, ALL_WINDOWS);
    for bad in [
        "limit=0",
        "limit=501",
        "limit=abc",
        "offset=-1",
        "from=yesterday",
        "integration=nope",
    ] {
        let (status, body) = h
            .call(
                reqwest::Method::GET,
                &format!("conferences?{bad}"),
                Some(UNNAMED_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["code"], "bad_parameter", "{bad}");
        let name = bad.split('=').next().unwrap_or_default();
        assert!(
            body["message"].as_str().unwrap_or_default().contains(name),
            "{bad}: {body}"
        );
    }

    // --- Fields of one row (ordered by start: the series' first window comes first).
    let first = &items(&all)[0];
    assert_eq!(first["name"], "VMR default-000");
    assert_eq!(first["integration"], "default");
    assert_eq!(
        first["subject"], "Team <sync> & plans #0",
        "subject as stored"
    );
    assert_eq!(first["organizer"], "carol@example.com");
    assert_eq!(first["start_time"], "2030-01-01T00:00:00Z");
    assert_eq!(first["end_time"], "2030-01-01T00:30:00Z");
    assert_eq!(first["is_series"], true);
    assert_eq!(
        first["aliases"],
        json!(["88000000@vc.example.com", "88000000"])
    );
    assert_eq!(items(&all)[1]["is_series"], false);

    // --- Filters.
    let second = h.get("conferences?integration=second").await;
    assert_eq!(total(&second), SECOND_CONFERENCES);
    assert!(items(&second).iter().all(|i| i["integration"] == "second"));
    // Organizer, case-insensitive: i % 3 == 0 → 20 in default (+2 series windows) and 2 in second.
    let carol = h
        .get("conferences?organizer=CAROL@example.com&limit=500")
        .await;
    assert_eq!(total(&carol), 20 + 2 + 2);
    let carol_default = h
        .get("conferences?organizer=carol@example.com&integration=default")
        .await;
    assert_eq!(total(&carol_default), 22);
    // Time: windows overlapping [BASE + 10 h, BASE + 20 h) → starts 10..=19 in both integrations
    // (second's 5 start in the first 5 hours) → 10.
    let window = h
        .get(&format!(
            "conferences?from={}&to={}",
            BASE + 10 * HOUR,
            BASE + 20 * HOUR
        ))
        .await;
    assert_eq!(total(&window), 10, "{window}");
    let rfc = h
        .get("conferences?from=2030-01-01T10:00:00Z&to=2030-01-01T20:00:00%2B00:00")
        .await;
    assert_eq!(total(&rfc), 10);
    let by_date = h
        .get("conferences?from=2030-01-02&integration=default")
        .await;
    // Windows ending after 2030-01-02T00:00Z: default's 24..=59 plus the series' two later windows.
    assert_eq!(total(&by_date), 36 + 2);
    // Search: literal % and _ are not wildcards; numbers and names are found.
    let percent = h.get("conferences?q=100%25").await;
    assert_eq!(total(&percent), 1, "{percent}");
    assert_eq!(items(&percent)[0]["subject"], "Budget 100% review");
    assert_eq!(total(&h.get("conferences?q=budget").await), 2);
    assert_eq!(total(&h.get("conferences?q=_").await), 0);
    assert_eq!(total(&h.get("conferences?q=88000042").await), 1);
    assert_eq!(
        total(&h.get("conferences?q=vmr%20second-00").await),
        SECOND_CONFERENCES
    );
    assert_eq!(total(&h.get("conferences?q=DAVE").await), 40 + 3);

    // --- Detail.
    let detail = h.get("conferences/conf-default-000").await;
    assert_eq!(detail["alias_uuid"], "alias-default-000");
    assert_eq!(detail["alias_state"], "bound");
    assert_eq!(detail["meeting_uid"], "uid-default-000");
    assert_eq!(detail["windows"].as_array().map(Vec::len), Some(3));
    assert_eq!(detail["generated_aliases"][0]["editable"], false);
    let (status, _) = h
        .call(
            reqwest::Method::GET,
            "conferences/nope",
            Some(UNNAMED_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // --- Extra aliases: added by alice, found by search, refused when taken or generated.
    let (status, added) = h
        .call(
            reqwest::Method::POST,
            "conferences/conf-default-001/aliases",
            Some(ALICE_TOKEN),
            Some(json!({"alias": "  Board-Room@VC.example.com ", "description": "the boardroom"})),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["alias"], "board-room@vc.example.com");
    assert_eq!(added["created_by"], "alice");
    let found = h.get("conferences?q=board-room").await;
    assert_eq!(total(&found), 1);
    assert_eq!(
        items(&found)[0]["aliases"],
        json!([
            "88000001@vc.example.com",
            "88000001",
            "board-room@vc.example.com"
        ])
    );
    let detail = h.get("conferences/conf-default-001").await;
    assert_eq!(
        detail["extra_aliases"][0]["alias"],
        "board-room@vc.example.com"
    );
    assert_eq!(detail["extra_aliases"][0]["created_by"], "alice");
    let refusals = [
        (
            "conf-default-002",
            "board-room@vc.example.com",
            409,
            "alias_taken",
        ),
        (
            "conf-default-001",
            "88000001",
            409,
            "generated_alias_immutable",
        ),
        (
            "conf-default-001",
            "88000001@VC.example.com",
            409,
            "generated_alias_immutable",
        ),
        (
            "conf-default-001",
            "88000002@vc.example.com",
            409,
            "alias_taken",
        ),
        ("conf-default-001", "77000003", 409, "alias_taken"),
        ("conf-default-001", "889999999", 409, "alias_taken"),
        ("conf-default-001", "has space", 422, "invalid_alias"),
        ("conf-default-001", "", 422, "invalid_alias"),
        ("conf-nope", "fine@vc.example.com", 404, "not_found"),
    ];
    for (conf, alias, want_status, want_code) in refusals {
        let (status, body) = h
            .call(
                reqwest::Method::POST,
                &format!("conferences/{conf}/aliases"),
                Some(UNNAMED_TOKEN),
                Some(json!({ "alias": alias })),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (want_status, Some(want_code)),
            "{conf} {alias:?}: {body}"
        );
        assert!(!body["message"].as_str().unwrap_or_default().is_empty());
    }
    let (status, body) = h
        .call(
            reqwest::Method::POST,
            "conferences/conf-default-001/aliases",
            Some(UNNAMED_TOKEN),
            Some(json!({"alias": "a@b", "evil": 1})),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (422, Some("bad_body")));
    // The generated aliases can never change: PATCH, PUT, DELETE.
    let (status, body) = h
        .call(
            reqwest::Method::PATCH,
            "conferences/conf-default-001",
            Some(UNNAMED_TOKEN),
            Some(json!({"alias": "new@vc.example.com"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("generated_alias_immutable")),
        "{body}"
    );
    let (status, body) = h
        .call(
            reqwest::Method::PATCH,
            "conferences/conf-default-001",
            Some(UNNAMED_TOKEN),
            Some(json!({"numeric_alias": "1"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("generated_alias_immutable"))
    );
    let (status, body) = h
        .call(
            reqwest::Method::PATCH,
            "conferences/conf-default-001",
            Some(UNNAMED_TOKEN),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (422, Some("not_editable")));
    for generated in ["88000001", "88000001@vc.example.com"] {
        for method in [reqwest::Method::DELETE, reqwest::Method::PUT] {
            let (status, body) = h
                .call(
                    method.clone(),
                    &format!("conferences/conf-default-001/aliases/{generated}"),
                    Some(UNNAMED_TOKEN),
                    Some(json!({"alias": "x@y"})),
                )
                .await;
            assert_eq!(
                (status, body["code"].as_str()),
                (409, Some("generated_alias_immutable")),
                "{method} {generated}: {body}"
            );
        }
    }
    let still = h.get("conferences/conf-default-001").await;
    assert_eq!(
        (still["alias"].as_str(), still["numeric_alias"].as_str()),
        (Some("88000001@vc.example.com"), Some("88000001"))
    );
    assert_eq!(h.count("SELECT COUNT(*) FROM conference WHERE id = 'conf-default-001' AND alias = '88000001@vc.example.com' AND numeric_alias = '88000001'").await, 1);
    // Removing the extra alias (unnamed token), then it is gone and free again.
    let (status, _) = h
        .call(
            reqwest::Method::DELETE,
            "conferences/conf-default-001/aliases/board-room@vc.example.com",
            Some(UNNAMED_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = h
        .call(
            reqwest::Method::DELETE,
            "conferences/conf-default-001/aliases/board-room@vc.example.com",
            Some(UNNAMED_TOKEN),
            None,
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    assert_eq!(total(&h.get("conferences?q=board-room").await), 0);

    // --- Audit: one row per successful write, with who did it.
    assert_eq!(
        h.count("SELECT COUNT(*) FROM admin_audit").await,
        2,
        "refused writes are not audited"
    );
    assert_eq!(h.count("SELECT COUNT(*) FROM admin_audit WHERE actor = 'alice' AND action = 'add_extra_alias' AND object_id = 'conf-default-001' AND detail = 'board-room@vc.example.com'").await, 1);
    let unnamed_label = format!("token-{}", &sha256_hex(UNNAMED_TOKEN)[..8]);
    assert_eq!(h.count(&format!("SELECT COUNT(*) FROM admin_audit WHERE actor = '{unnamed_label}' AND action = 'remove_extra_alias'")).await, 1);
    let audit = h.get("audit?q=extra_alias").await;
    assert_eq!(total(&audit), 2);
    assert_eq!(
        items(&audit)[0]["user"],
        unnamed_label.as_str(),
        "newest first"
    );
    assert_eq!(items(&audit)[1]["user"], "alice");
    let service = h.get("audit?q=schedulingservice").await;
    assert_eq!(
        total(&service),
        13,
        "the service's processing log appears under schedulingservice"
    );
    assert_eq!(total(&h.get("audit").await), 15);
    assert_eq!(
        total(&h.get("audit?integration=second").await),
        2,
        "admin rows only: second has no operations"
    );

    // --- Aliases.
    let aliases = h.get("aliases?integration=default&limit=500").await;
    assert_eq!(total(&aliases), DEFAULT_CONFERENCES + 1);
    let free = h.get("aliases?state=allocated").await;
    assert_eq!(total(&free), 1);
    let a = &items(&free)[0];
    assert_eq!(
        (
            a["uuid"].as_str(),
            a["alias"].as_str(),
            a["numeric_alias"].as_str()
        ),
        (
            Some("alias-free"),
            Some("889999999@vc.example.com"),
            Some("889999999")
        )
    );
    assert!(a.get("conference_deletion_time").is_some() && a.get("meeting_uid").is_some());
    assert_eq!(total(&h.get("aliases?q=uid-second-004").await), 1);
    let (status, _) = h
        .call(
            reqwest::Method::GET,
            "aliases?state=weird",
            Some(UNNAMED_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 422);

    // --- Recurring conferences.
    let recurring = h.get("recurring_conferences").await;
    assert_eq!(total(&recurring), 1);
    assert_eq!(items(&recurring)[0]["conference_id"], "conf-default-000");
    assert_eq!(items(&recurring)[0]["is_depleted"], false);

    // --- Operations.
    let failed = h.get("operations?success=false").await;
    assert_eq!(total(&failed), 3);
    let op = &items(&failed)[0];
    assert_eq!(op["transaction_uuid"], "tx-12", "newest first");
    assert_eq!(op["correlation_id"], "tx-12");
    assert_eq!(op["error_code"], "reject_alias_conflict");
    assert_eq!(op["error_description"], "alias bound to another meeting");
    assert_eq!(op["resource_id"], "uid-default-012");
    assert_eq!(
        total(&h.get("operations?success=true&integration=default").await),
        10
    );
    assert_eq!(total(&h.get("operations?q=conflict").await), 3);
    assert_eq!(
        total(
            &h.get(&format!(
                "operations?from={}&to={}",
                BASE + 5000,
                BASE + 8000
            ))
            .await
        ),
        3
    );

    // --- Integration status.
    let integrations = h.get("integrations").await;
    assert_eq!(total(&integrations), 2);
    let status = h.get("integrations/default").await;
    assert_eq!(status["last_successful_sync"], "2030-01-01T00:00:00Z");
    assert_eq!(status["alias_space"]["issued"], DEFAULT_CONFERENCES + 1);
    assert_eq!(status["alias_space"]["bound"], DEFAULT_CONFERENCES);
    assert_eq!(status["alias_space"]["size"], 1_000_000);
    assert_eq!(status["manifest_url"], "/manifest/default.xml");
    assert!(status.get("last_exchange_error").is_some());
    let (code, _) = h
        .call(
            reqwest::Method::GET,
            "integrations/nope",
            Some(UNNAMED_TOKEN),
            None,
        )
        .await;
    assert_eq!(code, 404);

    // --- Readiness detail and metrics.
    let ready: Value = h
        .client
        .get(format!("{}/readyz/detail", h.origin))
        .bearer_auth(ALICE_TOKEN)
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["checks"]["database"], "ok");
    assert!(ready["checks"]["mailboxes"].is_object(), "{ready}");
    // An alias request without a token is counted by outcome.
    let refused = h
        .client
        .post(format!("{}/api/v1/alias", h.origin))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("alias request");
    assert_eq!(refused.status().as_u16(), 400);
    let metrics = h
        .client
        .get(format!("{}/metrics", h.origin))
        .bearer_auth(ALICE_TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    // (Families without samples yet are not printed; the unit test in metrics.rs renders all.)
    for line in [
        "# TYPE vmr_alias_requests counter",
        "vmr_alias_requests_total{outcome=\"bad_request\"}",
        "# TYPE vmr_aliases_allocated counter",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert_eq!(metrics.matches("# EOF").count(), 1);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_on_sqlite() {
    admin_api(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (VMR_TEST_POSTGRES_URL, set by cargo xtask test)"]
async fn admin_api_on_postgres() {
    admin_api(TestDb::postgres().await).await;
}
