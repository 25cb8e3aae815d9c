//! Deferred meetings (a `TOK:-…#` tag) completed as their organizer.
//!
//! When management could not be reached, the pane put placeholder text and a TOK into the
//! meeting. The processor has since checked the TOK (signature, expiry, organizer or delegate,
//! used once), drawn the meeting's alias under a fixed id and stored the meeting as
//! `deferred` ([`super::processor`]). Each cycle this module finishes those meetings:
//!
//! 1. read the resource's item of the meeting again (gone: a newer item will be processed;
//!    meanwhile the meeting goes to the back of the line, so that meetings whose item stays
//!    gone — deleted by hand — never keep the others from their turn);
//! 2. find the organizer's own calendar item by its CleanGlobalObjectId, impersonating the
//!    organizer;
//! 3. unless it already carries the alias's `PXPS:-…#` tag (a crash after step 4), replace
//!    placeholder + TOK with the joining instructions + PXPS and save it with
//!    `SendToAllAndSaveCopy`, so every attendee gets the update from the organizer
//!    ([`organizer_copy::rewrite`]);
//! 4. schedule the meeting with that alias: bind it, create the VMR and its windows
//!    ([`processor::accept_completed`]), without replying to the resource's old item, which
//!    the update of step 3 supersedes (Exchange refuses answers to outdated requests).
//!
//! The resource then receives the organizer's update, which names the same alias: the
//! processor accepts it — the organizer's one accept reply — without drawing another alias. Without the right to impersonate organizers,
//! or when the organizer's copy is gone or no longer carries the TOK, the meeting is declined
//! with the general-error reply and the operation log says why. Throttling and transient
//! failures stop the pass; the meeting stays deferred and is tried again next cycle.

use vmr_core::body_edit::TagKind;
use vmr_exchange::mailbox::{Fetched, ItemRef, Mailbox};
use vmr_store::MeetingRecord;

use super::organizer_copy::{self, Refusal};
use super::processor::{self, Processed};
use super::{CycleError, WorkerContext};

/// Deferred meetings looked at per cycle (the rest wait for the next one).
pub const PER_CYCLE: u32 = 50;

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
            ctx.storage
                .postpone_deferred_meeting(
                    &ctx.integration.config.id,
                    &record.uid,
                    ctx.clock.now_unix_ms(),
                )
                .await?;
            return Ok(Processed::Unchanged {
                why: "the deferred meeting's item is gone",
            });
        }
    };
    let alias = match &record.alias_id {
        Some(id) => ctx.storage.alias_by_id(id).await?,
        None => None,
    };
    let outcome = match &alias {
        Some(alias) => organizer_copy::rewrite(ctx, mailbox, &item, alias, TagKind::Tok)
            .await?
            .map(|()| alias.id.clone()),
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
