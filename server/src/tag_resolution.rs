//! What the mailbox processor does first with every meeting the resource
//! receives: find the meeting tag in the body and decide what it stands for.
//!
//! * `PXPS:-…#` → the alias it names, after checking that this integration's
//!   key issued it and that nobody edited it;
//! * `TOK:-…#` → a deferred request (management was down when the organizer
//!   clicked): the raw token is validated exactly like a live alias request,
//!   and the identity it proves is who the alias will be allocated for;
//! * anything else → a precise rejection, which becomes the
//!   `reject_invalid_alias_id` reply.

use vmr_protocol::tag::{find_tag, MeetingTag, PxpsId, TagError};

use crate::integration::Integration;
use crate::meeting_tag::TagCheckError;
use crate::token::{Identity, TokenError, TokenValidator};

/// A usable tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedTag {
    /// An alias allocated by this integration, intact.
    Alias(PxpsId),
    /// A deferred request whose token is valid.
    Deferred { identity: Identity, token: String },
}

/// Why a meeting's tag cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TagRejection {
    #[error("the meeting body carries no PXPS or TOK tag")]
    NoTag,
    #[error(transparent)]
    Malformed(#[from] TagError),
    #[error(transparent)]
    NotOurs(#[from] TagCheckError),
    #[error("the TOK tag's token is not valid: {0}")]
    InvalidToken(#[from] TokenError),
}

/// Finds and checks the tag of a meeting body (`html` says which kind of body)
/// as of `now_unix`.
pub async fn resolve(
    body: &str,
    html: bool,
    integration: &Integration,
    validator: &TokenValidator,
    now_unix: i64,
) -> Result<ResolvedTag, TagRejection> {
    match find_tag(body, html).ok_or(TagRejection::NoTag)?? {
        MeetingTag::Pxps(id) => {
            integration.tag_key.verify(&id)?;
            Ok(ResolvedTag::Alias(id))
        }
        MeetingTag::Tok(token) => {
            let identity = validator
                .validate_at(&integration.token_settings, &token, now_unix)
                .await?;
            Ok(ResolvedTag::Deferred { identity, token })
        }
    }
}
