//! Renders the Outlook add-in manifest (`manifest/manifest.xml.j2`) for one
//! integration from config values.
//!
//! Every value is XML-escaped here before it reaches the template, so admin
//! texts with `&`, `<` or quotes cannot break the document. The result is
//! validated against Microsoft's manifest schema in the tests.

use minijinja::{context, Environment};

use vmr_core::config::{IntegrationConfig, ServerConfig};

const TEMPLATE: &str = include_str!("../../manifest/manifest.xml.j2");

/// Escapes text for an XML attribute or element. Characters XML 1.0 cannot
/// carry at all (control characters other than tab and line breaks) are dropped.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => {}
            '\u{fffe}' | '\u{ffff}' => {}
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The manifest XML for `integration`.
pub fn render(
    server: &ServerConfig,
    integration: &IntegrationConfig,
) -> Result<String, minijinja::Error> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_template("manifest.xml", TEMPLATE)?;
    let a = &integration.addin;
    let e = |s: &str| xml_escape(s);
    env.get_template("manifest.xml")?.render(context! {
        integration_id => e(&integration.id),
        addin_id => e(&integration.addin_id),
        version => e(&integration.addin_version),
        origin => e(&server.public_origin()),
        pane_url => e(&integration.pane_url(server)),
        provider_name => e(&a.provider_name),
        display_name => e(&a.display_name),
        description => e(&a.description),
        button_label => e(&a.button_label),
        group_label => e(&a.group_label),
        supertip_title => e(&a.supertip_title),
        supertip_description => e(&a.supertip_description),
        supports_shared_folders => a.supports_shared_folders,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_admin_texts() {
        let server = ServerConfig::default();
        let mut integration = IntegrationConfig::default();
        integration.addin.display_name = "R&D <video> \"rooms\"".into();
        let xml = render(&server, &integration).expect("renders");
        assert!(xml.contains("R&amp;D &lt;video&gt; &quot;rooms&quot;"));
        assert!(xml.contains("<SupportsSharedFolders>true</SupportsSharedFolders>"));
        integration.addin.supports_shared_folders = false;
        let xml = render(&server, &integration).expect("renders");
        assert!(!xml.contains("SupportsSharedFolders"));
    }

    #[test]
    fn drops_characters_xml_cannot_carry() {
        assert_eq!(xml_escape("a\u{1}b\tc\u{ffff}"), "ab\tc");
    }
}
