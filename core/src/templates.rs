//! Admin-editable Jinja2 templates (minijinja) with Pexip's names, variables
//! and (paraphrased) default texts.
//!
//! Each integration compiles its own [`TemplateSet`] at config load: every
//! template is parsed then, so a syntax error stops start-up with the template
//! name, line and column. HTML templates autoescape (a subject such as
//! `<script>` is shown as text); the plain-text ones (VMR name, description,
//! subject, alias description) do not. A fuel limit stops runaway templates.

use std::collections::BTreeMap;

use minijinja::{AutoEscape, Environment, Value};

/// Fuel (roughly, executed instructions) one rendering may use.
const FUEL: u64 = 50_000;

/// Whether a template produces HTML (autoescaped) or plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Html,
    Text,
}

/// Every template: name, kind, default source.
pub const TEMPLATES: &[(&str, Kind, &str)] = &[
    ("meeting_instructions", Kind::Html, DEFAULT_INSTRUCTIONS),
    ("placeholder_instructions", Kind::Html, DEFAULT_PLACEHOLDER),
    ("conference_name", Kind::Text, "{{ subject }} ({{ organizer_name }})"),
    (
        "conference_description",
        Kind::Text,
        "Scheduled conference booked by {{ organizer_email }}",
    ),
    ("conference_subject", Kind::Text, "{{ subject }}"),
    (
        "scheduled_alias_description",
        Kind::Text,
        "Scheduled conference booked by {{ organizer_email }}",
    ),
    (
        "accept_new_single_meeting",
        Kind::Html,
        "This meeting has been scheduled in a Virtual Meeting Room. Join it with {{ alias }} or {{ numeric_alias }}.",
    ),
    (
        "accept_edited_single_meeting",
        Kind::Html,
        "This meeting has been rescheduled. It still uses the Virtual Meeting Room {{ alias }} ({{ numeric_alias }}).",
    ),
    (
        "accept_new_recurring_series",
        Kind::Html,
        "This recurring series has been scheduled. Every meeting in it uses the Virtual Meeting Room {{ alias }} ({{ numeric_alias }}).",
    ),
    (
        "accept_edited_recurring_series",
        Kind::Html,
        "This recurring series has been rescheduled. Every meeting in it still uses {{ alias }} ({{ numeric_alias }}).",
    ),
    (
        "accept_edited_occurrence",
        Kind::Html,
        "This occurrence of the series has been rescheduled. It still uses {{ alias }} ({{ numeric_alias }}).",
    ),
    (
        "reject_alias_conflict",
        Kind::Html,
        "This meeting could not be scheduled: the alias {{ alias }} is already in use by another meeting. Please create a new meeting with the add-in.",
    ),
    (
        "reject_alias_deleted",
        Kind::Html,
        "This meeting could not be scheduled because its alias has been deleted. Please create a new meeting with the add-in.",
    ),
    (
        "reject_general_error",
        Kind::Html,
        "This meeting could not be scheduled. Please forward this message to your administrator. CorrelationID=\"{{ correlation_id }}\"",
    ),
    (
        "reject_invalid_alias_id",
        Kind::Html,
        "This meeting does not carry valid scheduling data. Please add the video meeting with the add-in and do not edit the inserted text.",
    ),
    (
        "reject_recurring_series_past",
        Kind::Html,
        "This recurring series cannot be scheduled because all of its meetings are in the past.",
    ),
    (
        "reject_single_meeting_past",
        Kind::Html,
        "This meeting cannot be scheduled because it is in the past.",
    ),
];

const DEFAULT_INSTRUCTIONS: &str = r#"<div style="font-family:Calibri,Arial,sans-serif;font-size:11pt">
<b>Join the video meeting</b><br>
From a video system or SIP client: {{ alias }}<br>
From a browser: <a href="https://{{ addin_server_domain }}/webapp/#/?conference={{ alias }}">https://{{ addin_server_domain }}/webapp/#/?conference={{ alias }}</a><br>
By phone: dial in, then enter {{ numeric_alias }}#<br>
</div>"#;

const DEFAULT_PLACEHOLDER: &str = r#"<div style="font-family:Calibri,Arial,sans-serif;font-size:11pt">
This meeting will be hosted in a Virtual Meeting Room. Joining instructions will be sent to you soon in a separate email.
</div>"#;

/// A template problem found at load or render time.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template `{name}` is not known; known templates: {known}")]
    Unknown { name: String, known: String },
    #[error("template `{name}`, line {line}, column {column}: {message}")]
    Syntax {
        name: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("template `{name}` is {len} characters long; the limit is 12288")]
    TooLong { name: String, len: usize },
    #[error("template `{name}` failed to render (line {line}): {message}")]
    Render {
        name: String,
        line: usize,
        message: String,
    },
}

/// The compiled templates of one integration.
#[derive(Debug)]
pub struct TemplateSet {
    env: Environment<'static>,
}

impl TemplateSet {
    /// Compiles the defaults with `overrides` (template name → source) on top.
    pub fn compile(overrides: &BTreeMap<String, String>) -> Result<TemplateSet, TemplateError> {
        for name in overrides.keys() {
            if !TEMPLATES.iter().any(|(n, _, _)| n == name) {
                return Err(TemplateError::Unknown {
                    name: name.clone(),
                    known: TEMPLATES
                        .iter()
                        .map(|(n, _, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        // Names carry no file extension, so decide escaping from our table.
        env.set_auto_escape_callback(|name| {
            let html = TEMPLATES
                .iter()
                .any(|(n, kind, _)| *n == name && *kind == Kind::Html);
            if html {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        for (name, _kind, default) in TEMPLATES {
            let source = overrides
                .get(*name)
                .cloned()
                .unwrap_or_else(|| default.to_string());
            let len = source.chars().count();
            if len > 12_288 {
                return Err(TemplateError::TooLong {
                    name: name.to_string(),
                    len,
                });
            }
            env.add_template_owned(name.to_string(), source)
                .map_err(|e| syntax_error(name, &e))?;
        }
        Ok(TemplateSet { env })
    }

    /// Renders template `name` with `ctx`.
    pub fn render(&self, name: &str, ctx: Value) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|_| TemplateError::Unknown {
                name: name.to_string(),
                known: String::new(),
            })?;
        template.render(ctx).map_err(|e| TemplateError::Render {
            name: name.to_string(),
            line: e.line().unwrap_or(0),
            message: e.to_string(),
        })
    }
}

fn syntax_error(name: &str, e: &minijinja::Error) -> TemplateError {
    let (line, column) = e
        .range()
        .and_then(|r| e.template_source().map(|src| position(src, r.start)))
        .unwrap_or((e.line().unwrap_or(0), 0));
    TemplateError::Syntax {
        name: name.to_string(),
        line,
        column,
        message: e.detail().unwrap_or("syntax error").to_string(),
    }
}

/// 1-based line and column of byte `offset` in `src`.
fn position(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Renders the VMR name (`conference_name`) and makes it unique: VMR names
/// must be unique on the video platform, so when `is_taken` says the name is
/// in use, a random number is appended (`Weekly (Ann) 48213`).
pub fn unique_vmr_name(
    templates: &TemplateSet,
    ctx: Value,
    is_taken: impl Fn(&str) -> bool,
) -> Result<String, TemplateError> {
    use rand::Rng;
    let base = templates.render("conference_name", ctx)?;
    let base = base.trim();
    let base = if base.is_empty() {
        "Scheduled conference"
    } else {
        base
    };
    if !is_taken(base) {
        return Ok(base.to_string());
    }
    let mut rng = rand::thread_rng();
    loop {
        let candidate = format!("{base} {}", rng.gen_range(10_000..100_000));
        if !is_taken(&candidate) {
            return Ok(candidate);
        }
    }
}

/// Plain-text version of rendered HTML for text bodies: visible text only,
/// lines trimmed, runs of blank lines collapsed.
pub fn html_to_text(html: &str) -> String {
    let plain = vmr_protocol::tag::html_to_plain(html).replace('\u{a0}', " ");
    let mut out = String::new();
    let mut blank = 0;
    for line in plain.lines().map(str::trim) {
        if line.is_empty() {
            blank += 1;
            if blank > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim_end().to_string() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    #[test]
    fn defaults_render_with_pexip_variables() {
        let set = TemplateSet::compile(&BTreeMap::new()).expect("defaults compile");
        let html = set
            .render(
                "meeting_instructions",
                context! { alias => "88123456@vc.example.com", numeric_alias => "88123456", addin_server_domain => "addin.example.com" },
            )
            .expect("renders");
        assert!(html.contains("88123456@vc.example.com"));
        assert!(html.contains("enter 88123456#"));
        let text = html_to_text(&html);
        assert!(text.starts_with("Join the video meeting\n"), "{text}");
        assert!(!text.contains('<'));
    }

    #[test]
    fn html_templates_escape_user_data() {
        let mut o = BTreeMap::new();
        o.insert(
            "meeting_instructions".to_string(),
            "<p>{{ subject }}</p>".to_string(),
        );
        let set = TemplateSet::compile(&o).expect("compiles");
        let out = set
            .render(
                "meeting_instructions",
                context! { subject => "<script>alert(1)</script>" },
            )
            .expect("renders");
        assert_eq!(out, "<p>&lt;script&gt;alert(1)&lt;&#x2f;script&gt;</p>");
        // Plain-text templates keep the text as typed.
        let name = set
            .render(
                "conference_name",
                context! { subject => "a<b", organizer_name => "Ann" },
            )
            .expect("renders");
        assert_eq!(name, "a<b (Ann)");
    }

    #[test]
    fn syntax_errors_name_template_line_and_column() {
        let mut o = BTreeMap::new();
        o.insert(
            "reject_general_error".to_string(),
            "line one\nline two {{ correlation_id \n".to_string(),
        );
        let err = TemplateSet::compile(&o).expect_err("must fail").to_string();
        assert!(err.contains("`reject_general_error`"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("column"), "{err}");
    }

    #[test]
    fn unknown_template_names_are_rejected() {
        let mut o = BTreeMap::new();
        o.insert("meeting_instruction".to_string(), "x".to_string());
        let err = TemplateSet::compile(&o).expect_err("must fail").to_string();
        assert!(err.contains("meeting_instruction") && err.contains("meeting_instructions"));
    }

    #[test]
    fn vmr_names_are_made_unique() {
        let set = TemplateSet::compile(&BTreeMap::new()).expect("defaults");
        let ctx = || context! { subject => "Weekly", organizer_name => "Ann" };
        let free = unique_vmr_name(&set, ctx(), |_| false).expect("renders");
        assert_eq!(free, "Weekly (Ann)");
        let taken = unique_vmr_name(&set, ctx(), |n| n == "Weekly (Ann)").expect("renders");
        assert!(taken.starts_with("Weekly (Ann) ") && taken.len() == "Weekly (Ann) 12345".len());
        let mut o = BTreeMap::new();
        o.insert("conference_name".to_string(), "{{ missing }}".to_string());
        let blank = TemplateSet::compile(&o).expect("compiles");
        assert_eq!(
            unique_vmr_name(&blank, ctx(), |_| false).expect("renders"),
            "Scheduled conference"
        );
    }

    #[test]
    fn fuel_stops_runaway_templates() {
        let mut o = BTreeMap::new();
        o.insert(
            "conference_name".to_string(),
            "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}"
                .to_string(),
        );
        let set = TemplateSet::compile(&o).expect("compiles");
        let err = set
            .render("conference_name", context! {})
            .expect_err("runs out of fuel")
            .to_string();
        assert!(err.contains("conference_name"), "{err}");
    }
}
