//! Rewriting the organizer's own copy of a meeting, as the organizer: the one way the
//! service changes what attendees see. Used when a deferred meeting gets its alias
//! ([`super::deferred`]: placeholder + TOK → instructions + PXPS) and when recovery replaces
//! an alias lost with the database (`vmr-scheduler recover`: old instructions + PXPS → new).
//!
//! The copy is found by the meeting's CleanGlobalObjectId, impersonating the organizer
//! ([`Mailbox::organizer_item`]); the block is found by its visible text
//! ([`vmr_core::body_edit`]); the update is saved with `SendToAllAndSaveCopy`
//! ([`Mailbox::update_organizer_body`]), so every attendee — the resource included — gets
//! it from the organizer. A copy that already carries the new alias's tag is left alone, so
//! a rewrite interrupted after the update is not sent twice.

use vmr_core::body_edit::{replace_tagged_block, TagKind};
use vmr_core::meeting::MeetingItem;
use vmr_exchange::mailbox::{ItemRef, Mailbox, MailboxError};
use vmr_protocol::tag::{find_tag, MeetingTag};
use vmr_store::StoredAlias;

use super::WorkerContext;
use crate::alias_service;

/// Why the organizer's copy cannot be rewritten (permanent: the meeting is declined, or
/// recovery reports it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// Makes the organizer's copy of `item` carry `alias`'s instructions in place of the block
/// that ends with a tag of `replacing`. `Ok(Err(_))`: cannot be done (say why); `Err(_)`:
/// the mailbox failed in a way worth retrying (throttled, transient).
pub async fn rewrite(
    ctx: &WorkerContext,
    mailbox: &dyn Mailbox,
    item: &MeetingItem,
    alias: &StoredAlias,
    replacing: TagKind,
) -> Result<Result<(), Refusal>, MailboxError> {
    let organizer = item.organizer.email.as_str();
    let refuse = |detail: String| Ok(Err(Refusal(detail)));
    let copy = match mailbox.organizer_item(organizer, &item.uid).await {
        Ok(Some(copy)) => copy,
        Ok(None) => {
            return refuse(format!(
                "the organizer's calendar ({organizer}) holds no meeting with UID {}",
                item.uid
            ))
        }
        Err(e) => return permanent(e, organizer),
    };
    if carries_tag_of(&copy, &alias.id) {
        return Ok(Ok(()));
    }
    let rendered = alias_service::instructions_for(
        &ctx.integration,
        alias,
        &item.subject,
        &item.organizer,
        &ctx.public_host,
    )
    .and_then(|instructions| {
        alias_service::block_shape(&ctx.integration, replacing).map(|shape| (instructions, shape))
    });
    let (instructions, shape) = match rendered {
        Ok(r) => r,
        Err(e) => return refuse(format!("the joining instructions cannot be rendered: {e}")),
    };
    let body = match replace_tagged_block(
        &copy.body.content,
        copy.body.html,
        replacing,
        &shape,
        &instructions.html,
    ) {
        Ok(body) => body,
        Err(e) => return refuse(format!("the organizer's copy of the meeting: {e}")),
    };
    let copy_ref = ItemRef {
        id: copy.item_id.clone(),
        change_key: copy.change_key.clone(),
    };
    match mailbox
        .update_organizer_body(organizer, &copy_ref, &body)
        .await
    {
        Ok(_) => {
            tracing::info!(uid = %item.uid, %organizer, alias = %alias.alias, "meeting updated as its organizer");
            Ok(Ok(()))
        }
        Err(e) => permanent(e, organizer),
    }
}

/// Sorts a mailbox failure acting as the organizer: permanent ones become a [`Refusal`]
/// saying what to fix, the rest are returned.
fn permanent(error: MailboxError, organizer: &str) -> Result<Result<(), Refusal>, MailboxError> {
    match error {
        MailboxError::Denied(why) => Ok(Err(Refusal(format!(
            "cannot update the meeting as its organizer {organizer}: {why}; grant the service \
             account the ApplicationImpersonation role over organizers \
             (New-ManagementRoleAssignment)"
        )))),
        MailboxError::NotFound(why) | MailboxError::Refused { message: why, .. } => {
            Ok(Err(Refusal(format!(
                "cannot update the meeting as its organizer {organizer}: {why}"
            ))))
        }
        other => Err(other),
    }
}

/// Whether `copy`'s body carries the tag of alias `alias_id` already.
fn carries_tag_of(copy: &MeetingItem, alias_id: &str) -> bool {
    matches!(
        find_tag(&copy.body.content, copy.body.html),
        Some(Ok(MeetingTag::Pxps(id))) if id.alias_uuid == alias_id
    )
}
