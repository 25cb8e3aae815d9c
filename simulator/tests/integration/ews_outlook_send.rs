//! The compose window's Send button endpoint: the meeting goes through the simulated Exchange,
//! attendees that are known resources become resources, and times default to tomorrow
//! 10:00–10:30 UTC.

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt as _;
use vmr_simulator::ews::{FolderName, DEFAULT_ORGANIZER, DEFAULT_RESOURCE};

#[tokio::test]
async fn send_from_the_compose_window_delivers_to_the_resource() {
    let simulator =
        vmr_simulator::Simulator::generate("https://127.0.0.1:9443", vmr_simulator::DEFAULT_TENANT)
            .expect("simulator");
    let body = serde_json::json!({
        "organizer": {"name": "Alice Organizer", "email": DEFAULT_ORGANIZER},
        "subject": "Sent from compose",
        "body": {"html": true, "content": "<p>Join: PXPS-42</p>"},
        "required": ["bob@contoso.com", DEFAULT_RESOURCE],
        "optional": []
    });
    let response = simulator
        .router()
        .oneshot(
            Request::post(vmr_simulator::outlook::SEND_PATH)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    let uid = json["uid"].as_str().expect("uid");
    let inbox = simulator
        .ews
        .mailbox_messages(DEFAULT_RESOURCE, FolderName::Inbox)
        .expect("room");
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].uid.as_deref(), Some(uid));
    assert_eq!(inbox[0].body.content, "<p>Join: PXPS-42</p>");
    assert!(inbox[0].body.html);
    let alice = simulator
        .ews
        .calendar_items(DEFAULT_ORGANIZER)
        .expect("alice");
    let day = 86_400_000;
    let now = simulator.ews.now_unix_ms();
    assert_eq!(
        alice[0].start,
        (now / day + 1) * day + 10 * 3_600_000,
        "tomorrow 10:00 UTC"
    );
    assert_eq!(alice[0].end - alice[0].start, 30 * 60_000);
    let html = include_str!("../../assets/compose.html");
    assert!(html.contains("id=\"send\"") && html.contains("id=\"sent\""));
}
