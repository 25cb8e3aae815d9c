//! The rendered add-in manifest: schema validity (xmllint against Microsoft's
//! XSDs vendored in `schemas/manifest/`), internal consistency (resids, URLs,
//! ids, limits, VersionOverrides nesting), the icon files it names, and that
//! admin texts survive escaping.
//!
//! Elements are looked up by namespace URI, never by prefix.

use std::path::{Path, PathBuf};
use std::process::Command;

use roxmltree::{Document, Node};
use vmr_core::config::{Config, IntegrationConfig, ServerConfig};
use vmr_server::manifest::render;

const NS_APP: &str = "http://schemas.microsoft.com/office/appforoffice/1.1";
const NS_BT: &str = "http://schemas.microsoft.com/office/officeappbasictypes/1.0";
const NS_VO10: &str = "http://schemas.microsoft.com/office/mailappversionoverrides";
const NS_VO11: &str = "http://schemas.microsoft.com/office/mailappversionoverrides/1.1";
const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Manifest limits (OfficeAppBasicTypesV1_0.xsd `ShortString` / `LongString`).
const SHORT_MAX: usize = 125;
const LONG_MAX: usize = 250;

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------

/// A configuration with two integrations, texts that need escaping, and a
/// non-default public host. Loaded from TOML so the whole path is exercised.
const UNUSUAL_TOML: &str = r#"
[server]
public_host = "addin.example.com"

[[integration]]
id = "research"
resource_email = "vmr-research@example.com"
addin_id = "0b8f3d52-1c7e-4a39-9f0e-2d6a4b5c7e11"
addin_version = "2.3.4.5"
alias_prefix = "77"

[integration.addin]
display_name = "R&D \"Vidéo\" <rooms> & Co's 会議 🎥"
description = "Réunions <b>sécurisées</b> & \"privées\" — ]]> 'quoted' &amp; literal"
provider_name = "Ünïcode & <Sons> \"Ltd\""
button_label = "Add <video> & 'go'"
group_label = "Vidéo & \"Réunion\""
supertip_title = "Makes it a <VMR> & more"
supertip_description = "Long text with & < > \" ' and non-ASCII: Grüße, 東京, Ωμέγα. Not scheduled until you select Send."
supports_shared_folders = true

[[integration]]
id = "ops-2"
resource_email = "vmr-ops@example.com"
addin_id = "9a1c2b3d-4e5f-4071-8a9b-0c1d2e3f4a5b"
alias_prefix = "66"

[integration.addin]
display_name = "Ops <2> & \"Friends\""
button_label = "Ops & video"
supports_shared_folders = false
"#;

struct Case {
    name: String,
    server: ServerConfig,
    integration: IntegrationConfig,
}

fn unusual_config() -> Config {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("vmr.toml");
    std::fs::write(&path, UNUSUAL_TOML).expect("write config");
    Config::load(Some(&path), std::iter::empty()).expect("unusual config loads and validates")
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let default = Config::default();
    for integration in &default.integrations {
        cases.push(Case {
            name: format!("default-{}", integration.id),
            server: default.server.clone(),
            integration: integration.clone(),
        });
    }
    // The default integration with shared folders switched off.
    let mut no_shared = IntegrationConfig::default();
    no_shared.addin.supports_shared_folders = false;
    cases.push(Case {
        name: "default-no-shared-folders".into(),
        server: default.server.clone(),
        integration: no_shared,
    });

    let unusual = unusual_config();
    assert_eq!(unusual.integrations.len(), 2);
    assert_eq!(unusual.server.public_host, "addin.example.com");
    assert!(unusual.integrations[0].addin.supports_shared_folders);
    assert!(!unusual.integrations[1].addin.supports_shared_folders);
    for integration in &unusual.integrations {
        cases.push(Case {
            name: format!("unusual-{}", integration.id),
            server: unusual.server.clone(),
            integration: integration.clone(),
        });
    }
    cases
}

fn render_case(case: &Case) -> String {
    render(&case.server, &case.integration)
        .unwrap_or_else(|e| panic!("{}: manifest does not render: {e:#}", case.name))
}

// ---------------------------------------------------------------------------
// xmllint
// ---------------------------------------------------------------------------

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("server crate has a parent directory")
        .to_path_buf()
}

/// The schema entry point, `schemas/manifest/OfficeAppManifestV1_1.xsd` (vendored
/// Microsoft XSDs, see `schemas/manifest/PROVENANCE.md`). Panics when it is missing:
/// the manifest is always checked against the schema.
fn schema() -> PathBuf {
    let xsd = workspace_root().join("schemas/manifest/OfficeAppManifestV1_1.xsd");
    assert!(
        xsd.is_file(),
        "{} is missing: the vendored manifest schemas belong to the repository \
         (see schemas/manifest/PROVENANCE.md); restore them from git",
        xsd.display()
    );
    xsd
}

/// Runs `xmllint --noout --schema <schema> <file>` on `xml`. `Ok` when it
/// validates, `Err(stderr)` when not. Panics when xmllint is not installed.
fn xmllint(schema: &Path, name: &str, xml: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join(format!("{name}.xml"));
    std::fs::write(&file, xml).expect("write manifest");
    let output = match Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(schema)
        .arg(&file)
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "xmllint is not installed, so the manifest cannot be checked against the schema. \
             Run `cargo xtask setup` (it installs libxml2-utils; CI does the same)."
        ),
        Err(e) => panic!("cannot run xmllint: {e}"),
    };
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "xmllint exited with {}:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn numbered(xml: &str) -> String {
    xml.lines()
        .enumerate()
        .map(|(i, l)| format!("{:4} {l}\n", i + 1))
        .collect()
}

#[test]
fn rendered_manifests_validate_against_the_schema() {
    let schema = schema();
    for case in cases() {
        let xml = render_case(&case);
        if let Err(stderr) = xmllint(&schema, &case.name, &xml) {
            panic!(
                "{}: the rendered manifest does not validate.\n{stderr}\nManifest:\n{}",
                case.name,
                numbered(&xml)
            );
        }
    }
}

#[test]
fn broken_manifests_fail_xmllint() {
    let schema = schema();
    let xml = render_case(&cases().remove(0));

    // 1. Permissions moved before FormSettings (the schema fixes the order).
    let permissions = "  <Permissions>ReadWriteItem</Permissions>\n";
    assert!(
        xml.contains(permissions),
        "template changed: no Permissions line"
    );
    let reordered = xml.replacen(permissions, "", 1).replacen(
        "  <FormSettings>",
        &format!("{permissions}  <FormSettings>"),
        1,
    );
    assert_ne!(reordered, xml);
    assert!(
        reordered.find("<Permissions>") < reordered.find("<FormSettings>"),
        "the negative control did not reorder the elements"
    );
    assert!(
        xmllint(&schema, "reordered", &reordered).is_err(),
        "xmllint accepted Permissions before FormSettings; the schema check cannot fail"
    );

    // 2. An unknown element.
    let unknown = xml.replacen(
        "<DefaultLocale>",
        "<NotAManifestElement>x</NotAManifestElement>\n  <DefaultLocale>",
        1,
    );
    assert_ne!(unknown, xml);
    assert!(
        xmllint(&schema, "unknown-element", &unknown).is_err(),
        "xmllint accepted an unknown element; the schema check cannot fail"
    );

    // 3. A bad Permissions value.
    let bad_value = xml.replacen(
        "<Permissions>ReadWriteItem</Permissions>",
        "<Permissions>Everything</Permissions>",
        1,
    );
    assert!(
        xmllint(&schema, "bad-permissions", &bad_value).is_err(),
        "xmllint accepted an invalid Permissions value"
    );

    // The unbroken document still passes (so the failures above are not
    // just a broken xmllint or schema).
    xmllint(&schema, "control", &xml).expect("the unmodified manifest validates");
}

// ---------------------------------------------------------------------------
// Structure
// ---------------------------------------------------------------------------

fn is(node: &Node, ns: &str, name: &str) -> bool {
    node.is_element() && node.tag_name().namespace() == Some(ns) && node.tag_name().name() == name
}

fn xsi_type<'a>(node: &Node<'a, '_>) -> Option<&'a str> {
    node.attribute((NS_XSI, "type"))
}

fn child<'a, 'i>(node: Node<'a, 'i>, ns: &str, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| is(c, ns, name))
}

/// The nearest enclosing VersionOverrides (any namespace).
fn owning_overrides<'a, 'i>(node: &Node<'a, 'i>) -> Option<Node<'a, 'i>> {
    node.ancestors()
        .skip(1)
        .find(|a| a.is_element() && a.tag_name().name() == "VersionOverrides")
}

fn default_value<'a>(node: Node<'a, '_>) -> &'a str {
    node.attribute("DefaultValue")
        .unwrap_or_else(|| panic!("<{}> has no DefaultValue", node.tag_name().name()))
}

/// `url` is `origin` itself or below it (`origin/...`).
fn under_origin(url: &str, origin: &str) -> bool {
    url == origin
        || url
            .strip_prefix(origin)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn parse<'i>(name: &str, xml: &'i str) -> Document<'i> {
    Document::parse(xml).unwrap_or_else(|e| {
        panic!(
            "{name}: the manifest is not well-formed XML: {e}\n{}",
            numbered(xml)
        )
    })
}

/// Which resource list a `resid` on this element must point into.
fn resource_kind(element: &Node) -> &'static str {
    let name = element.tag_name().name();
    match (element.tag_name().namespace(), name) {
        (Some(NS_BT), "Image") => "Images",
        (_, "FunctionFile" | "SourceLocation") => "Urls",
        (_, "Label" | "Title") => "ShortStrings",
        (_, "Description") => "LongStrings",
        _ => panic!("unexpected resid on <{name}>"),
    }
}

#[test]
fn manifests_are_internally_consistent() {
    for case in cases() {
        let xml = render_case(&case);
        check_structure(&case, &xml);
    }
}

fn check_structure(case: &Case, xml: &str) {
    let name = &case.name;
    let doc = parse(name, xml);
    let root = doc.root_element();
    let origin = format!("https://{}", case.server.public_host);
    let pane_url = case.integration.pane_url(&case.server);
    assert!(
        pane_url.starts_with(&format!("{origin}/")),
        "{name}: {pane_url}"
    );

    assert!(
        is(&root, NS_APP, "OfficeApp"),
        "{name}: root is not OfficeApp"
    );
    assert_eq!(xsi_type(&root), Some("MailApp"), "{name}");

    // Id, Permissions, SourceLocation.
    let id = child(root, NS_APP, "Id").expect("Id");
    assert_eq!(
        id.text(),
        Some(case.integration.addin_id.as_str()),
        "{name}: Id"
    );
    let permissions = child(root, NS_APP, "Permissions").expect("Permissions");
    assert_eq!(
        permissions.text(),
        Some("ReadWriteItem"),
        "{name}: Permissions"
    );
    let sources: Vec<_> = child(root, NS_APP, "FormSettings")
        .expect("FormSettings")
        .descendants()
        .filter(|n| is(n, NS_APP, "SourceLocation"))
        .collect();
    assert_eq!(sources.len(), 1, "{name}: one FormSettings SourceLocation");
    assert_eq!(
        default_value(sources[0]),
        pane_url,
        "{name}: SourceLocation"
    );

    // Every URL is https://<public_host>/...
    let mut urls: Vec<(String, &str)> = Vec::new();
    for el in ["IconUrl", "HighResolutionIconUrl", "SupportUrl"] {
        let node = child(root, NS_APP, el).unwrap_or_else(|| panic!("{name}: no {el}"));
        urls.push((el.to_string(), default_value(node)));
    }
    let app_domains: Vec<_> = root
        .descendants()
        .filter(|n| is(n, NS_APP, "AppDomain"))
        .collect();
    assert!(!app_domains.is_empty(), "{name}: no AppDomain");
    for d in app_domains {
        urls.push(("AppDomain".into(), d.text().unwrap_or("").trim()));
    }
    urls.push(("SourceLocation".into(), default_value(sources[0])));
    for n in root.descendants().filter(|n| {
        n.is_element()
            && n.tag_name().namespace() == Some(NS_BT)
            && matches!(n.tag_name().name(), "Image" | "Url")
            && n.has_attribute("id")
    }) {
        urls.push((
            format!("bt:{} {}", n.tag_name().name(), n.attribute("id").unwrap()),
            default_value(n),
        ));
    }
    for (what, url) in &urls {
        assert!(
            under_origin(url, &origin),
            "{name}: {what} is {url:?}, not under {origin}/"
        );
    }

    // VersionOverrides: V1_0 directly under OfficeApp, wrapping V1_1.
    let vo10s: Vec<_> = root
        .children()
        .filter(|n| n.is_element() && n.tag_name().name() == "VersionOverrides")
        .collect();
    assert_eq!(vo10s.len(), 1, "{name}: one top-level VersionOverrides");
    let vo10 = vo10s[0];
    assert!(
        is(&vo10, NS_VO10, "VersionOverrides"),
        "{name}: V1_0 namespace"
    );
    assert_eq!(xsi_type(&vo10), Some("VersionOverridesV1_0"), "{name}");
    let vo11s: Vec<_> = vo10
        .children()
        .filter(|n| n.is_element() && n.tag_name().name() == "VersionOverrides")
        .collect();
    assert_eq!(
        vo11s.len(),
        1,
        "{name}: V1_0 wraps exactly one VersionOverrides"
    );
    let vo11 = vo11s[0];
    assert!(
        is(&vo11, NS_VO11, "VersionOverrides"),
        "{name}: V1_1 namespace"
    );
    assert_eq!(xsi_type(&vo11), Some("VersionOverridesV1_1"), "{name}");
    assert_eq!(
        vo10.children().rfind(Node::is_element),
        Some(vo11),
        "{name}: the V1_1 override must be the last child of V1_0"
    );
    assert_eq!(
        root.descendants()
            .filter(|n| n.is_element() && n.tag_name().name() == "VersionOverrides")
            .count(),
        2,
        "{name}: exactly two VersionOverrides"
    );

    // SupportsSharedFolders: only in V1_1, only when enabled.
    let shared: Vec<_> = root
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == "SupportsSharedFolders")
        .collect();
    if case.integration.addin.supports_shared_folders {
        assert_eq!(
            shared.len(),
            1,
            "{name}: SupportsSharedFolders expected once"
        );
        let s = shared[0];
        assert_eq!(s.tag_name().namespace(), Some(NS_VO11), "{name}");
        assert_eq!(s.text(), Some("true"), "{name}");
        assert_eq!(
            owning_overrides(&s),
            Some(vo11),
            "{name}: SupportsSharedFolders outside V1_1"
        );
    } else {
        assert!(
            shared.is_empty(),
            "{name}: SupportsSharedFolders present but disabled"
        );
    }

    // Per VersionOverrides: extension point and resids.
    for (vo, ns) in [(vo10, NS_VO10), (vo11, NS_VO11)] {
        let label = xsi_type(&vo).unwrap_or("VersionOverrides");
        let own = |n: &Node| owning_overrides(n) == Some(vo);

        let points: Vec<_> = vo
            .descendants()
            .filter(|n| is(n, ns, "ExtensionPoint") && own(n))
            .collect();
        assert_eq!(points.len(), 1, "{name} {label}: one ExtensionPoint");
        assert_eq!(
            xsi_type(&points[0]),
            Some("AppointmentOrganizerCommandSurface"),
            "{name} {label}: extension point"
        );

        let resources = child(vo, ns, "Resources")
            .unwrap_or_else(|| panic!("{name} {label}: no Resources of its own"));
        let mut defined: Vec<(&str, &str, &str)> = Vec::new(); // (kind, id, value)
        for kind in ["Images", "Urls", "ShortStrings", "LongStrings"] {
            let Some(list) = child(resources, NS_BT, kind) else {
                continue;
            };
            for item in list.children().filter(Node::is_element) {
                let id = item
                    .attribute("id")
                    .unwrap_or_else(|| panic!("{name} {label}: bt:{kind} entry without id"));
                assert!(
                    !defined.iter().any(|(_, d, _)| *d == id),
                    "{name} {label}: resource id {id} defined twice"
                );
                defined.push((kind, id, default_value(item)));
            }
        }

        let mut used = std::collections::BTreeSet::new();
        for n in vo
            .descendants()
            .filter(|n| n.has_attribute("resid") && own(n))
        {
            let resid = n.attribute("resid").unwrap();
            let kind = resource_kind(&n);
            let found = defined.iter().find(|(_, id, _)| *id == resid);
            match found {
                Some((k, _, _)) => assert_eq!(
                    *k,
                    kind,
                    "{name} {label}: <{}> resid {resid} is in bt:{k}, expected bt:{kind}",
                    n.tag_name().name()
                ),
                None => panic!(
                    "{name} {label}: <{}> resid {resid:?} is not defined in this \
                     VersionOverrides' Resources",
                    n.tag_name().name()
                ),
            }
            used.insert(resid);
        }
        for (_, id, _) in &defined {
            assert!(
                used.contains(id),
                "{name} {label}: resource {id} is never used"
            );
        }

        // String limits.
        for (kind, id, value) in &defined {
            let max = match *kind {
                "ShortStrings" => SHORT_MAX,
                "LongStrings" => LONG_MAX,
                _ => continue,
            };
            let len = value.chars().count();
            assert!(
                (1..=max).contains(&len),
                "{name} {label}: {id} is {len} characters (limit 1..={max})"
            );
        }

        // The pane URL resource is the pane URL.
        let taskpane = vo
            .descendants()
            .find(|n| is(n, ns, "SourceLocation") && own(n))
            .and_then(|n| n.attribute("resid"))
            .expect("ShowTaskpane SourceLocation");
        let url = defined.iter().find(|(_, id, _)| *id == taskpane).unwrap().2;
        assert_eq!(url, pane_url, "{name} {label}: task pane URL");
    }

    // Top-level DisplayName/Description limits.
    for (el, max) in [("DisplayName", SHORT_MAX), ("Description", LONG_MAX)] {
        let v = default_value(child(root, NS_APP, el).unwrap());
        let len = v.chars().count();
        assert!((1..=max).contains(&len), "{name}: {el} is {len} characters");
    }
}

// ---------------------------------------------------------------------------
// Files the manifest refers to
// ---------------------------------------------------------------------------

/// Width and height from a PNG's IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.len() >= 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR",
        "{} is not a PNG",
        path.display()
    );
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

/// The file under `static/` a manifest URL refers to.
fn static_file(url: &str, origin: &str) -> PathBuf {
    let path = url
        .strip_prefix(origin)
        .and_then(|p| p.strip_prefix("/static/"))
        .unwrap_or_else(|| panic!("{url} is not under {origin}/static/"));
    let path = path.split(['?', '#']).next().unwrap();
    workspace_root().join("static").join(path)
}

#[test]
fn referenced_icons_and_pages_exist_with_the_right_sizes() {
    for case in cases() {
        let name = &case.name;
        let xml = render_case(&case);
        let doc = parse(name, &xml);
        let root = doc.root_element();
        let origin = format!("https://{}", case.server.public_host);

        // (url, expected square size)
        let mut icons: Vec<(String, u32)> = vec![
            (
                default_value(child(root, NS_APP, "IconUrl").unwrap()).into(),
                64,
            ),
            (
                default_value(child(root, NS_APP, "HighResolutionIconUrl").unwrap()).into(),
                128,
            ),
        ];
        // <bt:Image size="N" resid="X"/> in a control's Icon → the bt:Image
        // with id X in the same VersionOverrides must be N×N.
        for vo in root
            .descendants()
            .filter(|n| n.is_element() && n.tag_name().name() == "VersionOverrides")
        {
            let resources = vo
                .children()
                .find(|n| n.is_element() && n.tag_name().name() == "Resources")
                .unwrap();
            let images: Vec<_> = resources
                .descendants()
                .filter(|n| is(n, NS_BT, "Image") && n.has_attribute("id"))
                .collect();
            for use_ in vo.descendants().filter(|n| {
                is(n, NS_BT, "Image") && n.has_attribute("resid") && owning_overrides(n) == Some(vo)
            }) {
                let resid = use_.attribute("resid").unwrap();
                let size: u32 = use_
                    .attribute("size")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("{name}: icon {resid} without a numeric size"));
                let image = images
                    .iter()
                    .find(|i| i.attribute("id") == Some(resid))
                    .unwrap_or_else(|| panic!("{name}: icon resid {resid} is not defined"));
                icons.push((default_value(*image).into(), size));
            }
        }
        assert!(icons.len() >= 5, "{name}: expected icons, found {icons:?}");

        for (url, size) in &icons {
            let file = static_file(url, &origin);
            assert!(
                file.starts_with(workspace_root().join("static/icons")),
                "{name}: icon {url} is not under static/icons"
            );
            assert!(
                file.is_file(),
                "{name}: {url} → {} is missing",
                file.display()
            );
            assert_eq!(
                png_size(&file),
                (*size, *size),
                "{name}: {} has the wrong pixel size",
                file.display()
            );
        }

        // The pages: SupportUrl and every bt:Url under /static/.
        let mut pages = vec![default_value(child(root, NS_APP, "SupportUrl").unwrap())];
        pages.extend(
            root.descendants()
                .filter(|n| is(n, NS_BT, "Url") && n.has_attribute("id"))
                .map(default_value)
                .filter(|u| u.starts_with(&format!("{origin}/static/"))),
        );
        assert!(pages.len() >= 3, "{name}: expected help and commands pages");
        for url in pages {
            let file = static_file(url, &origin);
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{name}: {url} → {}: {e}", file.display()));
            assert!(
                text.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("<!doctype html>"),
                "{name}: {} is not an HTML page",
                file.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Escaping
// ---------------------------------------------------------------------------

#[test]
fn admin_texts_round_trip_through_escaping() {
    for case in cases() {
        let name = &case.name;
        let xml = render_case(&case);
        let doc = parse(name, &xml);
        let root = doc.root_element();
        let a = &case.integration.addin;

        assert_eq!(
            default_value(child(root, NS_APP, "DisplayName").unwrap()),
            a.display_name,
            "{name}: DisplayName"
        );
        assert_eq!(
            default_value(child(root, NS_APP, "Description").unwrap()),
            a.description,
            "{name}: Description"
        );
        assert_eq!(
            child(root, NS_APP, "ProviderName").unwrap().text(),
            Some(a.provider_name.as_str()),
            "{name}: ProviderName"
        );
        assert_eq!(
            child(root, NS_APP, "Version").unwrap().text(),
            Some(case.integration.addin_version.as_str()),
            "{name}: Version"
        );

        // Every string resource, in both VersionOverrides.
        let expected = [
            ("Group.Label", &a.group_label),
            ("Button.Label", &a.button_label),
            ("Supertip.Title", &a.supertip_title),
            ("Supertip.Description", &a.supertip_description),
        ];
        for (id, text) in expected {
            let values: Vec<_> = root
                .descendants()
                .filter(|n| is(n, NS_BT, "String") && n.attribute("id") == Some(id))
                .map(default_value)
                .collect();
            assert_eq!(values.len(), 2, "{name}: {id} once per VersionOverrides");
            for v in values {
                assert_eq!(v, text.as_str(), "{name}: {id}");
            }
        }
    }
}

#[test]
fn unusual_texts_really_need_escaping() {
    // Guards the test data: if someone "simplifies" UNUSUAL_TOML, the
    // escaping tests above would stop proving anything.
    let config = unusual_config();
    let display = &config.integrations[0].addin.display_name;
    for c in ['&', '<', '>', '"', '\'', 'é', '会'] {
        assert!(display.contains(c), "display_name lost {c:?}");
    }
    let xml = render(&config.server, &config.integrations[0]).unwrap();
    assert!(
        !xml.contains("R&D"),
        "an unescaped ampersand reached the XML"
    );
    assert!(xml.contains("R&amp;D &quot;Vidéo&quot; &lt;rooms&gt;"));
}

#[test]
fn structure_checks_can_fail() {
    // Each mutation must trip `check_structure`, proving the checks bite.
    let case = cases().remove(0);
    let xml = render_case(&case);
    let origin = format!("https://{}", case.server.public_host);
    let mutations: Vec<(&str, String)> = vec![
        (
            "undefined resid",
            xml.replacen(r#"resid="Button.Label""#, r#"resid="Nope.Label""#, 1),
        ),
        (
            "resid of the wrong kind",
            xml.replacen(
                r#"<Label resid="Button.Label"/>"#,
                r#"<Label resid="Icon.16"/>"#,
                1,
            ),
        ),
        (
            "foreign URL",
            xml.replacen(
                &format!("{origin}/static/help.html"),
                "https://evil.example.net/static/help.html",
                1,
            ),
        ),
        (
            "look-alike host",
            xml.replacen(
                &format!("{origin}/static/icons/icon-16.png"),
                &format!("{origin}.evil.net/static/icons/icon-16.png"),
                1,
            ),
        ),
        (
            "SupportsSharedFolders in V1_0",
            xml.replacen(
                "<FunctionFile",
                "<SupportsSharedFolders>true</SupportsSharedFolders>\n<FunctionFile",
                1,
            ),
        ),
        (
            "wrong Permissions",
            xml.replacen("ReadWriteItem", "ReadItem", 1),
        ),
        (
            "wrong extension point",
            xml.replacen(
                "AppointmentOrganizerCommandSurface",
                "MessageComposeCommandSurface",
                1,
            ),
        ),
        (
            "short string too long",
            xml.replacen(
                r#"id="Button.Label" DefaultValue=""#,
                &format!(r#"id="Button.Label" DefaultValue="{}"#, "x".repeat(126)),
                1,
            ),
        ),
    ];
    for (what, mutated) in mutations {
        assert_ne!(
            mutated, xml,
            "mutation {what:?} did not change the manifest"
        );
        let result = std::panic::catch_unwind(|| check_structure(&case, &mutated));
        assert!(result.is_err(), "check_structure accepted: {what}");
    }
}
