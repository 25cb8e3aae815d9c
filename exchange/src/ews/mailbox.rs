//! [`EwsMailbox`]: the resource mailbox ([`crate::mailbox::Mailbox`]) over EWS.
//!
//! Each trait method is one or a few EWS operations built by [`crate::ews::request`], sent by
//! the [`EwsClient`] (authentication, throttling, retries, concurrency) and read by
//! [`crate::ews::response`]:
//!
//! * [`Mailbox::sync`] — `SyncFolderItems` (`IdOnly`, at most [`SYNC_MAX_CHANGES`] changes, or
//!   fewer with [`EwsMailbox::with_sync_batch`]);
//! * [`Mailbox::fetch`] — `GetItem` in batches of [`FETCH_BATCH`], results in request order,
//!   `ErrorItemNotFound` as [`Fetched::Gone`];
//! * [`Mailbox::respond`] — `CreateItem` with an accept, decline or remove item;
//!   `ErrorItemNotFound` as [`MailboxError::NotFound`]; [`Mailbox::respond_all`] — the same
//!   for many replies, [`REPLY_BATCH`] per `CreateItem` of one message disposition;
//! * [`Mailbox::wait_for_changes`] — the [`ChangeListener`] (streaming, pull as fallback, a
//!   plain timeout when neither works);
//! * [`Mailbox::organizer_item`] — as the organizer (impersonation, [`EwsClient::impersonating`]):
//!   `FindItem` in their Calendar restricted to the meeting's CleanGlobalObjectId, then `GetItem`;
//! * [`Mailbox::update_organizer_body`] — as the organizer: `UpdateItem` of the body with
//!   `SendToAllAndSaveCopy`, so every attendee gets the update from the organizer.

use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use vmr_core::meeting::MeetingItem;

use crate::ews::client::EwsClient;
use crate::ews::request;
use crate::ews::response::{self, EwsError};
use crate::ews::streaming::{ChangeListener, ListenerOptions, NotificationMode};
use crate::mailbox::{
    Fetched, Folder, ItemRef, Mailbox, MailboxError, Reply, Response, SyncBatch, Wake,
};

/// `MaxChangesReturned` of one `SyncFolderItems` (the schema allows 1..=512).
pub const SYNC_MAX_CHANGES: u32 = 512;

/// Replies per `CreateItem` request.
pub const REPLY_BATCH: usize = 50;

/// Items per `GetItem` request.
pub const FETCH_BATCH: usize = 10;

/// A resource mailbox reached over EWS.
#[derive(Debug)]
pub struct EwsMailbox {
    client: EwsClient,
    listener: ChangeListener,
    sync_batch: u32,
}

impl EwsMailbox {
    /// The mailbox behind `client`, watching `folders` for changes.
    pub fn new(client: EwsClient, folders: Vec<Folder>) -> Self {
        Self::with_listener_options(client, folders, ListenerOptions::default())
    }

    /// As [`EwsMailbox::new`], with notification settings.
    pub fn with_listener_options(
        client: EwsClient,
        folders: Vec<Folder>,
        options: ListenerOptions,
    ) -> Self {
        let listener = ChangeListener::new(client.clone(), folders, options);
        EwsMailbox {
            client,
            listener,
            sync_batch: SYNC_MAX_CHANGES,
        }
    }

    /// Asks for at most `changes` (1..=512) changes per `SyncFolderItems`.
    pub fn with_sync_batch(mut self, changes: u32) -> Self {
        self.sync_batch = changes.clamp(1, SYNC_MAX_CHANGES);
        self
    }

    /// The transport (for its statistics and options).
    pub fn client(&self) -> &EwsClient {
        &self.client
    }

    /// How change notifications currently come in.
    pub async fn notification_mode(&self) -> NotificationMode {
        self.listener.mode().await
    }

    /// A client acting as `organizer`, or `Denied` when this mailbox is reached by delegate
    /// access (only impersonation reaches other users' calendars).
    fn as_organizer(&self, organizer: &str) -> Result<EwsClient, MailboxError> {
        self.client.impersonating(organizer).ok_or_else(|| {
            MailboxError::Denied(format!(
                "cannot act as the organizer {organizer}: the integration reaches the resource \
                 by delegate access; acting as organizers needs the ApplicationImpersonation \
                 role over them"
            ))
        })
    }

    async fn fetch_batch(&self, batch: &[ItemRef]) -> Result<Vec<Fetched>, MailboxError> {
        let envelope = request::get_items(self.client.context(), batch);
        let op = self.client.call("GetItem", envelope).await?;
        let results = response::parse_get_items(&op, batch);
        if results.len() != batch.len() {
            return Err(MailboxError::Transient(format!(
                "GetItem answered {} messages for {} items",
                results.len(),
                batch.len()
            )));
        }
        batch
            .iter()
            .zip(results)
            .map(|(item, result)| match result {
                Ok(fetched) => Ok(fetched),
                Err(EwsError::Response { code, .. }) if code == "ErrorItemNotFound" => {
                    Ok(Fetched::Gone {
                        id: item.id.clone(),
                    })
                }
                Err(error) => Err(error.into_mailbox_error()),
            })
            .collect()
    }
}

#[async_trait]
impl Mailbox for EwsMailbox {
    async fn sync(&self, folder: Folder, state: Option<&str>) -> Result<SyncBatch, MailboxError> {
        let envelope =
            request::sync_folder_items(self.client.context(), folder, state, self.sync_batch);
        let op = self.client.call("SyncFolderItems", envelope).await?;
        response::parse_sync_folder_items(&op).map_err(EwsError::into_mailbox_error)
    }

    async fn fetch(&self, items: &[ItemRef]) -> Result<Vec<Fetched>, MailboxError> {
        let mut fetched = Vec::with_capacity(items.len());
        for batch in items.chunks(FETCH_BATCH) {
            fetched.extend(self.fetch_batch(batch).await?);
        }
        Ok(fetched)
    }

    async fn respond(
        &self,
        item: &ItemRef,
        response: Response,
        body_html: &str,
    ) -> Result<(), MailboxError> {
        let envelope = request::respond(self.client.context(), item, response, body_html);
        let op = self.client.call("CreateItem", envelope).await?;
        match response::parse_create_item(&op) {
            Ok(()) => Ok(()),
            Err(EwsError::Response { code, message, .. }) if code == "ErrorItemNotFound" => {
                Err(MailboxError::NotFound(format!("{}: {message}", item.id)))
            }
            Err(error) => Err(error.into_mailbox_error()),
        }
    }

    async fn respond_all(
        &self,
        replies: &[Reply],
    ) -> Result<Vec<Result<(), MailboxError>>, MailboxError> {
        let mut results: Vec<Option<Result<(), MailboxError>>> =
            replies.iter().map(|_| None).collect();
        // One CreateItem per disposition and batch; results go back to their places.
        for disposition in ["SendAndSaveCopy", "SaveOnly"] {
            let indexes: Vec<usize> = (0..replies.len())
                .filter(|&i| request::disposition(replies[i].response) == disposition)
                .collect();
            for batch in indexes.chunks(REPLY_BATCH) {
                let items: Vec<(&ItemRef, Response, &str)> = batch
                    .iter()
                    .map(|&i| {
                        let r = &replies[i];
                        (&r.item, r.response, r.body_html.as_str())
                    })
                    .collect();
                let envelope = request::respond_many(self.client.context(), &items);
                let op = self.client.call("CreateItem", envelope).await?;
                let parsed = response::parse_create_items(&op, batch.len());
                for (&i, result) in batch.iter().zip(parsed) {
                    results[i] = Some(result.map_err(|error| match error {
                        EwsError::Response { code, message, .. } if code == "ErrorItemNotFound" => {
                            MailboxError::NotFound(format!("{}: {message}", replies[i].item.id))
                        }
                        error => error.into_mailbox_error(),
                    }));
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(MailboxError::Transient("reply not sent".into()))))
            .collect())
    }

    async fn wait_for_changes(&self, timeout: Duration) -> Result<Wake, MailboxError> {
        self.listener.wait(timeout).await
    }

    async fn organizer_item(
        &self,
        organizer: &str,
        uid: &str,
    ) -> Result<Option<MeetingItem>, MailboxError> {
        let goid = hex::decode(uid).map_err(|_| MailboxError::Refused {
            code: "InvalidUid".into(),
            message: format!("meeting uid {uid:?} is not a hex CleanGlobalObjectId"),
        })?;
        let client = self.as_organizer(organizer)?;
        let envelope = request::find_by_clean_global_object_id(
            client.context(),
            Folder::Calendar,
            &B64.encode(goid),
        );
        let op = client.call("FindItem", envelope).await?;
        let (found, _) = response::parse_find_items(&op).map_err(EwsError::into_mailbox_error)?;
        // The series master or single meeting (occurrences are not stored as items).
        let Some(Fetched::Meeting(item)) = found.into_iter().next() else {
            return Ok(None);
        };
        let id = ItemRef {
            id: item.item_id.clone(),
            change_key: item.change_key.clone(),
        };
        let envelope = request::get_items(client.context(), std::slice::from_ref(&id));
        let op = client.call("GetItem", envelope).await?;
        match response::parse_get_items(&op, std::slice::from_ref(&id))
            .into_iter()
            .next()
        {
            Some(Ok(Fetched::Meeting(full))) => Ok(Some(*full)),
            Some(Ok(_)) => Ok(None),
            Some(Err(EwsError::Response { code, .. })) if code == "ErrorItemNotFound" => Ok(None),
            Some(Err(error)) => Err(error.into_mailbox_error()),
            None => Err(MailboxError::Transient(
                "GetItem answered no message for the organizer's item".into(),
            )),
        }
    }

    async fn update_organizer_body(
        &self,
        organizer: &str,
        item: &ItemRef,
        body_html: &str,
    ) -> Result<ItemRef, MailboxError> {
        let client = self.as_organizer(organizer)?;
        let envelope = request::update_item_body(
            client.context(),
            item,
            body_html,
            request::BodyUpdateSend::ToAllAndSaveCopy,
        );
        let op = client.call("UpdateItem", envelope).await?;
        response::parse_update_item(&op).map_err(EwsError::into_mailbox_error)
    }
}
