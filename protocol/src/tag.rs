//! Meeting tags: the marker the pane leaves in a meeting body so the mailbox
//! processor knows which alias (or which deferred request) the meeting carries.
//!
//! * `PXPS:-<key id>-<alias uuid>-<mac>#` — an allocated alias. `key id` names
//!   the integration key (so a tag from another deployment is recognised as
//!   such), `mac` authenticates key id + uuid under that key. The MAC itself is
//!   computed and checked by the server; this module only handles the syntax.
//! * `TOK:-<raw token>#` — inserted when management was unreachable. The token
//!   is wrapped at [`TOK_WRAP_WIDTH`] characters per line.
//!
//! [`find_tag`] is the one parser for both. It is tolerant of what Outlook does
//! to bodies: HTML wrapping and tags splitting the text, `<br>`, `&nbsp;` and
//! other entities, soft line breaks and whitespace inside the tag, `x_`-prefixed
//! element ids in replies and forwards (the parser never relies on ids).

use std::fmt;

/// Prefix of an allocated-alias tag.
pub const PXPS_PREFIX: &str = "PXPS:-";
/// Prefix of a deferred (raw token) tag.
pub const TOK_PREFIX: &str = "TOK:-";
/// Terminator of both tags.
pub const TAG_END: char = '#';
/// Characters per line when a token is wrapped into a body.
pub const TOK_WRAP_WIDTH: usize = 64;
/// Length in hex digits of the key id part of a PXPS tag.
pub const KEY_ID_HEX: usize = 8;
/// Length in hex digits of the MAC part of a PXPS tag.
pub const MAC_HEX: usize = 32;

/// The identifying part of a `PXPS:-…#` tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PxpsId {
    /// Identifies the integration key that issued the tag (lowercase hex).
    pub key_id: String,
    /// The alias uuid, 32 lowercase hex digits (no dashes).
    pub alias_uuid: String,
    /// MAC over `key_id` and `alias_uuid` (lowercase hex).
    pub mac: String,
}

impl PxpsId {
    /// The bytes a MAC must cover for this id.
    pub fn mac_input(key_id: &str, alias_uuid: &str) -> String {
        format!("PXPS|{key_id}|{alias_uuid}")
    }

    /// The full tag, `PXPS:-…#`.
    pub fn to_tag(&self) -> String {
        format!(
            "{PXPS_PREFIX}{}-{}-{}{TAG_END}",
            self.key_id, self.alias_uuid, self.mac
        )
    }

    fn parse(id: &str) -> Result<Self, TagError> {
        let parts: Vec<&str> = id.split('-').collect();
        let [key_id, alias_uuid, mac] = parts.as_slice() else {
            return Err(TagError::Malformed(format!(
                "a PXPS id has three parts separated by '-', found {}",
                parts.len()
            )));
        };
        check_hex("key id", key_id, KEY_ID_HEX)?;
        check_hex("alias uuid", alias_uuid, 32)?;
        check_hex("MAC", mac, MAC_HEX)?;
        Ok(PxpsId {
            key_id: key_id.to_ascii_lowercase(),
            alias_uuid: alias_uuid.to_ascii_lowercase(),
            mac: mac.to_ascii_lowercase(),
        })
    }
}

fn check_hex(what: &str, s: &str, len: usize) -> Result<(), TagError> {
    if s.len() != len || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TagError::Malformed(format!(
            "the {what} must be {len} hex digits, found {:?}",
            s
        )));
    }
    Ok(())
}

/// A tag found in a meeting body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeetingTag {
    /// `PXPS:-…#`: an allocated alias.
    Pxps(PxpsId),
    /// `TOK:-…#`: the raw token, whitespace removed.
    Tok(String),
}

/// Why a tag-looking text in a body is not a usable tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagError {
    /// The prefix was found but no `#` ended the tag.
    Unterminated { prefix: &'static str },
    /// A character that cannot be part of the tag appeared before `#`.
    InvalidCharacter { prefix: &'static str, ch: char },
    /// The tag was terminated but its contents have the wrong shape.
    Malformed(String),
}

impl fmt::Display for TagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagError::Unterminated { prefix } => {
                write!(f, "the {prefix} tag is not terminated by '#'")
            }
            TagError::InvalidCharacter { prefix, ch } => {
                write!(f, "the {prefix} tag contains the character {ch:?}")
            }
            TagError::Malformed(why) => write!(f, "the meeting tag is malformed: {why}"),
        }
    }
}

impl std::error::Error for TagError {}

/// Builds the `TOK:-…#` tag for `token`, split into lines of
/// [`TOK_WRAP_WIDTH`] characters (the first line carries the prefix, the last
/// the terminator). Join the lines with `\n` (text) or `<br>` (HTML).
pub fn tok_tag_lines(token: &str) -> Vec<String> {
    let full = format!("{TOK_PREFIX}{token}{TAG_END}");
    let chars: Vec<char> = full.chars().collect();
    chars
        .chunks(TOK_WRAP_WIDTH)
        .map(|c| c.iter().collect())
        .collect()
}

/// Whether `body` (of the given kind) holds anything that starts like a tag.
/// The pane uses this to refuse a second allocation, even for a damaged tag.
pub fn has_tag_marker(body: &str, html: bool) -> bool {
    let plain = if html {
        html_to_plain(body)
    } else {
        body.to_string()
    };
    plain.contains(PXPS_PREFIX) || plain.contains(TOK_PREFIX)
}

/// Finds the first meeting tag in `body`. `html` says whether the body is HTML
/// (tags stripped and entities decoded first) or plain text.
///
/// Returns `None` when there is no tag prefix at all.
pub fn find_tag(body: &str, html: bool) -> Option<Result<MeetingTag, TagError>> {
    let plain = if html {
        html_to_plain(body)
    } else {
        body.to_string()
    };
    let pxps = plain.find(PXPS_PREFIX);
    let tok = plain.find(TOK_PREFIX);
    let (start, prefix) = match (pxps, tok) {
        (None, None) => return None,
        (Some(p), None) => (p, PXPS_PREFIX),
        (None, Some(t)) => (t, TOK_PREFIX),
        (Some(p), Some(t)) if p < t => (p, PXPS_PREFIX),
        (Some(_), Some(t)) => (t, TOK_PREFIX),
    };
    let rest = &plain[start + prefix.len()..];
    Some(read_tag(rest, prefix))
}

fn read_tag(rest: &str, prefix: &'static str) -> Result<MeetingTag, TagError> {
    let allowed = |c: char| {
        if prefix == PXPS_PREFIX {
            c.is_ascii_hexdigit() || c == '-'
        } else {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
        }
    };
    let mut id = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c == TAG_END {
            return if prefix == PXPS_PREFIX {
                PxpsId::parse(&id).map(MeetingTag::Pxps)
            } else if id.split('.').count() == 3 && !id.contains("..") {
                Ok(MeetingTag::Tok(id))
            } else {
                Err(TagError::Malformed(
                    "a TOK tag must hold a JWT (three dot-separated parts)".into(),
                ))
            };
        }
        if is_break(c) {
            continue;
        }
        // Quoted-printable style soft line break: "=" at the end of a line.
        if c == '=' && chars.peek().is_some_and(|n| *n == '\r' || *n == '\n') {
            continue;
        }
        if !allowed(c) {
            return Err(TagError::InvalidCharacter { prefix, ch: c });
        }
        id.push(c);
    }
    Err(TagError::Unterminated { prefix })
}

/// Whitespace Outlook may put inside a wrapped tag.
fn is_break(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{200b}' | '\u{feff}' | '\u{ad}')
}

/// Elements whose content is not visible text (skipped up to their end tag).
const HIDDEN_ELEMENTS: &[&str] = &["style", "head", "script"];
/// Elements that start or end a line of visible text.
const BREAKING_ELEMENTS: &[&str] = &[
    "br",
    "p",
    "div",
    "tr",
    "li",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "blockquote",
];

/// Turns an HTML body into its visible text: elements removed (block
/// elements and `<br>` become line breaks), comments, `<style>`, `<head>` and
/// `<script>` dropped, character references decoded. Runs in time linear in
/// the length of `html`.
pub fn html_to_plain(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        decode_entities_into(&rest[..lt], &mut out);
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |e| &after[e + 3..]);
            continue;
        }
        let Some(gt) = rest.find('>') else {
            // A stray '<' in text: keep it.
            decode_entities_into(rest, &mut out);
            rest = "";
            break;
        };
        let tag = &rest[1..gt];
        let bare = tag.trim_start_matches('/');
        let name = &bare[..bare
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(bare.len())];
        let is_one_of = |names: &[&str]| names.iter().any(|n| name.eq_ignore_ascii_case(n));
        rest = &rest[gt + 1..];
        if !tag.starts_with('/') && is_one_of(HIDDEN_ELEMENTS) {
            // Skip to just past the `>` of the first `</name` (any case);
            // without one the rest of the body is hidden.
            rest = find_closing(rest, name)
                .and_then(|i| rest[i..].find('>').map(|g| &rest[i + g + 1..]))
                .unwrap_or("");
            continue;
        }
        if is_one_of(BREAKING_ELEMENTS) {
            out.push('\n');
        }
    }
    decode_entities_into(rest, &mut out);
    out
}

/// Byte offset of the first `</name` in `text`, the name compared without
/// regard to ASCII case. Looks at each `</` once and never copies `text`, so
/// skipping every `<style>`, `<head>` and `<script>` block of a body costs
/// time linear in its length.
fn find_closing(text: &str, name: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find("</") {
        let at = from + i;
        let candidate = bytes.get(at + 2..at + 2 + name.len());
        if candidate.is_some_and(|c| c.eq_ignore_ascii_case(name.as_bytes())) {
            return Some(at);
        }
        from = at + 2;
    }
    None
}

fn decode_entities_into(text: &str, out: &mut String) {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest[1..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '#'))
            .map(|i| i + 1);
        let decoded = end.filter(|e| rest[*e..].starts_with(';')).and_then(|e| {
            let name = &rest[1..e];
            let ch = match name {
                "nbsp" => Some('\u{a0}'),
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => {
                    let num = name.strip_prefix('#')?;
                    let code = match num.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => num.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            }?;
            Some((ch, e + 1))
        });
        match decoded {
            Some((ch, len)) => {
                out.push(ch);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> PxpsId {
        PxpsId {
            key_id: "0a1b2c3d".into(),
            alias_uuid: "00112233445566778899aabbccddeeff".into(),
            mac: "ffeeddccbbaa99887766554433221100".into(),
        }
    }

    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLWJ5dGVzLWZvci10ZXN0aW5nLWxvbmdlci10aGFuLXNpeHR5LWZvdXItY2hhcnM";

    #[test]
    fn pxps_round_trips_in_text_and_html() {
        let tag = id().to_tag();
        let text = format!("Join the meeting\n\n{tag}\nmore");
        assert_eq!(find_tag(&text, false), Some(Ok(MeetingTag::Pxps(id()))));
        let html = format!("<div><p>Join</p><div id=\"x_vmr\"><span>{tag}</span></div></div>");
        assert_eq!(find_tag(&html, true), Some(Ok(MeetingTag::Pxps(id()))));
    }

    #[test]
    fn tolerates_outlook_mangling() {
        // Tag split by markup, an entity, a <br> and a soft line break.
        let html =
            "<p class=x_MsoNormal>PXPS:-0a1b2c3d-0011223344556677<b>8899aabbcc</b>ddeeff&#45;<br>\
                    ffeeddccbbaa99887766=\r\n554433221100&nbsp;#</p>";
        assert_eq!(find_tag(html, true), Some(Ok(MeetingTag::Pxps(id()))));
    }

    #[test]
    fn tok_wrapped_lines_are_rejoined() {
        let lines = tok_tag_lines(JWT);
        assert!(lines.len() > 1, "a real token spans several lines");
        assert!(lines.iter().all(|l| l.chars().count() <= TOK_WRAP_WIDTH));
        let text = format!("placeholder\n{}\n", lines.join("\n"));
        assert_eq!(
            find_tag(&text, false),
            Some(Ok(MeetingTag::Tok(JWT.into())))
        );
        let html = format!("<div>placeholder</div><div>{}</div>", lines.join("<br>"));
        assert_eq!(find_tag(&html, true), Some(Ok(MeetingTag::Tok(JWT.into()))));
    }

    #[test]
    fn no_tag_is_none() {
        assert_eq!(find_tag("<p>hello &amp; welcome</p>", true), None);
        assert!(!has_tag_marker("plain", false));
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            find_tag("PXPS:-0a1b2c3d-0011", false),
            Some(Err(TagError::Unterminated {
                prefix: PXPS_PREFIX
            }))
        );
        assert_eq!(
            find_tag("PXPS:-0a1b2c3d-zz#", false),
            Some(Err(TagError::InvalidCharacter {
                prefix: PXPS_PREFIX,
                ch: 'z'
            }))
        );
        let short = find_tag("PXPS:-0a1b2c3d-0011-22#", false);
        assert!(matches!(short, Some(Err(TagError::Malformed(m))) if m.contains("alias uuid")));
        let tok = find_tag("TOK:-abc#", false);
        assert!(matches!(tok, Some(Err(TagError::Malformed(m))) if m.contains("JWT")));
        assert!(has_tag_marker("TOK:-abc", false));
    }

    #[test]
    fn first_tag_wins() {
        let body = format!("TOK:-{JWT}# then {}", id().to_tag());
        assert_eq!(
            find_tag(&body, false),
            Some(Ok(MeetingTag::Tok(JWT.into())))
        );
    }

    #[test]
    fn html_to_plain_drops_style_and_comments() {
        let html = "<html><head><style>p{}</style></head><body><!-- c -->a&lt;b&gt;&#x41;&unknown;</body></html>";
        assert_eq!(html_to_plain(html), "a<b>A&unknown;");
    }
}
