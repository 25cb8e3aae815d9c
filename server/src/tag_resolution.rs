//! What the mailbox processor does first with every meeting the resource
//! receives: find the meeting tag in the body and decide what it stands for.
//!
//! * `PXPS:-…#` → the alias it names, after checking that this integration's
//!   key issued it and that nobody edited it;
//! * `TOK:-…#` → a deferred request (management was down when the organizer
//!   clicked): the deferral statement an edge minted ([`crate::deferral`]) is
//!   checked (signature, expiry, integration), its identity must be the
//!   meeting's organizer or one of the organizer's delegates, and its nonce is
//!   accepted for this meeting only — the same meeting may be processed again,
//!   another meeting carrying the same TOK is refused;
//! * anything else → a precise rejection, which becomes the
//!   `reject_invalid_alias_id` reply.

use vmr_protocol::tag::{find_tag, MeetingTag, PxpsId, TagError};

use crate::integration::Integration;
use vmr_core::deferral::{DeferralError, DeferralKeys, Statement};
use vmr_core::meeting_tag::TagCheckError;
use vmr_store::{Storage, StorageError};

/// A usable tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedTag {
    /// An alias allocated by this integration, intact.
    Alias(PxpsId),
    /// A deferred request, valid and accepted for this meeting.
    Deferred(Statement),
}

/// What the mailbox knows about the meeting whose body is being resolved.
#[derive(Debug, Clone, Copy)]
pub struct MeetingFacts<'a> {
    /// The meeting's UID (CleanGlobalObjectId).
    pub uid: &'a str,
    /// The organizer's SMTP address.
    pub organizer_email: &'a str,
    /// SMTP addresses of the organizer's delegates (may be empty).
    pub delegates: &'a [String],
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
    #[error("the TOK tag cannot be used: {0}")]
    InvalidDeferral(#[from] DeferralError),
    #[error("the TOK tag was issued for integration {0:?}, not this one")]
    OtherIntegration(String),
    #[error("the TOK tag was issued to {requester}, who is neither the organizer ({organizer}) nor one of the organizer's delegates")]
    NotOrganizer {
        requester: String,
        organizer: String,
    },
    #[error("the TOK tag was already used for another meeting")]
    Replayed,
    #[error("no deferral key is configured, so TOK tags cannot be checked")]
    NoDeferralKey,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Finds and checks the tag of a meeting body (`html` says which kind of body)
/// as of `now_unix`.
pub async fn resolve(
    body: &str,
    html: bool,
    integration: &Integration,
    deferral_keys: Option<&DeferralKeys>,
    storage: &Storage,
    meeting: MeetingFacts<'_>,
    now_unix: i64,
) -> Result<ResolvedTag, TagRejection> {
    match find_tag(body, html).ok_or(TagRejection::NoTag)?? {
        MeetingTag::Pxps(id) => {
            integration.tag_key.verify(&id)?;
            Ok(ResolvedTag::Alias(id))
        }
        MeetingTag::Tok(raw) => {
            let keys = deferral_keys.ok_or(TagRejection::NoDeferralKey)?;
            let statement = keys.verify(&raw, now_unix)?;
            if statement.integration != integration.config.id {
                return Err(TagRejection::OtherIntegration(statement.integration));
            }
            let requester = statement.email.as_deref().unwrap_or_default();
            let is_organizer = requester.eq_ignore_ascii_case(meeting.organizer_email);
            let is_delegate = meeting
                .delegates
                .iter()
                .any(|d| d.eq_ignore_ascii_case(requester));
            if requester.is_empty() || !(is_organizer || is_delegate) {
                return Err(TagRejection::NotOrganizer {
                    requester: statement
                        .email
                        .clone()
                        .unwrap_or_else(|| statement.user_id.clone()),
                    organizer: meeting.organizer_email.to_owned(),
                });
            }
            let first_use = storage
                .accept_deferral_nonce(
                    &statement.nonce,
                    &integration.config.id,
                    meeting.uid,
                    &statement.user_id,
                    now_unix,
                )
                .await?;
            if !first_use {
                return Err(TagRejection::Replayed);
            }
            Ok(ResolvedTag::Deferred(statement))
        }
    }
}
