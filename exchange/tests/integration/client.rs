//! The EWS transport against a fake Exchange over real HTTP (`common/`): throttling in both
//! shapes, 503, 401 and re-authentication, malformed replies, timeouts, the concurrency cap,
//! the OAuth2 client-credentials flows (secret and certificate), redirects, and streaming and
//! pull notifications. Timings are measured on the fake's side.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::*;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier as _;
use sha1::{Digest as _, Sha1};
use sha2::Sha256;
use vmr_core::clock::{Clock, ManualClock};
use vmr_core::secret::Secret;
use vmr_exchange::auth::{
    Authenticator, BasicAuth, ClientCertificate, ClientCredential, OAuth2ClientCredentials,
};
use vmr_exchange::ews::client::{EwsClient, EwsOptions};
use vmr_exchange::ews::mailbox::EwsMailbox;
use vmr_exchange::ews::request::RequestContext;
use vmr_exchange::ews::streaming::{ListenerOptions, NotificationMode};
use vmr_exchange::mailbox::{
    Change, Fetched, Folder, ItemRef, Mailbox, MailboxError, Response, Wake,
};

const ROOM: &str = "vmr-room@contoso.com";
const SCOPE: &str = "https://outlook.office365.com/.default";

fn basic() -> Arc<dyn Authenticator> {
    Arc::new(BasicAuth::new(
        "svc-vmr@contoso.com",
        Secret::new("P@ssw0rd!"),
    ))
}

fn basic_header() -> String {
    format!("Basic {}", STANDARD.encode("svc-vmr@contoso.com:P@ssw0rd!"))
}

fn options(fake: &FakeExchange) -> EwsOptions {
    let mut context = RequestContext::new("Exchange2013_SP1");
    context.impersonate = Some(ROOM.into());
    EwsOptions {
        max_concurrency: 4,
        request_timeout: Duration::from_secs(10),
        max_attempts: 4,
        max_back_off: Duration::from_secs(5),
        ..EwsOptions::new(fake.ews_url(), context)
    }
}

fn client_with(
    fake: &FakeExchange,
    auth: Arc<dyn Authenticator>,
    tweak: impl FnOnce(&mut EwsOptions),
) -> EwsClient {
    let mut options = options(fake);
    tweak(&mut options);
    EwsClient::new(
        vmr_exchange::ews::client::http_client().unwrap(),
        auth,
        options,
        vmr_core::clock::system(),
    )
}

fn mailbox(client: EwsClient) -> EwsMailbox {
    EwsMailbox::with_listener_options(
        client,
        vec![Folder::Inbox, Folder::Calendar],
        ListenerOptions {
            pull_interval: Duration::from_millis(200),
            ..ListenerOptions::default()
        },
    )
}

fn gap(arrivals: &[Arrival], from: usize, to: usize) -> Duration {
    arrivals[to].at.duration_since(arrivals[from].at)
}

async fn sync_inbox(
    mailbox: &EwsMailbox,
) -> Result<vmr_exchange::mailbox::SyncBatch, MailboxError> {
    mailbox
        .sync(Folder::Inbox, Some("H4sIAAAAAAAEAO29B2AcSZ"))
        .await
}

#[tokio::test]
async fn in_band_server_busy_holds_back_every_request_for_the_back_off() {
    let fake = FakeExchange::ews_only(|a| {
        if a.index_of_operation == 0 {
            Reply::ok(sync_busy_in_band(1500))
        } else {
            Reply::ok(sync_ok("state-2"))
        }
    })
    .await;
    let mb = Arc::new(mailbox(client_with(&fake, basic(), |_| {})));
    let first = tokio::spawn({
        let mb = mb.clone();
        async move { sync_inbox(&mb).await }
    });
    // A second request to the same mailbox starts while the first is held back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = sync_inbox(&mb).await.unwrap();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.state, "state-2");
    assert_eq!(second.state, "state-2");
    assert_eq!(
        first.changes,
        vec![Change::Upsert(ItemRef {
            id: "AAMkAGI1".into(),
            change_key: "DwAAABYA".into()
        })]
    );
    let arrivals = fake.arrivals();
    assert_eq!(arrivals.len(), 3, "{:?}", fake.operations());
    for later in 1..3 {
        let waited = gap(&arrivals, 0, later);
        assert!(
            waited >= Duration::from_millis(1500),
            "request {later} came {waited:?} after the throttle"
        );
        assert!(
            waited < Duration::from_millis(2500),
            "request {later} waited {waited:?}"
        );
    }
    let stats = mb.client().stats();
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.throttled, 1);
    // Headers of every request.
    for a in &arrivals {
        assert_eq!(a.authorization.as_deref(), Some(basic_header().as_str()));
        assert_eq!(a.anchor_mailbox.as_deref(), Some(ROOM));
        assert_eq!(a.content_type.as_deref(), Some("text/xml; charset=utf-8"));
        assert!(a.body.contains(ROOM), "impersonation header missing");
    }
}

#[tokio::test]
async fn server_busy_fault_waits_for_its_back_off() {
    let fake = FakeExchange::ews_only(|a| match a.index_of_operation {
        0 => Reply::status(500, busy_fault(1500)),
        _ => Reply::ok(sync_ok("state-2")),
    })
    .await;
    let mb = mailbox(client_with(&fake, basic(), |_| {}));
    let batch = sync_inbox(&mb).await.unwrap();
    assert_eq!(batch.state, "state-2");
    let arrivals = fake.arrivals();
    assert_eq!(arrivals.len(), 2);
    let waited = gap(&arrivals, 0, 1);
    assert!(waited >= Duration::from_millis(1500), "{waited:?}");
    assert!(waited < Duration::from_millis(2500), "{waited:?}");
}

#[tokio::test]
async fn a_back_off_longer_than_max_back_off_is_returned_as_throttled() {
    let fake = FakeExchange::ews_only(|_| Reply::status(500, busy_fault(297_749))).await;
    let mb = mailbox(client_with(&fake, basic(), |_| {}));
    let started = Instant::now();
    match sync_inbox(&mb).await {
        Err(MailboxError::Throttled(d)) => {
            assert!(
                d > Duration::from_secs(297) && d <= Duration::from_millis(297_749),
                "{d:?}"
            )
        }
        other => panic!("expected Throttled, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    // The mailbox stays held back: the next call does not reach the server.
    assert!(matches!(
        sync_inbox(&mb).await,
        Err(MailboxError::Throttled(_))
    ));
    assert_eq!(fake.arrivals().len(), 1);
}

#[tokio::test]
async fn http_503_is_retried_with_back_off_and_retry_after() {
    let fake = FakeExchange::ews_only(|a| match a.index_of_operation {
        0 => Reply::status(503, "Service Unavailable".into()),
        1 => Reply::status(503, String::new()).with_header("Retry-After", "1"),
        _ => Reply::ok(sync_ok("state-3")),
    })
    .await;
    let mb = mailbox(client_with(&fake, basic(), |_| {}));
    assert_eq!(sync_inbox(&mb).await.unwrap().state, "state-3");
    let arrivals = fake.arrivals();
    assert_eq!(arrivals.len(), 3);
    // First retry: the exponential back-off (500 ms); second: Retry-After (1 s).
    let first = gap(&arrivals, 0, 1);
    let second = gap(&arrivals, 1, 2);
    assert!(
        first >= Duration::from_millis(500) && first < Duration::from_millis(1400),
        "{first:?}"
    );
    assert!(
        second >= Duration::from_millis(1000) && second < Duration::from_millis(2000),
        "{second:?}"
    );
    assert_eq!(mb.client().stats().retries, 2);
}

#[tokio::test]
async fn http_503_until_attempts_run_out_is_transient() {
    let fake = FakeExchange::ews_only(|_| Reply::status(503, String::new())).await;
    let mb = mailbox(client_with(&fake, basic(), |o| o.max_attempts = 3));
    match sync_inbox(&mb).await {
        Err(MailboxError::Transient(why)) => {
            assert!(
                why.contains("after 3 attempts") && why.contains("503"),
                "{why}"
            )
        }
        other => panic!("expected Transient, got {other:?}"),
    }
    assert_eq!(fake.arrivals().len(), 3);
}

#[tokio::test]
async fn basic_401_once_resends_and_succeeds() {
    let fake = FakeExchange::ews_only(|a| match a.index_of_operation {
        0 => {
            Reply::status(401, String::new()).with_header("WWW-Authenticate", "Basic realm=\"ex\"")
        }
        _ => Reply::ok(sync_ok("s")),
    })
    .await;
    let mb = mailbox(client_with(&fake, basic(), |_| {}));
    assert_eq!(sync_inbox(&mb).await.unwrap().state, "s");
    let arrivals = fake.arrivals();
    assert_eq!(arrivals.len(), 2);
    assert!(arrivals
        .iter()
        .all(|a| a.authorization.as_deref() == Some(basic_header().as_str())));
    // Re-sent at once (no back-off for a re-authentication).
    assert!(gap(&arrivals, 0, 1) < Duration::from_millis(450));
}

#[tokio::test]
async fn a_second_401_is_denied() {
    let fake = FakeExchange::ews_only(|_| Reply::status(401, String::new())).await;
    let mb = mailbox(client_with(&fake, basic(), |_| {}));
    match sync_inbox(&mb).await {
        Err(MailboxError::Denied(why)) => {
            assert!(why.contains("401") && why.contains("basic"), "{why}")
        }
        other => panic!("expected Denied, got {other:?}"),
    }
    assert_eq!(fake.arrivals().len(), 2);
}

fn oauth_secret(
    fake: &FakeExchange,
    clock: Arc<dyn Clock>,
    secret: &str,
) -> Arc<OAuth2ClientCredentials> {
    Arc::new(OAuth2ClientCredentials::new(
        fake.token_url(),
        "0f9e8d7c-app",
        ClientCredential::Secret(Secret::new(secret)),
        SCOPE,
        clock,
    ))
}

#[tokio::test]
async fn oauth2_401_once_refetches_the_token() {
    let fake = FakeExchange::start(
        |a| match a.index_of_operation {
            0 => Reply::status(401, String::new()),
            _ => Reply::ok(sync_ok("s")),
        },
        |_, index| token_ok(&format!("token-{}", index + 1), 3599),
    )
    .await;
    let clock = ManualClock::at_unix(1_770_000_000);
    let auth = oauth_secret(&fake, clock, "app-secret");
    let mb = mailbox(client_with(&fake, auth, |_| {}));
    assert_eq!(sync_inbox(&mb).await.unwrap().state, "s");
    assert_eq!(
        fake.token_requests().len(),
        2,
        "the token is fetched again after the 401"
    );
    let auths: Vec<_> = fake
        .arrivals()
        .into_iter()
        .map(|a| a.authorization)
        .collect();
    assert_eq!(
        auths,
        vec![
            Some("Bearer token-1".to_owned()),
            Some("Bearer token-2".to_owned())
        ]
    );
}

#[tokio::test]
async fn oauth2_secret_flow_sends_the_form_and_caches_until_near_expiry() {
    let fake = FakeExchange::start(
        |_| Reply::ok(sync_ok("s")),
        |form, index| {
            let field = |k: &str| form.get(k).map(String::as_str);
            if field("grant_type") != Some("client_credentials")
                || field("client_id") != Some("0f9e8d7c-app")
                || field("scope") != Some(SCOPE)
                || field("client_secret") != Some("app-secret")
                || form.contains_key("client_assertion")
            {
                return token_error(400, "invalid_request", &format!("unexpected form {form:?}"));
            }
            token_ok(&format!("token-{}", index + 1), 3599)
        },
    )
    .await;
    let clock = ManualClock::at_unix(1_770_000_000);
    let auth = oauth_secret(&fake, clock.clone(), "app-secret");
    let mb = mailbox(client_with(&fake, auth, |_| {}));
    for _ in 0..3 {
        sync_inbox(&mb).await.unwrap();
    }
    assert_eq!(fake.token_requests().len(), 1, "cached across calls");
    // 3599 s lifetime, refreshed 300 s early: at +3290 s still cached, at +3300 s refetched.
    clock.advance(Duration::from_secs(3290));
    sync_inbox(&mb).await.unwrap();
    assert_eq!(fake.token_requests().len(), 1);
    clock.advance(Duration::from_secs(10));
    sync_inbox(&mb).await.unwrap();
    assert_eq!(fake.token_requests().len(), 2);
    let auths: Vec<_> = fake
        .arrivals()
        .into_iter()
        .map(|a| a.authorization.unwrap_or_default())
        .collect();
    assert_eq!(auths[..4], vec!["Bearer token-1".to_owned(); 4][..]);
    assert_eq!(auths[4], "Bearer token-2");
}

#[tokio::test]
async fn oauth2_refusal_is_denied_with_the_error_and_description() {
    let fake = FakeExchange::start(
        |_| Reply::ok(sync_ok("s")),
        |_, _| {
            token_error(
                401,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
            )
        },
    )
    .await;
    let auth = oauth_secret(&fake, vmr_core::clock::system(), "wrong-secret");
    let mb = mailbox(client_with(&fake, auth, |_| {}));
    match sync_inbox(&mb).await {
        Err(MailboxError::Denied(why)) => {
            assert!(why.contains("invalid_client"), "{why}");
            assert!(
                why.contains("AADSTS7000215: Invalid client secret provided"),
                "{why}"
            );
            assert!(!why.contains("wrong-secret"), "{why}");
        }
        other => panic!("expected Denied, got {other:?}"),
    }
    assert_eq!(fake.token_requests().len(), 1);
    assert_eq!(
        fake.arrivals().len(),
        0,
        "EWS is never called without a token"
    );
}

/// Checks a client-assertion token request the way Entra ID does; `Err` says what is wrong.
fn check_assertion(
    form: &TokenForm,
    public_key: &rsa::RsaPublicKey,
    cert_der: &[u8],
    token_url: &str,
    now: i64,
) -> Result<(), String> {
    let field = |k: &str| form.get(k).map(String::as_str);
    if field("grant_type") != Some("client_credentials")
        || field("client_id") != Some("0f9e8d7c-app")
        || field("scope") != Some(SCOPE)
        || field("client_assertion_type")
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        || form.contains_key("client_secret")
    {
        return Err(format!("form fields: {form:?}"));
    }
    let jwt = field("client_assertion").ok_or("no client_assertion")?;
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Err("not a compact JWS".into());
    }
    let decode = |s: &str| -> Result<serde_json::Value, String> {
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    let header = decode(parts[0])?;
    let claims = decode(parts[1])?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {}", header["alg"]));
    }
    if header["x5t"] != URL_SAFE_NO_PAD.encode(Sha1::digest(cert_der)) {
        return Err(format!(
            "x5t {} is not the certificate's thumbprint",
            header["x5t"]
        ));
    }
    if claims["aud"] != token_url
        || claims["iss"] != "0f9e8d7c-app"
        || claims["sub"] != "0f9e8d7c-app"
        || claims["jti"].as_str().is_none_or(str::is_empty)
    {
        return Err(format!("claims {claims}"));
    }
    let (nbf, exp) = (claims["nbf"].as_i64(), claims["exp"].as_i64());
    if nbf != Some(now) || exp != Some(now + 600) {
        return Err(format!("nbf/exp {nbf:?}/{exp:?}, now {now}"));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(parts[2])
        .map_err(|e| e.to_string())?;
    let signature = Signature::try_from(signature.as_slice()).map_err(|e| e.to_string())?;
    VerifyingKey::<Sha256>::new(public_key.clone())
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .map_err(|e| format!("signature: {e}"))
}

#[tokio::test]
async fn oauth2_certificate_flow_signs_a_verifiable_assertion() {
    use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let public_key = rsa::RsaPublicKey::from(&key);
    let key_pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    let key_pair =
        rcgen::KeyPair::from_pem_and_sign_algo(&key_pem, &rcgen::PKCS_RSA_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "vmr-scheduler EWS app");
    let cert = params.self_signed(&key_pair).unwrap();
    let cert_der = cert.der().to_vec();

    let now = 1_770_000_000;
    let token_url = Arc::new(std::sync::OnceLock::<String>::new());
    let verdicts = Arc::new(std::sync::Mutex::new(Vec::<Result<(), String>>::new()));
    let fake = FakeExchange::start(|_| Reply::ok(sync_ok("s")), {
        let token_url = token_url.clone();
        let verdicts = verdicts.clone();
        let cert_der = cert_der.clone();
        move |form, index| {
            let verdict =
                check_assertion(form, &public_key, &cert_der, token_url.get().unwrap(), now);
            verdicts.lock().unwrap().push(verdict.clone());
            match verdict {
                Ok(()) => token_ok(&format!("cert-token-{}", index + 1), 3599),
                Err(why) => token_error(401, "invalid_client", &why),
            }
        }
    })
    .await;
    token_url.set(fake.token_url()).unwrap();

    // The credential as the configuration hands it over: PEM text.
    let credential =
        ClientCertificate::from_pem(&cert.pem(), &Secret::new(key_pem.as_str())).unwrap();
    assert_eq!(credential.cert_der(), cert_der.as_slice());
    let auth = Arc::new(OAuth2ClientCredentials::new(
        fake.token_url(),
        "0f9e8d7c-app",
        ClientCredential::Certificate(Box::new(credential)),
        SCOPE,
        ManualClock::at_unix(now),
    ));
    let mb = mailbox(client_with(&fake, auth.clone(), |_| {}));
    sync_inbox(&mb).await.unwrap();
    auth.invalidate();
    sync_inbox(&mb).await.unwrap();
    assert_eq!(*verdicts.lock().unwrap(), vec![Ok(()), Ok(())]);
    let forms = fake.token_requests();
    assert_ne!(
        forms[0]["client_assertion"], forms[1]["client_assertion"],
        "each assertion has its own jti"
    );
    let auths: Vec<_> = fake
        .arrivals()
        .into_iter()
        .map(|a| a.authorization)
        .collect();
    assert_eq!(
        auths,
        vec![
            Some("Bearer cert-token-1".to_owned()),
            Some("Bearer cert-token-2".to_owned())
        ]
    );
}

#[tokio::test]
async fn malformed_replies_are_retried() {
    let fake = FakeExchange::ews_only(|a| match a.index_of_operation {
        0 => Reply::ok("<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><m:SyncFolder".into()),
        1 => Reply::status(500, ASPNET_ERROR_PAGE.into()),
        _ => Reply::ok(sync_ok("s")),
    })
    .await;
    let mb = mailbox(client_with(&fake, basic(), |_| {}));
    assert_eq!(sync_inbox(&mb).await.unwrap().state, "s");
    let arrivals = fake.arrivals();
    assert_eq!(arrivals.len(), 3);
    assert!(gap(&arrivals, 0, 1) >= Duration::from_millis(500));
    assert!(gap(&arrivals, 1, 2) >= Duration::from_millis(1000));
}

#[tokio::test]
async fn a_timeout_is_retried() {
    let fake = FakeExchange::ews_only(|a| match a.index_of_operation {
        0 => Reply::ok(sync_ok("late")).delayed(Duration::from_secs(3)),
        _ => Reply::ok(sync_ok("s")),
    })
    .await;
    let mb = mailbox(client_with(&fake, basic(), |o| {
        o.request_timeout = Duration::from_millis(400)
    }));
    let started = Instant::now();
    assert_eq!(sync_inbox(&mb).await.unwrap().state, "s");
    let arrivals = fake.arrivals();
    assert_eq!(arrivals.len(), 2);
    // 400 ms timeout + 500 ms back-off, well before the slow reply would have come.
    let retry = gap(&arrivals, 0, 1);
    assert!(
        retry >= Duration::from_millis(900) && retry < Duration::from_millis(2000),
        "{retry:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn no_more_than_max_concurrency_requests_are_in_flight() {
    let fake =
        FakeExchange::ews_only(|_| Reply::ok(sync_ok("s")).delayed(Duration::from_millis(100)))
            .await;
    let mb = Arc::new(mailbox(client_with(&fake, basic(), |o| {
        o.max_concurrency = 3
    })));
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let mb = mb.clone();
            tokio::spawn(async move { sync_inbox(&mb).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(fake.arrivals().len(), 20);
    assert_eq!(
        fake.max_in_flight(),
        3,
        "never more than 3, and 3 were used"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let fake = FakeExchange::ews_only(|a| match a.index_of_operation {
        0 => Reply::status(302, String::new()).with_header(
            "Location",
            "https://mail.contoso.com/ews/genericerrorpage.htm?aspxerrorpath=/ews/exchange.asmx",
        ),
        1 => Reply::ok(sync_ok("s")),
        _ => Reply::status(301, String::new()).with_header(
            "Location",
            "https://elsewhere.contoso.com/EWS/Exchange.asmx",
        ),
    })
    .await;
    let mb = mailbox(client_with(&fake, basic(), |_| {}));
    // 302 to the error page: transient, retried.
    assert_eq!(sync_inbox(&mb).await.unwrap().state, "s");
    assert_eq!(fake.arrivals().len(), 2);
    // Any other redirect: refused at once.
    match sync_inbox(&mb).await {
        Err(MailboxError::Refused { code, message }) => {
            assert_eq!(code, "HTTP 301");
            assert!(message.contains("elsewhere.contoso.com"), "{message}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(fake.arrivals().len(), 3);
}

#[tokio::test]
async fn a_permanent_fault_is_not_retried() {
    let fake = FakeExchange::ews_only(|_| {
        Reply::status(
            500,
            fault(
                "ErrorImpersonateUserDenied",
                "The account does not have permission to impersonate the requested user.",
            ),
        )
    })
    .await;
    let mb = mailbox(client_with(&fake, basic(), |_| {}));
    match sync_inbox(&mb).await {
        Err(MailboxError::Denied(why)) => {
            assert!(why.contains("ErrorImpersonateUserDenied"), "{why}")
        }
        other => panic!("expected Denied, got {other:?}"),
    }
    assert_eq!(fake.arrivals().len(), 1);
}

#[tokio::test]
async fn fetch_batches_by_ten_in_order_and_reports_gone_items() {
    let fake = FakeExchange::ews_only(|a| {
        let ids = requested_ids(&a.body);
        Reply::ok(get_items_reply(&ids, &["item-07", "item-23"]))
    })
    .await;
    let mb = mailbox(client_with(&fake, basic(), |_| {}));
    let items: Vec<ItemRef> = (1..=25)
        .map(|i| ItemRef {
            id: format!("item-{i:02}"),
            change_key: "CK".into(),
        })
        .collect();
    let fetched = mb.fetch(&items).await.unwrap();
    assert_eq!(fetched.len(), 25);
    for (i, f) in fetched.iter().enumerate() {
        let id = format!("item-{:02}", i + 1);
        match f {
            Fetched::Gone { id: gone } => {
                assert!(id == "item-07" || id == "item-23", "{id} gone");
                assert_eq!(gone, &id);
            }
            Fetched::Other {
                id: other,
                item_class,
            } => {
                assert_eq!(other, &id);
                assert_eq!(item_class, "IPM.Note");
            }
            Fetched::Meeting(_) => panic!("{id} is no meeting"),
        }
    }
    let batches: Vec<usize> = fake
        .arrivals()
        .iter()
        .map(|a| requested_ids(&a.body).len())
        .collect();
    assert_eq!(batches, vec![10, 10, 5]);
    assert_eq!(fake.operations(), vec!["GetItem"; 3]);
}

#[tokio::test]
async fn responding_to_a_vanished_item_is_not_found() {
    let fake = FakeExchange::ews_only(|_| {
        Reply::ok(message_error(
            "CreateItem",
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        ))
    })
    .await;
    let mb = mailbox(client_with(&fake, basic(), |_| {}));
    let item = ItemRef {
        id: "AAMkAGI1".into(),
        change_key: "DwAAABYA".into(),
    };
    match mb
        .respond(&item, Response::Accept, "<p>Join: 12345</p>")
        .await
    {
        Err(MailboxError::NotFound(why)) => assert!(why.contains("AAMkAGI1"), "{why}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(fake.operations(), vec!["CreateItem"]);
}

/// Splits `text` into pieces at the given byte offsets (from the start).
fn split_at(text: &str, cuts: &[usize]) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut last = 0;
    for &cut in cuts {
        pieces.push(text[last..cut].to_owned());
        last = cut;
    }
    pieces.push(text[last..].to_owned());
    pieces
}

#[tokio::test]
async fn streaming_wakes_once_per_event_across_chunks_and_reconnects_after_closed() {
    let doc1 = streaming_document(
        "sub-1",
        &[item_event("CreatedEvent", "item-1", None)],
        false,
    );
    let keep_alive = streaming_document("sub-1", &[], false);
    let doc2 = streaming_document(
        "sub-1",
        &[item_event("ModifiedEvent", "item-2", None)],
        false,
    );
    let closed = streaming_document("sub-1", &[], true);
    let doc3 = streaming_document(
        "sub-1",
        &[item_event("NewMailEvent", "item-3", None)],
        false,
    );
    let fake =
        FakeExchange::ews_only(
            move |a| match (a.operation.as_str(), a.index_of_operation) {
                ("Subscribe", _) => {
                    assert!(a.body.contains("StreamingSubscriptionRequest"));
                    Reply::ok(subscribe_ok("sub-1", None))
                }
                ("GetStreamingEvents", 0) => {
                    assert!(a.body.contains("sub-1"));
                    // doc1 cut in the middle and inside its closing </s:Envelope> tag; doc2 cut in
                    // three; each piece its own chunk, 300 ms apart.
                    let mut chunks = Vec::new();
                    for piece in split_at(&doc1, &[doc1.len() / 2, doc1.len() - 4]) {
                        chunks.push((Duration::from_millis(300), piece));
                    }
                    chunks.push((Duration::from_millis(100), keep_alive.clone()));
                    for piece in split_at(&doc2, &[100, 700]) {
                        chunks.push((Duration::from_millis(300), piece));
                    }
                    chunks.push((Duration::from_millis(100), closed.clone()));
                    Reply::Stream {
                        chunks,
                        hold: false,
                    }
                }
                ("GetStreamingEvents", 1) => Reply::Stream {
                    chunks: vec![(Duration::from_millis(200), doc3.clone())],
                    hold: true,
                },
                (op, i) => panic!("unexpected {op} #{i}"),
            },
        )
        .await;
    let mb = mailbox(client_with(&fake, basic(), |_| {}));
    let started = Instant::now();
    assert_eq!(
        mb.wait_for_changes(Duration::from_secs(10)).await.unwrap(),
        Wake::Changed
    );
    let first = started.elapsed();
    // Not before the last piece of doc1 (3 × 300 ms).
    assert!(first >= Duration::from_millis(900), "woke after {first:?}");
    assert_eq!(
        mb.wait_for_changes(Duration::from_secs(10)).await.unwrap(),
        Wake::Changed
    );
    let second = started.elapsed();
    assert!(
        second >= Duration::from_millis(1900),
        "woke after {second:?}"
    );
    assert_eq!(fake.count("GetStreamingEvents"), 1);
    // Closed → a new GetStreamingEvents on the same subscription → doc3.
    assert_eq!(
        mb.wait_for_changes(Duration::from_secs(10)).await.unwrap(),
        Wake::Changed
    );
    assert_eq!(fake.count("Subscribe"), 1);
    assert_eq!(fake.count("GetStreamingEvents"), 2);
    // Nothing more: the wait runs out.
    let quiet = Instant::now();
    assert_eq!(
        mb.wait_for_changes(Duration::from_millis(400))
            .await
            .unwrap(),
        Wake::Timeout
    );
    assert!(quiet.elapsed() >= Duration::from_millis(400));
    assert_eq!(
        fake.operations(),
        vec!["Subscribe", "GetStreamingEvents", "GetStreamingEvents"]
    );
    assert_eq!(
        mb.notification_mode().await,
        NotificationMode::Streaming {
            subscription_id: "sub-1".into()
        }
    );
}

#[tokio::test]
async fn a_lost_streaming_subscription_is_renewed_and_reported_as_a_change() {
    let fake = FakeExchange::ews_only(|a| match (a.operation.as_str(), a.index_of_operation) {
        ("Subscribe", i) => Reply::ok(subscribe_ok(&format!("sub-{}", i + 1), None)),
        ("GetStreamingEvents", 0) => Reply::Stream {
            chunks: vec![(
                Duration::from_millis(50),
                streaming_error_document("ErrorSubscriptionNotFound"),
            )],
            hold: false,
        },
        ("GetStreamingEvents", _) => {
            assert!(a.body.contains("sub-2"), "the new subscription is used");
            Reply::Stream {
                chunks: vec![],
                hold: true,
            }
        }
        (op, i) => panic!("unexpected {op} #{i}"),
    })
    .await;
    let mb = mailbox(client_with(&fake, basic(), |_| {}));
    assert_eq!(
        mb.wait_for_changes(Duration::from_secs(5)).await.unwrap(),
        Wake::Changed
    );
    assert_eq!(fake.count("Subscribe"), 2);
    assert_eq!(
        mb.notification_mode().await,
        NotificationMode::Streaming {
            subscription_id: "sub-2".into()
        }
    );
    assert_eq!(
        mb.wait_for_changes(Duration::from_millis(300))
            .await
            .unwrap(),
        Wake::Timeout
    );
    assert_eq!(fake.count("GetStreamingEvents"), 2);
}

#[tokio::test]
async fn pull_is_the_fallback_when_streaming_is_refused() {
    let polls = Arc::new(AtomicUsize::new(0));
    let fake = FakeExchange::ews_only({
        let polls = polls.clone();
        move |a| match a.operation.as_str() {
            "Subscribe" if a.body.contains("StreamingSubscriptionRequest") => Reply::status(
                500,
                fault(
                    "ErrorInvalidServerVersion",
                    "The specified server version is invalid.",
                ),
            ),
            "Subscribe" => {
                assert!(a.body.contains("PullSubscriptionRequest"));
                Reply::ok(subscribe_ok("pull-1", Some("wm-0")))
            }
            "GetEvents" => match polls.fetch_add(1, Ordering::SeqCst) {
                0 => {
                    assert!(a.body.contains("wm-0"));
                    Reply::ok(get_events_ok(
                        "pull-1",
                        "wm-0",
                        &[item_event("StatusEvent", "x", Some("wm-1"))],
                    ))
                }
                _ => {
                    assert!(
                        a.body.contains("wm-1"),
                        "polls go on from the last watermark"
                    );
                    Reply::ok(get_events_ok(
                        "pull-1",
                        "wm-1",
                        &[item_event("NewMailEvent", "item-9", Some("wm-2"))],
                    ))
                }
            },
            op => panic!("unexpected {op}"),
        }
    })
    .await;
    let mb = mailbox(client_with(&fake, basic(), |_| {}));
    let started = Instant::now();
    assert_eq!(
        mb.wait_for_changes(Duration::from_secs(5)).await.unwrap(),
        Wake::Changed
    );
    // Two polls, the pull interval (200 ms) apart.
    let arrivals = fake.arrivals();
    assert_eq!(
        fake.operations(),
        vec!["Subscribe", "Subscribe", "GetEvents", "GetEvents"]
    );
    assert!(gap(&arrivals, 2, 3) >= Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        mb.notification_mode().await,
        NotificationMode::Pull {
            subscription_id: "pull-1".into(),
            watermark: "wm-2".into()
        }
    );
}

#[tokio::test]
async fn with_no_notifications_at_all_waits_just_time_out() {
    let fake = FakeExchange::ews_only(|a| match a.operation.as_str() {
        "Subscribe" => Reply::status(
            500,
            fault(
                "ErrorInvalidServerVersion",
                "The specified server version is invalid.",
            ),
        ),
        op => panic!("unexpected {op}"),
    })
    .await;
    let mb = mailbox(client_with(&fake, basic(), |_| {}));
    for _ in 0..2 {
        let started = Instant::now();
        assert_eq!(
            mb.wait_for_changes(Duration::from_millis(300))
                .await
                .unwrap(),
            Wake::Timeout
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_millis(1000),
            "{waited:?}"
        );
    }
    assert_eq!(
        fake.operations(),
        vec!["Subscribe", "Subscribe"],
        "no resubscribing while refused"
    );
    assert_eq!(mb.notification_mode().await, NotificationMode::Unavailable);
}
