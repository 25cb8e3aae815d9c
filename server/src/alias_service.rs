//! The alias service: turns a validated alias request into a stored, unique
//! alias, its meeting tag and rendered joining instructions.
//!
//! A numeric alias is the integration's prefix followed by N digits drawn from
//! the operating system's CSPRNG. Uniqueness is enforced by the database
//! (`UNIQUE (integration, numeric_alias)` with `ON CONFLICT DO NOTHING`), so it
//! holds across restarts, across processes and for deleted aliases too; a
//! collision just draws again. The draw loop is bounded, and once the space is
//! nearly used up the service refuses with a clear error instead of looping.

use std::sync::atomic::{AtomicU64, Ordering};

use minijinja::context;
use uuid::Uuid;
use vmr_protocol::{AliasResponse, Instructions};

use crate::integration::Integration;
use vmr_auth::Identity;
use vmr_core::alias_space::draw;
pub use vmr_core::alias_space::space_size;
use vmr_core::templates::{html_to_text, TemplateError};
use vmr_store::{NewAlias, Storage, StorageError};

/// Draws before giving up on one request (each collision is one draw).
const MAX_DRAWS: u32 = 32;
/// Share of the alias space above which allocation is refused.
const REFUSE_AT: f64 = 0.95;
/// Share of the alias space above which a warning is logged on every allocation.
const WARN_AT: f64 = 0.80;

/// Why no alias was allocated.
#[derive(Debug, thiserror::Error)]
pub enum AllocateError {
    #[error(
        "the alias space of integration {integration} is nearly exhausted: {used} of {space} \
         aliases issued; lengthen alias_digits or change alias_prefix"
    )]
    SpaceExhausted {
        integration: String,
        used: u64,
        space: u64,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// Who asked, and for which meeting.
#[derive(Debug, Clone)]
pub struct AliasContext<'a> {
    pub identity: &'a Identity,
    pub subject: &'a str,
    /// When the request is handled, Unix seconds (recorded with the alias).
    pub now_unix: i64,
    /// Which path asked.
    pub via: Requested<'a>,
}

/// The path an alias request came by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested<'a> {
    /// The pane, with the identity's token (a fresh random alias id).
    Pane,
    /// The mailbox worker completing a deferred (TOK) meeting: the alias gets the fixed id
    /// `alias_id` ([`worker_alias_id`]), so a repeated completion finds it instead of
    /// drawing a second alias.
    DeferredTok { alias_id: &'a str },
    /// `vmr-scheduler recover` replacing an alias lost with the database (fixed id as above).
    Recovery { alias_id: &'a str },
}

/// Allocation counters for `/metrics` and status.
#[derive(Debug, Default)]
pub struct AliasStats {
    pub allocated: AtomicU64,
    pub collisions: AtomicU64,
    pub refused_exhausted: AtomicU64,
}

/// Allocates an alias for `integration` and renders its instructions.
pub async fn allocate(
    storage: &Storage,
    integration: &Integration,
    request: &AliasContext<'_>,
    public_host: &str,
    stats: &AliasStats,
) -> Result<AliasResponse, AllocateError> {
    let cfg = &integration.config;
    let space = space_size(cfg.alias_digits);
    let used = integration.issued.load(Ordering::Relaxed);
    let share = used as f64 / space as f64;
    if share >= REFUSE_AT {
        stats.refused_exhausted.fetch_add(1, Ordering::Relaxed);
        tracing::error!(integration = %cfg.id, used, space, "alias space nearly exhausted; refusing allocation");
        return Err(AllocateError::SpaceExhausted {
            integration: cfg.id.clone(),
            used,
            space,
        });
    }
    if share >= WARN_AT {
        tracing::warn!(integration = %cfg.id, used, space, "alias space is filling up");
    }

    let id = match request.via {
        Requested::Pane => Uuid::new_v4().simple().to_string(),
        Requested::DeferredTok { alias_id } | Requested::Recovery { alias_id } => {
            alias_id.to_owned()
        }
    };
    // The organizer recorded with the alias is who the token proves, never
    // what the request body claims (the mailbox later binds the meeting's real
    // organizer from Exchange).
    let organizer_email = request.identity.email.as_deref();
    let organizer_name = request.identity.display_name.as_deref();
    // How the requester proved who they are (recorded with the alias).
    let method = match (request.via, request.identity.method) {
        (Requested::DeferredTok { .. }, _) => "DEFERRED_TOK",
        (Requested::Recovery { .. }, _) => "RECOVERY",
        (Requested::Pane, vmr_protocol::AuthMethod::ExchangeUserIdToken) => {
            "EXCHANGE_USER_ID_TOKEN"
        }
        (Requested::Pane, vmr_protocol::AuthMethod::NaaToken) => "NAA_TOKEN",
    };
    // What admins see as the subject: the conference_subject template (it may
    // be blanked so that admins never see meeting subjects).
    let stored_subject = integration.templates.render(
        "conference_subject",
        context! {
            subject => request.subject,
            organizer_name => organizer_name,
            organizer_email => organizer_email,
        },
    )?;
    let mut draws = 0;
    let numeric_alias = loop {
        draws += 1;
        let candidate = draw(&cfg.alias_prefix, cfg.alias_digits);
        let alias = format!("{candidate}@{}", cfg.alias_domain);
        let row = NewAlias {
            id: &id,
            integration: &cfg.id,
            numeric_alias: &candidate,
            alias: &alias,
            created_at: request.now_unix,
            auth_method: method,
            requester_id: &request.identity.user_id,
            requester_email: request.identity.email.as_deref(),
            organizer_email,
            organizer_name,
            subject: Some(&stored_subject),
        };
        if storage.insert_alias_if_new(&row).await? {
            break candidate;
        }
        stats.collisions.fetch_add(1, Ordering::Relaxed);
        if draws >= MAX_DRAWS {
            // So many collisions in a row mean the space is fuller than our
            // count says (another process); recount and report.
            let used = storage.count_aliases(&cfg.id).await?;
            integration.issued.store(used, Ordering::Relaxed);
            stats.refused_exhausted.fetch_add(1, Ordering::Relaxed);
            return Err(AllocateError::SpaceExhausted {
                integration: cfg.id.clone(),
                used,
                space,
            });
        }
    };
    integration.issued.fetch_add(1, Ordering::Relaxed);
    stats.allocated.fetch_add(1, Ordering::Relaxed);

    let alias = format!("{numeric_alias}@{}", cfg.alias_domain);
    let tag = integration.tag_key.issue(&id).to_tag();
    let rendered = render_instructions(
        integration,
        &InstructionsVars {
            alias: &alias,
            numeric_alias: &numeric_alias,
            tag: &tag,
            public_host,
            subject: request.subject,
            organizer_name,
            organizer_email,
        },
    );
    let html = match rendered {
        Ok(html) => html,
        Err(e) => {
            // Nothing was handed out: take the row back so no alias is half-made.
            storage.forget_unissued_alias(&id).await?;
            integration.issued.fetch_sub(1, Ordering::Relaxed);
            stats.allocated.fetch_sub(1, Ordering::Relaxed);
            return Err(e.into());
        }
    };
    Ok(AliasResponse::Allocated {
        instructions: with_tag(&html, &tag),
        alias,
        numeric_alias,
        alias_uuid: id,
        tag,
        resource: integration.resource(),
    })
}

/// The fixed id of the alias the mailbox side draws itself for meeting `uid` of
/// `integration` — for a deferred (TOK) meeting, or by recovery for a lost alias — (32 hex
/// digits, like a random one): doing it twice finds the alias again.
pub fn worker_alias_id(integration: &str, uid: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("worker-alias\0{integration}\0{uid}").as_bytes());
    hex::encode(&digest[..16])
}

/// The joining instructions of `alias` with its tag (the `meeting_instructions` template),
/// for the mailbox worker, which writes them into the organizer's meeting itself.
pub fn instructions_for(
    integration: &Integration,
    alias: &vmr_store::StoredAlias,
    subject: &str,
    organizer: &vmr_core::meeting::Person,
    public_host: &str,
) -> Result<Instructions, TemplateError> {
    let tag = integration.tag_key.issue(&alias.id).to_tag();
    let html = render_instructions(
        integration,
        &InstructionsVars {
            alias: &alias.alias,
            numeric_alias: &alias.numeric_alias,
            tag: &tag,
            public_host,
            subject,
            organizer_name: Some(&organizer.name),
            organizer_email: Some(&organizer.email),
        },
    )?;
    Ok(with_tag(&html, &tag))
}

/// What the `meeting_instructions` template is given.
struct InstructionsVars<'a> {
    alias: &'a str,
    numeric_alias: &'a str,
    tag: &'a str,
    public_host: &'a str,
    subject: &'a str,
    organizer_name: Option<&'a str>,
    organizer_email: Option<&'a str>,
}

fn render_instructions(
    integration: &Integration,
    v: &InstructionsVars<'_>,
) -> Result<String, TemplateError> {
    integration.templates.render(
        "meeting_instructions",
        context! {
            alias => v.alias,
            numeric_alias => v.numeric_alias,
            alias_uuid => v.tag,
            meeting_tag => v.tag,
            addin_server_domain => v.public_host,
            subject => v.subject,
            organizer_name => v.organizer_name,
            organizer_email => v.organizer_email,
        },
    )
}

/// The shape of the block we put into meetings whose tag is of `kind` — the placeholder
/// text an edge inserted (TOK) or the joining instructions (PXPS) — to find it again in an
/// organizer's body (see [`vmr_core::body_edit::TemplateShape`]).
pub fn block_shape(
    integration: &Integration,
    kind: vmr_core::body_edit::TagKind,
) -> Result<vmr_core::body_edit::TemplateShape, TemplateError> {
    use vmr_core::body_edit::{TagKind, TemplateShape, VARIABLE_MARKER as M};
    let html = match kind {
        TagKind::Tok => integration.templates.render(
            "placeholder_instructions",
            context! { addin_server_domain => M },
        )?,
        TagKind::Pxps => render_instructions(
            integration,
            &InstructionsVars {
                alias: M,
                numeric_alias: M,
                tag: M,
                public_host: M,
                subject: M,
                organizer_name: Some(M),
                organizer_email: Some(M),
            },
        )?,
    };
    Ok(TemplateShape::from_rendering(&html, true))
}

/// Instructions in both body kinds, with the tag exactly once: templates may
/// place it themselves (`{{ alias_uuid }}`, as Pexip's do); otherwise it is
/// appended on its own line.
pub fn with_tag(html: &str, tag: &str) -> Instructions {
    let html = if html.contains(tag) {
        html.to_string()
    } else {
        format!("{html}\n<div>{tag}</div>")
    };
    Instructions {
        text: html_to_text(&html),
        html,
    }
}

/// The placeholder instructions for a deferred allocation.
pub fn placeholder(
    integration: &Integration,
    public_host: &str,
) -> Result<Instructions, TemplateError> {
    let html = integration.templates.render(
        "placeholder_instructions",
        context! { addin_server_domain => public_host },
    )?;
    Ok(Instructions {
        text: html_to_text(&html),
        html,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_appears_once() {
        let i = with_tag("<p>x</p>", "PXPS:-a#");
        assert_eq!(i.html.matches("PXPS:-a#").count(), 1);
        assert!(i.text.contains("PXPS:-a#"));
        let j = with_tag("<p>x PXPS:-a#</p>", "PXPS:-a#");
        assert_eq!(j.html, "<p>x PXPS:-a#</p>");
    }
}
