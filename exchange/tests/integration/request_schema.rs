//! Every request envelope `ews::request` builds is checked against the vendored EWS schema
//! (`schemas/ews/messages.xsd`, see its `PROVENANCE.md`) with `xmllint`, offline: the operation
//! element taken out of `soap:Body`, and each `soap:Header` child (`t:RequestServerVersion`,
//! `t:ExchangeImpersonation`, global elements of the types namespace that messages.xsd
//! imports). Every shape is built with and without impersonation, with a delegate mailbox, for
//! an Exchange 2010 and a 2013+ schema version, and with values holding `<&"'` and non-ASCII
//! text. The envelopes must also be well-formed (roxmltree) and carry the values unchanged.
//! A negative control proves that xmllint rejects a broken shape, so the check can fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use vmr_exchange::ews::request::{self, BodyUpdateSend, RequestContext};
use vmr_exchange::mailbox::{Folder, ItemRef, Response};

const NS_SOAP: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const NS_MESSAGES: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";
const NS_TYPES: &str = "http://schemas.microsoft.com/exchange/services/2006/types";

/// A value that needs every escape, plus non-ASCII text.
const NASTY: &str = "a<b>&c\"d'e — Zürich 会議 🎥";

fn contexts() -> Vec<(&'static str, RequestContext)> {
    vec![
        ("plain", RequestContext::new("Exchange2013_SP1")),
        (
            "impersonating",
            RequestContext {
                server_version: "Exchange2013_SP1".into(),
                impersonate: Some("vmr-room@contoso.com".into()),
                folder_mailbox: None,
            },
        ),
        (
            "delegate",
            RequestContext {
                server_version: "Exchange2016".into(),
                impersonate: None,
                folder_mailbox: Some("vmr-room@contoso.com".into()),
            },
        ),
        (
            "exchange2010-impersonating-delegate",
            RequestContext {
                server_version: "Exchange2010_SP2".into(),
                impersonate: Some("o'brien&co@contoso.com".into()),
                folder_mailbox: Some("room+<1>@contoso.com".into()),
            },
        ),
    ]
}

fn item(id: &str, change_key: &str) -> ItemRef {
    ItemRef {
        id: id.into(),
        change_key: change_key.into(),
    }
}

/// Every request shape for one context: (name, envelope).
fn shapes(ctx: &RequestContext) -> Vec<(String, String)> {
    let meeting = item("AAMkADk<&>\"'==", "DwAAABYA&\"'<>");
    let no_key = item("AAMkAD-no-change-key", "");
    let mut out: Vec<(String, String)> = vec![
        (
            "sync-inbox-first".into(),
            request::sync_folder_items(ctx, Folder::Inbox, None, 100),
        ),
        (
            "sync-calendar-with-state".into(),
            request::sync_folder_items(ctx, Folder::Calendar, Some("H4sIAAA<&>\"'+/="), 512),
        ),
        (
            "sync-clamped-low".into(),
            request::sync_folder_items(ctx, Folder::Calendar, Some(""), 0),
        ),
        (
            "sync-clamped-high".into(),
            request::sync_folder_items(ctx, Folder::Inbox, Some("s"), 100_000),
        ),
        (
            "get-items-one".into(),
            request::get_items(ctx, std::slice::from_ref(&meeting)),
        ),
        (
            "get-items-batch".into(),
            request::get_items(ctx, &[meeting.clone(), no_key.clone(), item(NASTY, NASTY)]),
        ),
        (
            "find-calendar-view".into(),
            request::find_calendar_view(ctx, 1_767_225_600_000, 1_769_904_000_000, 100),
        ),
        (
            "find-calendar-view-extremes".into(),
            request::find_calendar_view(ctx, i64::MIN, i64::MAX, 0),
        ),
        (
            "find-by-goid-calendar".into(),
            request::find_by_clean_global_object_id(
                ctx,
                Folder::Calendar,
                "BAAAAIIA4AB0xbcQGoLgCAAAAABwaTUmZ7vJAQAAAAAAAAAAEAAAAAx0q9gCV1pBvAmw4SNSZXs=",
            ),
        ),
        (
            "find-by-goid-inbox-nasty".into(),
            request::find_by_clean_global_object_id(ctx, Folder::Inbox, NASTY),
        ),
        (
            "update-body-send".into(),
            request::update_item_body(
                ctx,
                &meeting,
                &format!("<html><body><p>{NASTY}</p></body></html>"),
                BodyUpdateSend::ToAllAndSaveCopy,
            ),
        ),
        (
            "update-body-silent".into(),
            request::update_item_body(ctx, &no_key, "", BodyUpdateSend::ToNone),
        ),
        (
            "subscribe-streaming-both".into(),
            request::subscribe_streaming(ctx, &Folder::ALL),
        ),
        (
            "subscribe-streaming-calendar".into(),
            request::subscribe_streaming(ctx, &[Folder::Calendar]),
        ),
        (
            "subscribe-pull".into(),
            request::subscribe_pull(ctx, &Folder::ALL, 5),
        ),
        (
            "subscribe-pull-clamped".into(),
            request::subscribe_pull(ctx, &[Folder::Inbox], 100_000),
        ),
        (
            "get-streaming-events".into(),
            request::get_streaming_events(ctx, &["JgBibjFw<&>".to_string(), NASTY.to_string()], 30),
        ),
        (
            "get-streaming-events-clamped".into(),
            request::get_streaming_events(ctx, &["x".to_string()], 0),
        ),
        (
            "get-events".into(),
            request::get_events(ctx, "d581ab79-<&>", "AAAAAGUhAAAAAAAAAQ=="),
        ),
        (
            "get-folder-both".into(),
            request::get_folder(ctx, &Folder::ALL),
        ),
    ];
    for (name, response) in [
        ("accept", Response::Accept),
        ("decline", Response::Decline),
        ("remove", Response::Remove),
    ] {
        out.push((
            format!("respond-{name}"),
            request::respond(ctx, &meeting, response, &format!("<p>{NASTY}</p>")),
        ));
        out.push((
            format!("respond-{name}-empty-body-no-change-key"),
            request::respond(ctx, &no_key, response, ""),
        ));
    }
    // Several replies in one CreateItem, as the reply outbox sends them.
    let body = format!("<p>{NASTY}</p>");
    out.push((
        "respond-many-sent".into(),
        request::respond_many(
            ctx,
            &[
                (&meeting, Response::Accept, body.as_str()),
                (&no_key, Response::Decline, body.as_str()),
                (&meeting, Response::Accept, ""),
            ],
        ),
    ));
    out.push((
        "respond-many-removed".into(),
        request::respond_many(
            ctx,
            &[
                (&meeting, Response::Remove, ""),
                (&no_key, Response::Remove, ""),
            ],
        ),
    ));
    out
}

fn messages_xsd() -> PathBuf {
    let xsd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/ews/messages.xsd");
    assert!(
        xsd.is_file(),
        "{} is missing: the vendored EWS schemas belong to the repository \
         (see schemas/ews/PROVENANCE.md); restore them from git",
        xsd.display()
    );
    xsd
}

/// The element at `node` as its own document, declaring the `m:` and `t:` prefixes that the
/// envelope declared for it.
fn standalone(envelope: &str, node: roxmltree::Node) -> String {
    let text = &envelope[node.range()];
    assert!(
        !text.contains("xmlns:"),
        "the element declares namespaces itself; the extraction would duplicate them:\n{text}"
    );
    let name_end = text
        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .expect("an element's text starts with its tag");
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n{} xmlns:m=\"{NS_MESSAGES}\" xmlns:t=\"{NS_TYPES}\"{}\n",
        &text[..name_end],
        &text[name_end..]
    )
}

/// The operation and header children of an envelope, each as a document to validate.
fn validatable_parts(name: &str, envelope: &str) -> Vec<(String, String)> {
    let doc = roxmltree::Document::parse(envelope)
        .unwrap_or_else(|e| panic!("{name}: the envelope is not well-formed XML: {e}\n{envelope}"));
    let root = doc.root_element();
    assert!(
        root.has_tag_name((NS_SOAP, "Envelope")),
        "{name}: root is not soap:Envelope"
    );
    let children: Vec<_> = root.children().filter(|n| n.is_element()).collect();
    assert_eq!(
        children.len(),
        2,
        "{name}: Envelope must hold Header and Body"
    );
    assert!(
        children[0].has_tag_name((NS_SOAP, "Header")),
        "{name}: first is not soap:Header"
    );
    assert!(
        children[1].has_tag_name((NS_SOAP, "Body")),
        "{name}: second is not soap:Body"
    );
    let mut parts = Vec::new();
    for (i, header) in children[0]
        .children()
        .filter(|n| n.is_element())
        .enumerate()
    {
        parts.push((
            format!("{name}-header{i}-{}", header.tag_name().name()),
            standalone(envelope, header),
        ));
    }
    let ops: Vec<_> = children[1].children().filter(|n| n.is_element()).collect();
    assert_eq!(
        ops.len(),
        1,
        "{name}: soap:Body must hold exactly one operation"
    );
    parts.push((format!("{name}-op"), standalone(envelope, ops[0])));
    parts
}

/// Runs one xmllint over all `docs`; returns, per name, `Ok` or the error lines.
fn xmllint_all(docs: &[(String, String)]) -> BTreeMap<String, Result<(), String>> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut files = Vec::new();
    for (i, (name, xml)) in docs.iter().enumerate() {
        let path = dir.path().join(format!("{i:04}.xml"));
        std::fs::write(&path, xml).expect("write the document to validate");
        files.push((name.clone(), path));
    }
    let output = match Command::new("xmllint")
        // --nonet: a schema that tried to fetch anything would fail here.
        .args(["--noout", "--nonet", "--schema"])
        .arg(messages_xsd())
        .args(files.iter().map(|(_, p)| p))
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "xmllint is not installed, so EWS requests cannot be checked against the schema. \
             Run `cargo xtask setup` (it installs libxml2-utils)."
        ),
        Err(e) => panic!("cannot run xmllint: {e}"),
    };
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let mut results = BTreeMap::new();
    for (name, path) in &files {
        let path = path.display().to_string();
        let validates = stderr.lines().any(|l| l == format!("{path} validates"));
        let fails = stderr
            .lines()
            .any(|l| l == format!("{path} fails to validate"));
        let result = match (validates, fails) {
            (true, false) => Ok(()),
            (false, true) => Err(stderr
                .lines()
                .filter(|l| l.starts_with(&path))
                .collect::<Vec<_>>()
                .join("\n")),
            _ => panic!("xmllint said nothing clear about {name} ({path}); its output:\n{stderr}"),
        };
        results.insert(name.clone(), result);
    }
    results
}

#[test]
fn every_request_shape_validates_against_the_ews_schema() {
    let mut docs = Vec::new();
    let mut envelopes = 0;
    for (ctx_name, ctx) in contexts() {
        for (name, envelope) in shapes(&ctx) {
            envelopes += 1;
            docs.extend(validatable_parts(&format!("{ctx_name}/{name}"), &envelope));
        }
    }
    let results = xmllint_all(&docs);
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(name, r)| r.as_ref().err().map(|e| (name, e)))
        .map(|(name, e)| {
            let xml = &docs.iter().find(|(n, _)| n == name).expect("known name").1;
            format!("== {name}\n{e}\n{xml}")
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} documents fail the EWS schema:\n{}",
        failures.len(),
        docs.len(),
        failures.join("\n")
    );
    // 4 contexts × 28 shapes; each: the operation + RequestServerVersion (+ ExchangeImpersonation).
    assert_eq!(envelopes, 4 * 28, "the set of request shapes changed");
    assert_eq!(docs.len(), 4 * 28 * 2 + 2 * 28, "documents validated");
    eprintln!(
        "{envelopes} request envelopes, {} documents validated by xmllint",
        docs.len()
    );
}

#[test]
fn the_schema_check_rejects_broken_shapes() {
    let ctx = RequestContext::new("Exchange2013_SP1");
    let sync = request::sync_folder_items(&ctx, Folder::Calendar, Some("state"), 100);
    let op = validatable_parts("sync", &sync)
        .pop()
        .expect("an operation")
        .1;

    // SyncState after MaxChangesReturned: the schema's sequence is violated.
    let state = "<m:SyncState>state</m:SyncState>";
    let max = "<m:MaxChangesReturned>100</m:MaxChangesReturned>";
    let swapped = op
        .replace(state, "@@")
        .replace(max, state)
        .replace("@@", max);
    assert_ne!(swapped, op, "the sample changed: nothing was swapped");

    let get = request::get_items(&ctx, &[item("A", "B")]);
    let get_op = validatable_parts("get", &get)
        .pop()
        .expect("an operation")
        .1;
    let bogus_field = get_op.replace("calendar:UID", "calendar:Uid");
    assert_ne!(bogus_field, get_op, "the sample changed: no calendar:UID");

    let version = validatable_parts("sync", &sync).remove(0).1;
    let bad_version = version.replace("Exchange2013_SP1", "Exchange2099");
    assert_ne!(bad_version, version, "the sample changed: no version");

    let docs = vec![
        ("valid".to_string(), op.clone()),
        ("swapped".to_string(), swapped),
        ("bogus-field".to_string(), bogus_field),
        ("bad-version".to_string(), bad_version),
    ];
    let results = xmllint_all(&docs);
    assert_eq!(
        results["valid"],
        Ok(()),
        "the unbroken control must validate"
    );
    let swapped = results["swapped"]
        .as_ref()
        .expect_err("xmllint accepted SyncState after MaxChangesReturned");
    assert!(swapped.contains("SyncState"), "{swapped}");
    let bogus = results["bogus-field"]
        .as_ref()
        .expect_err("xmllint accepted the FieldURI calendar:Uid");
    assert!(bogus.contains("calendar:Uid"), "{bogus}");
    results["bad-version"]
        .as_ref()
        .expect_err("xmllint accepted RequestServerVersion Exchange2099");
}

fn parse(envelope: &str) -> roxmltree::Document<'_> {
    roxmltree::Document::parse(envelope).expect("well-formed envelope")
}

fn elements<'a, 'i>(
    doc: &'a roxmltree::Document<'i>,
    ns: &'a str,
    name: &'a str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    doc.descendants()
        .filter(move |n| n.has_tag_name((ns, name)))
}

#[test]
fn values_survive_escaping_unchanged() {
    let ctx = RequestContext {
        server_version: "Exchange2013_SP1".into(),
        impersonate: Some("o'brien&co@contoso.com".into()),
        folder_mailbox: Some("room+<1>@contoso.com".into()),
    };
    let env = request::sync_folder_items(&ctx, Folder::Inbox, Some(NASTY), 10);
    assert!(env.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>"));
    let doc = parse(&env);
    assert_eq!(
        elements(&doc, NS_MESSAGES, "SyncState")
            .next()
            .and_then(|n| n.text()),
        Some(NASTY)
    );
    assert_eq!(
        elements(&doc, NS_TYPES, "PrimarySmtpAddress")
            .next()
            .and_then(|n| n.text()),
        Some("o'brien&co@contoso.com")
    );
    assert_eq!(
        elements(&doc, NS_TYPES, "EmailAddress")
            .next()
            .and_then(|n| n.text()),
        Some("room+<1>@contoso.com")
    );

    let meeting = item(NASTY, "ck<&>");
    let body = format!("<html><p>{NASTY}</p>\r\n</html>");
    let env = request::respond(&ctx, &meeting, Response::Accept, &body);
    let doc = parse(&env);
    let reference = elements(&doc, NS_TYPES, "ReferenceItemId")
        .next()
        .expect("ReferenceItemId");
    assert_eq!(reference.attribute("Id"), Some(NASTY));
    assert_eq!(reference.attribute("ChangeKey"), Some("ck<&>"));
    let body_el = elements(&doc, NS_TYPES, "Body").next().expect("Body");
    assert_eq!(body_el.text(), Some(body.as_str()));
    assert_eq!(body_el.attribute("BodyType"), Some("HTML"));

    let env = request::update_item_body(&ctx, &meeting, &body, BodyUpdateSend::ToAllAndSaveCopy);
    let doc = parse(&env);
    assert_eq!(
        elements(&doc, NS_TYPES, "Body")
            .next()
            .and_then(|n| n.text()),
        Some(body.as_str())
    );
    let update = elements(&doc, NS_MESSAGES, "UpdateItem")
        .next()
        .expect("UpdateItem");
    assert_eq!(update.attribute("ConflictResolution"), Some("AutoResolve"));
    assert_eq!(
        update.attribute("SendMeetingInvitationsOrCancellations"),
        Some("SendToAllAndSaveCopy")
    );
}

#[test]
fn headers_and_folder_ids_follow_the_context() {
    let plain = RequestContext::new("Exchange2013_SP1");
    let env = request::get_folder(&plain, &Folder::ALL);
    let doc = parse(&env);
    assert_eq!(
        elements(&doc, NS_TYPES, "RequestServerVersion")
            .next()
            .and_then(|n| n.attribute("Version")),
        Some("Exchange2013_SP1")
    );
    assert_eq!(elements(&doc, NS_TYPES, "ExchangeImpersonation").count(), 0);
    assert_eq!(elements(&doc, NS_TYPES, "Mailbox").count(), 0);
    let ids: Vec<_> = elements(&doc, NS_TYPES, "DistinguishedFolderId")
        .map(|n| n.attribute("Id").unwrap_or(""))
        .collect();
    assert_eq!(ids, ["inbox", "calendar"]);

    let delegate = RequestContext {
        server_version: "Exchange2016".into(),
        impersonate: Some("room@contoso.com".into()),
        folder_mailbox: Some("room@contoso.com".into()),
    };
    for (name, env) in shapes(&delegate) {
        let doc = parse(&env);
        assert_eq!(
            elements(&doc, NS_TYPES, "ExchangeImpersonation").count(),
            1,
            "{name}: no impersonation header"
        );
        let header = elements(&doc, NS_SOAP, "Header").next().expect("header");
        assert!(
            header
                .descendants()
                .any(|n| n.has_tag_name((NS_TYPES, "PrimarySmtpAddress"))
                    && n.text() == Some("room@contoso.com")),
            "{name}: impersonation does not name the room"
        );
        for folder in elements(&doc, NS_TYPES, "DistinguishedFolderId") {
            let mailbox = folder
                .children()
                .find(|n| n.has_tag_name((NS_TYPES, "Mailbox")))
                .unwrap_or_else(|| panic!("{name}: a DistinguishedFolderId without t:Mailbox"));
            assert_eq!(
                mailbox.first_element_child().and_then(|n| n.text()),
                Some("room@contoso.com"),
                "{name}"
            );
        }
    }
}

#[test]
fn first_syncs_send_no_state_and_limits_are_clamped() {
    let ctx = RequestContext::new("Exchange2013_SP1");
    for env in [
        request::sync_folder_items(&ctx, Folder::Inbox, None, 0),
        request::sync_folder_items(&ctx, Folder::Inbox, Some(""), 0),
    ] {
        let doc = parse(&env);
        assert_eq!(elements(&doc, NS_MESSAGES, "SyncState").count(), 0);
        assert_eq!(
            elements(&doc, NS_MESSAGES, "MaxChangesReturned")
                .next()
                .and_then(|n| n.text()),
            Some("1")
        );
        assert_eq!(
            elements(&doc, NS_MESSAGES, "SyncScope")
                .next()
                .and_then(|n| n.text()),
            Some("NormalItems")
        );
    }
    let env = request::get_streaming_events(&ctx, &["s".into()], 99);
    assert_eq!(
        elements(&parse(&env), NS_MESSAGES, "ConnectionTimeout")
            .next()
            .and_then(|n| n.text()),
        Some("30")
    );
    let env = request::find_calendar_view(&ctx, 1_767_225_600_000, 1_769_904_000_500, 50);
    let doc = parse(&env);
    let view = elements(&doc, NS_MESSAGES, "CalendarView")
        .next()
        .expect("CalendarView");
    assert_eq!(view.attribute("StartDate"), Some("2026-01-01T00:00:00Z"));
    assert_eq!(view.attribute("EndDate"), Some("2026-02-01T00:00:00Z"));
    assert_eq!(view.attribute("MaxEntriesReturned"), Some("50"));
}

#[test]
fn get_item_asks_for_every_field_the_reader_uses() {
    let fields = |ctx: &RequestContext| -> (Vec<String>, Vec<String>) {
        let env = request::get_items(ctx, &[item("A", "B")]);
        let doc = parse(&env);
        let uris = elements(&doc, NS_TYPES, "FieldURI")
            .map(|n| n.attribute("FieldURI").unwrap_or("").to_owned())
            .collect();
        let ext = elements(&doc, NS_TYPES, "ExtendedFieldURI")
            .map(|n| {
                format!(
                    "{}/{}/{}",
                    n.attribute("PropertySetId").unwrap_or(""),
                    n.attribute("PropertyId").unwrap_or(""),
                    n.attribute("PropertyType").unwrap_or("")
                )
            })
            .collect();
        (uris, ext)
    };
    let (uris, ext) = fields(&RequestContext::new("Exchange2013_SP1"));
    for wanted in [
        "item:ItemClass",
        "item:Subject",
        "item:Body",
        "item:LastModifiedTime",
        "calendar:UID",
        "calendar:RecurrenceId",
        "calendar:Start",
        "calendar:End",
        "calendar:IsCancelled",
        "calendar:CalendarItemType",
        "calendar:MyResponseType",
        "calendar:Organizer",
        "calendar:RequiredAttendees",
        "calendar:OptionalAttendees",
        "calendar:Resources",
        "calendar:AppointmentSequenceNumber",
        "calendar:Recurrence",
        "calendar:ModifiedOccurrences",
        "calendar:DeletedOccurrences",
        "calendar:StartTimeZoneId",
        "message:From",
        "meetingRequest:MeetingRequestType",
    ] {
        assert!(
            uris.iter().any(|u| u == wanted),
            "GetItem does not ask for {wanted}"
        );
    }
    assert_eq!(
        ext,
        [
            "6ED8DA90-450B-101B-98DA-00AA003F1305/35/Binary",
            "6ED8DA90-450B-101B-98DA-00AA003F1305/3/Binary"
        ]
    );
    let (old, _) = fields(&RequestContext::new("Exchange2010_SP2"));
    assert!(old.iter().any(|u| u == "calendar:StartTimeZone"));
    assert!(!old.iter().any(|u| u == "calendar:StartTimeZoneId"));
}

#[test]
fn responses_use_the_documented_dispositions() {
    let ctx = RequestContext::new("Exchange2013_SP1");
    let meeting = item("A", "B");
    for (response, element, disposition) in [
        (Response::Accept, "AcceptItem", "SendAndSaveCopy"),
        (Response::Decline, "DeclineItem", "SendAndSaveCopy"),
        (Response::Remove, "RemoveItem", "SaveOnly"),
    ] {
        let env = request::respond(&ctx, &meeting, response, "<p>ok</p>");
        let doc = parse(&env);
        let create = elements(&doc, NS_MESSAGES, "CreateItem")
            .next()
            .expect("CreateItem");
        assert_eq!(
            create.attribute("MessageDisposition"),
            Some(disposition),
            "{element}"
        );
        let object = elements(&doc, NS_TYPES, element)
            .next()
            .unwrap_or_else(|| panic!("no t:{element}"));
        let children: Vec<_> = object
            .children()
            .filter(|n| n.is_element())
            .map(|n| n.tag_name().name())
            .collect();
        match response {
            Response::Remove => assert_eq!(children, ["ReferenceItemId"]),
            _ => assert_eq!(children, ["Body", "ReferenceItemId"]),
        }
    }
}
