//! Deferred meetings (a `TOK:-…#` tag) completed as their organizer.
//!
//! When management could not be reached, the pane put placeholder text and a TOK into the
//! meeting. The processor has since checked the TOK (signature, expiry, organizer or delegate,
//! used once), drawn the meeting's alias under a fixed id and stored the meeting as
//! `deferred` ([`super::processor`]). Each cycle this module finishes those meetings:
//!
//! 1. read the resource's item of the meeting again (gone: a newer item will be processed);
//! 2. find the organizer's own calendar item by its CleanGlobalObjectId, impersonating the
//!    organizer ([`Mailbox::organizer_item`]);
//! 3. unless it already carries the alias's `PXPS:-…#` tag (a crash after step 4), replace
//!    placeholder + TOK with the joining instructions + PXPS
//!    ([`vmr_core::body_edit::replace_deferral`]) and save it with `SendToAllAndSaveCopy`, so
//!    every attendee gets the update from the organizer ([`Mailbox::update_organizer_body`]);
//! 4. schedule the meeting with that alias: bind it, create the VMR and its windows
//!    ([`processor::accept_completed`]), without replying to the resource's old item, which
//!    the update of step 3 supersedes (Exchange refuses answers to outdated requests).
//!
//! The resource then receives the organizer's update, which names the same alias: the
//! processor accepts it — the organizer's one accept reply — without drawing another alias. Without the right to impersonate organizers,
//! or when the organizer's copy is gone or no longer carries the TOK, the meeting is declined
//! with the general-error reply and the operation log says why. Throttling and transient
//! failures stop the pass; the meeting stays deferred and is tried again next cycle.

use vmr_core::body_edit::replace_deferral;
use vmr_core::meeting::MeetingItem;
use vmr_exchange::mailbox::{Fetched, ItemRef, Mailbox, MailboxError};
use vmr_protocol::tag::{find_tag, MeetingTag};
use vmr_store::{MeetingRecord, StoredAlias};

use super::processor::{self, Processed};
use super::{CycleError, WorkerContext};
use crate::alias_service;

/// Deferred meetings completed per cycle (the rest wait for the next one).
const PER_CYCLE: u32 = 50;

/// Completes (or declines) the deferred meetings of the integration; how many were decided.
pub async fn complete_pending(
    ctx: &WorkerContext,
    mailbox: &dyn Mailbox,
) -> Result<usize, CycleError> {
    let pending = ctx
        .storage
        .deferred_meetings(&ctx.integration.config.id, PER_CYCLE)
        .await?;
    let mut decided = 0;
    for record in &pending {
        if let Processed::Changed { .. } = complete(ctx, mailbox, record).await? {
            decided += 1;
        }
    }
    Ok(decided)
}

/// Why a deferred meeting cannot be completed (becomes the general-error decline).
struct Refusal(String);

/// Completes one deferred meeting.
async fn complete(
    ctx: &WorkerContext,
    mailbox: &dyn Mailbox,
    record: &MeetingRecord,
) -> Result<Processed, CycleError> {
    let wanted = ItemRef {
        id: record.item_id.clone(),
        change_key: String::new(),
    };
    let item = match mailbox.fetch(std::slice::from_ref(&wanted)).await?.pop() {
        Some(Fetched::Meeting(item)) => *item,
        _ => {
            tracing::debug!(uid = %record.uid, "the deferred meeting's item is gone; waiting for a newer one");
            return Ok(Processed::Unchanged {
                why: "the deferred meeting's item is gone",
            });
        }
    };
    let alias = match &record.alias_id {
        Some(id) => ctx.storage.alias_by_id(id).await?,
        None => None,
    };
    let outcome = match alias {
        Some(alias) => update_organizer_copy(ctx, mailbox, &item, &alias).await?,
        None => Err(Refusal("the deferred meeting has no alias".into())),
    };
    let processed = match outcome {
        Ok(alias_id) => processor::accept_completed(ctx, &item, &alias_id).await?,
        Err(Refusal(detail)) => {
            tracing::warn!(uid = %item.uid, organizer = %item.organizer.email, %detail, "deferred meeting declined");
            processor::decline_deferred(ctx, &item, detail).await?
        }
    };
    Ok(processed)
}

/// Steps 2 and 3: the organizer's copy carries the alias's instructions and tag afterwards.
/// Mailbox failures worth retrying are errors; permanent ones are a [`Refusal`].
async fn update_organizer_copy(
    ctx: &WorkerContext,
    mailbox: &dyn Mailbox,
    item: &MeetingItem,
    alias: &StoredAlias,
) -> Result<Result<String, Refusal>, CycleError> {
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
        return Ok(Ok(alias.id.clone()));
    }
    let rendered = alias_service::instructions_for(
        &ctx.integration,
        alias,
        &item.subject,
        &item.organizer,
        &ctx.public_host,
    )
    .and_then(|instructions| {
        alias_service::placeholder_shape(&ctx.integration).map(|shape| (instructions, shape))
    });
    let (instructions, placeholder) = match rendered {
        Ok(r) => r,
        Err(e) => return refuse(format!("the joining instructions cannot be rendered: {e}")),
    };
    let body = match replace_deferral(
        &copy.body.content,
        copy.body.html,
        &placeholder,
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
            tracing::info!(uid = %item.uid, %organizer, alias = %alias.alias, "deferred meeting updated as its organizer");
            Ok(Ok(alias.id.clone()))
        }
        Err(e) => permanent(e, organizer),
    }
}

/// Sorts a mailbox failure acting as the organizer: permanent ones become a [`Refusal`]
/// saying what to fix, the rest stop the pass.
fn permanent(error: MailboxError, organizer: &str) -> Result<Result<String, Refusal>, CycleError> {
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
        other => Err(CycleError::Mailbox(other)),
    }
}

/// Whether `copy`'s body carries the tag of alias `alias_id` already.
fn carries_tag_of(copy: &MeetingItem, alias_id: &str) -> bool {
    matches!(
        find_tag(&copy.body.content, copy.body.html),
        Some(Ok(MeetingTag::Pxps(id))) if id.alias_uuid == alias_id
    )
}
