//! Change notifications for the watched folders: when to look at the mailbox again.
//!
//! [`ChangeListener::wait`] answers [`Wake::Changed`] as soon as the server reports a
//! `Created`/`Modified`/`Deleted`/`Moved`/`NewMail`/`Copied` event in a watched folder, or
//! [`Wake::Timeout`] when the wait ran out. Notifications are hints only: the worker always
//! reconciles with `SyncFolderItems` after a wake and after a timeout.
//!
//! # Streaming (preferred)
//!
//! `Subscribe` with a `StreamingSubscriptionRequest`, then `GetStreamingEvents` with a
//! `ConnectionTimeout` of [`ListenerOptions::connection_minutes`]. The HTTP response is chunked
//! and carries one SOAP envelope after another; the body is read chunk by chunk
//! (`reqwest::Response::chunk`), and complete envelopes are cut off the buffer with
//! [`response::split_streaming_documents`], so a document split across chunks is read once it
//! is whole. Keep-alive documents (no notifications) are ignored. `ConnectionStatus Closed`
//! means the server ended the connection: `GetStreamingEvents` is sent again on the same
//! subscription. The HTTP timeout of the connection is the connection timeout plus
//! [`STREAM_READ_MARGIN`].
//!
//! The connection stays open between two waits (events already on the wire are not lost and
//! no reconnect is needed), holding one of the client's concurrency permits. When the client's
//! `max_concurrency` is 1 it is closed when a wait returns, so the worker's own requests can
//! run; the subscription survives on the server and the next connection picks up from there.
//!
//! # When things go wrong
//!
//! * The subscription is gone (`ErrorSubscriptionNotFound`, `ErrorInvalidSubscription`,
//!   `ErrorReadEventsFailed`, `ErrorInvalidWatermark`, `ErrorMissedNotificationEvents`, …: an
//!   EWS restart, a mailbox move, an expired pull subscription): subscribe again and answer
//!   [`Wake::Changed`], since events may have been missed.
//! * `ErrorServerBusy` inside the stream: the client's shared hold is set from its back-off,
//!   and the connection is opened again after it.
//! * Streaming refused — the streaming `Subscribe` or `GetStreamingEvents` is refused outright
//!   (a server older than Exchange 2010 SP1 answers with a schema or version error;
//!   `ErrorExceededConnectionCount` when the hanging-connection limit is used up): fall back to
//!   a pull subscription (`Subscribe` with `PullSubscriptionRequest`, then `GetEvents` from the
//!   last watermark every [`ListenerOptions::pull_interval`]), and try streaming again after
//!   [`ListenerOptions::retry_refused_after`].
//! * Pull refused as well: no notifications; each wait simply sleeps until its timeout (and
//!   subscribing is tried again after `retry_refused_after`).
//! * A stream that ends or breaks without a `Closed` document is reopened, with a back-off that
//!   doubles (from [`MIN_RECONNECT_INTERVAL`] up to [`MAX_RECONNECT_INTERVAL`]) while
//!   connections end without delivering a document, so a misbehaving server cannot make us spin.
//! * Other failures (credentials, transient errors the client gave up on) are returned; the
//!   client has already backed off between its attempts.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::ews::client::{Affinity, EwsClient, OpenStream};
use crate::ews::request;
use crate::ews::response::{self, Event, EwsError, Notification};
use crate::mailbox::{Folder, MailboxError, Wake};

/// Added to the streaming connection timeout to get the HTTP timeout of the connection.
pub const STREAM_READ_MARGIN: Duration = Duration::from_secs(60);

/// The shortest pause before reopening a stream that ended without delivering anything.
pub const MIN_RECONNECT_INTERVAL: Duration = Duration::from_secs(1);

/// The longest such pause.
pub const MAX_RECONNECT_INTERVAL: Duration = Duration::from_secs(60);

/// Response codes meaning the subscription is gone (or its events are): subscribe again.
pub const SUBSCRIPTION_LOST_CODES: &[&str] = &[
    "ErrorSubscriptionNotFound",
    "ErrorInvalidSubscription",
    "ErrorReadEventsFailed",
    "ErrorInvalidWatermark",
    "ErrorMissedNotificationEvents",
    "ErrorExpiredSubscription",
    "ErrorSubscriptionUnsubscribed",
    "ErrorInvalidPullSubscriptionId",
    "ErrorSubscriptionAccessDenied",
];

/// Response codes that refuse a streaming connection outright: fall back to pull.
pub const STREAMING_REFUSED_CODES: &[&str] = &["ErrorExceededConnectionCount"];

/// How the listener subscribes and polls.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    /// Try streaming notifications first (else pull straight away).
    pub streaming: bool,
    /// `ConnectionTimeout` of `GetStreamingEvents`, minutes (1..=30).
    pub connection_minutes: u32,
    /// Lifetime of a pull subscription without `GetEvents`, minutes.
    pub pull_subscription_minutes: u32,
    /// Pause between two `GetEvents` when nothing happened.
    pub pull_interval: Duration,
    /// After streaming (or pull) was refused, how long before trying it again.
    pub retry_refused_after: Duration,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            streaming: true,
            connection_minutes: 30,
            pull_subscription_minutes: 30,
            pull_interval: Duration::from_secs(30),
            retry_refused_after: Duration::from_secs(3600),
        }
    }
}

/// Which way notifications currently come in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationMode {
    /// Nothing subscribed yet (or the subscription was lost).
    Unsubscribed,
    /// A streaming subscription.
    Streaming { subscription_id: String },
    /// A pull subscription and the last watermark seen.
    Pull {
        subscription_id: String,
        watermark: String,
    },
    /// Neither works; waits just sleep until `retry_at`.
    Unavailable,
}

/// An open streaming connection and the bytes read from it that are not a whole document yet.
#[derive(Debug)]
struct LiveStream {
    open: OpenStream,
    buffer: Vec<u8>,
    /// Whole documents read but not yet looked at.
    pending: VecDeque<Vec<u8>>,
    /// The server sent `ConnectionStatus Closed`: open a new connection after `pending`.
    closed: bool,
}

#[derive(Debug)]
struct ListenerState {
    mode: NotificationMode,
    stream: Option<LiveStream>,
    /// Streaming is not tried before this instant (it was refused).
    streaming_refused_until: Option<Instant>,
    /// Nothing is subscribed before this instant (both ways were refused).
    unavailable_until: Option<Instant>,
    /// Pause before the next stream is opened, and the earliest instant it may be opened.
    reconnect_interval: Duration,
    reconnect_not_before: Option<Instant>,
}

/// What reading the stream came to.
enum StreamOutcome {
    Wake(Wake),
    /// The subscription is gone.
    Lost(String),
    /// Streaming is refused: fall back to pull.
    Refused(MailboxError),
}

/// What one streamed document said.
#[derive(Debug, Default, PartialEq, Eq)]
struct DocumentSummary {
    changed: bool,
    closed: bool,
    /// A subscription-lost response code.
    lost: Option<String>,
    /// A streaming-refused response code.
    refused: Option<String>,
    /// `ErrorServerBusy` with its back-off.
    busy: Option<Option<Duration>>,
    /// Any other error in the document.
    other_error: Option<String>,
}

/// Waits for changes in a mailbox's watched folders (see the module docs).
#[derive(Debug)]
pub struct ChangeListener {
    client: EwsClient,
    folders: Vec<Folder>,
    options: ListenerOptions,
    state: tokio::sync::Mutex<ListenerState>,
}

impl ChangeListener {
    /// A listener on `folders` of the client's mailbox. Nothing is sent before the first wait.
    pub fn new(client: EwsClient, folders: Vec<Folder>, options: ListenerOptions) -> Self {
        ChangeListener {
            client,
            folders,
            options,
            state: tokio::sync::Mutex::new(ListenerState {
                mode: NotificationMode::Unsubscribed,
                stream: None,
                streaming_refused_until: None,
                unavailable_until: None,
                reconnect_interval: MIN_RECONNECT_INTERVAL,
                reconnect_not_before: None,
            }),
        }
    }

    /// How notifications come in right now.
    pub async fn mode(&self) -> NotificationMode {
        self.state.lock().await.mode.clone()
    }

    /// Waits up to `timeout` for a change (see the module docs). Concurrent waits queue.
    pub async fn wait(&self, timeout: Duration) -> Result<Wake, MailboxError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock().await;
        let result = self.wait_locked(&mut state, deadline).await;
        if self.client.options().max_concurrency <= 1 {
            state.stream = None;
        }
        result
    }

    async fn wait_locked(
        &self,
        state: &mut ListenerState,
        deadline: Instant,
    ) -> Result<Wake, MailboxError> {
        loop {
            match state.mode.clone() {
                NotificationMode::Unsubscribed => {
                    if state.unavailable_until.is_some_and(|t| t > Instant::now()) {
                        state.mode = NotificationMode::Unavailable;
                        continue;
                    }
                    state.mode = self.subscribe(state).await?;
                }
                NotificationMode::Unavailable => {
                    let retry_at = state.unavailable_until.unwrap_or(deadline);
                    if retry_at <= Instant::now() {
                        state.unavailable_until = None;
                        state.mode = NotificationMode::Unsubscribed;
                        continue;
                    }
                    tokio::time::sleep_until(retry_at.min(deadline)).await;
                    if Instant::now() >= deadline {
                        return Ok(Wake::Timeout);
                    }
                }
                NotificationMode::Streaming { subscription_id } => {
                    match self.read_stream(state, &subscription_id, deadline).await? {
                        StreamOutcome::Wake(wake) => return Ok(wake),
                        StreamOutcome::Lost(code) => {
                            tracing::warn!(code = %code, "the streaming subscription is gone; subscribing again");
                            return self.resubscribe_after_loss(state).await;
                        }
                        StreamOutcome::Refused(error) => {
                            tracing::warn!(error = %error, "streaming notifications refused; falling back to pull");
                            state.stream = None;
                            state.streaming_refused_until =
                                Some(Instant::now() + self.options.retry_refused_after);
                            state.mode = NotificationMode::Unsubscribed;
                        }
                    }
                }
                NotificationMode::Pull {
                    subscription_id,
                    watermark,
                } => match self
                    .poll(state, &subscription_id, watermark, deadline)
                    .await?
                {
                    StreamOutcome::Wake(wake) => return Ok(wake),
                    StreamOutcome::Lost(code) => {
                        tracing::warn!(code = %code, "the pull subscription is gone; subscribing again");
                        return self.resubscribe_after_loss(state).await;
                    }
                    StreamOutcome::Refused(error) => {
                        tracing::warn!(error = %error, "pull notifications refused");
                        state.unavailable_until =
                            Some(Instant::now() + self.options.retry_refused_after);
                        state.mode = NotificationMode::Unavailable;
                    }
                },
            }
        }
    }

    /// After a lost subscription: subscribe again at once (so changes made while the worker
    /// catches up are seen) and report a change, since events may have been missed.
    async fn resubscribe_after_loss(
        &self,
        state: &mut ListenerState,
    ) -> Result<Wake, MailboxError> {
        state.stream = None;
        state.mode = NotificationMode::Unsubscribed;
        match self.subscribe(state).await {
            Ok(mode) => state.mode = mode,
            Err(error) => {
                tracing::warn!(error = %error, "subscribing again failed; will retry on the next wait");
            }
        }
        Ok(Wake::Changed)
    }

    /// Subscribes: streaming unless it was refused lately, else pull, else nothing.
    async fn subscribe(&self, state: &mut ListenerState) -> Result<NotificationMode, MailboxError> {
        let ctx = self.client.context();
        let streaming_allowed = self.options.streaming
            && state
                .streaming_refused_until
                .is_none_or(|t| t <= Instant::now());
        if streaming_allowed {
            let envelope = request::subscribe_streaming(ctx, &self.folders);
            match self.subscription("Subscribe (streaming)", envelope).await {
                Ok(subscription) => {
                    tracing::info!("streaming notifications subscribed");
                    return Ok(NotificationMode::Streaming {
                        subscription_id: subscription.id,
                    });
                }
                Err(MailboxError::Refused { code, message }) => {
                    tracing::warn!(code = %code, message = %message, "streaming subscription refused; trying pull");
                    state.streaming_refused_until =
                        Some(Instant::now() + self.options.retry_refused_after);
                }
                Err(other) => return Err(other),
            }
        }
        let envelope =
            request::subscribe_pull(ctx, &self.folders, self.options.pull_subscription_minutes);
        match self.subscription("Subscribe (pull)", envelope).await {
            Ok(subscription) => {
                tracing::info!("pull notifications subscribed");
                Ok(NotificationMode::Pull {
                    subscription_id: subscription.id,
                    watermark: subscription.watermark.unwrap_or_default(),
                })
            }
            Err(MailboxError::Refused { code, message }) => {
                tracing::warn!(code = %code, message = %message, "pull subscription refused; waits will only time out");
                state.unavailable_until = Some(Instant::now() + self.options.retry_refused_after);
                Ok(NotificationMode::Unavailable)
            }
            Err(other) => Err(other),
        }
    }

    async fn subscription(
        &self,
        operation: &str,
        envelope: String,
    ) -> Result<response::Subscription, MailboxError> {
        let op = self
            .client
            .call_with(operation, envelope, Affinity::Notifications)
            .await?;
        response::parse_subscribe(&op).map_err(EwsError::into_mailbox_error)
    }

    /// Reads the streaming connection (opening it when needed) until a change, the deadline,
    /// or a reason to leave streaming.
    async fn read_stream(
        &self,
        state: &mut ListenerState,
        subscription_id: &str,
        deadline: Instant,
    ) -> Result<StreamOutcome, MailboxError> {
        loop {
            // Documents already read come first.
            while let Some(document) = state.stream.as_mut().and_then(|s| s.pending.pop_front()) {
                let summary = summarize_document(&document);
                state.reconnect_interval = MIN_RECONNECT_INTERVAL;
                if summary.closed {
                    if let Some(stream) = state.stream.as_mut() {
                        stream.closed = true;
                    }
                }
                if let Some(code) = summary.lost {
                    return Ok(StreamOutcome::Lost(code));
                }
                if let Some(code) = summary.refused {
                    return Ok(StreamOutcome::Refused(MailboxError::Refused {
                        code,
                        message: "GetStreamingEvents refused the connection".to_owned(),
                    }));
                }
                if let Some(back_off) = summary.busy {
                    let wait = back_off.unwrap_or(MIN_RECONNECT_INTERVAL);
                    tracing::warn!(back_off_ms = wait.as_millis() as u64, "ErrorServerBusy in the notification stream; reconnecting after the back-off");
                    self.client.hold_back(wait);
                    state.stream = None;
                    break;
                }
                if let Some(error) = summary.other_error {
                    tracing::warn!(error = %error, "an error document in the notification stream; reconnecting");
                    state.stream = None;
                    state.reconnect_not_before = Some(Instant::now() + state.reconnect_interval);
                    break;
                }
                if summary.changed {
                    return Ok(StreamOutcome::Wake(Wake::Changed));
                }
            }
            if state
                .stream
                .as_ref()
                .is_some_and(|s| s.closed && s.pending.is_empty())
            {
                tracing::debug!("the server closed the notification stream; reconnecting");
                state.stream = None;
            }
            if Instant::now() >= deadline {
                return Ok(StreamOutcome::Wake(Wake::Timeout));
            }
            if state.stream.is_none() {
                if let Some(not_before) = state.reconnect_not_before {
                    if not_before > Instant::now() {
                        tokio::time::sleep_until(not_before.min(deadline)).await;
                        if Instant::now() >= deadline {
                            return Ok(StreamOutcome::Wake(Wake::Timeout));
                        }
                    }
                }
                let minutes = self.options.connection_minutes.clamp(1, 30);
                let envelope = request::get_streaming_events(
                    self.client.context(),
                    &[subscription_id.to_owned()],
                    minutes,
                );
                let timeout = Duration::from_secs(u64::from(minutes) * 60) + STREAM_READ_MARGIN;
                let open = match self
                    .client
                    .open_stream("GetStreamingEvents", envelope, timeout)
                    .await
                {
                    Ok(open) => open,
                    Err(MailboxError::Refused { code, message }) => {
                        if SUBSCRIPTION_LOST_CODES.contains(&code.as_str()) {
                            return Ok(StreamOutcome::Lost(code));
                        }
                        return Ok(StreamOutcome::Refused(MailboxError::Refused {
                            code,
                            message,
                        }));
                    }
                    Err(other) => return Err(other),
                };
                // Until this connection delivers a document, a reconnect waits (doubling).
                state.reconnect_not_before = Some(Instant::now() + state.reconnect_interval);
                state.reconnect_interval =
                    (state.reconnect_interval * 2).min(MAX_RECONNECT_INTERVAL);
                state.stream = Some(LiveStream {
                    open,
                    buffer: Vec::new(),
                    pending: VecDeque::new(),
                    closed: false,
                });
            }
            let Some(stream) = state.stream.as_mut() else {
                continue;
            };
            match tokio::time::timeout_at(deadline, stream.open.response.chunk()).await {
                Err(_elapsed) => return Ok(StreamOutcome::Wake(Wake::Timeout)),
                Ok(Ok(Some(bytes))) => {
                    stream.buffer.extend_from_slice(&bytes);
                    let documents = response::split_streaming_documents(&mut stream.buffer);
                    if !documents.is_empty() {
                        state.reconnect_not_before = None;
                    }
                    stream.pending.extend(documents);
                }
                Ok(Ok(None)) => {
                    if !stream.buffer.is_empty() {
                        tracing::warn!(
                            bytes = stream.buffer.len(),
                            "the notification stream ended inside a document; reconnecting"
                        );
                    } else if !stream.closed {
                        tracing::debug!(
                            "the notification stream ended without Closed; reconnecting"
                        );
                    }
                    state.stream = None;
                }
                Ok(Err(error)) => {
                    tracing::warn!(
                        error = %error,
                        timed_out = error.is_timeout(),
                        "reading the notification stream failed; reconnecting"
                    );
                    state.stream = None;
                }
            }
        }
    }

    /// Polls the pull subscription until a change or the deadline.
    async fn poll(
        &self,
        state: &mut ListenerState,
        subscription_id: &str,
        mut watermark: String,
        deadline: Instant,
    ) -> Result<StreamOutcome, MailboxError> {
        loop {
            let envelope = request::get_events(self.client.context(), subscription_id, &watermark);
            let op = self
                .client
                .call_with("GetEvents", envelope, Affinity::Notifications)
                .await?;
            let notification = match response::parse_get_events(&op) {
                Ok(notification) => notification,
                Err(error) => {
                    if let Some(code) = error_code(&error) {
                        if SUBSCRIPTION_LOST_CODES.contains(&code) {
                            return Ok(StreamOutcome::Lost(code.to_owned()));
                        }
                    }
                    return match error.into_mailbox_error() {
                        refused @ MailboxError::Refused { .. } => {
                            Ok(StreamOutcome::Refused(refused))
                        }
                        other => Err(other),
                    };
                }
            };
            if let Some(last) = &notification.last_watermark {
                watermark = last.clone();
                state.mode = NotificationMode::Pull {
                    subscription_id: subscription_id.to_owned(),
                    watermark: watermark.clone(),
                };
            }
            if has_change(&notification) {
                return Ok(StreamOutcome::Wake(Wake::Changed));
            }
            if notification.more_events {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(StreamOutcome::Wake(Wake::Timeout));
            }
            tokio::time::sleep_until((now + self.options.pull_interval).min(deadline)).await;
        }
    }
}

/// Event kinds that report a change (`StatusEvent` is a keep-alive; `FreeBusyChangedEvent`
/// is not subscribed to).
pub const CHANGE_EVENTS: &[&str] = &[
    "CreatedEvent",
    "ModifiedEvent",
    "DeletedEvent",
    "MovedEvent",
    "CopiedEvent",
    "NewMailEvent",
];

/// Whether an event reports a change to an item or folder.
pub fn is_change(event: &Event) -> bool {
    CHANGE_EVENTS.contains(&event.kind.as_str())
}

fn has_change(notification: &Notification) -> bool {
    notification.events.iter().any(is_change)
}

fn error_code(error: &EwsError) -> Option<&str> {
    error.code()
}

/// Reads one streamed document.
fn summarize_document(document: &[u8]) -> DocumentSummary {
    let mut summary = DocumentSummary::default();
    let op = match response::parse_envelope(document) {
        Ok(op) => op,
        Err(error) => {
            match error_code(&error) {
                Some(code) if SUBSCRIPTION_LOST_CODES.contains(&code) => {
                    summary.lost = Some(code.to_owned())
                }
                Some("ErrorServerBusy") => {
                    summary.busy = Some(match &error {
                        EwsError::Fault { back_off, .. } | EwsError::Response { back_off, .. } => {
                            *back_off
                        }
                        EwsError::Malformed(_) => None,
                    })
                }
                _ => summary.other_error = Some(error.to_string()),
            }
            return summary;
        }
    };
    let parsed = response::parse_get_streaming_events(&op);
    summary.changed = parsed.notifications.iter().any(has_change);
    summary.closed = parsed.closed;
    for error in &parsed.errors {
        match error_code(error) {
            Some(code) if SUBSCRIPTION_LOST_CODES.contains(&code) => {
                summary.lost.get_or_insert_with(|| code.to_owned());
            }
            Some(code) if STREAMING_REFUSED_CODES.contains(&code) => {
                summary.refused.get_or_insert_with(|| code.to_owned());
            }
            Some("ErrorServerBusy") => {
                let back_off = match error {
                    EwsError::Fault { back_off, .. } | EwsError::Response { back_off, .. } => {
                        *back_off
                    }
                    EwsError::Malformed(_) => None,
                };
                summary.busy = Some(back_off);
            }
            _ => {
                summary.other_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    summary
}
