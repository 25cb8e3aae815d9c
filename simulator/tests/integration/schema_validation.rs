//! The in-process EWS schema validator (`vmr_simulator::schema_validation`) gives the verdicts
//! of `xmllint` on the vendored schema (`schemas/ews/`, see its `PROVENANCE.md`): a valid
//! `GetFolder` operation and `t:RequestServerVersion` header validate; a misspelt element, a value
//! outside an enumeration, an unknown Exchange version and malformed XML are rejected with
//! messages naming what is wrong; results do not depend on how many threads validate at once;
//! and each validation takes a fraction of what spawning `xmllint` costs.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use vmr_simulator::schema_validation::{ews_messages_xsd, SchemaError, SchemaValidator};

/// A minimal `GetFolder` operation as a client sends it inside `soap:Body`; it declares its own
/// namespaces so it can be validated on its own (the same sample as `server/tests/ews_schema.rs`).
const GET_CALENDAR_FOLDER: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<m:GetFolder xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"
             xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">
  <m:FolderShape>
    <t:BaseShape>IdOnly</t:BaseShape>
  </m:FolderShape>
  <m:FolderIds>
    <t:DistinguishedFolderId Id="calendar"/>
  </m:FolderIds>
</m:GetFolder>
"#;

/// The SOAP header element every EWS request carries.
const REQUEST_SERVER_VERSION: &str = r#"<t:RequestServerVersion
    xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"
    Version="Exchange2016"/>"#;

/// The schema compiled once for all tests of this file.
fn validator() -> &'static SchemaValidator {
    static VALIDATOR: OnceLock<SchemaValidator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let xsd = ews_messages_xsd();
        SchemaValidator::load(&xsd).unwrap_or_else(|e| panic!("cannot load {}: {e}", xsd.display()))
    })
}

fn replaced(sample: &str, from: &str, to: &str) -> String {
    assert!(
        sample.contains(from),
        "the sample changed: no {from:?} in it"
    );
    sample.replace(from, to)
}

fn rejected(xml: &str, what: &str) -> Vec<String> {
    match validator().validate(xml) {
        Ok(()) => panic!("the validator accepted {what}:\n{xml}"),
        Err(messages) => {
            assert!(!messages.is_empty(), "rejected {what} without a message");
            messages
        }
    }
}

/// `xmllint --noout --nonet --schema messages.xsd -` on `xml`: `Ok` when it validates,
/// `Err(stderr)` when not. Panics when xmllint is not installed.
fn xmllint(xml: &str) -> Result<(), String> {
    let mut child = match Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(ews_messages_xsd())
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "xmllint is not installed, so the in-process validator cannot be compared with it. \
             Run `cargo xtask setup` (it installs libxml2-utils)."
        ),
        Err(e) => panic!("cannot run xmllint: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(xml.as_bytes())
        .expect("write to xmllint");
    let output = child.wait_with_output().expect("xmllint runs");
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn a_get_folder_request_validates() {
    validator()
        .validate(GET_CALENDAR_FOLDER)
        .unwrap_or_else(|e| panic!("a valid GetFolder request was rejected: {e:#?}"));
}

#[test]
fn a_misspelt_element_is_rejected_by_name_and_line() {
    let misspelt = replaced(GET_CALENDAR_FOLDER, "m:FolderShape>", "m:FolderShapes>");
    let messages = rejected(&misspelt, "a misspelt element");
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("line 4: ") && m.contains("FolderShapes")),
        "no message names FolderShapes on line 4: {messages:#?}"
    );
}

#[test]
fn a_value_outside_an_enumeration_is_rejected_by_name() {
    let bad_enum = replaced(GET_CALENDAR_FOLDER, ">IdOnly<", ">Everything<");
    let messages = rejected(&bad_enum, "BaseShape = Everything");
    assert!(
        messages.iter().any(|m| m.contains("Everything")),
        "no message names the value: {messages:#?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("BaseShape")),
        "no message names the element: {messages:#?}"
    );

    let unknown_folder = replaced(GET_CALENDAR_FOLDER, "Id=\"calendar\"", "Id=\"agenda\"");
    let messages = rejected(&unknown_folder, "an unknown distinguished folder id");
    assert!(
        messages.iter().any(|m| m.contains("agenda")),
        "{messages:#?}"
    );
}

#[test]
fn the_request_server_version_header_is_checked() {
    validator()
        .validate(REQUEST_SERVER_VERSION)
        .unwrap_or_else(|e| panic!("Version=\"Exchange2016\" was rejected: {e:#?}"));
    let future = replaced(REQUEST_SERVER_VERSION, "Exchange2016", "Exchange2099");
    let messages = rejected(&future, "Version=\"Exchange2099\"");
    assert!(
        messages
            .iter()
            .any(|m| m.contains("Exchange2099") && m.contains("Version")),
        "{messages:#?}"
    );
    let missing = replaced(REQUEST_SERVER_VERSION, "Version=\"Exchange2016\"", "");
    let messages = rejected(&missing, "a RequestServerVersion without Version");
    assert!(
        messages.iter().any(|m| m.contains("Version")),
        "{messages:#?}"
    );
}

#[test]
fn malformed_xml_is_an_error_not_a_crash() {
    let cases = [
        ("an unclosed element", replaced(GET_CALENDAR_FOLDER, "</m:GetFolder>", "")),
        (
            "mismatched tags",
            replaced(GET_CALENDAR_FOLDER, "</m:FolderIds>", "</m:FolderId>"),
        ),
        ("an empty document", String::new()),
        ("plain text", "not XML at all".to_owned()),
        (
            "an undeclared prefix",
            replaced(GET_CALENDAR_FOLDER, "<t:BaseShape>", "<x:BaseShape>"),
        ),
        (
            "an external entity",
            r#"<?xml version="1.0"?>
<!DOCTYPE m [<!ENTITY e SYSTEM "http://127.0.0.1:9/secret">]>
<m:GetFolder xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages">&e;</m:GetFolder>"#
                .to_owned(),
        ),
        ("a NUL byte", replaced(GET_CALENDAR_FOLDER, "IdOnly", "Id\0Only")),
    ];
    for (what, xml) in &cases {
        let messages = rejected(xml, what);
        println!("{what}: {messages:?}");
        assert!(
            messages.iter().all(|m| m.starts_with("line ")),
            "{what}: a message without its line: {messages:#?}"
        );
    }
    // The validator is still usable afterwards.
    validator()
        .validate(GET_CALENDAR_FOLDER)
        .expect("valid after errors");
}

/// A mix of valid and invalid documents, with their sequential verdicts.
fn corpus() -> Vec<String> {
    let samples = [
        GET_CALENDAR_FOLDER.to_owned(),
        replaced(GET_CALENDAR_FOLDER, "m:FolderShape>", "m:FolderShapes>"),
        replaced(GET_CALENDAR_FOLDER, ">IdOnly<", ">Everything<"),
        replaced(GET_CALENDAR_FOLDER, ">IdOnly<", ">AllProperties<"),
        REQUEST_SERVER_VERSION.to_owned(),
        replaced(REQUEST_SERVER_VERSION, "Exchange2016", "Exchange2099"),
        replaced(GET_CALENDAR_FOLDER, "</m:GetFolder>", ""),
    ];
    (0..1000)
        .map(|i| samples[i % samples.len()].clone())
        .collect()
}

#[test]
fn a_thousand_documents_on_four_threads_match_the_sequential_verdicts() {
    let validator = validator();
    let documents = Arc::new(corpus());

    let start = Instant::now();
    let sequential: Vec<Result<(), Vec<String>>> = documents
        .iter()
        .map(|xml| validator.validate(xml))
        .collect();
    let sequential_time = start.elapsed();
    let valid = sequential.iter().filter(|r| r.is_ok()).count();
    assert!(
        valid > 0 && valid < documents.len(),
        "the corpus should mix valid and invalid documents, {valid} of {} valid",
        documents.len()
    );

    let threads = 4;
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let documents = documents.clone();
            std::thread::spawn(move || {
                (t..documents.len())
                    .step_by(threads)
                    .map(|i| (i, validator.validate(&documents[i])))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut concurrent: Vec<Option<Result<(), Vec<String>>>> = vec![None; documents.len()];
    for handle in handles {
        for (i, verdict) in handle.join().expect("a validating thread panicked") {
            concurrent[i] = Some(verdict);
        }
    }
    let concurrent_time = start.elapsed();
    for (i, (seq, conc)) in sequential.iter().zip(&concurrent).enumerate() {
        assert_eq!(Some(seq), conc.as_ref(), "document {i} got another verdict");
    }

    let per_document = |d: std::time::Duration| d.as_secs_f64() * 1000.0 / documents.len() as f64;
    println!(
        "{} documents ({valid} valid): sequential {:.3} ms per document, {threads} threads {:.3} ms per document",
        documents.len(),
        per_document(sequential_time),
        per_document(concurrent_time),
    );
    assert!(
        per_document(sequential_time) < 5.0,
        "validation takes {:.3} ms per document; it should be well under 5 ms",
        per_document(sequential_time)
    );
}

#[test]
fn verdicts_agree_with_xmllint() {
    let valid = GET_CALENDAR_FOLDER;
    xmllint(valid).unwrap_or_else(|e| panic!("xmllint rejected the valid sample: {e}"));
    validator().validate(valid).expect("in-process: valid");

    let invalid = replaced(GET_CALENDAR_FOLDER, "m:FolderShape>", "m:FolderShapes>");
    let stderr = xmllint(&invalid).expect_err("xmllint accepted a misspelt element");
    let messages = rejected(&invalid, "a misspelt element");
    // Same engine, same message: xmllint prints `-:4: element FolderShapes: Schemas validity
    // error : <message>`; ours is `line 4: <message>`.
    for message in &messages {
        let text = message
            .strip_prefix("line 4: ")
            .unwrap_or_else(|| panic!("not on line 4: {message}"));
        assert!(
            stderr.contains(text),
            "xmllint said:\n{stderr}\nwe said: {message}"
        );
    }

    let header = replaced(REQUEST_SERVER_VERSION, "Exchange2016", "Exchange2099");
    xmllint(&header).expect_err("xmllint accepted Exchange2099");
    rejected(&header, "Version=\"Exchange2099\"");
    xmllint(REQUEST_SERVER_VERSION).expect("xmllint accepts Exchange2016");
}

#[test]
fn a_missing_schema_is_a_clear_error() {
    let missing = Path::new(env!("CARGO_MANIFEST_DIR")).join("no-such-schema.xsd");
    let err = SchemaValidator::load(&missing).expect_err("loaded a schema that does not exist");
    assert!(matches!(err, SchemaError::SchemaNotFound { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("no-such-schema.xsd") && text.contains("does not exist"),
        "{text}"
    );
}

#[test]
fn a_schema_that_does_not_compile_reports_libxml2s_messages() {
    let dir = std::env::temp_dir().join(format!("vmr-schema-validation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let xsd = dir.join("broken.xsd");
    std::fs::write(
        &xsd,
        r#"<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <xs:element name="a" type="xs:nosuchtype"/>
</xs:schema>"#,
    )
    .expect("write schema");
    let err = SchemaValidator::load(&xsd).expect_err("compiled a schema with an unknown type");
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
    let text = err.to_string();
    assert!(
        matches!(err, SchemaError::SchemaDoesNotCompile { .. }) && text.contains("nosuchtype"),
        "{text}"
    );
    assert!(
        text.contains("broken.xsd:2:"),
        "the message names file and line: {text}"
    );
}

#[test]
fn the_validator_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SchemaValidator>();
}
