//! SOAP 1.1 for the simulated EWS endpoint: reading a request by namespace URI (never by
//! prefix, reference §1.1), cutting out the operation and each header as their own documents
//! for schema validation, and writing responses the way Exchange does (`s:` envelope,
//! `h:ServerVersionInfo` header, `m:`/`t:` declared on the response element) and its SOAP
//! faults (`a:ErrorXxx` fault codes, `e:` detail, `t:MessageXml`).

use roxmltree::{Document, Node};

use super::MailboxVersion;

/// SOAP 1.1 envelope namespace.
pub const NS_SOAP: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// EWS messages namespace.
pub const NS_M: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";
/// EWS types namespace.
pub const NS_T: &str = "http://schemas.microsoft.com/exchange/services/2006/types";
/// EWS errors namespace (fault detail).
pub const NS_E: &str = "http://schemas.microsoft.com/exchange/services/2006/errors";

/// Escapes text for element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// A small XML writer; names are written as given (with their prefix).
#[derive(Debug, Default)]
pub struct XmlWriter {
    out: String,
}

impl XmlWriter {
    /// An empty writer.
    pub fn new() -> XmlWriter {
        XmlWriter::default()
    }

    /// `<name a="v" …>`.
    pub fn start(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.out.push('<');
        self.out.push_str(name);
        for (key, value) in attrs {
            self.out.push(' ');
            self.out.push_str(key);
            self.out.push_str("=\"");
            self.out.push_str(&escape(value));
            self.out.push('"');
        }
        self.out.push('>');
    }

    /// `</name>`.
    pub fn end(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    /// `<name a="v" …/>`.
    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.start(name, attrs);
        self.out.pop();
        self.out.push_str("/>");
    }

    /// `<name>text</name>`.
    pub fn text(&mut self, name: &str, text: &str) {
        self.start(name, &[]);
        self.out.push_str(&escape(text));
        self.end(name);
    }

    /// Raw, already well-formed XML.
    pub fn raw(&mut self, xml: &str) {
        self.out.push_str(xml);
    }

    /// The XML written.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A parsed request: the operation element and the headers that matter.
#[derive(Debug)]
pub struct ParsedRequest<'a> {
    pub operation: Node<'a, 'a>,
    pub headers: Vec<Node<'a, 'a>>,
}

/// Why a request could not be read as SOAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapReadError {
    pub line: u32,
    pub position: u32,
    pub violation: String,
}

/// Parses the XML text.
pub fn parse_document(xml: &str) -> Result<Document<'_>, SoapReadError> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: 5_000_000,
    };
    Document::parse_with_options(xml, options).map_err(|e| {
        let pos = e.pos();
        SoapReadError {
            line: pos.row,
            position: pos.col,
            violation: e.to_string(),
        }
    })
}

/// Finds the operation element (first element child of `soap:Body`) and the header elements.
pub fn read_envelope<'a>(doc: &'a Document<'a>) -> Result<ParsedRequest<'a>, SoapReadError> {
    let root = doc.root_element();
    let here = |node: Node, violation: String| {
        let pos = doc.text_pos_at(node.range().start);
        SoapReadError {
            line: pos.row,
            position: pos.col,
            violation,
        }
    };
    if !root.has_tag_name((NS_SOAP, "Envelope")) {
        return Err(here(
            root,
            format!(
                "The root element must be {{{NS_SOAP}}}Envelope, not {{{}}}{}.",
                root.tag_name().namespace().unwrap_or(""),
                root.tag_name().name()
            ),
        ));
    }
    let headers = root
        .children()
        .find(|n| n.has_tag_name((NS_SOAP, "Header")))
        .map(|h| h.children().filter(|n| n.is_element()).collect())
        .unwrap_or_default();
    let body = root
        .children()
        .find(|n| n.has_tag_name((NS_SOAP, "Body")))
        .ok_or_else(|| here(root, "The SOAP envelope has no Body.".to_owned()))?;
    let operation = body
        .children()
        .find(|n| n.is_element())
        .ok_or_else(|| here(body, "The SOAP Body holds no operation.".to_owned()))?;
    Ok(ParsedRequest { operation, headers })
}

/// An element of the request as its own document, with every namespace in scope declared on
/// it, for schema validation. Returns the document and the line in the request where the
/// element starts (to map validation errors back).
pub fn standalone(xml: &str, doc: &Document, node: Node) -> (String, u32) {
    let range = node.range();
    let text = &xml[range.clone()];
    let start_line = doc.text_pos_at(range.start).row;
    // Find the end of the name in the start tag, to insert declarations after it.
    let name_end = text
        .char_indices()
        .skip(1)
        .find(|(_, c)| c.is_whitespace() || *c == '>' || *c == '/')
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    let tag_end = text.find('>').unwrap_or(text.len());
    let start_tag = &text[..tag_end];
    let mut declarations = String::new();
    for ns in node.namespaces() {
        let declared = match ns.name() {
            Some(prefix) => start_tag.contains(&format!("xmlns:{prefix}=")),
            None => start_tag.contains("xmlns=") || start_tag.contains("xmlns ="),
        };
        if declared || ns.name() == Some("xml") {
            continue;
        }
        match ns.name() {
            Some(prefix) => {
                declarations.push_str(&format!(" xmlns:{prefix}=\"{}\"", escape(ns.uri())))
            }
            None => declarations.push_str(&format!(" xmlns=\"{}\"", escape(ns.uri()))),
        }
    }
    let standalone = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n{}{}{}\n",
        &text[..name_end],
        declarations,
        &text[name_end..]
    );
    (standalone, start_line)
}

/// Child elements of `node` in namespace `ns` named `name`.
pub fn children<'a, 'i>(
    node: Node<'a, 'i>,
    ns: &'a str,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children().filter(move |n| n.has_tag_name((ns, name)))
}

/// The first child element in `ns` named `name`.
pub fn child<'a, 'i>(node: Node<'a, 'i>, ns: &str, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|n| n.has_tag_name((ns, name)))
}

/// The text of the first child element in `ns` named `name`.
pub fn child_text<'a>(node: Node<'a, '_>, ns: &str, name: &str) -> Option<&'a str> {
    child(node, ns, name).map(|n| n.text().unwrap_or(""))
}

/// The `ServerVersionInfo` header and the start of the body, up to the response element.
fn envelope_start(version: MailboxVersion) -> String {
    let (major, minor, build, minor_build, name) = version.server_version_info();
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><s:Envelope xmlns:s=\"{NS_SOAP}\"><s:Header>\
         <h:ServerVersionInfo MajorVersion=\"{major}\" MinorVersion=\"{minor}\" \
         MajorBuildNumber=\"{build}\" MinorBuildNumber=\"{minor_build}\" Version=\"{name}\" \
         xmlns:h=\"{NS_T}\" xmlns=\"{NS_T}\" \
         xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"/></s:Header>\
         <s:Body xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\">"
    )
}

/// A whole response envelope around `operation_response` (which declares `m:` and `t:`).
pub fn envelope(version: MailboxVersion, operation_response: &str) -> String {
    format!(
        "{}{operation_response}</s:Body></s:Envelope>",
        envelope_start(version)
    )
}

/// The attributes that open a response element: `xmlns:m` and `xmlns:t`.
pub const RESPONSE_NAMESPACES: [(&str, &str); 2] = [("xmlns:m", NS_M), ("xmlns:t", NS_T)];

/// A SOAP Fault as Exchange sends it (HTTP 500): `a:{code}` fault code, the text, the `e:`
/// detail and, when given, `t:MessageXml` holding `message_xml` (already XML, `t:` elements).
pub fn fault_envelope(code: &str, text: &str, message_xml: Option<&str>) -> String {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><s:Envelope xmlns:s=\"{NS_SOAP}\"><s:Body><s:Fault>\
         <faultcode xmlns:a=\"{NS_T}\">a:{code}</faultcode>\
         <faultstring xml:lang=\"en-US\">{text}</faultstring><detail>\
         <e:ResponseCode xmlns:e=\"{NS_E}\">{code}</e:ResponseCode>\
         <e:Message xmlns:e=\"{NS_E}\">{text}</e:Message>",
        text = escape(text)
    );
    if let Some(inner) = message_xml {
        xml.push_str(&format!(
            "<t:MessageXml xmlns:t=\"{NS_T}\">{inner}</t:MessageXml>"
        ));
    }
    xml.push_str("</detail></s:Fault></s:Body></s:Envelope>");
    xml
}

/// `ErrorSchemaValidation` fault with line, position and violation.
pub fn schema_fault(error: &SoapReadError) -> String {
    let message_xml = format!(
        "<t:LineNumber>{}</t:LineNumber><t:LinePosition>{}</t:LinePosition><t:Violation>{}</t:Violation>",
        error.line,
        error.position,
        escape(&error.violation)
    );
    fault_envelope(
        "ErrorSchemaValidation",
        &format!("The request failed schema validation: {}", error.violation),
        Some(&message_xml),
    )
}

/// Reads a libxml2 message `line N: text` (as [`crate::schema_validation`] reports them) into
/// a position in the original request, given the line where the validated element started.
pub fn violation_from_validator(message: &str, element_line: u32) -> SoapReadError {
    let (line_in_doc, text) = message
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(n, text)| Some((n.trim().parse::<u32>().ok()?, text.trim())))
        .unwrap_or((2, message));
    // The standalone document has the XML declaration on line 1 and the element from line 2.
    let line = element_line + line_in_doc.saturating_sub(2);
    SoapReadError {
        line,
        position: 0,
        violation: text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_declares_namespaces_from_the_envelope() {
        let xml = "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:t=\"urn:t\" xmlns=\"urn:m\">\n<soap:Body>\n<GetFolder xmlns:x=\"urn:x\"><t:A/></GetFolder></soap:Body></soap:Envelope>";
        let doc = parse_document(xml).expect("xml");
        let parsed = read_envelope(&doc).expect("envelope");
        let (text, line) = standalone(xml, &doc, parsed.operation);
        assert_eq!(line, 3);
        let again = Document::parse(&text).expect("standalone parses");
        let root = again.root_element();
        assert!(root.has_tag_name(("urn:m", "GetFolder")));
        assert!(root.children().any(|c| c.has_tag_name(("urn:t", "A"))));
    }

    #[test]
    fn escapes_markup_and_drops_illegal_controls() {
        assert_eq!(
            escape("<a href=\"x\">&\u{1}'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;"
        );
    }
}
