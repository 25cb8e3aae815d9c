//! NTLMv2 with channel binding against the simulated Exchange over real HTTPS: the three legs
//! on one connection and its reuse, Extended Protection (Required / Accept / Off) against a
//! missing and a wrong channel binding, re-negotiation after the server closes the connection
//! or forgets its authentication, and a wrong password. Legs and connections are counted on the
//! simulator's side (its NTLM records) and on the client's ([`NtlmAuth::stats`]).

use std::sync::Arc;
use std::time::Duration;

use vmr_core::secret::Secret;
use vmr_exchange::auth::BasicAuth;
use vmr_exchange::ews::client::{http_client, EwsClient, EwsOptions};
use vmr_exchange::ews::mailbox::EwsMailbox;
use vmr_exchange::ews::request::{self, RequestContext};
use vmr_exchange::mailbox::{Folder, Mailbox, MailboxError};
use vmr_exchange::ntlm::{ChannelBinding, NtlmAuth, NtlmTls};
use vmr_simulator::ews::ntlm::{ExtendedProtection, NtlmRecord, NtlmStep};
use vmr_simulator::ews::{DEFAULT_RESOURCE, DEFAULT_SERVICE_PASSWORD};
use vmr_simulator::RunningSimulator;

async fn simulator() -> RunningSimulator {
    vmr_simulator::start_with(
        "127.0.0.1:0".parse().expect("address"),
        vmr_simulator::DEFAULT_TENANT,
        vmr_simulator::ews::ExchangeOptions::default(),
    )
    .await
    .expect("the simulator starts")
}

fn ntlm(sim: &RunningSimulator, username: &str, password: &str) -> NtlmAuth {
    NtlmAuth::new(
        username,
        Secret::new(password),
        NtlmTls::new(sim.tls.cert_pem().as_bytes(), false).expect("TLS config"),
        vmr_core::clock::system(),
    )
}

fn context() -> RequestContext {
    let mut context = RequestContext::new("Exchange2013_SP1");
    context.impersonate = Some(DEFAULT_RESOURCE.into());
    context
}

fn client(sim: &RunningSimulator, auth: Arc<NtlmAuth>) -> EwsClient {
    let options = EwsOptions {
        request_timeout: Duration::from_secs(20),
        max_attempts: 2,
        max_back_off: Duration::from_millis(200),
        ..EwsOptions::new(sim.simulator.ews_url(), context())
    };
    EwsClient::new(
        http_client().expect("reqwest"),
        auth,
        options,
        vmr_core::clock::system(),
    )
}

async fn get_folder(client: &EwsClient) -> Result<(), MailboxError> {
    client
        .call(
            "GetFolder",
            request::get_folder(&context(), &[Folder::Calendar]),
        )
        .await
        .map(|_| ())
}

fn records(sim: &RunningSimulator) -> Vec<NtlmRecord> {
    sim.simulator.ews.ntlm().records()
}

fn steps(records: &[NtlmRecord]) -> Vec<(u64, NtlmStep)> {
    records.iter().map(|r| (r.connection, r.step)).collect()
}

fn denied(result: Result<(), MailboxError>) -> String {
    match result {
        Err(MailboxError::Denied(message)) => message,
        other => panic!("expected Denied, got {other:?}"),
    }
}

#[tokio::test]
async fn three_legs_on_one_connection_then_reused() {
    let sim = simulator().await;
    assert_eq!(
        sim.simulator.ews.ntlm().extended_protection(),
        ExtendedProtection::Required
    );
    let auth = Arc::new(ntlm(&sim, "CONTOSO\\svc-vmr", DEFAULT_SERVICE_PASSWORD));
    let client = client(&sim, auth.clone());
    get_folder(&client).await.expect("GetFolder over NTLM");
    let first = records(&sim);
    assert_eq!(first.len(), 2, "{first:?}");
    let connection = first[0].connection;
    assert_eq!(
        steps(&first),
        vec![
            (connection, NtlmStep::Challenged),
            (connection, NtlmStep::Authenticated)
        ]
    );
    assert_eq!(first[1].account.as_deref(), Some("svc-vmr@contoso.com"));
    // The HTTP requests: NEGOTIATE (answered 401 with the CHALLENGE), then AUTHENTICATE (200).
    let log = sim.simulator.ews.requests();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(
        (log[0].status, log[0].fault.as_deref()),
        (401, Some("NtlmChallenge"))
    );
    assert_eq!(
        (log[1].status, log[1].operation.as_str()),
        (200, "GetFolder")
    );

    // Later requests, through EwsMailbox too, ride the authenticated connection.
    get_folder(&client).await.expect("second GetFolder");
    let mailbox = EwsMailbox::new(client.clone(), vec![Folder::Calendar]);
    mailbox
        .sync(Folder::Calendar, None)
        .await
        .expect("SyncFolderItems over the same connection");
    let all = records(&sim);
    assert!(all.len() >= 4, "{all:?}");
    assert!(
        all[2..]
            .iter()
            .all(|r| r.connection == connection && r.step == NtlmStep::Reused),
        "{all:?}"
    );
    let stats = auth.stats();
    assert_eq!(stats.connections, 1, "{stats:?}");
    assert_eq!(stats.authenticated, 1, "{stats:?}");
    assert!(stats.reused >= 2, "{stats:?}");
    assert_eq!(stats.renegotiated, 0, "{stats:?}");
}

#[tokio::test]
async fn a_upn_user_name_authenticates_too() {
    let sim = simulator().await;
    let auth = Arc::new(ntlm(&sim, "svc-vmr@contoso.com", DEFAULT_SERVICE_PASSWORD));
    get_folder(&client(&sim, auth))
        .await
        .expect("GetFolder as svc-vmr@contoso.com");
    assert_eq!(records(&sim)[1].step, NtlmStep::Authenticated);
}

#[tokio::test]
async fn a_wrong_channel_binding_is_denied_naming_channel_binding() {
    let sim = simulator().await;
    // The certificate a TLS-intercepting proxy would show instead of the server's own.
    let other = vmr_simulator::tls::TlsIdentity::generate(&[]).expect("another certificate");
    let auth = ntlm(&sim, "CONTOSO\\svc-vmr", DEFAULT_SERVICE_PASSWORD)
        .with_channel_binding(ChannelBinding::Certificate(other.cert_der().expect("DER")));
    let message = denied(get_folder(&client(&sim, Arc::new(auth))).await);
    assert!(message.contains("channel binding"), "{message}");
    assert!(message.contains("ntlm"), "{message}");
    let refused: Vec<NtlmRecord> = records(&sim)
        .into_iter()
        .filter(|r| r.step == NtlmStep::Refused)
        .collect();
    assert_eq!(refused.len(), 1, "denied once, not retried: {refused:?}");
    assert_eq!(
        refused[0].reason.as_deref(),
        Some("the channel binding token does not match this server's certificate")
    );

    // Accept still checks a binding that is sent; Off does not look at it.
    sim.simulator
        .ews
        .ntlm()
        .set_extended_protection(ExtendedProtection::Accept);
    let auth = ntlm(&sim, "CONTOSO\\svc-vmr", DEFAULT_SERVICE_PASSWORD)
        .with_channel_binding(ChannelBinding::Certificate(other.cert_der().expect("DER")));
    denied(get_folder(&client(&sim, Arc::new(auth))).await);
    sim.simulator
        .ews
        .ntlm()
        .set_extended_protection(ExtendedProtection::Off);
    let auth = ntlm(&sim, "CONTOSO\\svc-vmr", DEFAULT_SERVICE_PASSWORD)
        .with_channel_binding(ChannelBinding::Certificate(other.cert_der().expect("DER")));
    get_folder(&client(&sim, Arc::new(auth)))
        .await
        .expect("Extended Protection off ignores the binding");
}

#[tokio::test]
async fn a_missing_channel_binding_is_denied_when_required_only() {
    let sim = simulator().await;
    let omit = || {
        Arc::new(
            ntlm(&sim, "CONTOSO\\svc-vmr", DEFAULT_SERVICE_PASSWORD)
                .with_channel_binding(ChannelBinding::Omit),
        )
    };
    let message = denied(get_folder(&client(&sim, omit())).await);
    assert!(message.contains("sent no channel binding"), "{message}");
    let last = records(&sim).pop().expect("a record");
    assert_eq!(last.step, NtlmStep::Refused);
    assert_eq!(
        last.reason.as_deref(),
        Some("no channel binding token (Extended Protection is Required)")
    );
    sim.simulator
        .ews
        .ntlm()
        .set_extended_protection(ExtendedProtection::Accept);
    get_folder(&client(&sim, omit()))
        .await
        .expect("Accept lets a client without channel binding in");
}

#[tokio::test]
async fn a_closed_connection_is_negotiated_afresh() {
    let sim = simulator().await;
    let auth = Arc::new(ntlm(&sim, "CONTOSO\\svc-vmr", DEFAULT_SERVICE_PASSWORD));
    let client = client(&sim, auth.clone());
    get_folder(&client).await.expect("first");
    // The next response says `Connection: close` and the server closes the connection.
    sim.simulator.ews.ntlm().close_after_next_response();
    get_folder(&client)
        .await
        .expect("second, on the first connection");
    get_folder(&client)
        .await
        .expect("third, on a new connection after a new handshake");
    let all = records(&sim);
    let challenged: Vec<u64> = all
        .iter()
        .filter(|r| r.step == NtlmStep::Challenged)
        .map(|r| r.connection)
        .collect();
    let authenticated: Vec<u64> = all
        .iter()
        .filter(|r| r.step == NtlmStep::Authenticated)
        .map(|r| r.connection)
        .collect();
    assert_eq!(challenged.len(), 2, "{all:?}");
    assert_ne!(challenged[0], challenged[1], "{all:?}");
    assert_eq!(challenged, authenticated, "{all:?}");
    let stats = auth.stats();
    assert_eq!(
        (stats.connections, stats.authenticated),
        (2, 2),
        "{stats:?}"
    );
    // No request failed on the way: every HTTP answer was a challenge or a 200.
    let log = sim.simulator.ews.requests();
    assert!(
        log.iter()
            .all(|r| r.status == 200 || r.fault.as_deref() == Some("NtlmChallenge")),
        "{log:?}"
    );
}

#[tokio::test]
async fn a_connection_the_server_forgot_is_negotiated_afresh() {
    let sim = simulator().await;
    let auth = Arc::new(ntlm(&sim, "CONTOSO\\svc-vmr", DEFAULT_SERVICE_PASSWORD));
    let client = client(&sim, auth.clone());
    get_folder(&client).await.expect("first");
    sim.simulator.ews.ntlm().forget_connections();
    get_folder(&client)
        .await
        .expect("after a 401 on the authenticated connection");
    let stats = auth.stats();
    assert_eq!(stats.renegotiated, 1, "{stats:?}");
    assert_eq!(stats.authenticated, 2, "{stats:?}");
    let authenticated = records(&sim)
        .iter()
        .filter(|r| r.step == NtlmStep::Authenticated)
        .count();
    assert_eq!(authenticated, 2);
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_denial() {
    let sim = simulator().await;
    let auth = Arc::new(ntlm(&sim, "CONTOSO\\svc-vmr", "not-the-password"));
    let message = denied(get_folder(&client(&sim, auth)).await);
    assert!(message.contains("password is wrong"), "{message}");
    assert!(message.contains("CONTOSO\\svc-vmr"), "{message}");
    let last = records(&sim).pop().expect("a record");
    assert_eq!(
        last.reason.as_deref(),
        Some("wrong password (NTProofStr does not verify)")
    );
}

#[tokio::test]
async fn basic_is_offered_and_accepted_only_while_enabled() {
    let sim = simulator().await;
    let basic = Arc::new(BasicAuth::new(
        "svc-vmr@contoso.com",
        Secret::new(DEFAULT_SERVICE_PASSWORD),
    ));
    let make = || {
        EwsClient::new(
            reqwest::Client::builder()
                .add_root_certificate(
                    reqwest::Certificate::from_pem(sim.tls.cert_pem().as_bytes()).expect("PEM"),
                )
                .build()
                .expect("reqwest"),
            basic.clone(),
            EwsOptions {
                max_attempts: 1,
                ..EwsOptions::new(sim.simulator.ews_url(), context())
            },
            vmr_core::clock::system(),
        )
    };
    get_folder(&make()).await.expect("Basic while enabled");
    sim.simulator.ews.ntlm().set_basic(false);
    denied(get_folder(&make()).await);
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(sim.tls.cert_pem().as_bytes()).expect("PEM"),
        )
        .build()
        .expect("reqwest");
    let response = http
        .post(sim.simulator.ews_url())
        .body("")
        .send()
        .await
        .expect("a 401");
    assert_eq!(response.status(), 401);
    let offered: Vec<String> = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(offered, vec!["Negotiate", "NTLM"]);
}

#[tokio::test]
async fn a_streaming_subscription_keeps_its_connection_while_requests_use_another() {
    use vmr_core::meeting::{Body, Person};
    use vmr_exchange::ews::streaming::ListenerOptions;
    use vmr_exchange::mailbox::Wake;

    let sim = simulator().await;
    let auth = Arc::new(ntlm(&sim, "CONTOSO\\svc-vmr", DEFAULT_SERVICE_PASSWORD));
    let client = client(&sim, auth.clone());
    let mailbox = Arc::new(EwsMailbox::with_listener_options(
        client.clone(),
        vec![Folder::Inbox, Folder::Calendar],
        ListenerOptions {
            streaming: true,
            connection_minutes: 1,
            ..ListenerOptions::default()
        },
    ));
    let waiting = {
        let mailbox = mailbox.clone();
        tokio::spawn(async move { mailbox.wait_for_changes(Duration::from_secs(15)).await })
    };
    // Until GetStreamingEvents is open…
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !sim
        .simulator
        .ews
        .requests()
        .iter()
        .any(|r| r.operation == "GetStreamingEvents")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no GetStreamingEvents: {:?}",
            sim.simulator.ews.requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // …an ordinary request cannot share its connection: it authenticates a second one.
    get_folder(&client)
        .await
        .expect("GetFolder beside the stream");
    let start = sim.simulator.ews.now_unix_ms() + 86_400_000;
    sim.simulator
        .ews
        .send_meeting(vmr_simulator::ews::SendMeeting {
            organizer: Person {
                name: "Alice Organizer".into(),
                email: vmr_simulator::ews::DEFAULT_ORGANIZER.into(),
            },
            subject: "Over NTLM".into(),
            body: Body {
                html: false,
                content: "agenda".into(),
            },
            start,
            end: start + 1_800_000,
            time_zone: "W. Europe Standard Time".into(),
            recurrence: None,
            required: vec![],
            optional: vec![],
            resources: vec![DEFAULT_RESOURCE.into()],
        })
        .expect("send");
    let woke = waiting.await.expect("task").expect("wait");
    assert_eq!(woke, Wake::Changed);
    let stats = auth.stats();
    assert_eq!(
        (stats.connections, stats.authenticated),
        (2, 2),
        "{stats:?}"
    );
    let all = records(&sim);
    let authenticated: Vec<u64> = all
        .iter()
        .filter(|r| r.step == NtlmStep::Authenticated)
        .map(|r| r.connection)
        .collect();
    assert_eq!(authenticated.len(), 2, "{all:?}");
    assert_ne!(authenticated[0], authenticated[1], "{all:?}");
}
