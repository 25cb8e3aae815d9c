//! JSON bodies of the pane ↔ edge ↔ management HTTP API (`/api/v1/…`).
//!
//! The pane reads [`PaneConfig`] once at start, then posts an [`AliasRequest`]
//! with the Outlook token in `Authorization: Bearer …` and gets an
//! [`AliasResponse`] back. Every error answer is an [`ApiError`].

use serde::{Deserialize, Serialize};

/// Path of the pane configuration endpoint.
pub const PANE_CONFIG_PATH: &str = "/api/v1/pane-config";
/// Path of the alias allocation endpoint.
pub const ALIAS_PATH: &str = "/api/v1/alias";
/// Largest request body the API accepts, in bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How the pane obtains the token it sends with [`AliasRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthMethod {
    /// `Office.context.mailbox.getUserIdentityTokenAsync` (Exchange on-prem).
    ExchangeUserIdToken,
    /// Nested App Authentication access token (Microsoft 365).
    NaaToken,
}

/// What `GET /api/v1/pane-config` answers: the integration's pane texts and settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaneConfig {
    /// Integration this pane belongs to (echoed back in [`AliasRequest`]).
    pub integration: String,
    /// How the pane must authenticate.
    pub auth_method: AuthMethod,
    /// Show a debug log in the pane.
    pub debug_logs: bool,
    pub texts: PaneTexts,
    /// How to get an NAA token; present when `auth_method` is `NaaToken`.
    #[serde(default)]
    pub naa: Option<NaaPaneSettings>,
}

/// What the pane needs to obtain a Microsoft 365 token through Nested App
/// Authentication (MSAL.js inside Outlook).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NaaPaneSettings {
    /// The add-in's own (SPA) app registration.
    pub client_id: String,
    /// e.g. `https://login.microsoftonline.com/<tenant>`.
    pub authority: String,
    /// e.g. `api://<web api app id>/access_as_user`.
    pub scopes: Vec<String>,
    /// Where the pane loads MSAL.js (`msal-browser.min.js`) from.
    pub msal_js: String,
}

/// Task pane texts, admin-configurable per integration (each ≤ 250
/// characters). The defaults paraphrase Pexip's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaneTexts {
    pub title: String,
    pub description: String,
    pub button_label: String,
    pub success_heading: String,
    pub success_message: String,
    pub already_assigned_heading: String,
    pub already_assigned_message: String,
    pub general_error_heading: String,
    pub general_error_message: String,
    pub management_down_heading: String,
    pub management_down_message: String,
    pub unavailable_heading: String,
    pub unavailable_message: String,
}

impl PaneTexts {
    /// Every text with its config key, for validation.
    pub fn fields(&self) -> [(&'static str, &str); 13] {
        [
            ("title", &self.title),
            ("description", &self.description),
            ("button_label", &self.button_label),
            ("success_heading", &self.success_heading),
            ("success_message", &self.success_message),
            ("already_assigned_heading", &self.already_assigned_heading),
            ("already_assigned_message", &self.already_assigned_message),
            ("general_error_heading", &self.general_error_heading),
            ("general_error_message", &self.general_error_message),
            ("management_down_heading", &self.management_down_heading),
            ("management_down_message", &self.management_down_message),
            ("unavailable_heading", &self.unavailable_heading),
            ("unavailable_message", &self.unavailable_message),
        ]
    }
}

impl Default for PaneTexts {
    fn default() -> Self {
        let s = |t: &str| t.to_string();
        PaneTexts {
            title: s("Add a VMR"),
            description: s("This assigns a Virtual Meeting Room for your meeting"),
            button_label: s("Add a Single-use VMR"),
            success_heading: s("Success"),
            success_message: s("This meeting is now set up to be hosted in a Virtual Meeting \
                Room. Please note this conference is not scheduled until you select Send."),
            already_assigned_heading: s("VMR already assigned"),
            already_assigned_message: s("This meeting has already been set up to use a Virtual \
                Meeting Room. If this is a new meeting, select Send to schedule it."),
            general_error_heading: s("Error"),
            general_error_message: s(
                "There was a problem adding the joining instructions. Please try again.",
            ),
            management_down_heading: s("Cannot assign a VMR right now"),
            management_down_message: s("We are unable to assign a VMR at this time. Select Send \
                to schedule the meeting, and all attendees will be sent joining instructions later."),
            unavailable_heading: s("Add-in not available"),
            unavailable_message: s("The video meeting add-in is not available right now. \
                Please try again later."),
        }
    }
}

/// The kind of meeting body Outlook reported (`body.getTypeAsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyType {
    Html,
    Text,
}

/// `POST /api/v1/alias` body. The token travels in the `Authorization` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasRequest {
    /// Integration id from [`PaneConfig::integration`].
    pub integration: String,
    /// Meeting subject as currently typed (may be empty).
    #[serde(default)]
    pub subject: String,
    /// Organizer of the meeting when Outlook could tell (delegates schedule for others).
    #[serde(default)]
    pub organizer: Option<Person>,
}

/// Most characters [`AliasRequest::subject`] may hold (Outlook itself keeps
/// subjects far shorter).
pub const MAX_SUBJECT_CHARS: usize = 1024;
/// Most characters a [`Person::name`] in a request may hold.
pub const MAX_NAME_CHARS: usize = 256;
/// Most characters a [`Person::email`] in a request may hold (a 64-character
/// local part, `@` and a 255-character domain).
pub const MAX_EMAIL_CHARS: usize = 320;

impl AliasRequest {
    /// Checks the free-text fields before anything is stored: `subject`,
    /// `organizer.name` and `organizer.email` must not hold control
    /// characters (tab is allowed in the subject and the name; PostgreSQL
    /// refuses NUL in text outright) and must not exceed [`MAX_SUBJECT_CHARS`],
    /// [`MAX_NAME_CHARS`] and [`MAX_EMAIL_CHARS`]. `integration` is not
    /// checked here: it must equal a configured id, which is checked next.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_field("subject", &self.subject, MAX_SUBJECT_CHARS, true)?;
        if let Some(organizer) = &self.organizer {
            check_field("organizer.name", &organizer.name, MAX_NAME_CHARS, true)?;
            check_field("organizer.email", &organizer.email, MAX_EMAIL_CHARS, false)?;
        }
        Ok(())
    }
}

fn check_field(
    field: &'static str,
    value: &str,
    max_chars: usize,
    tab_allowed: bool,
) -> Result<(), FieldError> {
    let mut chars = 0;
    for (at, ch) in value.chars().enumerate() {
        if ch.is_control() && !(tab_allowed && ch == '\t') {
            return Err(FieldError {
                field,
                problem: FieldProblem::ControlCharacter { ch, at },
            });
        }
        chars = at + 1;
    }
    if chars > max_chars {
        return Err(FieldError {
            field,
            problem: FieldProblem::TooLong {
                max_chars,
                found_chars: chars,
            },
        });
    }
    Ok(())
}

/// A request field that cannot be accepted ([`AliasRequest::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path in the JSON body, e.g. `organizer.email`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: FieldProblem,
}

/// What is wrong with a request field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldProblem {
    /// The field holds the control character `ch` at character position `at`
    /// (counted from 0).
    ControlCharacter { ch: char, at: usize },
    /// The field has `found_chars` characters, more than `max_chars`.
    TooLong {
        max_chars: usize,
        found_chars: usize,
    },
}

impl FieldError {
    /// The stable [`ApiError::code`] for this problem.
    pub fn code(&self) -> &'static str {
        match self.problem {
            FieldProblem::ControlCharacter { .. } => "field_control_character",
            FieldProblem::TooLong { .. } => "field_too_long",
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let field = self.field;
        match self.problem {
            FieldProblem::ControlCharacter { ch, at } => write!(
                f,
                "`{field}` contains the control character U+{:04X} at character {at}",
                u32::from(ch)
            ),
            FieldProblem::TooLong {
                max_chars,
                found_chars,
            } => write!(
                f,
                "`{field}` is {found_chars} characters long; at most {max_chars} are allowed"
            ),
        }
    }
}

impl std::error::Error for FieldError {}

/// A name and SMTP address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub name: String,
    pub email: String,
}

/// Joining instructions rendered for both kinds of Outlook body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instructions {
    /// For bodies whose type is HTML; user data in it is escaped.
    pub html: String,
    /// For plain-text bodies.
    pub text: String,
}

/// `POST /api/v1/alias` success answer: `{"allocated": {…}}` or
/// `{"deferred": {…}}`. (Externally tagged: an internally tagged enum costs
/// the pane 6 KB of compressed wasm to decode.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AliasResponse {
    /// An alias was allocated: insert `instructions` and `tag`, add `resource`.
    Allocated {
        alias: String,
        numeric_alias: String,
        alias_uuid: String,
        /// The complete `PXPS:-…#` tag.
        tag: String,
        instructions: Instructions,
        resource: Person,
    },
    /// Management could not be reached: insert `placeholder` plus the tag
    /// `TOK:-<tok>#` (wrapped with `tag::tok_tag_lines`), add `resource`.
    /// `tok` is a statement the edge signed for the verified caller; it is
    /// never the caller's own token.
    Deferred {
        placeholder: Instructions,
        tok: String,
        resource: Person,
    },
}

/// Body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable, machine-readable code such as `token_expired`.
    pub code: String,
    /// What went wrong, for a human.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(subject: &str, name: &str, email: &str) -> AliasRequest {
        AliasRequest {
            integration: "default".into(),
            subject: subject.into(),
            organizer: Some(Person {
                name: name.into(),
                email: email.into(),
            }),
        }
    }

    #[test]
    fn ordinary_requests_pass() {
        let ok = request(
            "Weekly\tsync <b>&amp;</b> – ünïcødé 🎉",
            "Bob\tBoss",
            "bob@example.com",
        );
        assert_eq!(ok.validate(), Ok(()));
        let no_organizer = AliasRequest {
            organizer: None,
            ..request("", "", "")
        };
        assert_eq!(no_organizer.validate(), Ok(()));
        let longest = request(
            &"s".repeat(MAX_SUBJECT_CHARS),
            &"n".repeat(MAX_NAME_CHARS),
            &"e".repeat(MAX_EMAIL_CHARS),
        );
        assert_eq!(longest.validate(), Ok(()));
    }

    #[test]
    fn control_characters_are_named_with_their_field() {
        let nul = request("a\0b", "Bob", "bob@example.com").validate();
        assert_eq!(
            nul,
            Err(FieldError {
                field: "subject",
                problem: FieldProblem::ControlCharacter { ch: '\0', at: 1 },
            })
        );
        let e = nul.unwrap_err();
        assert_eq!(e.code(), "field_control_character");
        assert_eq!(
            e.to_string(),
            "`subject` contains the control character U+0000 at character 1"
        );
        for (subject, name, email, field) in [
            ("line\nbreak", "Bob", "bob@example.com", "subject"),
            ("é\u{85}", "Bob", "bob@example.com", "subject"),
            ("ok", "Bob\u{1b}[31m", "bob@example.com", "organizer.name"),
            ("ok", "Bob", "bob@example.com\r", "organizer.email"),
            ("ok", "Bob", "bob\t@example.com", "organizer.email"),
            ("ok", "Bob", "\u{7f}", "organizer.email"),
        ] {
            let got = request(subject, name, email).validate();
            assert!(
                matches!(&got, Err(FieldError { field: f, problem: FieldProblem::ControlCharacter { .. } }) if *f == field),
                "{subject:?} {name:?} {email:?}: {got:?}"
            );
        }
    }

    #[test]
    fn lengths_are_counted_in_characters() {
        let long = request(&"é".repeat(MAX_SUBJECT_CHARS + 1), "Bob", "b@x").validate();
        let e = long.unwrap_err();
        assert_eq!(
            e.problem,
            FieldProblem::TooLong {
                max_chars: MAX_SUBJECT_CHARS,
                found_chars: MAX_SUBJECT_CHARS + 1
            }
        );
        assert_eq!(e.code(), "field_too_long");
        assert_eq!(
            e.to_string(),
            format!(
                "`subject` is {} characters long; at most {MAX_SUBJECT_CHARS} are allowed",
                MAX_SUBJECT_CHARS + 1
            )
        );
        let name = request("", &"n".repeat(MAX_NAME_CHARS + 1), "b@x").validate();
        assert_eq!(name.map_err(|e| e.field), Err("organizer.name"));
        let email = request("", "Bob", &"e".repeat(MAX_EMAIL_CHARS + 1)).validate();
        assert_eq!(email.map_err(|e| e.field), Err("organizer.email"));
    }
}
