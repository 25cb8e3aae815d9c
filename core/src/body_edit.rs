//! Editing the blocks we put into meeting bodies, in bodies Outlook has since rewritten.
//!
//! When management was down, the pane inserted the placeholder text and a `TOK:-…#` tag; the
//! mailbox worker later swaps both for the joining instructions and their `PXPS:-…#` tag, in
//! the organizer's own copy of the meeting; recovery swaps the instructions of a lost alias
//! for those of a new one ([`replace_tagged_block`]). Outlook reformats what the
//! pane inserted (new elements, spans, entities, line wraps), so blocks are found by their
//! *visible* text with all whitespace ignored ([`VisibleText`]), never by their markup:
//!
//! * the tag by its prefix and terminator ([`find_tag_range`]);
//! * a template's output by the literal text between its variables ([`TemplateShape`]: render
//!   the template with every variable set to [`VARIABLE_MARKER`]; each variable then matches
//!   any text of up to [`MAX_VARIABLE_CHARS`] visible characters).
//!
//! A found range is widened over elements that hold nothing else (`<div>placeholder</div>`
//! goes as a whole), then replaced; the rest of the body is kept byte for byte.

use std::ops::Range;

use vmr_protocol::tag::{PXPS_PREFIX, TAG_END, TOK_PREFIX};

/// Stands for a template variable when a template is rendered to learn its shape (a
/// private-use character, never in a real body).
pub const VARIABLE_MARKER: &str = "\u{E000}";

/// Most visible characters one template variable may stand for.
pub const MAX_VARIABLE_CHARS: usize = 400;

/// Why a body could not be edited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyEditError {
    #[error("the body carries no {0}…# tag to replace")]
    NoTag(&'static str),
}

/// One visible, non-whitespace character of a body and the bytes it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Visible {
    ch: char,
    /// Byte range in the body (several bytes for an entity such as `&amp;`).
    start: usize,
    end: usize,
}

/// The visible characters of a body (HTML: elements, comments, `<style>`, `<script>` and
/// `<head>` skipped, character references decoded), whitespace dropped, each with its
/// position in the body.
#[derive(Debug, Clone)]
pub struct VisibleText {
    chars: Vec<Visible>,
}

const HIDDEN_ELEMENTS: [&str; 4] = ["style", "script", "head", "title"];

impl VisibleText {
    /// Indexes `body`; `html` says whether it is HTML or plain text.
    pub fn new(body: &str, html: bool) -> VisibleText {
        let mut chars = Vec::new();
        if !html {
            for (i, ch) in body.char_indices() {
                if !ch.is_whitespace() {
                    chars.push(Visible {
                        ch,
                        start: i,
                        end: i + ch.len_utf8(),
                    });
                }
            }
            return VisibleText { chars };
        }
        let bytes = body.as_bytes();
        let mut i = 0;
        while i < body.len() {
            match bytes[i] {
                b'<' => i = skip_markup(body, i),
                b'&' => {
                    let (ch, len) = decode_reference(&body[i..]);
                    if !ch.is_whitespace() && ch != '\u{a0}' {
                        chars.push(Visible {
                            ch,
                            start: i,
                            end: i + len,
                        });
                    }
                    i += len;
                }
                _ => {
                    let ch = body[i..].chars().next().unwrap_or(' ');
                    let len = ch.len_utf8();
                    if !ch.is_whitespace() {
                        chars.push(Visible {
                            ch,
                            start: i,
                            end: i + len,
                        });
                    }
                    i += len;
                }
            }
        }
        VisibleText { chars }
    }

    /// The visible characters as a string (whitespace dropped).
    pub fn as_string(&self) -> String {
        self.chars.iter().map(|v| v.ch).collect()
    }

    /// Index of the first visible character at or after `from` that starts `needle`.
    fn find(&self, needle: &[char], from: usize) -> Option<usize> {
        if needle.is_empty() || needle.len() > self.chars.len() {
            return None;
        }
        (from..=self.chars.len() - needle.len()).find(|&i| {
            needle
                .iter()
                .enumerate()
                .all(|(k, c)| self.chars[i + k].ch == *c)
        })
    }

    /// The body bytes of visible characters `first..=last`.
    fn bytes(&self, first: usize, last: usize) -> Range<usize> {
        self.chars[first].start..self.chars[last].end
    }
}

/// Byte index just past the markup starting at `at` (an element, comment or hidden element
/// with its content). A `<` that opens nothing is skipped as one byte.
fn skip_markup(body: &str, at: usize) -> usize {
    let rest = &body[at..];
    if let Some(after) = rest.strip_prefix("<!--") {
        return after.find("-->").map_or(body.len(), |e| at + 4 + e + 3);
    }
    let Some(gt) = rest.find('>') else {
        return body.len();
    };
    let name = element_name(&rest[1..gt]);
    let end = at + gt + 1;
    let closing = rest[1..].starts_with('/');
    if !closing && HIDDEN_ELEMENTS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
        let lower = body[end..].to_ascii_lowercase();
        let close = format!("</{}", name.to_ascii_lowercase());
        return lower
            .find(&close)
            .and_then(|c| body[end + c..].find('>').map(|g| end + c + g + 1))
            .unwrap_or(body.len());
    }
    end
}

/// The element name of a tag's inside (`div class=x` → `div`, `/p` → `p`).
fn element_name(tag: &str) -> &str {
    let bare = tag.trim_start_matches('/');
    &bare[..bare
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(bare.len())]
}

/// Decodes the character reference at the start of `text` (which starts with `&`): the
/// character and the bytes it took. An unknown or unterminated one is a literal `&`.
fn decode_reference(text: &str) -> (char, usize) {
    let Some(semi) = text[..text.len().min(12)].find(';') else {
        return ('&', 1);
    };
    let name = &text[1..semi];
    let ch = match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some('\u{a0}'),
        _ => name
            .strip_prefix("#x")
            .or_else(|| name.strip_prefix("#X"))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
            .and_then(char::from_u32),
    };
    match ch {
        Some(c) => (c, semi + 1),
        None => ('&', 1),
    }
}

/// The literal text of a template between its variables, learnt from one rendering with
/// every variable set to [`VARIABLE_MARKER`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateShape {
    /// Visible, whitespace-free literal pieces; a variable sits between each two.
    pieces: Vec<Vec<char>>,
}

impl TemplateShape {
    /// The shape of `rendered` (HTML when `html`), rendered with markers for variables.
    pub fn from_rendering(rendered: &str, html: bool) -> TemplateShape {
        let marker = VARIABLE_MARKER.chars().next().unwrap_or('\u{E000}');
        let visible = VisibleText::new(rendered, html).as_string();
        TemplateShape {
            pieces: visible.split(marker).map(|p| p.chars().collect()).collect(),
        }
    }

    /// How many literal characters the template has (too few cannot be found reliably).
    pub fn literal_chars(&self) -> usize {
        self.pieces.iter().map(Vec::len).sum()
    }
}

/// Where the template's output is in `text`, as visible-character indexes `first..=last`:
/// the last occurrence that starts before `before` (a visible index; it may end after it
/// when the template holds what starts there).
fn find_shape(text: &VisibleText, shape: &TemplateShape, before: usize) -> Option<(usize, usize)> {
    const MIN_LITERAL_CHARS: usize = 12;
    if shape.literal_chars() < MIN_LITERAL_CHARS {
        return None;
    }
    let pieces: Vec<&Vec<char>> = shape.pieces.iter().filter(|p| !p.is_empty()).collect();
    let first_piece = pieces.first()?;
    let mut found = None;
    let mut from = 0;
    while let Some(start) = text.find(first_piece, from) {
        if start >= before {
            break;
        }
        if let Some(last) = match_rest(text, &pieces[1..], start + first_piece.len(), before) {
            found = Some((start, last));
        }
        from = start + 1;
    }
    found
}

/// Matches `pieces` in order starting near `at`, each within [`MAX_VARIABLE_CHARS`] of the
/// previous; the visible index of the last matched character. A variable takes the shortest
/// text that lets the next piece match, except before the last piece when that piece also
/// ends right before `before` (the tag that follows the block): then the variable runs up
/// to it (`from h.example.com.` ends at the last dot, not the first).
fn match_rest(
    text: &VisibleText,
    pieces: &[&Vec<char>],
    at: usize,
    before: usize,
) -> Option<usize> {
    let mut pos = at;
    for (i, piece) in pieces.iter().enumerate() {
        let adjacent = before
            .checked_sub(piece.len())
            .filter(|&s| i + 1 == pieces.len() && s >= pos && s - pos <= MAX_VARIABLE_CHARS)
            .filter(|&s| text.find(piece, s) == Some(s));
        let next = match adjacent {
            Some(s) => s,
            None => text.find(piece, pos)?,
        };
        if next - pos > MAX_VARIABLE_CHARS {
            return None;
        }
        pos = next + piece.len();
    }
    pos.checked_sub(1)
}

/// The visible range (`first..=last`) of the first tag with `prefix` (up to its `#`).
fn find_tag_visible(text: &VisibleText, prefix: &str) -> Option<(usize, usize)> {
    let needle: Vec<char> = prefix.chars().collect();
    let end_char = TAG_END;
    let start = text.find(&needle, 0)?;
    let last = (start + needle.len()..text.chars.len()).find(|&i| text.chars[i].ch == end_char)?;
    Some((start, last))
}

/// Byte range of the first `TOK:-…#` (`tok`) or `PXPS:-…#` tag in `body`.
pub fn find_tag_range(body: &str, html: bool, tok: bool) -> Option<Range<usize>> {
    let text = VisibleText::new(body, html);
    let prefix = if tok { TOK_PREFIX } else { PXPS_PREFIX };
    let (first, last) = find_tag_visible(&text, prefix)?;
    Some(text.bytes(first, last))
}

/// Widens `range` over elements that enclose exactly it (and whitespace), so that removing
/// a block removes its now empty wrapper too.
fn widen_over_wrappers(body: &str, mut range: Range<usize>) -> Range<usize> {
    loop {
        let before = body[..range.start].trim_end();
        let after = body[range.end..].trim_start();
        if !before.ends_with('>') {
            return range;
        }
        let Some(lt) = before.rfind('<') else {
            return range;
        };
        let open = &before[lt + 1..before.len() - 1];
        if open.starts_with('/') || open.starts_with('!') || open.ends_with('/') {
            return range;
        }
        let name = element_name(open);
        if name.is_empty() || name.eq_ignore_ascii_case("body") || name.eq_ignore_ascii_case("html")
        {
            return range;
        }
        let close = format!("</{name}>");
        let closes = after
            .get(..close.len())
            .is_some_and(|c| c.eq_ignore_ascii_case(&close));
        if !closes {
            return range;
        }
        let after_start = body.len() - after.len();
        range = lt..after_start + close.len();
    }
}

/// Escapes plain text for HTML, line breaks as `<br>`.
fn text_to_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("<br>"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Which of our tags a block ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// `TOK:-…#`: the placeholder block of a deferred request.
    Tok,
    /// `PXPS:-…#`: the joining instructions of an alias.
    Pxps,
}

impl TagKind {
    fn prefix(self) -> &'static str {
        match self {
            TagKind::Tok => TOK_PREFIX,
            TagKind::Pxps => PXPS_PREFIX,
        }
    }
}

/// `body` with our block — the template text `shape` (when found starting before the tag)
/// and the first tag of `kind` — replaced by `new_html`: placeholder + TOK of a deferred
/// request, or old instructions + PXPS of a lost alias, by new instructions + PXPS. The tag
/// may sit inside the template text or follow it. The result is HTML; a plain-text body is
/// escaped around the new block.
pub fn replace_tagged_block(
    body: &str,
    html: bool,
    kind: TagKind,
    shape: &TemplateShape,
    new_html: &str,
) -> Result<String, BodyEditError> {
    let text = VisibleText::new(body, html);
    let (tag_first, tag_last) =
        find_tag_visible(&text, kind.prefix()).ok_or(BodyEditError::NoTag(kind.prefix()))?;
    let tag = text.bytes(tag_first, tag_last);
    // The byte ranges to remove, in order; the new block goes where the first one was.
    let mut block: Vec<Range<usize>> = Vec::with_capacity(2);
    match find_shape(&text, shape, tag_first) {
        // The tag is part of the template's text.
        Some((first, last)) if last >= tag_first => {
            let whole = text.bytes(first, last.max(tag_last));
            block.push(if html {
                widen_over_wrappers(body, whole)
            } else {
                whole
            });
        }
        Some((first, last)) => {
            let found = text.bytes(first, last);
            if !html {
                block.push(found.start..tag.end);
            } else if last + 1 == tag_first {
                // Nothing visible between them: one block.
                block.push(widen_over_wrappers(body, found.start..tag.end));
            } else {
                block.push(widen_over_wrappers(body, found));
                block.push(widen_over_wrappers(body, tag));
            }
        }
        None if html => block.push(widen_over_wrappers(body, tag)),
        None => block.push(tag),
    }
    let insert_at = block[0].start;
    let mut out = String::with_capacity(body.len() + new_html.len());
    let mut pos = 0;
    for (i, range) in block.iter().enumerate() {
        let kept = &body[pos..range.start];
        out.push_str(&if html {
            kept.to_owned()
        } else {
            text_to_html(kept)
        });
        if i == 0 && range.start == insert_at {
            out.push_str(new_html);
        }
        pos = range.end;
    }
    let rest = &body[pos..];
    out.push_str(&if html {
        rest.to_owned()
    } else {
        text_to_html(rest)
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLACEHOLDER: &str = "<div style=\"font-family:Calibri\">\nThis meeting will be hosted in a Virtual Meeting Room. Joining instructions will follow from \u{E000}.\n</div>";
    const INSTRUCTIONS: &str = "<div>Join at 8812345@vc.example.com</div><div>PXPS:-abc.def#</div>";

    fn replace_deferral_for_test(
        body: &str,
        html: bool,
        shape: &TemplateShape,
        new_html: &str,
    ) -> Result<String, BodyEditError> {
        replace_tagged_block(body, html, TagKind::Tok, shape, new_html)
    }

    #[test]
    fn old_instructions_holding_their_tag_are_replaced_whole() {
        let template = "<p>Join the meeting: \u{E000} or dial \u{E000}</p><p>\u{E000}</p><p>Need help? Call IT.</p>";
        let shape = TemplateShape::from_rendering(template, true);
        let old = "<p>Join the meeting: 88111@vc.example.com or dial 88111</p><p>PXPS:-old.mac#</p><p>Need help? Call IT.</p>";
        let body = format!("<p>Hello</p>{old}<p>Bye</p>");
        let out = replace_tagged_block(&body, true, TagKind::Pxps, &shape, INSTRUCTIONS)
            .expect("replaced");
        assert_eq!(out, format!("<p>Hello</p>{INSTRUCTIONS}<p>Bye</p>"));
    }

    fn shape() -> TemplateShape {
        TemplateShape::from_rendering(PLACEHOLDER, true)
    }

    fn as_inserted_by_the_pane() -> String {
        format!(
            "<p>Agenda: budget &amp; plans</p>{}<div style=\"font-family:monospace;font-size:8pt\">TOK:-eyJhbGciOi<br>JIUzI1NiJ9.e30<br>.sig#</div><br><p>Bye</p>",
            PLACEHOLDER.replace('\u{E000}', "addin.example.com")
        )
    }

    #[test]
    fn the_pane_block_is_replaced_as_a_whole() {
        let out =
            replace_deferral_for_test(&as_inserted_by_the_pane(), true, &shape(), INSTRUCTIONS)
                .expect("replaced");
        assert_eq!(
            out,
            format!("<p>Agenda: budget &amp; plans</p>{INSTRUCTIONS}<br><p>Bye</p>")
        );
    }

    #[test]
    fn a_body_outlook_rewrote_is_still_found() {
        // Outlook's Word engine: paragraphs, spans, entities and wrapped lines.
        let body = "<html><head><style>p{margin:0}</style></head><body>\
            <p class=MsoNormal><span>Agenda</span></p>\
            <p class=MsoNormal><span style='font-family:Calibri'>This meeting will be hosted in a\r\nVirtual&nbsp;Meeting Room. Joining instructions</span> <span>will follow from addin.example.com.</span></p>\
            <p class=MsoNormal><span style='font-size:8.0pt'>TOK:-eyJhbGciOi<o:p></o:p></span></p>\
            <p class=MsoNormal><span style='font-size:8.0pt'>JIUzI1NiJ9.e30.sig#<o:p></o:p></span></p>\
            </body></html>";
        let out = replace_deferral_for_test(body, true, &shape(), INSTRUCTIONS).expect("replaced");
        assert!(out.contains(INSTRUCTIONS), "{out}");
        assert!(!out.contains("TOK:-"), "{out}");
        assert!(!out.contains("Virtual&nbsp;Meeting"), "{out}");
        assert!(out.contains("<span>Agenda</span>"), "{out}");
        assert!(out.ends_with("</body></html>"), "{out}");
        // The result holds exactly one tag, the new one.
        let visible = VisibleText::new(&out, true).as_string();
        assert_eq!(visible.matches("PXPS:-").count(), 1);
        assert_eq!(visible.matches("TOK:-").count(), 0);
    }

    #[test]
    fn without_a_recognisable_placeholder_only_the_tag_goes() {
        let body = "<p>My own words</p><div>TOK:-a.b.c#</div><p>end</p>";
        let out = replace_deferral_for_test(body, true, &shape(), INSTRUCTIONS).expect("replaced");
        assert_eq!(out, format!("<p>My own words</p>{INSTRUCTIONS}<p>end</p>"));
    }

    #[test]
    fn text_between_placeholder_and_tag_is_kept() {
        let body = format!(
            "{}<p>keep me</p><div>TOK:-a.b.c#</div>",
            PLACEHOLDER.replace('\u{E000}', "localhost")
        );
        let out = replace_deferral_for_test(&body, true, &shape(), INSTRUCTIONS).expect("replaced");
        assert_eq!(out, format!("{INSTRUCTIONS}<p>keep me</p>"));
    }

    #[test]
    fn a_plain_text_body_becomes_html() {
        let body = "Hi <team> & co\nThis meeting will be hosted in a Virtual Meeting Room. Joining instructions will follow from h.example.\nTOK:-a.b\n.c#\n\nBye";
        let out = replace_deferral_for_test(body, false, &shape(), INSTRUCTIONS).expect("replaced");
        assert_eq!(
            out,
            format!("Hi &lt;team&gt; &amp; co<br>{INSTRUCTIONS}<br><br>Bye")
        );
    }

    #[test]
    fn a_body_without_a_tok_is_refused() {
        assert_eq!(
            replace_deferral_for_test("<p>PXPS:-a.b#</p>", true, &shape(), INSTRUCTIONS),
            Err(BodyEditError::NoTag("TOK:-"))
        );
    }

    #[test]
    fn a_placeholder_after_the_tag_is_not_taken() {
        let body = format!(
            "<div>TOK:-a.b.c#</div>{}",
            PLACEHOLDER.replace('\u{E000}', "x.example")
        );
        let out = replace_deferral_for_test(&body, true, &shape(), INSTRUCTIONS).expect("replaced");
        assert!(out.starts_with(INSTRUCTIONS), "{out}");
        assert!(out.contains("Virtual Meeting Room"), "{out}");
    }

    #[test]
    fn tag_ranges_cover_prefix_to_terminator() {
        let body = "<p>x</p><div>PXPS:-ab<br>c.d#</div>";
        let r = find_tag_range(body, true, false).expect("found");
        assert_eq!(&body[r], "PXPS:-ab<br>c.d#");
        assert_eq!(find_tag_range(body, true, true), None);
    }

    #[test]
    fn entities_and_hidden_elements_are_not_visible() {
        let t = VisibleText::new(
            "<head><title>T</title></head><!-- c --><script>x</script>a&amp;b &#x41;&#66; &bogus c",
            true,
        );
        assert_eq!(t.as_string(), "a&bAB&bogusc");
    }
}
