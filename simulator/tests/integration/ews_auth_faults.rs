//! Authentication, impersonation, schema validation, injected faults and throttling budgets
//! of the simulated EWS endpoint, as a real Exchange answers them (reference §1.9).

use crate::ews_support;

use ews_support::*;
use vmr_simulator::ews::{Fault, FaultRule};

const GET_INBOX: &str = r#"<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder>"#;

#[tokio::test]
async fn missing_or_wrong_credentials_get_the_iis_challenge() {
    let server = server();
    for auth in [
        None,
        Some(basic(SVC, "wrong")),
        Some("Negotiate TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAGAbEdAAAADw==".to_owned()),
    ] {
        let answer = post_as(&server, auth.as_deref(), &envelope(Some(ROOM), GET_INBOX)).await;
        assert_eq!(answer.status, 401);
        let challenges: Vec<&str> = answer
            .headers
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect();
        assert_eq!(
            challenges,
            ["Negotiate", "NTLM", "Basic realm=\"mail.contoso.com\""]
        );
        assert_eq!(answer.headers["content-type"], "text/html");
        assert!(answer.body.contains("401 - Unauthorized"));
    }
    // Domain\user and UPN spellings are accepted.
    for user in ["CONTOSO\\svc-vmr", "svc-vmr"] {
        let answer = post_as(
            &server,
            Some(&basic(user, SVC_PASSWORD)),
            &envelope(Some(ROOM), GET_INBOX),
        )
        .await;
        assert_eq!(answer.status, 200, "{user}: {}", answer.body);
    }
    let records = server.requests();
    assert_eq!(records.iter().filter(|r| r.status == 401).count(), 3);
}

#[tokio::test]
async fn impersonation_is_limited_to_granted_mailboxes() {
    let server = server();
    let answer = post(&server, &envelope(Some(BOB), GET_INBOX)).await;
    assert_eq!(answer.status, 500);
    assert_eq!(answer.fault_code(), "a:ErrorImpersonateUserDenied");
    assert_eq!(
        answer.texts(NS_SOAP_ERRORS, "Message"),
        ["The account does not have permission to impersonate the requested user."]
    );
    let answer = post(&server, &envelope(Some("nobody@contoso.com"), GET_INBOX)).await;
    assert_eq!(answer.fault_code(), "a:ErrorNonExistentMailbox");
    // SmtpAddress and PrincipalName spellings.
    let principal = envelope(Some(ROOM), GET_INBOX).replace("PrimarySmtpAddress", "PrincipalName");
    assert_eq!(post(&server, &principal).await.codes(), ["NoError"]);
    // Delegate access with t:Mailbox, granted and not.
    let delegate = GET_INBOX.replace(
        r#"<t:DistinguishedFolderId Id="inbox"/>"#,
        r#"<t:DistinguishedFolderId Id="inbox"><t:Mailbox><t:EmailAddress>room@contoso.com</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId>"#,
    );
    assert_eq!(
        post(&server, &envelope(None, &delegate)).await.codes(),
        ["NoError"]
    );
    let other = delegate.replace("room@contoso.com", ALICE);
    assert_eq!(
        post(&server, &envelope(None, &other)).await.codes(),
        ["ErrorAccessDenied"]
    );
    // No mailbox and no t:Mailbox.
    let answer = post(&server, &envelope(None, GET_INBOX)).await;
    assert_eq!(answer.codes(), ["ErrorMissingEmailAddress"]);
    // The limited account has its own mailbox (Bob) and may impersonate room2 only.
    let limited = basic(LIMITED, SVC_PASSWORD);
    assert_eq!(
        post_as(&server, Some(&limited), &envelope(None, GET_INBOX))
            .await
            .codes(),
        ["NoError"]
    );
    assert_eq!(
        post_as(&server, Some(&limited), &envelope(Some(ROOM2), GET_INBOX))
            .await
            .codes(),
        ["NoError"]
    );
    let denied = post_as(&server, Some(&limited), &envelope(Some(ROOM), GET_INBOX)).await;
    assert_eq!(denied.fault_code(), "a:ErrorImpersonateUserDenied");
    let log = server.requests();
    assert!(log.iter().any(|r| r.impersonated.as_deref() == Some(ROOM)
        && r.fault.as_deref() == Some("ErrorImpersonateUserDenied")));
}

const NS_SOAP_ERRORS: &str = "http://schemas.microsoft.com/exchange/services/2006/errors";

#[tokio::test]
async fn schema_invalid_requests_get_error_schema_validation_with_a_position() {
    let server = server();
    let misspelt = envelope(
        Some(ROOM),
        &GET_INBOX.replace("m:FolderShape>", "m:FolderShapes>"),
    );
    let answer = post(&server, &misspelt).await;
    assert_eq!(answer.status, 500, "{}", answer.body);
    assert_eq!(answer.fault_code(), "a:ErrorSchemaValidation");
    let line: u32 = answer.texts(NS_T, "LineNumber")[0]
        .parse()
        .expect("line number");
    let request_line = misspelt
        .lines()
        .position(|l| l.contains("FolderShapes"))
        .expect("line") as u32
        + 1;
    assert_eq!(line, request_line);
    assert!(
        answer.texts(NS_T, "Violation")[0].contains("FolderShapes"),
        "{}",
        answer.body
    );
    // A bad header is caught too.
    let bad_header = envelope(Some(ROOM), GET_INBOX).replace("Exchange2013_SP1", "Exchange2099");
    let answer = post(&server, &bad_header).await;
    assert_eq!(answer.fault_code(), "a:ErrorSchemaValidation");
    // Not even XML.
    let answer = post(&server, "<soap:Envelope><unclosed>").await;
    assert_eq!(answer.fault_code(), "a:ErrorSchemaValidation");
    assert_eq!(answer.texts(NS_T, "LineNumber"), ["1"]);
    // A bad enumeration value.
    let bad_enum = envelope(Some(ROOM), &GET_INBOX.replace(">IdOnly<", ">Everything<"));
    assert_eq!(
        post(&server, &bad_enum).await.fault_code(),
        "a:ErrorSchemaValidation"
    );
}

#[tokio::test]
async fn each_injected_fault_has_its_real_shape() {
    let server = server();
    let request = envelope(Some(ROOM), &sync_request("inbox", None, None, 10));
    server.inject(FaultRule {
        fault: Fault::Http503,
        operation: Some("SyncFolderItems".to_owned()),
        count: 1,
    });
    let answer = post(&server, &request).await;
    assert_eq!(answer.status, 503);
    assert!(answer
        .body
        .contains("HTTP Error 503. The service is unavailable."));
    // A rule for another operation does not apply.
    server.inject(FaultRule {
        fault: Fault::Malformed,
        operation: Some("GetItem".to_owned()),
        count: 1,
    });
    assert_eq!(post(&server, &request).await.status, 200);
    server.clear_faults();
    server.inject(FaultRule {
        fault: Fault::Malformed,
        operation: None,
        count: 1,
    });
    let answer = post(&server, &request).await;
    assert_eq!(answer.status, 200);
    assert!(
        roxmltree::Document::parse(&answer.body).is_err(),
        "malformed body parses"
    );
    server.inject(FaultRule {
        fault: Fault::Unauthorized,
        operation: None,
        count: 1,
    });
    assert_eq!(post(&server, &request).await.status, 401);
    server.inject(FaultRule {
        fault: Fault::Slow { delay_ms: 300 },
        operation: None,
        count: 1,
    });
    let started = std::time::Instant::now();
    let answer = post(&server, &request).await;
    assert_eq!(answer.status, 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    // Each rule applied exactly count times.
    assert_eq!(post(&server, &request).await.status, 200);
    let faults: Vec<Option<String>> = server.requests().into_iter().map(|r| r.fault).collect();
    assert_eq!(
        faults,
        [
            Some("Http503".to_owned()),
            None,
            Some("Malformed".to_owned()),
            Some("Unauthorized".to_owned()),
            Some("Slow".to_owned()),
            None
        ]
    );
}

#[tokio::test]
async fn server_busy_faults_and_early_requests_during_the_back_off() {
    let server = server();
    let request = envelope(Some(ROOM), &sync_request("inbox", None, None, 10));
    server.inject(FaultRule {
        fault: Fault::ServerBusyFault { back_off_ms: 400 },
        operation: None,
        count: 1,
    });
    let answer = post(&server, &request).await;
    assert_eq!(answer.status, 500);
    assert_eq!(answer.fault_code(), "a:ErrorServerBusy");
    assert_eq!(answer.texts(NS_T, "Value"), ["400"]);
    assert_eq!(answer.attrs(NS_T, "Value", "Name"), ["BackOffMilliseconds"]);
    // Too early: busy again, marked early, with what is left of the back-off.
    let early = post(&server, &request).await;
    assert_eq!(early.fault_code(), "a:ErrorServerBusy");
    let left: u64 = early.texts(NS_T, "Value")[0].parse().expect("ms");
    assert!(left > 0 && left <= 400, "{left}");
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    assert_eq!(post(&server, &request).await.codes(), ["NoError"]);
    let log = server.requests();
    assert_eq!(
        log.iter().map(|r| r.early).collect::<Vec<_>>(),
        [false, true, false]
    );
    assert!(log.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));

    // In-band: the ews-rs capture's shape.
    server.inject(FaultRule {
        fault: Fault::ServerBusyInBand { back_off_ms: 5000 },
        operation: Some("SyncFolderItems".to_owned()),
        count: 1,
    });
    let answer = post(&server, &request).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.codes(), ["ErrorServerBusy"]);
    assert_eq!(
        answer.attrs(NS_M, "SyncFolderItemsResponseMessage", "ResponseClass"),
        ["Error"]
    );
    assert!(answer.texts(NS_M, "MessageText")[0].contains("Suggested backoff time 5000 ms."));
    assert_eq!(answer.texts(NS_T, "Value"), ["5000"]);
    assert!(
        answer
            .doc()
            .descendants()
            .any(|n| n.has_tag_name((NS_M, "MessageXml"))),
        "m:MessageXml in band"
    );
    assert_eq!(answer.texts(NS_M, "SyncState"), [""]);
    assert_eq!(answer.texts(NS_M, "IncludesLastItemInRange"), ["true"]);
    assert_valid_response(&answer);
    let early = post(&server, &request).await;
    assert_eq!(early.codes(), ["ErrorServerBusy"]);
    assert!(server.requests().last().expect("logged").early);
}
