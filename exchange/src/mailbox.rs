//! The backend-neutral view of a resource mailbox that the scheduling worker drives.
//!
//! A backend (EWS today, Microsoft Graph next) answers four questions: what changed in a folder
//! since a sync state ([`Mailbox::sync`]), what those items hold ([`Mailbox::fetch`]), how to
//! reply to a meeting as the resource ([`Mailbox::respond`]), and when to look again
//! ([`Mailbox::wait_for_changes`]). Deferred meetings and recovery also act as the meeting's
//! organizer (impersonation): read the organizer's own calendar item
//! ([`Mailbox::organizer_item`]) and send all attendees an update with a new body
//! ([`Mailbox::update_organizer_body`]). Everything it returns is already in the shared meeting
//! model ([`vmr_core::meeting`]).

use std::time::Duration;

use async_trait::async_trait;
use vmr_core::meeting::MeetingItem;

/// The folders of the resource mailbox the worker watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Folder {
    /// Meeting requests, updates and cancellations arrive here.
    Inbox,
    /// The resource's calendar (tentative items appear here with `AutomateProcessing AutoUpdate`).
    Calendar,
}

impl Folder {
    /// Both folders, in the order the worker syncs them.
    pub const ALL: [Folder; 2] = [Folder::Inbox, Folder::Calendar];

    /// The name stored with the sync state (`inbox`, `calendar`; EWS's distinguished ids).
    pub fn as_str(self) -> &'static str {
        match self {
            Folder::Inbox => "inbox",
            Folder::Calendar => "calendar",
        }
    }
}

/// A reference to one item in the mailbox: its id and the version (change key) seen.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ItemRef {
    pub id: String,
    pub change_key: String,
}

/// One change reported by [`Mailbox::sync`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An item appeared or changed; fetch it to learn what it is.
    Upsert(ItemRef),
    /// An item left the folder (deleted or moved).
    Delete { id: String },
}

/// One page of changes and the sync state that covers them. The state must be stored only
/// after every change in the page has been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncBatch {
    pub changes: Vec<Change>,
    pub state: String,
    /// `false`: more changes are waiting; call again with `state` at once.
    pub complete: bool,
}

/// What [`Mailbox::fetch`] found for one requested item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// A meeting request, cancellation or calendar item, fully read.
    Meeting(Box<MeetingItem>),
    /// Something else (ordinary mail, a meeting response, a forward notification): its class.
    Other { id: String, item_class: String },
    /// The item is gone (moved or deleted since the sync).
    Gone { id: String },
}

/// The resource's answer to a meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    Accept,
    Decline,
    /// Take a cancelled meeting off the resource's calendar (EWS `RemoveItem`), no reply sent.
    Remove,
}

/// One reply of [`Mailbox::respond_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The meeting message or calendar item answered.
    pub item: ItemRef,
    pub response: Response,
    /// The reply's text (ignored for [`Response::Remove`]).
    pub body_html: String,
}

/// Why waiting for changes ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// The server reported changes (in these folders).
    Changed,
    /// Nothing happened within the wait.
    Timeout,
}

/// A failure talking to the mailbox, classified by what the worker should do next.
#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    /// The server asked us to slow down: wait at least this long before the next request.
    #[error("the server is busy (throttled); back off for {0:?}")]
    Throttled(Duration),
    /// A transient failure (503, timeout, connection reset, malformed reply): retry later.
    #[error("transient failure: {0}")]
    Transient(String),
    /// The stored sync state is no longer valid: start the folder from scratch.
    #[error("the sync state was refused ({0}); a full re-sync is needed")]
    InvalidSyncState(String),
    /// The item no longer exists.
    #[error("the item was not found: {0}")]
    NotFound(String),
    /// Credentials or permissions are wrong (a 401 after re-authenticating, impersonation denied).
    #[error("access denied: {0}")]
    Denied(String),
    /// A permanent error for this request (the server's response code and text).
    #[error("the server refused the request: {code}: {message}")]
    Refused { code: String, message: String },
}

/// A resource mailbox the worker can read and answer from.
#[async_trait]
pub trait Mailbox: Send + Sync {
    /// The changes in `folder` since `state` (`None`: from the beginning), one page at a time.
    async fn sync(&self, folder: Folder, state: Option<&str>) -> Result<SyncBatch, MailboxError>;

    /// Full properties of `items`, in the same order (the backend batches requests itself).
    async fn fetch(&self, items: &[ItemRef]) -> Result<Vec<Fetched>, MailboxError>;

    /// Replies to the meeting message or calendar item `item` as the resource, with `body_html`
    /// as the reply's text (ignored for [`Response::Remove`]).
    async fn respond(
        &self,
        item: &ItemRef,
        response: Response,
        body_html: &str,
    ) -> Result<(), MailboxError>;

    /// Sends several replies, batched as the backend allows; one result per reply, in order.
    /// The outer error is a failure of the whole exchange (throttled, unreachable): nothing
    /// is known to have been sent.
    async fn respond_all(
        &self,
        replies: &[Reply],
    ) -> Result<Vec<Result<(), MailboxError>>, MailboxError> {
        let mut results = Vec::with_capacity(replies.len());
        for reply in replies {
            results.push(
                self.respond(&reply.item, reply.response, &reply.body_html)
                    .await,
            );
        }
        Ok(results)
    }

    /// Waits up to `timeout` for the server to report a change in the watched folders
    /// (streaming notifications where the server has them).
    async fn wait_for_changes(&self, timeout: Duration) -> Result<Wake, MailboxError>;

    /// The organizer's own calendar item of the meeting `uid` (hex CleanGlobalObjectId), read
    /// as the organizer `organizer` (SMTP); `None` when their calendar has no such meeting.
    /// Needs the right to impersonate organizers ([`MailboxError::Denied`] otherwise).
    async fn organizer_item(
        &self,
        organizer: &str,
        uid: &str,
    ) -> Result<Option<MeetingItem>, MailboxError>;

    /// Replaces the body of the organizer's calendar item `item` with `body_html` and sends the
    /// update to every attendee, as the organizer; returns the item's new version.
    async fn update_organizer_body(
        &self,
        organizer: &str,
        item: &ItemRef,
        body_html: &str,
    ) -> Result<ItemRef, MailboxError>;
}
