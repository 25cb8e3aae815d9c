//! The simulated Pexip Infinity management API as a client sees it: Basic auth, tastypie's
//! status codes and bodies, paging with `limit`/`offset`/`meta.next`, filters, aliases by
//! resource URI, cascading deletes, fault injection and the control routes.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use base64::Engine as _;
use serde_json::{json, Value};
use tower::ServiceExt as _;
use vmr_simulator::infinity::{
    router, InfinityFault, InfinityServer, CONFERENCE_ALIAS_PATH, CONFERENCE_PATH, DEFAULT_ADMIN,
    DEFAULT_ADMIN_PASSWORD,
};

struct Client {
    server: Arc<InfinityServer>,
}

struct Answer {
    status: StatusCode,
    location: Option<String>,
    json: Value,
}

impl Client {
    fn new() -> Client {
        Client {
            server: Arc::new(InfinityServer::default()),
        }
    }

    async fn send_as(
        &self,
        method: &str,
        uri: &str,
        body: Option<Value>,
        auth: Option<(&str, &str)>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, "infinity.example.com");
        if let Some((user, password)) = auth {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request = request.header(header::AUTHORIZATION, format!("Basic {token}"));
        }
        let request = match body {
            Some(b) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => request.body(Body::empty()),
        }
        .expect("request");
        let response = router(self.server.clone())
            .oneshot(request)
            .await
            .expect("response");
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().expect("ascii").to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            location,
            json,
        }
    }

    async fn send(&self, method: &str, uri: &str, body: Option<Value>) -> Answer {
        self.send_as(
            method,
            uri,
            body,
            Some((DEFAULT_ADMIN, DEFAULT_ADMIN_PASSWORD)),
        )
        .await
    }

    async fn create(&self, name: &str, tag: &str, aliases: &[&str]) -> String {
        let aliases: Vec<Value> = aliases.iter().map(|a| json!({"alias": a})).collect();
        let a = self
            .send(
                "POST",
                CONFERENCE_PATH,
                Some(json!({"name": name, "service_type": "conference", "tag": tag, "aliases": aliases})),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.json);
        let location = a.location.expect("Location");
        location
            .strip_prefix("https://infinity.example.com")
            .expect("absolute Location on the request's host")
            .to_owned()
    }
}

#[tokio::test]
async fn every_request_needs_the_administrators_basic_credentials() {
    let c = Client::new();
    let none = c.send_as("GET", CONFERENCE_PATH, None, None).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    let wrong = c
        .send_as("GET", CONFERENCE_PATH, None, Some((DEFAULT_ADMIN, "nope")))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let ok = c.send("GET", CONFERENCE_PATH, None).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json["meta"]["total_count"], 0);
}

#[tokio::test]
async fn a_created_vmr_reads_back_in_infinitys_shape_with_its_aliases() {
    let c = Client::new();
    let uri = c
        .create(
            "Planning (Alice)",
            "ours",
            &["881234@vc.example.com", "881234"],
        )
        .await;
    assert!(
        uri.starts_with(CONFERENCE_PATH) && uri.ends_with('/'),
        "{uri}"
    );
    let got = c.send("GET", &uri, None).await;
    assert_eq!(got.status, StatusCode::OK);
    let v = got.json;
    assert_eq!(v["resource_uri"], uri.as_str());
    assert_eq!(v["name"], "Planning (Alice)");
    assert_eq!(v["service_type"], "conference");
    assert_eq!(v["tag"], "ours");
    assert_eq!(v["non_idp_participants"], "disallow_all");
    assert_eq!(v["allow_guests"], false);
    assert!(v["creation_time"].as_str().is_some_and(|t| t.contains('T')));
    let aliases = v["aliases"].as_array().expect("aliases");
    assert_eq!(aliases.len(), 2);
    assert_eq!(aliases[0]["conference"], uri.as_str());
    assert!(aliases[0]["resource_uri"]
        .as_str()
        .is_some_and(|u| u.starts_with(CONFERENCE_ALIAS_PATH)));
    // The same alias list through the alias resource, filtered by conference id.
    let id = v["id"].as_u64().expect("id");
    let listed = c
        .send(
            "GET",
            &format!("{CONFERENCE_ALIAS_PATH}?conference={id}"),
            None,
        )
        .await;
    assert_eq!(listed.json["meta"]["total_count"], 2);
}

#[tokio::test]
async fn lists_page_with_limit_offset_and_meta_next_keeping_the_filters() {
    let c = Client::new();
    for i in 0..45 {
        let tag = if i % 3 == 0 { "other" } else { "ours" };
        c.create(&format!("VMR {i:02}"), tag, &[&format!("vmr{i}@x")])
            .await;
    }
    let first = c.send("GET", CONFERENCE_PATH, None).await;
    assert_eq!(first.json["meta"]["limit"], 20);
    assert_eq!(first.json["meta"]["total_count"], 45);
    assert_eq!(first.json["objects"].as_array().map(Vec::len), Some(20));
    assert_eq!(first.json["meta"]["previous"], Value::Null);
    // Follow `next` with a filter: 30 tagged ours, pages of 7.
    let mut next = Some(format!("{CONFERENCE_PATH}?tag=ours&limit=7"));
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(uri) = next {
        let page = c.send("GET", &uri, None).await;
        assert_eq!(page.status, StatusCode::OK, "{uri}");
        assert_eq!(page.json["meta"]["total_count"], 30);
        for o in page.json["objects"].as_array().expect("objects") {
            assert_eq!(o["tag"], "ours");
            seen.push(o["name"].as_str().expect("name").to_owned());
        }
        next = page.json["meta"]["next"].as_str().map(str::to_owned);
        if let Some(n) = &next {
            assert!(n.contains("tag=ours") && n.contains("limit=7"), "{n}");
        }
        pages += 1;
    }
    assert_eq!(pages, 5);
    assert_eq!(seen.len(), 30);
    seen.dedup();
    assert_eq!(seen.len(), 30, "no object twice across pages");
    let by_name = c
        .send("GET", &format!("{CONFERENCE_PATH}?name=VMR%2007"), None)
        .await;
    assert_eq!(by_name.json["meta"]["total_count"], 1);
    let starts = c
        .send(
            "GET",
            &format!("{CONFERENCE_PATH}?name__startswith=VMR%201&limit=0"),
            None,
        )
        .await;
    assert_eq!(starts.json["meta"]["total_count"], 10);
    let refused = c
        .send("GET", &format!("{CONFERENCE_PATH}?pin=1234"), None)
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn names_and_aliases_are_unique_and_bad_fields_are_named() {
    let c = Client::new();
    let uri = c.create("Dup", "", &["dup@x"]).await;
    let again = c
        .send("POST", CONFERENCE_PATH, Some(json!({"name": "dup"})))
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(
        again.json["conference"]["name"].is_array(),
        "{:?}",
        again.json
    );
    let alias_again = c
        .send(
            "POST",
            CONFERENCE_ALIAS_PATH,
            Some(json!({"alias": "DUP@x", "conference": uri})),
        )
        .await;
    assert_eq!(alias_again.status, StatusCode::BAD_REQUEST);
    assert!(alias_again.json["conference_alias"]["alias"].is_array());
    let bad_type = c
        .send(
            "POST",
            CONFERENCE_PATH,
            Some(json!({"name": "X", "service_type": "party"})),
        )
        .await;
    assert_eq!(bad_type.status, StatusCode::BAD_REQUEST);
    assert!(bad_type.json["conference"]["service_type"].is_array());
    let no_name = c
        .send("POST", CONFERENCE_PATH, Some(json!({"tag": "t"})))
        .await;
    assert_eq!(no_name.status, StatusCode::BAD_REQUEST);
    let dangling = c
        .send(
            "POST",
            CONFERENCE_ALIAS_PATH,
            Some(json!({"alias": "z@x", "conference": format!("{CONFERENCE_PATH}999/")})),
        )
        .await;
    assert_eq!(dangling.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        c.server.conferences().len(),
        1,
        "refused writes store nothing"
    );
}

#[tokio::test]
async fn patch_put_and_delete_answer_as_tastypie_and_delete_cascades_to_aliases() {
    let c = Client::new();
    let uri = c.create("Weekly", "ours", &["w@x"]).await;
    let patched = c
        .send("PATCH", &uri, Some(json!({"description": "new text"})))
        .await;
    assert_eq!(patched.status, StatusCode::ACCEPTED);
    let v = c.send("GET", &uri, None).await.json;
    assert_eq!(v["description"], "new text");
    assert_eq!(v["tag"], "ours", "PATCH keeps other fields");
    assert_eq!(
        v["aliases"].as_array().map(Vec::len),
        Some(1),
        "PATCH without aliases keeps them"
    );
    let put = c.send("PUT", &uri, Some(json!({"name": "Weekly"}))).await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let v = c.send("GET", &uri, None).await.json;
    assert_eq!(v["tag"], "", "PUT replaces the whole object");
    let alias = c
        .send(
            "POST",
            CONFERENCE_ALIAS_PATH,
            Some(json!({"alias": "extra@x", "conference": uri, "description": "admin"})),
        )
        .await;
    assert_eq!(alias.status, StatusCode::CREATED);
    assert_eq!(c.server.alias_names_of("Weekly"), vec!["extra@x", "w@x"]);
    let deleted = c.send("DELETE", &uri, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        c.send("GET", &uri, None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.send("DELETE", &uri, None).await.status,
        StatusCode::NOT_FOUND
    );
    let aliases = c.send("GET", CONFERENCE_ALIAS_PATH, None).await;
    assert_eq!(
        aliases.json["meta"]["total_count"], 0,
        "aliases went with their VMR"
    );
}

#[tokio::test]
async fn faults_and_down_answer_instead_of_the_api_and_are_logged() {
    let c = Client::new();
    c.server.inject(InfinityFault {
        method: Some("POST".into()),
        body_contains: Some("Broken".into()),
        status: Some(400),
        body: Some(r#"{"conference": {"name": ["injected"]}}"#.into()),
        ..InfinityFault::default()
    });
    c.server.inject(InfinityFault {
        method: Some("GET".into()),
        status: Some(502),
        times: Some(2),
        ..InfinityFault::default()
    });
    let broken = c
        .send("POST", CONFERENCE_PATH, Some(json!({"name": "Broken one"})))
        .await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST);
    c.create("Fine", "", &[]).await;
    assert_eq!(
        c.send("GET", CONFERENCE_PATH, None).await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        c.send("GET", CONFERENCE_PATH, None).await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        c.send("GET", CONFERENCE_PATH, None).await.status,
        StatusCode::OK,
        "used up after 2"
    );
    c.server.set_down(true);
    assert_eq!(
        c.send("GET", CONFERENCE_PATH, None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    c.server.set_down(false);
    c.server.inject(InfinityFault {
        delay_ms: 150,
        times: Some(1),
        ..InfinityFault::default()
    });
    let started = std::time::Instant::now();
    assert_eq!(
        c.send("GET", CONFERENCE_PATH, None).await.status,
        StatusCode::OK
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
    let log = c.server.requests();
    assert_eq!(log.len(), 7);
    assert_eq!(log[0].method, "POST");
    assert_eq!(log[0].status, 400);
    assert_eq!(log[5].status, 503);
    assert_eq!(
        c.server.conferences().len(),
        1,
        "the refused create stored nothing"
    );
}

#[tokio::test]
async fn control_routes_inject_faults_and_show_the_state() {
    let c = Client::new();
    c.create("Shown", "t", &["s@x"]).await;
    let inject = c
        .send_as(
            "POST",
            "/sim/infinity/faults",
            Some(json!({"status": 500, "times": 1})),
            None,
        )
        .await;
    assert_eq!(inject.status, StatusCode::NO_CONTENT);
    assert_eq!(
        c.send("GET", CONFERENCE_PATH, None).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let shown = c
        .send_as("GET", "/sim/infinity/conferences", None, None)
        .await;
    assert_eq!(shown.json[0]["name"], "Shown");
    let down = c
        .send_as(
            "PUT",
            "/sim/infinity/down",
            Some(json!({"down": true})),
            None,
        )
        .await;
    assert_eq!(down.status, StatusCode::NO_CONTENT);
    assert_eq!(
        c.send("GET", CONFERENCE_PATH, None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let log = c.send_as("GET", "/sim/infinity/requests", None, None).await;
    assert!(
        log.json.as_array().is_some_and(|l| l.len() >= 3),
        "{:?}",
        log.json
    );
}

#[tokio::test]
async fn themes_and_identity_provider_groups_are_referenced_by_uri() {
    let c = Client::new();
    let theme = c.server.add_ivr_theme("Corporate").expect("theme");
    let group = c
        .server
        .add_identity_provider_group("Staff")
        .expect("group");
    let listed = c
        .send(
            "GET",
            "/api/admin/configuration/v1/ivr_theme/?name=Corporate",
            None,
        )
        .await;
    assert_eq!(listed.json["meta"]["total_count"], 1);
    assert_eq!(listed.json["objects"][0]["resource_uri"], theme.as_str());
    let ok = c
        .send(
            "POST",
            CONFERENCE_PATH,
            Some(json!({"name": "Themed", "ivr_theme": theme, "host_identity_provider_group": group})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{:?}", ok.json);
    let bad = c
        .send(
            "POST",
            CONFERENCE_PATH,
            Some(json!({"name": "Bad theme", "ivr_theme": "/api/admin/configuration/v1/ivr_theme/99/"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.json["conference"]["ivr_theme"].is_array(),
        "{:?}",
        bad.json
    );
    let wrong_kind = c
        .send(
            "POST",
            CONFERENCE_PATH,
            Some(json!({"name": "Group as theme", "ivr_theme": group})),
        )
        .await;
    assert_eq!(wrong_kind.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        c.send("DELETE", &theme, None).await.status,
        StatusCode::NO_CONTENT
    );
    let themed = c.server.conference_named("Themed").expect("themed");
    assert_eq!(themed["ivr_theme"], Value::Null, "cleared with its theme");
    assert_eq!(themed["host_identity_provider_group"], group.as_str());
}
