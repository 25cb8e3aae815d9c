//! Streaming notifications of the simulated EWS endpoint over real HTTPS: one chunked
//! GetStreamingEvents response holding several envelopes, a notification within 1 s of a
//! meeting being sent, keep-alives, and `ConnectionStatus Closed` at the timeout.

use crate::ews_support;

use std::time::{Duration, Instant};

use ews_support::*;

fn count_envelopes(text: &str) -> usize {
    text.matches("</s:Envelope>").count()
}

#[tokio::test]
async fn streaming_delivers_a_send_within_a_second_then_closes() {
    vmr_simulator::tls::install_crypto_provider();
    let running = vmr_simulator::start_with(
        "127.0.0.1:0".parse().expect("addr"),
        vmr_simulator::DEFAULT_TENANT,
        options(),
    )
    .await
    .expect("start");
    let url = running.simulator.ews_url();
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(running.tls.cert_pem().as_bytes()).expect("pem"),
        )
        .build()
        .expect("client");
    let auth = basic(SVC, SVC_PASSWORD);
    let call = |xml: String| {
        client
            .post(&url)
            .header("authorization", &auth)
            .header("content-type", "text/xml; charset=utf-8")
            .body(xml)
            .send()
    };
    let subscribe = r#"<m:Subscribe><m:StreamingSubscriptionRequest><t:FolderIds><t:DistinguishedFolderId Id="inbox"/><t:DistinguishedFolderId Id="calendar"/></t:FolderIds>
        <t:EventTypes><t:EventType>NewMailEvent</t:EventType><t:EventType>CreatedEvent</t:EventType><t:EventType>ModifiedEvent</t:EventType></t:EventTypes></m:StreamingSubscriptionRequest></m:Subscribe>"#;
    let response = call(envelope(Some(ROOM), subscribe))
        .await
        .expect("subscribe");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    let doc = roxmltree::Document::parse(&text).expect("xml");
    let id = doc
        .descendants()
        .find(|n| n.has_tag_name((NS_M, "SubscriptionId")))
        .and_then(|n| n.text())
        .expect("subscription id")
        .to_owned();
    assert!(
        !text.contains("Watermark"),
        "streaming subscriptions have no watermark"
    );

    // ConnectionTimeout 2 "minutes" of 600 ms each; keep-alives every 200 ms.
    let get = format!("<m:GetStreamingEvents><m:SubscriptionIds><t:SubscriptionId>{id}</t:SubscriptionId></m:SubscriptionIds><m:ConnectionTimeout>2</m:ConnectionTimeout></m:GetStreamingEvents>");
    let opened = Instant::now();
    let mut response = call(envelope(Some(ROOM), &get)).await.expect("stream");
    assert_eq!(response.status(), 200);
    let mut received = String::new();
    // The first envelope (ConnectionStatus OK) arrives at once.
    while count_envelopes(&received) < 1 {
        let chunk = response.chunk().await.expect("chunk").expect("more");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(received.contains("<m:ConnectionStatus>OK</m:ConnectionStatus>"));
    let sent_at = Instant::now();
    running
        .simulator
        .ews
        .send_meeting(meeting("Streamed", T0))
        .expect("send");
    while !received.contains("NewMailEvent") {
        let chunk = tokio::time::timeout(
            Duration::from_secs(1).saturating_sub(sent_at.elapsed()),
            response.chunk(),
        )
        .await
        .expect("a notification within 1 s of the send")
        .expect("chunk")
        .expect("stream still open");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(sent_at.elapsed() < Duration::from_secs(1));
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    let lifetime = opened.elapsed();
    assert!(
        lifetime >= Duration::from_millis(1100) && lifetime < Duration::from_secs(5),
        "{lifetime:?}"
    );
    let envelopes = count_envelopes(&received);
    assert!(
        envelopes >= 4,
        "first OK, notification, keep-alives and Closed; got {envelopes}:\n{received}"
    );
    assert!(received.ends_with("</s:Envelope>"));
    let last = received.rsplit("<?xml").next().expect("last envelope");
    assert!(
        last.contains("<m:ConnectionStatus>Closed</m:ConnectionStatus>"),
        "{last}"
    );
    // Every envelope is a document of its own.
    for part in received.split("<?xml").filter(|p| !p.trim().is_empty()) {
        let doc = format!("<?xml{part}");
        roxmltree::Document::parse(&doc).unwrap_or_else(|e| panic!("{e}: {doc}"));
    }
    let notification = received
        .split("<?xml")
        .find(|p| p.contains("NewMailEvent"))
        .expect("notification envelope");
    assert!(notification.contains("<m:Notifications><m:Notification><t:SubscriptionId>"));
    assert!(notification.contains("<t:CreatedEvent><t:TimeStamp>"));

    // An unknown subscription: an error message, Closed at once.
    let get = "<m:GetStreamingEvents><m:SubscriptionIds><t:SubscriptionId>JgBnb25l</t:SubscriptionId></m:SubscriptionIds><m:ConnectionTimeout>1</m:ConnectionTimeout></m:GetStreamingEvents>";
    let text = call(envelope(Some(ROOM), get))
        .await
        .expect("call")
        .text()
        .await
        .expect("body");
    assert!(text.contains("<m:ResponseCode>ErrorSubscriptionNotFound</m:ResponseCode>"));
    assert!(text.contains("<m:ErrorSubscriptionIds><t:SubscriptionId>JgBnb25l</t:SubscriptionId></m:ErrorSubscriptionIds><m:ConnectionStatus>Closed</m:ConnectionStatus>"));
    running.shutdown().await.expect("shutdown");
}
