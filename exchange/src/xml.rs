//! XML for the EWS message layer: a lenient, namespace-aware reader that turns a response into
//! a small element tree ([`parse`] → [`Element`]), and an escaping writer for requests
//! ([`XmlWriter`]).
//!
//! The reader is built on quick-xml's `NsReader` and matches elements by namespace URI and local
//! name, never by prefix: Exchange answers with `s:`/`soap:`, `m:`, `t:`, `h:` or default
//! namespaces as it pleases. It tolerates what real servers send: a UTF-8 byte order mark,
//! character references that XML 1.0 forbids (`&#x0;` … `&#x1F;` in bodies and subjects, which
//! are dropped), processing instructions and comments. It refuses documents larger than
//! [`MAX_DOCUMENT_BYTES`] or nested deeper than [`MAX_DEPTH`], and says where anything went
//! wrong (byte offset).
//!
//! The writer escapes every value it is given (`&`, `<`, `>`, `"`, `'`) and strips characters
//! that XML 1.0 cannot carry, so no caller ever assembles markup from strings.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

/// SOAP 1.1 envelope namespace.
pub const NS_SOAP: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// EWS messages namespace (prefix `m:` by convention).
pub const NS_MESSAGES: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";
/// EWS types namespace (prefix `t:` by convention).
pub const NS_TYPES: &str = "http://schemas.microsoft.com/exchange/services/2006/types";
/// EWS errors namespace, used in SOAP fault details.
pub const NS_ERRORS: &str = "http://schemas.microsoft.com/exchange/services/2006/errors";

/// The largest document [`parse`] accepts (64 MiB).
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;
/// The deepest element nesting [`parse`] accepts.
pub const MAX_DEPTH: usize = 256;

/// One element of a parsed document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// The namespace URI, `None` when the name is in no namespace (or its prefix is undeclared).
    pub ns: Option<String>,
    /// The local name (without prefix).
    pub name: String,
    /// Attributes by local name (namespace declarations left out), values unescaped.
    pub attrs: Vec<(String, String)>,
    /// Child elements in document order.
    pub children: Vec<Element>,
    /// The element's own text (not its descendants'), unescaped and concatenated.
    pub text: String,
}

impl Element {
    /// Whether this element is `{ns}name`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.name == name && self.ns.as_deref() == Some(ns)
    }

    /// The first child `{ns}name`.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    /// Every child `{ns}name`, in document order.
    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// The value of the attribute with this local name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The trimmed text of the first child `{ns}name`.
    pub fn child_text(&self, ns: &str, name: &str) -> Option<&str> {
        self.child(ns, name).map(|c| c.text.trim())
    }

    /// The first descendant `{ns}name`, depth-first (this element itself excluded).
    pub fn find(&self, ns: &str, name: &str) -> Option<&Element> {
        for c in &self.children {
            if c.is(ns, name) {
                return Some(c);
            }
            if let Some(found) = c.find(ns, name) {
                return Some(found);
            }
        }
        None
    }

    /// The first child element.
    pub fn first_element(&self) -> Option<&Element> {
        self.children.first()
    }

    /// The first child with this local name, whatever its namespace (SOAP fault parts such as
    /// `faultcode` are unqualified on some servers and qualified on others).
    pub fn child_local(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// Why a document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    /// The document is larger than [`MAX_DOCUMENT_BYTES`].
    #[error("the XML document is {size} bytes, more than the {limit} bytes accepted")]
    TooLarge { size: usize, limit: usize },
    /// Elements are nested deeper than [`MAX_DEPTH`].
    #[error("XML elements are nested deeper than {limit} levels (at byte {offset})")]
    TooDeep { limit: usize, offset: u64 },
    /// The document is not well-formed.
    #[error("malformed XML at byte {offset}: {message}")]
    Syntax { offset: u64, message: String },
    /// The document holds no element.
    #[error("the document holds no root element")]
    NoRoot,
    /// Something other than whitespace, comments or PIs follows the root element.
    #[error("content after the root element at byte {offset}")]
    TrailingContent { offset: u64 },
    /// The document ended before every element was closed.
    #[error("the XML document ends inside <{open}> (it is truncated)")]
    Truncated { open: String },
}

/// Parses a whole document and returns its root element. See the module docs for what is
/// tolerated.
pub fn parse(input: &[u8]) -> Result<Element, XmlError> {
    if input.len() > MAX_DOCUMENT_BYTES {
        return Err(XmlError::TooLarge {
            size: input.len(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    // Whitespace before the XML declaration is not well-formed; servers and stream framing
    // leave some anyway.
    let start = input
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(input.len());
    let input = &input[start..];
    let base = start as u64;

    let mut reader = NsReader::from_reader(input);
    {
        let config = reader.config_mut();
        config.allow_dangling_amp = true;
        config.check_end_names = true;
        config.expand_empty_elements = false;
    }

    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let offset = base + reader.buffer_position();
        let (resolved, event) = match reader.read_resolved_event() {
            Ok(v) => v,
            Err(e) => {
                return Err(XmlError::Syntax {
                    offset: base + reader.error_position(),
                    message: e.to_string(),
                })
            }
        };
        let ns = match resolved {
            ResolveResult::Bound(ns) => Some(String::from_utf8_lossy(ns.as_ref()).into_owned()),
            _ => None,
        };
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(XmlError::TrailingContent { offset });
            }
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep {
                        limit: MAX_DEPTH,
                        offset,
                    });
                }
                stack.push(element_from_start(ns, &start, offset)?);
            }
            Event::Empty(start) => {
                let el = element_from_start(ns, &start, offset)?;
                close(&mut stack, &mut root, el);
            }
            Event::End(_) => match stack.pop() {
                Some(el) => close(&mut stack, &mut root, el),
                None => {
                    return Err(XmlError::Syntax {
                        offset,
                        message: "closing tag without an open element".into(),
                    })
                }
            },
            Event::Text(text) => {
                let content = text.xml10_content().map_err(|e| XmlError::Syntax {
                    offset,
                    message: e.to_string(),
                })?;
                append_text(&mut stack, &root, &content, offset)?;
            }
            Event::CData(cdata) => {
                let content = cdata.xml10_content().map_err(|e| XmlError::Syntax {
                    offset,
                    message: e.to_string(),
                })?;
                append_text(&mut stack, &root, &content, offset)?;
            }
            Event::GeneralRef(reference) => {
                let name = reference.decode().map_err(|e| XmlError::Syntax {
                    offset,
                    message: e.to_string(),
                })?;
                let mut resolved = String::new();
                resolve_reference(&name, &mut resolved);
                append_text(&mut stack, &root, &resolved, offset)?;
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(XmlError::Truncated {
            open: open.name.clone(),
        });
    }
    root.ok_or(XmlError::NoRoot)
}

fn close(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

fn append_text(
    stack: &mut [Element],
    root: &Option<Element>,
    text: &str,
    offset: u64,
) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(el) => {
            el.text.extend(text.chars().filter(|c| is_xml_char(*c)));
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None if root.is_some() => Err(XmlError::TrailingContent { offset }),
        None => Err(XmlError::Syntax {
            offset,
            message: "text before the root element".into(),
        }),
    }
}

fn element_from_start(
    ns: Option<String>,
    start: &BytesStart<'_>,
    offset: u64,
) -> Result<Element, XmlError> {
    let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| XmlError::Syntax {
            offset,
            message: format!("attribute of <{name}>: {e}"),
        })?;
        let key = attr.key;
        if key.as_ref() == b"xmlns" || key.as_ref().starts_with(b"xmlns:") {
            continue;
        }
        let local = String::from_utf8_lossy(key.local_name().as_ref()).into_owned();
        let raw = std::str::from_utf8(&attr.value).map_err(|e| XmlError::Syntax {
            offset,
            message: format!("attribute {local} of <{name}> is not UTF-8: {e}"),
        })?;
        attrs.push((local, unescape_attribute(raw)));
    }
    Ok(Element {
        ns,
        name,
        attrs,
        children: Vec::new(),
        text: String::new(),
    })
}

/// Unescapes an attribute value: literal tabs and line ends become spaces (XML attribute-value
/// normalisation), references are resolved, illegal ones dropped, unknown ones kept as written.
fn unescape_attribute(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        push_normalised(&mut out, &rest[..amp]);
        let after = &rest[amp + 1..];
        match after.find(';') {
            Some(semi) if semi <= 32 => {
                resolve_reference(&after[..semi], &mut out);
                rest = &after[semi + 1..];
            }
            _ => {
                out.push('&');
                rest = after;
            }
        }
    }
    push_normalised(&mut out, rest);
    out
}

fn push_normalised(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\t' | '\n' | '\r' => out.push(' '),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

/// Resolves `&name;` (given `name`) into `out`: the five predefined entities and character
/// references; character references to characters XML 1.0 forbids are dropped; anything else
/// is kept literally.
fn resolve_reference(name: &str, out: &mut String) {
    let predefined = match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => None,
    };
    if let Some(c) = predefined {
        out.push(c);
        return;
    }
    if let Some(number) = name.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => number.parse::<u32>().ok(),
        };
        match code.and_then(char::from_u32) {
            Some(c) if is_xml_char(c) => out.push(c),
            Some(_) => {}
            None => {
                // Not a number, or a surrogate / out of range: keep what was written.
                out.push('&');
                out.push_str(name);
                out.push(';');
            }
        }
        return;
    }
    out.push('&');
    out.push_str(name);
    out.push(';');
}

/// Whether XML 1.0 can carry `c` (the `Char` production).
pub fn is_xml_char(c: char) -> bool {
    matches!(c,
        '\u{9}' | '\u{A}' | '\u{D}'
        | '\u{20}'..='\u{D7FF}'
        | '\u{E000}'..='\u{FFFD}'
        | '\u{10000}'..='\u{10FFFF}')
}

/// A small XML writer for requests: tags are given with their prefix (`"t:ItemId"`), values
/// are escaped, characters XML 1.0 cannot carry are stripped.
#[derive(Debug, Default)]
pub struct XmlWriter {
    out: String,
    open: Vec<String>,
}

impl XmlWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens `<tag attrs…>`.
    pub fn start(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        self.open_tag(tag, attrs);
        self.out.push('>');
        self.open.push(tag.to_owned());
    }

    /// Writes escaped text inside the current element.
    pub fn text(&mut self, text: &str) {
        escape_into(&mut self.out, text, false);
    }

    /// Closes the innermost open element (does nothing when none is open).
    pub fn end(&mut self) {
        if let Some(tag) = self.open.pop() {
            self.out.push_str("</");
            self.out.push_str(&tag);
            self.out.push('>');
        }
    }

    /// Writes `<tag attrs…/>`.
    pub fn empty(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        self.open_tag(tag, attrs);
        self.out.push_str("/>");
    }

    /// Writes `<tag attrs…>text</tag>`.
    pub fn leaf(&mut self, tag: &str, attrs: &[(&str, &str)], text: &str) {
        self.start(tag, attrs);
        self.text(text);
        self.end();
    }

    /// Closes whatever is still open and returns the document.
    pub fn finish(mut self) -> String {
        while !self.open.is_empty() {
            self.end();
        }
        self.out
    }

    fn open_tag(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        self.out.push('<');
        self.out.push_str(tag);
        for (name, value) in attrs {
            self.out.push(' ');
            self.out.push_str(name);
            self.out.push_str("=\"");
            escape_into(&mut self.out, value, true);
            self.out.push('"');
        }
    }
}

/// Escapes `text` for element content (`attribute == false`) or a double-quoted attribute
/// value. Line ends and tabs in attributes, and carriage returns anywhere, are written as
/// character references so that they survive parsing unchanged.
pub fn escape_into(out: &mut String, text: &str, attribute: bool) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            '\n' if attribute => out.push_str("&#xA;"),
            '\t' if attribute => out.push_str("&#x9;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

/// `text` escaped for element content.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text, false);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_matched_by_namespace_not_prefix() {
        let doc = br#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
            <GetItemResponse xmlns="http://schemas.microsoft.com/exchange/services/2006/messages">
              <ResponseMessages><x:Thing xmlns:x="http://schemas.microsoft.com/exchange/services/2006/types" Id="1"/></ResponseMessages>
            </GetItemResponse></s:Body></s:Envelope>"#;
        let root = parse(doc).unwrap();
        assert!(root.is(NS_SOAP, "Envelope"));
        let op = root
            .child(NS_SOAP, "Body")
            .unwrap()
            .first_element()
            .unwrap();
        assert!(op.is(NS_MESSAGES, "GetItemResponse"));
        let thing = op.find(NS_TYPES, "Thing").unwrap();
        assert_eq!(thing.attr("Id"), Some("1"));
        assert!(op.find(NS_MESSAGES, "Thing").is_none());
        assert!(root.child(NS_TYPES, "Body").is_none());
    }

    #[test]
    fn bom_illegal_character_references_and_comments_are_tolerated() {
        let mut doc = b"\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"utf-8\"?>\n".to_vec();
        doc.extend_from_slice(
            b"<!-- hi --><a xmlns=\"urn:x\" v=\"x&#x1;y&amp;\"><?pi stuff?><b>A&#x0;B&#x1F;C&#x9;&#65;&lt;&#x1F600;</b><b>2</b></a>",
        );
        let root = parse(&doc).unwrap();
        let b: Vec<_> = root.children_named("urn:x", "b").collect();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].text, "ABC\tA<\u{1F600}");
        assert_eq!(root.attr("v"), Some("xy&"));
        assert_eq!(root.child_text("urn:x", "b"), Some("ABC\tA<\u{1F600}"));
    }

    #[test]
    fn malformed_documents_say_what_and_where() {
        let err = parse(b"<a><b></a>").unwrap_err();
        assert!(matches!(err, XmlError::Syntax { .. }), "{err}");
        assert!(err.to_string().contains("byte"), "{err}");
        let err = parse(b"<a><b>").unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(matches!(parse(b"   ").unwrap_err(), XmlError::NoRoot));
        assert!(matches!(
            parse(b"<a/><b/>").unwrap_err(),
            XmlError::TrailingContent { .. }
        ));
        assert!(parse(b"not xml at all").is_err());
    }

    #[test]
    fn depth_and_size_are_capped() {
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(matches!(
            parse(deep.as_bytes()).unwrap_err(),
            XmlError::TooDeep { .. }
        ));
        let ok = "<a>".repeat(MAX_DEPTH) + &"</a>".repeat(MAX_DEPTH);
        assert!(parse(ok.as_bytes()).is_ok());
        let big = vec![b' '; MAX_DOCUMENT_BYTES + 1];
        assert!(matches!(
            parse(&big).unwrap_err(),
            XmlError::TooLarge { .. }
        ));
    }

    #[test]
    fn the_writer_escapes_and_strips() {
        let mut w = XmlWriter::new();
        w.start("t:A", &[("Id", "a\"b'<c>&\n")]);
        w.leaf("t:B", &[], "x<y & 'z' \"q\" \u{0}\u{1}é\r\n");
        w.empty("t:C", &[("V", "\u{FFFE}ok")]);
        let xml = w.finish();
        assert_eq!(
            xml,
            "<t:A Id=\"a&quot;b&apos;&lt;c&gt;&amp;&#xA;\"><t:B>x&lt;y &amp; &apos;z&apos; &quot;q&quot; é&#xD;\n</t:B><t:C V=\"ok\"/></t:A>"
        );
        // And it round-trips through the reader.
        let doc = format!("<r xmlns:t=\"urn:t\">{xml}</r>");
        let root = parse(doc.as_bytes()).unwrap();
        let a = root.child("urn:t", "A").unwrap();
        assert_eq!(a.attr("Id"), Some("a\"b'<c>&\n"));
        assert_eq!(a.child("urn:t", "B").unwrap().text, "x<y & 'z' \"q\" é\r\n");
    }
}
