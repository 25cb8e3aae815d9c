//! The reply outbox: sends the replies that [`super::processor`] committed together with their
//! change, as the resource, and marks them sent.
//!
//! A crash can fall between "the server sent the reply" and "we marked it sent". Before
//! sending, the item the reply answers is therefore looked up again: Exchange moves an
//! answered meeting request out of the Inbox (its id no longer resolves) and records the
//! resource's response on a calendar item, so a reply that already went out is recognised and
//! not sent twice. Replies go in batches: one look-up of all their items, then as few
//! `respond_all` requests as the backend allows (EWS: one `CreateItem` per 50 replies).

use vmr_core::meeting::MyResponse;
use vmr_exchange::mailbox::{Fetched, ItemRef, Mailbox, MailboxError, Reply, Response};
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
        sent += send_batch(ctx, mailbox, pending).await?;
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

/// Sends one batch of replies: one look-up of all their items (those already answered are
/// only marked), then the rest in as few requests as the mailbox allows.
async fn send_batch(
    ctx: &WorkerContext,
    mailbox: &dyn Mailbox,
    pending: Vec<ReplyRecord>,
) -> Result<usize, SendError> {
    let now = ctx.clock.now_unix_ms();
    let mut candidates = Vec::with_capacity(pending.len());
    for reply in pending {
        match response_of(&reply) {
            Some(response) => candidates.push((reply, response)),
            None => {
                ctx.storage
                    .mark_reply_failed(&reply.id, "unknown response kind", true)
                    .await?;
            }
        }
    }
    let refs: Vec<ItemRef> = candidates
        .iter()
        .map(|(reply, _)| ItemRef {
            id: reply.item_id.clone(),
            change_key: reply.change_key.clone(),
        })
        .collect();
    // `fetch` answers in request order, one result per item.
    let found = mailbox.fetch(&refs).await?;
    if found.len() != refs.len() {
        return Err(MailboxError::Transient(format!(
            "looking up {} replied items gave {} results",
            refs.len(),
            found.len()
        ))
        .into());
    }
    let mut to_send = Vec::with_capacity(candidates.len());
    for (((reply, response), item), fetched) in candidates.into_iter().zip(refs).zip(&found) {
        if already_answered(fetched, response) {
            tracing::info!(uid = %reply.meeting_uid, "reply already answered in the mailbox");
            ctx.storage.mark_reply_sent(&reply.id, now).await?;
            continue;
        }
        to_send.push((
            reply.clone(),
            Reply {
                item,
                response,
                body_html: reply.body_html,
            },
        ));
    }
    if to_send.is_empty() {
        return Ok(0);
    }
    let replies: Vec<Reply> = to_send.iter().map(|(_, r)| r.clone()).collect();
    let results = mailbox.respond_all(&replies).await?;
    let mut sent = 0;
    let mut stop: Option<MailboxError> = None;
    for ((reply, _), result) in to_send.iter().zip(results) {
        match result {
            Ok(()) => {
                ctx.storage.mark_reply_sent(&reply.id, now).await?;
                tracing::info!(uid = %reply.meeting_uid, response = %reply.response, "reply sent");
                sent += 1;
            }
            // Gone between the look-up and the reply: answered, or superseded by the organizer.
            Err(MailboxError::NotFound(_)) => {
                ctx.storage.mark_reply_sent(&reply.id, now).await?;
            }
            // The organizer sent a newer version before this one was answered: that newer
            // request gets the answer; this one is done.
            Err(MailboxError::Refused { code, .. }) if code == OUT_OF_DATE => {
                tracing::info!(uid = %reply.meeting_uid, "request superseded before it was answered");
                ctx.storage
                    .mark_reply_failed(&reply.id, "superseded by a newer request", true)
                    .await?;
            }
            Err(e @ (MailboxError::Refused { .. } | MailboxError::Denied(_))) => {
                let give_up = reply.attempts + 1 >= MAX_ATTEMPTS;
                tracing::warn!(uid = %reply.meeting_uid, error = %e, give_up, "reply refused");
                ctx.storage
                    .mark_reply_failed(&reply.id, &e.to_string(), give_up)
                    .await?;
            }
            // Throttled or transient for this reply only: it stays pending.
            Err(e) => stop = Some(e),
        }
    }
    match stop {
        Some(e) => Err(e.into()),
        None => Ok(sent),
    }
}

/// Whether the mailbox shows the reply as given: the item has gone (an answered request
/// leaves the Inbox; a removed cancellation too), or the calendar item records our response.
fn already_answered(fetched: &Fetched, response: Response) -> bool {
    match fetched {
        Fetched::Gone { .. } => true,
        Fetched::Other { .. } => false,
        Fetched::Meeting(m) => matches!(
            (response, m.my_response),
            (Response::Accept, MyResponse::Accept) | (Response::Decline, MyResponse::Decline)
        ),
    }
}
