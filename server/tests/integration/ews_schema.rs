//! The vendored EWS schemas (`schemas/ews/`, see its `PROVENANCE.md`) load
//! offline in `xmllint` and check requests: a `GetFolder` request taken from
//! a SOAP envelope validates, and the same request with a misspelt element or
//! a value outside an enumeration is rejected. The mailbox processor's tests
//! validate what it sends the same way.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A minimal EWS request as a client sends it; the operation element declares
/// its own namespaces so it can be validated on its own.
const GET_CALENDAR_FOLDER: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body>
    <m:GetFolder xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"
                 xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">
      <m:FolderShape>
        <t:BaseShape>IdOnly</t:BaseShape>
      </m:FolderShape>
      <m:FolderIds>
        <t:DistinguishedFolderId Id="calendar"/>
      </m:FolderIds>
    </m:GetFolder>
  </soap:Body>
</soap:Envelope>
"#;

const NS_SOAP: &str = "http://schemas.xmlsoap.org/soap/envelope/";

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

/// The operation element inside `soap:Body`, as its own document.
fn operation(envelope: &str) -> String {
    let doc = roxmltree::Document::parse(envelope).expect("the sample envelope is XML");
    let body = doc
        .descendants()
        .find(|n| n.has_tag_name((NS_SOAP, "Body")))
        .expect("the sample has a soap:Body");
    let op = body
        .children()
        .find(|n| n.is_element())
        .expect("soap:Body holds an operation");
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n{}\n",
        &envelope[op.range()]
    )
}

/// `xmllint --noout --schema messages.xsd` on `xml`: `Ok` when it validates,
/// `Err(stderr)` when not. Panics when xmllint is not installed.
fn xmllint(name: &str, xml: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join(format!("{name}.xml"));
    std::fs::write(&file, xml).expect("write sample");
    let output = match Command::new("xmllint")
        // --nonet: a schema that tried to fetch anything would fail here.
        .args(["--noout", "--nonet", "--schema"])
        .arg(messages_xsd())
        .arg(&file)
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
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("xmllint exited with {}:\n{stderr}", output.status))
    }
}

#[test]
fn a_get_folder_request_validates_offline() {
    xmllint("get-folder", &operation(GET_CALENDAR_FOLDER))
        .unwrap_or_else(|e| panic!("a valid GetFolder request was rejected:\n{e}"));
}

#[test]
fn invalid_requests_are_rejected() {
    let valid = operation(GET_CALENDAR_FOLDER);

    let misspelt = valid.replace("m:FolderShape>", "m:FolderShapes>");
    assert_ne!(misspelt, valid, "the sample changed: nothing was misspelt");
    let err = xmllint("misspelt", &misspelt)
        .expect_err("xmllint accepted a misspelt element; the EWS schema check cannot fail");
    assert!(err.contains("FolderShapes"), "{err}");

    let bad_enum = valid.replace(">IdOnly<", ">Everything<");
    assert_ne!(bad_enum, valid, "the sample changed: no BaseShape to break");
    let err = xmllint("bad-enum", &bad_enum)
        .expect_err("xmllint accepted BaseShape = Everything, which is not in the enumeration");
    assert!(err.contains("Everything"), "{err}");

    let unknown_folder = valid.replace("Id=\"calendar\"", "Id=\"agenda\"");
    assert_ne!(unknown_folder, valid, "the sample changed: no folder id");
    xmllint("unknown-folder", &unknown_folder)
        .expect_err("xmllint accepted an unknown distinguished folder id");
}
