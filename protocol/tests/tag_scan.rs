//! Property and running-time tests of the meeting-tag parser
//! ([`find_tag`], [`has_tag_marker`], [`html_to_plain`]).
//!
//! * Generated bodies: HTML and plain-text bodies built from random markup,
//!   text, entities and hidden blocks (`<style>`, `<script>`, `<head>`,
//!   comments) that carry decoy tags, with or without one real tag that is
//!   itself mangled the way Outlook mangles bodies (markup inside it, `<br>`,
//!   entities, soft line breaks, zero-width characters, wrapped lines). The
//!   parser must find exactly the real tag when there is one and report none
//!   when there is none.
//! * A reference: the previous (quadratic) `html_to_plain`, kept here as the
//!   oracle, must agree with the library on arbitrary HTML-like input.
//! * Running time: bodies of 1 MiB built to hit the worst cases (a million
//!   bytes of `<style></style>` stalled the old parser) must each parse within
//!   a generous bound; a parser that rescans the rest of the body at every
//!   such element needs more than a minute for some of them.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::select;
use vmr_protocol::tag::{
    find_tag, has_tag_marker, html_to_plain, tok_tag_lines, MeetingTag, PxpsId, KEY_ID_HEX,
    MAC_HEX, PXPS_PREFIX, TAG_END, TOK_PREFIX, TOK_WRAP_WIDTH,
};

// ---------------------------------------------------------------------------
// Building bodies
// ---------------------------------------------------------------------------

/// A well-formed PXPS tag that only ever appears where a reader cannot see it.
const DECOY_PXPS: &str =
    "PXPS:-deadbeef-0123456789abcdef0123456789abcdef-fedcba9876543210fedcba9876543210#";
/// A well-formed TOK tag that only ever appears where a reader cannot see it.
const DECOY_TOK: &str = "TOK:-eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJkZWNveSJ9.c2lnbmF0dXJl#";

/// Markup that adds no visible character (allowed even inside a tag prefix).
const INVISIBLE: &[&str] = &[
    "<b>",
    "</b>",
    "<span lang=EN-US style='font-size:11.0pt'>",
    "</span>",
    "<font color=\"#1F497D\">",
    "</font>",
    "<o:p></o:p>",
    "<!-- x -->",
    "<!---->",
    "<style></style>",
    "<STYLE>b{}</STYLE>",
];

/// What Outlook may put between the characters of a tag after its prefix.
const HTML_BREAKS: &[&str] = &[
    "<br>",
    "<br />",
    "\r\n",
    "\n",
    " ",
    "\t",
    "&nbsp;",
    "&#8203;",
    "&#xFEFF;",
    "&#173;",
    "=\r\n",
    "=<br>",
    "</p><p class=x_MsoNormal>",
    "</div><div>",
];

/// The same for plain-text bodies (no markup, no entities).
const TEXT_BREAKS: &[&str] = &[
    " ", "\n", "\r\n", "\t", "=\r\n", "=\n", "\u{200b}", "\u{feff}", "\u{ad}", "\u{a0}",
];

/// Visible and invisible HTML around the tag; none holds a visible tag prefix.
const HTML_FILLER: &[&str] = &[
    " ",
    "\r\n",
    "<p class=x_MsoNormal>",
    "</p>",
    "<div id=\"x_vmr\">",
    "</div>",
    "<br>",
    "<table><tr><td>",
    "</td></tr></table>",
    "<a href=\"https://example.test/?a=1&amp;b=2#frag\">",
    "</a>",
    "<h2>",
    "</h2>",
    "&amp;",
    "&lt;",
    "&gt;",
    "&quot;",
    "&nbsp;",
    "&#x41;",
    "&#65;",
    "&unknown;",
    "&amp",
    "& ",
    "#",
    "=",
    "-",
    "PXPS",
    "TOK",
    "<b>",
    "</b>",
    "<!-- PXPS:-deadbeef-0123456789abcdef0123456789abcdef-fedcba9876543210fedcba9876543210# -->",
    "<style>p.x{color:red} /* PXPS:-deadbeef-0123456789abcdef0123456789abcdef-fedcba9876543210fedcba9876543210# */</style>",
    "<STYLE type=\"text/css\">TOK:-eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJkZWNveSJ9.c2lnbmF0dXJl#</STYLE >",
    "<script>var t = \"TOK:-eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJkZWNveSJ9.c2lnbmF0dXJl#\"; if (a < b && c > d) {}</script>",
    "<Script type=text/javascript>x = '<p>PXPS:-deadbeef-0123456789abcdef0123456789abcdef-fedcba9876543210fedcba9876543210#</p>'</sCrIpT>",
    "<head><meta charset=\"utf-8\"><title>PXPS:-deadbeef-0123456789abcdef0123456789abcdef-fedcba9876543210fedcba9876543210#</title><style>x{}</style></head>",
    "<style></style>",
    "<script></script>",
];

/// Plain-text filler; none holds a tag prefix.
const TEXT_FILLER: &[&str] = &[
    " ", "\n", "\r\n", "\t", "<p>", "&amp;", "a < b", "#", "=", "-", "PXPS", "TOK", "é", "\u{200b}",
];

/// Pieces of broken and unbroken markup for the comparison with the oracle.
const MARKUP_PIECES: &[&str] = &[
    "<",
    ">",
    "</",
    "<!--",
    "-->",
    "<style>",
    "</style>",
    "<STYLE x>",
    "</StYlE",
    "<script>",
    "</script >",
    "</SCRIPT>",
    "<head>",
    "</head>",
    "<HEAD>",
    "</head",
    "<br>",
    "<p>",
    "&amp;",
    "&#x",
    "&#",
    "&#12345678901;",
    "&#xD800;",
    "é",
    "\u{200b}",
    "PXPS:-",
    "TOK:-",
    "#",
];

/// Random choices for the mangling, read in a cycle; all zeros means none.
#[derive(Debug)]
struct Noise<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Noise<'_> {
    fn next(&mut self) -> u8 {
        if self.bytes.is_empty() {
            return 0;
        }
        let b = self.bytes[self.at % self.bytes.len()];
        self.at += 1;
        b
    }

    fn pick<'s>(&mut self, from: &[&'s str]) -> &'s str {
        from[usize::from(self.next()) % from.len()]
    }
}

/// The tag to hide in a body and what the parser must return for it.
#[derive(Debug, Clone)]
enum Planted {
    Pxps(PxpsId),
    Tok(String),
}

impl Planted {
    fn expected(&self) -> MeetingTag {
        match self {
            Planted::Pxps(id) => MeetingTag::Pxps(id.clone()),
            Planted::Tok(t) => MeetingTag::Tok(t.clone()),
        }
    }

    /// The tag's characters and the char positions where a line break must go
    /// (a TOK tag is wrapped as the pane wraps it).
    fn text(&self, wrap: bool) -> (String, Vec<usize>) {
        match self {
            Planted::Pxps(id) => (id.to_tag(), Vec::new()),
            Planted::Tok(token) => {
                let lines = tok_tag_lines(token);
                let mut breaks = Vec::new();
                if wrap {
                    let mut at = 0;
                    for line in &lines[..lines.len() - 1] {
                        at += line.chars().count();
                        breaks.push(at);
                    }
                }
                (lines.concat(), breaks)
            }
        }
    }

    fn prefix_len(&self) -> usize {
        match self {
            Planted::Pxps(_) => PXPS_PREFIX.len(),
            Planted::Tok(_) => TOK_PREFIX.len(),
        }
    }
}

/// Renders the planted tag into HTML, mangled as `noise` says.
fn tag_as_html(tag: &Planted, wrap: bool, noise: &mut Noise) -> String {
    let (text, breaks) = tag.text(wrap);
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        let in_id = i >= tag.prefix_len();
        if breaks.contains(&i) {
            out.push_str(noise.pick(HTML_BREAKS));
        } else {
            match noise.next() % 16 {
                12 | 14 if i > 0 => out.push_str(noise.pick(INVISIBLE)),
                13 | 15 if in_id => out.push_str(noise.pick(HTML_BREAKS)),
                _ => {}
            }
        }
        let mut c = c;
        // PXPS ids are case-insensitive hex; a TOK is copied verbatim.
        if in_id && matches!(tag, Planted::Pxps(_)) && c != TAG_END && noise.next() % 3 == 1 {
            c = c.to_ascii_uppercase();
        }
        match noise.next() % 8 {
            6 => out.push_str(&format!("&#{};", u32::from(c))),
            7 => out.push_str(&format!("&#x{:X};", u32::from(c))),
            _ => out.push(c),
        }
    }
    out
}

/// Renders the planted tag into plain text, mangled as `noise` says.
fn tag_as_text(tag: &Planted, wrap: bool, noise: &mut Noise) -> String {
    let (text, breaks) = tag.text(wrap);
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if breaks.contains(&i) || (i >= tag.prefix_len() && noise.next() % 8 == 7) {
            out.push_str(noise.pick(TEXT_BREAKS));
        }
        out.push(c);
    }
    out
}

fn planted() -> impl Strategy<Value = Planted> {
    let hex = |n: usize| {
        proptest::string::string_regex(&format!("[0-9a-f]{{{n}}}")).expect("a valid regex")
    };
    let pxps = (hex(KEY_ID_HEX), hex(32), hex(MAC_HEX)).prop_map(|(key_id, alias_uuid, mac)| {
        Planted::Pxps(PxpsId {
            key_id,
            alias_uuid,
            mac,
        })
    });
    let part = "[A-Za-z0-9_-]{4,90}";
    let tok = (part, part, part).prop_map(|(a, b, c)| Planted::Tok(format!("{a}.{b}.{c}")));
    prop_oneof![pxps, tok]
}

fn words_or(filler: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    let piece = prop_oneof![
        2 => "[a-z]{1,8}",
        3 => select(filler).prop_map(str::to_string),
    ];
    prop::collection::vec(piece, 0..30)
}

/// A body: filler, maybe a mangled tag, more filler (which may hold decoys).
#[derive(Debug, Clone)]
struct BodyCase {
    before: Vec<String>,
    tag: Option<Planted>,
    wrap: bool,
    after: Vec<String>,
    noise: Vec<u8>,
}

fn body_case(filler: &'static [&'static str]) -> impl Strategy<Value = BodyCase> {
    (
        words_or(filler),
        prop::option::weighted(0.8, planted()),
        any::<bool>(),
        words_or(filler),
        prop::collection::vec(any::<u8>(), 0..256),
    )
        .prop_map(|(before, tag, wrap, after, noise)| BodyCase {
            before,
            tag,
            wrap,
            after,
            noise,
        })
}

impl BodyCase {
    fn render(&self, html: bool) -> String {
        let mut noise = Noise {
            bytes: &self.noise,
            at: 0,
        };
        let mut body = self.before.concat();
        if let Some(tag) = &self.tag {
            body.push_str(&if html {
                tag_as_html(tag, self.wrap, &mut noise)
            } else {
                tag_as_text(tag, self.wrap, &mut noise)
            });
        }
        body.push_str(&self.after.concat());
        body
    }
}

// ---------------------------------------------------------------------------
// The previous html_to_plain, as an oracle
// ---------------------------------------------------------------------------

/// `html_to_plain` as it was before the scan was made linear (it lowercased
/// the rest of the body at every `<style>`, `<head>` or `<script>`). Only for
/// small inputs.
fn reference_html_to_plain(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.push_str(&reference_decode(&rest[..lt]));
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |e| &after[e + 3..]);
            continue;
        }
        let Some(gt) = rest.find('>') else {
            out.push_str(&reference_decode(rest));
            rest = "";
            break;
        };
        let tag = &rest[1..gt];
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        rest = &rest[gt + 1..];
        if !tag.starts_with('/') && (name == "style" || name == "head" || name == "script") {
            let close = format!("</{name}");
            let lower = rest.to_ascii_lowercase();
            rest = lower
                .find(&close)
                .and_then(|i| rest[i..].find('>').map(|g| &rest[i + g + 1..]))
                .unwrap_or("");
            continue;
        }
        if matches!(
            name.as_str(),
            "br" | "p" | "div" | "tr" | "li" | "table" | "h1" | "h2" | "h3" | "h4" | "blockquote"
        ) {
            out.push('\n');
        }
    }
    out.push_str(&reference_decode(rest));
    out
}

/// The entity decoding of the previous version (unchanged since).
fn reference_decode(text: &str) -> String {
    let mut out = String::new();
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
    out
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// An HTML body yields its planted tag, and no tag when none was planted
    /// (the decoys in styles, scripts, heads and comments stay invisible).
    #[test]
    fn html_bodies_yield_exactly_the_planted_tag(case in body_case(HTML_FILLER)) {
        let body = case.render(true);
        let found = find_tag(&body, true);
        match &case.tag {
            Some(tag) => {
                prop_assert_eq!(found, Some(Ok(tag.expected())), "body: {:?}", body);
                prop_assert!(has_tag_marker(&body, true), "body: {:?}", body);
            }
            None => {
                prop_assert_eq!(found, None, "body: {:?}", body);
                prop_assert!(!has_tag_marker(&body, true), "body: {:?}", body);
            }
        }
    }

    /// A plain-text body yields its planted tag, and no tag when none was planted.
    #[test]
    fn text_bodies_yield_exactly_the_planted_tag(case in body_case(TEXT_FILLER)) {
        let body = case.render(false);
        let found = find_tag(&body, false);
        match &case.tag {
            Some(tag) => {
                prop_assert_eq!(found, Some(Ok(tag.expected())), "body: {:?}", body);
                prop_assert!(has_tag_marker(&body, false), "body: {:?}", body);
            }
            None => {
                prop_assert_eq!(found, None, "body: {:?}", body);
                prop_assert!(!has_tag_marker(&body, false), "body: {:?}", body);
            }
        }
    }

    /// On arbitrary HTML-like input (unbalanced markup, half entities,
    /// multi-byte characters, mixed-case element names) the text is the same
    /// as the previous implementation's, and parsing never panics.
    #[test]
    fn html_to_plain_matches_the_previous_implementation(
        pieces in prop::collection::vec(prop_oneof![
            "[a-zA-Z0-9 #;&=:/!-]{0,6}",
            select(MARKUP_PIECES).prop_map(str::to_string),
        ], 0..40),
    ) {
        let html = pieces.concat();
        prop_assert_eq!(html_to_plain(&html), reference_html_to_plain(&html), "html: {:?}", html);
        let _ = find_tag(&html, true);
        let _ = find_tag(&html, false);
        let _ = has_tag_marker(&html, true);
    }
}

// ---------------------------------------------------------------------------
// Running time
// ---------------------------------------------------------------------------

const MIB: usize = 1 << 20;

/// How long one 1 MiB body may take, unoptimised, on a loaded machine. The
/// linear scan needs well under a second for each (0.01–0.5 s in a debug
/// build on a 2-core machine running the other tests alongside); the old
/// scan needed 78 s for the `<style></style>` body there.
const BUDGET_PER_MIB: Duration = Duration::from_secs(5);

/// `unit` repeated to at least `bytes`, then `tail`.
fn repeated(unit: &str, bytes: usize, tail: &str) -> String {
    let mut s = unit.repeat(bytes.div_ceil(unit.len()));
    s.push_str(tail);
    s
}

/// Runs `f` on another thread and fails if it has not finished within
/// `budget` (without waiting for a stalled parser to finish).
fn within<T: Send + 'static>(
    what: &str,
    budget: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(budget) {
        Ok(v) => {
            eprintln!("{what}: {:?}", start.elapsed());
            v
        }
        Err(_) => panic!("{what} took longer than {budget:?}: the tag scan is not linear"),
    }
}

#[test]
fn adversarial_megabyte_bodies_parse_in_linear_time() {
    let tag = format!("<p>{DECOY_PXPS}</p>");
    let cases: Vec<(&str, String, bool)> = vec![
        (
            "<style></style>",
            repeated("<style></style>", MIB, ""),
            false,
        ),
        (
            "<STYLE></STYLE>",
            repeated("<STYLE></STYLE>", MIB, ""),
            false,
        ),
        (
            "<script></script>",
            repeated("<script></script>", MIB, ""),
            false,
        ),
        ("<head></head>", repeated("<head></head>", MIB, ""), false),
        (
            "<style></style> + tag",
            repeated("<style></style>", MIB, &tag),
            true,
        ),
        ("<style>x</styl", repeated("<style>x</styl", MIB, ""), false),
        (
            "<style> + </s",
            format!("<style>{}", repeated("</s", MIB, "")),
            false,
        ),
        ("<b>", repeated("<b>", MIB, &tag), true),
        ("<!---->", repeated("<!---->", MIB, &tag), true),
        ("&amp;", repeated("&amp;", MIB, &tag), true),
        ("&#", repeated("&#", MIB, ""), false),
        ("&a", repeated("&a", MIB, ""), false),
        ("<", repeated("<", MIB, ""), false),
        ("<<<<>", repeated("<<<<>", MIB, &tag), true),
        ("text", repeated("plain words ", MIB, &tag), true),
    ];
    let started = Instant::now();
    for (name, body, has_tag) in cases {
        let what = format!("find_tag on 1 MiB of {name}");
        let found = within(&what, BUDGET_PER_MIB, move || {
            (find_tag(&body, true), has_tag_marker(&body, true))
        });
        if has_tag {
            let Some(Ok(MeetingTag::Pxps(id))) = found.0 else {
                panic!("{what}: the tag at the end was not found: {:?}", found.0);
            };
            assert_eq!(id.to_tag(), DECOY_PXPS, "{what}");
            assert!(found.1, "{what}: has_tag_marker missed the tag");
        } else {
            assert_eq!(found, (None, false), "{what}: a tag was invented");
        }
    }
    // Text bodies take the same path without markup.
    let text = repeated("PXPS TOK:- ", MIB, "");
    let what = "find_tag on 1 MiB of text with a TOK prefix";
    let found = within(what, BUDGET_PER_MIB, move || find_tag(&text, false));
    assert!(matches!(found, Some(Err(_))), "{what}: {found:?}");
    let unterminated = format!("{TOK_PREFIX}{}", "a".repeat(MIB));
    let what = "find_tag on an unterminated 1 MiB TOK tag";
    let found = within(what, BUDGET_PER_MIB, move || find_tag(&unterminated, false));
    assert!(matches!(found, Some(Err(_))), "{what}: {found:?}");
    eprintln!("all adversarial bodies: {:?}", started.elapsed());
}

#[test]
fn decoys_are_well_formed_tags() {
    // The decoys only prove something if they would be found when visible.
    assert!(matches!(
        find_tag(DECOY_PXPS, false),
        Some(Ok(MeetingTag::Pxps(_)))
    ));
    assert!(matches!(
        find_tag(DECOY_TOK, false),
        Some(Ok(MeetingTag::Tok(_)))
    ));
    for f in HTML_FILLER.iter().chain(TEXT_FILLER) {
        if f.contains(PXPS_PREFIX) || f.contains(TOK_PREFIX) {
            assert!(
                f.contains(DECOY_PXPS) || f.contains(DECOY_TOK),
                "filler {f:?} holds a tag that is not a decoy"
            );
        }
    }
    assert!(TOK_WRAP_WIDTH > TOK_PREFIX.len());
}
