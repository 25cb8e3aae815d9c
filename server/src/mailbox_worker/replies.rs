//! The reply outbox: sends the replies that [`super::processor`] committed together with their
//! change, as the resource, and marks them sent.
//!
//! A crash can fall between "the server sent the reply" and "we marked it sent". Before
//! sending, the item the reply answers is therefore looked up again: Exchange moves an
//! answered meeting request out of the Inbox (its id no longer resolves) and records the
//! resource's response on a calendar item, so a reply that already went out is recognised and
//! not sent twice.

use vmr_core::meeting::MyResponse;
use vmr_exchange::mailbox::{Fetched, ItemRef, Mailbox, MailboxError, Response};
use vmr_store::{ReplyRecord, StorageError};

use super::WorkerContext;

/// Replies taken from the outbox per round.
const BATCH: i64 = 50;
/// Attempts before a reply the server keeps refusing is given up (and left in the outbox as
/// failed, visible to admins).
const MAX_ATTEMPTS: i64 = 5;

/// Exchange's answer to a reply to a meeting request a newer one replaced.
const OUT_OF_DATE: &str = "ErrorCalendarMeetingRequestIsOutOfDate";

/// Why sending stopped.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Mailbox(#[from] MailboxError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Sends every pending reply; returns how many went out. Stops at the first throttling or
/// transient mailbox failure (the worker backs off and calls again).
pub async fn send_pending(ctx: &WorkerContext, mailbox: &dyn Mailbox) -> Result<usize, SendError> {
    let integration = ctx.integration.config.id.as_str();
    let mut sent = 0;
    loop {
        let pending = ctx.storage.pending_replies(integration, BATCH).await?;
        if pending.is_empty() {
            return Ok(sent);
        }
        let count = pending.len();
        for reply in pending {
            if send_one(ctx, mailbox, &reply).await? {
                sent += 1;
            }
        }
        if (count as i64) < BATCH {
            return Ok(sent);
        }
    }
}

fn response_of(reply: &ReplyRecord) -> Option<Response> {
    match reply.response.as_str() {
        "accept" => Some(Response::Accept),
        "decline" => Some(Response::Decline),
        "remove" => Some(Response::Remove),
        _ => None,
    }
}

/// Sends one reply unless it already went out; `true` when it was sent now.
async fn send_one(
    ctx: &WorkerContext,
    mailbox: &dyn Mailbox,
    reply: &ReplyRecord,
) -> Result<bool, SendError> {
    let now = ctx.clock.now_unix_ms();
    let Some(response) = response_of(reply) else {
        ctx.storage
            .mark_reply_failed(&reply.id, "unknown response kind", true)
            .await?;
        return Ok(false);
    };
    let item = ItemRef {
        id: reply.item_id.clone(),
        change_key: reply.change_key.clone(),
    };
    if already_answered(mailbox, &item, response).await? {
        tracing::info!(uid = %reply.meeting_uid, "reply already answered in the mailbox");
        ctx.storage.mark_reply_sent(&reply.id, now).await?;
        return Ok(false);
    }
    match mailbox.respond(&item, response, &reply.body_html).await {
        Ok(()) => {
            ctx.storage.mark_reply_sent(&reply.id, now).await?;
            tracing::info!(uid = %reply.meeting_uid, response = %reply.response, "reply sent");
            Ok(true)
        }
        // Gone between the check and the reply: answered, or superseded by the organizer.
        Err(MailboxError::NotFound(_)) => {
            ctx.storage.mark_reply_sent(&reply.id, now).await?;
            Ok(false)
        }
        // The organizer sent a newer version before this one was answered: that newer request
        // gets the answer; this one is done.
        Err(MailboxError::Refused { code, .. }) if code == OUT_OF_DATE => {
            tracing::info!(uid = %reply.meeting_uid, "request superseded before it was answered");
            ctx.storage
                .mark_reply_failed(&reply.id, "superseded by a newer request", true)
                .await?;
            Ok(false)
        }
        Err(e @ (MailboxError::Refused { .. } | MailboxError::Denied(_))) => {
            let give_up = reply.attempts + 1 >= MAX_ATTEMPTS;
            tracing::warn!(uid = %reply.meeting_uid, error = %e, give_up, "reply refused");
            ctx.storage
                .mark_reply_failed(&reply.id, &e.to_string(), give_up)
                .await?;
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether the mailbox shows the reply as given: the item has gone (an answered request
/// leaves the Inbox; a removed cancellation too), or the calendar item records our response.
async fn already_answered(
    mailbox: &dyn Mailbox,
    item: &ItemRef,
    response: Response,
) -> Result<bool, MailboxError> {
    let fetched = mailbox.fetch(std::slice::from_ref(item)).await?;
    Ok(match fetched.first() {
        None | Some(Fetched::Gone { .. }) => true,
        Some(Fetched::Other { .. }) => false,
        Some(Fetched::Meeting(m)) => matches!(
            (response, m.my_response),
            (Response::Accept, MyResponse::Accept) | (Response::Decline, MyResponse::Decline)
        ),
    })
}
