//! The EWS transport for one mailbox: posts SOAP envelopes through an [`Authenticator`], caps
//! how many requests are in flight, obeys the server's throttling and retries what is worth
//! retrying, and turns everything else into a classified [`MailboxError`].
//!
//! [`EwsClient::call`] sends one envelope and returns the operation's response element (the
//! child of `soap:Body`) once the server accepted it. The caller then reads the per-message
//! results with [`crate::ews::response`]; the only per-message error handled here is the
//! in-band throttle (`ErrorServerBusy` inside a 200 response), because it concerns the whole
//! request, not one item.
//!
//! # Retry policy
//!
//! | What came back | What happens |
//! |---|---|
//! | SOAP fault `ErrorServerBusy` (HTTP 500) or a response message with `ErrorServerBusy` (HTTP 200) | Every request to this mailbox is held back until `max(BackOffMilliseconds, MIN_THROTTLE_BACK_OFF)` has passed (one shared "not before" instant), then the request is sent again. Without `BackOffMilliseconds`: 30 s ([`response::DEFAULT_BUSY_BACK_OFF`]). `ErrorInternalServerError` carrying a back-off counts as the same throttle. |
//! | HTTP 503 or 429 | Retried after `Retry-After` (seconds or an HTTP date; then shared like a throttle) or else after the exponential back-off. |
//! | HTTP 401 | [`Authenticator::invalidate`], sent again at once (not counted as an attempt); a second 401 in the same call is [`MailboxError::Denied`]. |
//! | HTTP 403 | [`MailboxError::Denied`]. |
//! | HTTP 500 with ASP.NET's "Server Error in '/EWS' Application" page, any other non-SOAP 500, 502, 504 | Transient: exponential back-off, then again. |
//! | 302 to `/ews/genericerrorpage.htm` | Transient (Exchange's way of reporting an internal error). |
//! | Any other 3xx | [`MailboxError::Refused`] naming the `Location` (redirects are never followed: the EWS URL is wrong, re-run autodiscover). |
//! | Timeout, connection or TLS failure, a body that is not XML or not a SOAP envelope | Transient: exponential back-off, then again. |
//! | Other SOAP faults | Classified by [`EwsError::into_mailbox_error`]; retried only when that says throttled or transient. |
//! | Other 4xx | [`MailboxError::Refused`] with the status. |
//! | The token endpoint refuses the client | [`MailboxError::Denied`] with its `error` and `error_description`. |
//!
//! The exponential back-off is [`INITIAL_BACK_OFF`] doubled per attempt, capped at
//! [`EwsOptions::max_back_off`]. After [`EwsOptions::max_attempts`] sends, the last failure is
//! returned, classified. A server back-off longer than `max_back_off` is not slept through inside
//! a call: the call returns [`MailboxError::Throttled`] with the remaining time at once (and so
//! does every call that arrives while the mailbox is held back that long), so the worker can
//! schedule the mailbox instead of blocking. Each retry is logged at `warn` with the operation
//! and the reason; bodies are never logged.
//!
//! # Concurrency
//!
//! A semaphore of [`EwsOptions::max_concurrency`] permits caps the requests in flight to this
//! mailbox. A permit is taken after the throttling hold (so a held-back request holds no permit)
//! and released when the response body has been read. A streaming connection
//! ([`EwsClient::open_stream`]) keeps its permit for as long as it is open: while it is, at most
//! `max_concurrency - 1` other requests run. That is why [`crate::ews::streaming`] closes the
//! connection between waits when `max_concurrency` is 1.
//!
//! # Time
//!
//! Back-offs and the shared hold are measured with `tokio::time::Instant` and slept with
//! `tokio::time::sleep`, so a paused tokio clock (`#[tokio::test(start_paused = true)]`) drives
//! them. Only the wall-clock form of `Retry-After` (an HTTP date) reads the injected [`Clock`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use vmr_core::clock::Clock;

use crate::auth::{Authenticator, HttpRequest};
use crate::ews::request::RequestContext;
use crate::ews::response::{self, EwsError};
use crate::mailbox::MailboxError;
use crate::xml::Element;

/// The first exponential back-off (doubled per attempt).
pub const INITIAL_BACK_OFF: Duration = Duration::from_millis(500);

/// The shortest wait after `ErrorServerBusy`, whatever `BackOffMilliseconds` says.
pub const MIN_THROTTLE_BACK_OFF: Duration = Duration::from_millis(500);

/// Exchange's cookie that pins notification requests to one back-end server.
pub const AFFINITY_COOKIE: &str = "X-BackEndOverrideCookie";

/// How the EWS client reaches and treats one mailbox.
#[derive(Debug, Clone)]
pub struct EwsOptions {
    /// `https://<host>/EWS/Exchange.asmx`.
    pub url: String,
    /// Server version and impersonation put into every envelope.
    pub context: RequestContext,
    /// Sent as `X-AnchorMailbox` (the impersonated mailbox's SMTP address when impersonating).
    pub anchor_mailbox: Option<String>,
    /// Most requests in flight to this mailbox at once, streaming connection included.
    pub max_concurrency: usize,
    /// Total time for one ordinary request, connecting until the response is read.
    pub request_timeout: Duration,
    /// Most sends of one request (the re-send after a 401 is not counted).
    pub max_attempts: u32,
    /// The longest exponential back-off, and the longest server back-off slept inside a call.
    pub max_back_off: Duration,
}

impl EwsOptions {
    /// Options with the usual limits: 4 concurrent requests, 100 s per request, 4 attempts,
    /// back-offs up to 60 s, `X-AnchorMailbox` set to the impersonated mailbox if any.
    pub fn new(url: impl Into<String>, context: RequestContext) -> Self {
        EwsOptions {
            url: url.into(),
            anchor_mailbox: context.impersonate.clone(),
            context,
            max_concurrency: 4,
            request_timeout: Duration::from_secs(100),
            max_attempts: 4,
            max_back_off: Duration::from_secs(60),
        }
    }
}

/// An HTTP client suitable for EWS: rustls, no redirects followed (a redirect is reported, see
/// the module docs), a 10 s connect timeout. Request timeouts are set per request.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .build()
}

/// Counters of what the client did, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EwsClientStats {
    /// HTTP requests sent (every attempt).
    pub requests: u64,
    /// Attempts that were retried (any reason).
    pub retries: u64,
    /// Times the server throttled us (`ErrorServerBusy`, 503/429 with `Retry-After`).
    pub throttled: u64,
    /// Calls that ended in an error.
    pub failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    failures: AtomicU64,
}

/// An open streaming response (`GetStreamingEvents`), holding its concurrency permit until it
/// is dropped.
#[derive(Debug)]
pub struct OpenStream {
    /// The response, headers read, body still streaming.
    pub response: reqwest::Response,
    _permit: OwnedSemaphorePermit,
}

/// Whether a request is one of a notification group that wants server affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Affinity {
    None,
    /// `X-PreferServerAffinity: true` and the affinity cookie, when one was handed out.
    Notifications,
}

/// The EWS transport for one mailbox. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct EwsClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    auth: Arc<dyn Authenticator>,
    options: EwsOptions,
    clock: Arc<dyn Clock>,
    permits: Arc<Semaphore>,
    /// No request to this mailbox is sent before this instant (server throttling).
    not_before: Mutex<Option<Instant>>,
    /// `X-BackEndOverrideCookie` as last handed out by the server.
    affinity_cookie: Mutex<Option<String>>,
    counters: Counters,
}

/// What one send produced, when it did not produce a result.
enum Failure {
    /// The server throttled the mailbox: hold every request back this long (or, when it did
    /// not say, the attempt's exponential back-off).
    Throttled {
        back_off: Option<Duration>,
        reason: String,
    },
    /// Worth another attempt after a back-off (`retry_after` when the server named one).
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// HTTP 401.
    Unauthorized,
    /// Final: give this to the caller.
    Final(MailboxError),
}

/// What a successful send produced.
enum Delivered {
    Envelope(Element),
    Stream(OpenStream),
}

impl EwsClient {
    /// A client for the mailbox described by `options`, sending through `http` with `auth`.
    /// `http` must not follow redirects (build it with [`http_client`] or with
    /// `redirect::Policy::none()`), or the redirect rules of the module docs cannot apply.
    pub fn new(
        http: reqwest::Client,
        auth: Arc<dyn Authenticator>,
        options: EwsOptions,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(options.max_concurrency.max(1)));
        EwsClient {
            inner: Arc::new(Inner {
                http,
                auth,
                options,
                clock,
                permits,
                not_before: Mutex::new(None),
                affinity_cookie: Mutex::new(None),
                counters: Counters::default(),
            }),
        }
    }

    /// A client for another mailbox of the same organisation, impersonating `smtp` with the
    /// same transport and credentials (its own concurrency limit and throttling state, as
    /// Exchange budgets impersonated mailboxes separately). `None` when this client does not
    /// impersonate (delegate access cannot reach other users' calendars).
    pub fn impersonating(&self, smtp: &str) -> Option<EwsClient> {
        self.inner.options.context.impersonate.as_ref()?;
        let mut options = self.inner.options.clone();
        options.context.impersonate = Some(smtp.to_owned());
        options.context.folder_mailbox = None;
        options.anchor_mailbox = Some(smtp.to_owned());
        Some(EwsClient::new(
            self.inner.http.clone(),
            self.inner.auth.clone(),
            options,
            self.inner.clock.clone(),
        ))
    }

    /// Server version and impersonation for building envelopes.
    pub fn context(&self) -> &RequestContext {
        &self.inner.options.context
    }

    /// The options this client was built with.
    pub fn options(&self) -> &EwsOptions {
        &self.inner.options
    }

    /// What the client has done so far.
    pub fn stats(&self) -> EwsClientStats {
        let c = &self.inner.counters;
        EwsClientStats {
            requests: c.requests.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
        }
    }

    /// Sends `envelope` (the `operation` name is for logs) and returns the operation's response
    /// element, retrying and classifying failures as the module docs describe.
    pub async fn call(&self, operation: &str, envelope: String) -> Result<Element, MailboxError> {
        self.call_with(operation, envelope, Affinity::None).await
    }

    pub(crate) async fn call_with(
        &self,
        operation: &str,
        envelope: String,
        affinity: Affinity,
    ) -> Result<Element, MailboxError> {
        let timeout = self.inner.options.request_timeout;
        match self
            .exchange(operation, envelope, timeout, false, affinity)
            .await?
        {
            Delivered::Envelope(op) => Ok(op),
            Delivered::Stream(_) => Err(MailboxError::Transient(format!(
                "{operation}: a streamed response where a whole one was expected"
            ))),
        }
    }

    /// Sends a long-lived request (`GetStreamingEvents`) and returns its response as soon as the
    /// server answered 200, body unread; failures before that are handled like [`Self::call`].
    /// The stream holds one concurrency permit until dropped. `timeout` covers the whole
    /// connection.
    pub async fn open_stream(
        &self,
        operation: &str,
        envelope: String,
        timeout: Duration,
    ) -> Result<OpenStream, MailboxError> {
        match self
            .exchange(operation, envelope, timeout, true, Affinity::Notifications)
            .await?
        {
            Delivered::Stream(stream) => Ok(stream),
            Delivered::Envelope(_) => Err(MailboxError::Transient(format!(
                "{operation}: a whole response where a stream was expected"
            ))),
        }
    }

    /// Holds back every request to this mailbox for `back_off` from now (a throttle seen
    /// outside [`Self::call`], e.g. inside a notification stream).
    pub fn hold_back(&self, back_off: Duration) {
        let until = Instant::now() + back_off;
        let mut not_before = self
            .inner
            .not_before
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if not_before.is_none_or(|t| t < until) {
            *not_before = Some(until);
        }
    }

    /// How long requests are still held back, if at all.
    pub fn held_back_for(&self) -> Option<Duration> {
        let not_before = *self
            .inner
            .not_before
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        not_before.filter(|t| *t > now).map(|t| t - now)
    }

    fn exponential_back_off(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        INITIAL_BACK_OFF
            .saturating_mul(factor)
            .min(self.inner.options.max_back_off)
    }

    /// Waits out the shared hold, then for a permit (again if the hold moved meanwhile).
    async fn wait_turn(&self, operation: &str) -> Result<OwnedSemaphorePermit, MailboxError> {
        loop {
            if let Some(wait) = self.held_back_for() {
                if wait > self.inner.options.max_back_off {
                    return Err(MailboxError::Throttled(wait));
                }
                tracing::debug!(
                    operation,
                    wait_ms = wait.as_millis() as u64,
                    "held back by throttling"
                );
                tokio::time::sleep(wait).await;
            }
            let permit = self
                .inner
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| MailboxError::Transient("the EWS client was shut down".to_owned()))?;
            if self.held_back_for().is_none() {
                return Ok(permit);
            }
        }
    }

    async fn exchange(
        &self,
        operation: &str,
        envelope: String,
        timeout: Duration,
        stream: bool,
        affinity: Affinity,
    ) -> Result<Delivered, MailboxError> {
        let result = self
            .exchange_with_retries(operation, envelope, timeout, stream, affinity)
            .await;
        if result.is_err() {
            self.inner.counters.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn exchange_with_retries(
        &self,
        operation: &str,
        envelope: String,
        timeout: Duration,
        stream: bool,
        affinity: Affinity,
    ) -> Result<Delivered, MailboxError> {
        let max_attempts = self.inner.options.max_attempts.max(1);
        let mut attempt = 0u32;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            let permit = self.wait_turn(operation).await?;
            let failure = match self
                .send_once(operation, &envelope, timeout, stream, affinity, permit)
                .await
            {
                Ok(delivered) => return Ok(delivered),
                Err(failure) => failure,
            };
            match failure {
                Failure::Final(error) => return Err(error),
                Failure::Unauthorized => {
                    let scheme = self.inner.auth.scheme();
                    if reauthenticated {
                        return Err(MailboxError::Denied(format!(
                            "{operation}: HTTP 401 again after re-authenticating ({scheme})"
                        )));
                    }
                    tracing::warn!(
                        operation,
                        scheme,
                        "HTTP 401: re-authenticating and sending again"
                    );
                    self.inner.auth.invalidate();
                    reauthenticated = true;
                    attempt -= 1;
                    self.inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                }
                Failure::Throttled { back_off, reason } => {
                    self.inner
                        .counters
                        .throttled
                        .fetch_add(1, Ordering::Relaxed);
                    let wait = back_off
                        .unwrap_or_else(|| self.exponential_back_off(attempt))
                        .max(MIN_THROTTLE_BACK_OFF);
                    self.hold_back(wait);
                    if attempt >= max_attempts {
                        return Err(MailboxError::Throttled(wait));
                    }
                    tracing::warn!(
                        operation,
                        attempt,
                        back_off_ms = wait.as_millis() as u64,
                        reason = %reason,
                        "throttled by the server; holding back this mailbox"
                    );
                    self.inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                }
                Failure::Retry {
                    reason,
                    retry_after,
                } => {
                    if attempt >= max_attempts {
                        return Err(MailboxError::Transient(format!(
                            "{operation} failed after {attempt} attempts: {reason}"
                        )));
                    }
                    let wait = match retry_after {
                        Some(wait) => {
                            self.inner
                                .counters
                                .throttled
                                .fetch_add(1, Ordering::Relaxed);
                            self.hold_back(wait);
                            wait
                        }
                        None => self.exponential_back_off(attempt),
                    };
                    tracing::warn!(
                        operation,
                        attempt,
                        back_off_ms = wait.as_millis() as u64,
                        reason = %reason,
                        "retrying"
                    );
                    self.inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                    if retry_after.is_none() {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    }

    fn headers(&self, affinity: Affinity) -> Vec<(String, String)> {
        let mut headers = vec![
            (
                "Content-Type".to_owned(),
                "text/xml; charset=utf-8".to_owned(),
            ),
            ("Accept".to_owned(), "text/xml".to_owned()),
        ];
        if let Some(anchor) = &self.inner.options.anchor_mailbox {
            headers.push(("X-AnchorMailbox".to_owned(), anchor.clone()));
        }
        if affinity == Affinity::Notifications {
            headers.push(("X-PreferServerAffinity".to_owned(), "true".to_owned()));
            let cookie = self
                .inner
                .affinity_cookie
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(value) = cookie {
                headers.push(("Cookie".to_owned(), format!("{AFFINITY_COOKIE}={value}")));
            }
        }
        headers
    }

    fn remember_affinity_cookie(&self, response: &reqwest::Response) {
        for value in response.headers().get_all(reqwest::header::SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            let pair = text.split(';').next().unwrap_or("");
            if let Some((name, value)) = pair.split_once('=') {
                if name.trim().eq_ignore_ascii_case(AFFINITY_COOKIE) {
                    *self
                        .inner
                        .affinity_cookie
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(value.trim().to_owned());
                }
            }
        }
    }

    /// One send: the request, the status, and (unless streaming a 200) the body.
    async fn send_once(
        &self,
        operation: &str,
        envelope: &str,
        timeout: Duration,
        stream: bool,
        affinity: Affinity,
        permit: OwnedSemaphorePermit,
    ) -> Result<Delivered, Failure> {
        let request = HttpRequest {
            url: self.inner.options.url.clone(),
            headers: self.headers(affinity),
            body: envelope.to_owned(),
            timeout,
        };
        self.inner.counters.requests.fetch_add(1, Ordering::Relaxed);
        let response = match self.inner.auth.send(&self.inner.http, request).await {
            Ok(response) => response,
            Err(error) if error.is_transient() => {
                return Err(Failure::Retry {
                    reason: error.to_string(),
                    retry_after: None,
                })
            }
            Err(error) => {
                return Err(Failure::Final(MailboxError::Denied(format!(
                    "{operation}: authentication ({}) failed: {error}",
                    self.inner.auth.scheme()
                ))))
            }
        };
        self.remember_affinity_cookie(&response);
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Err(Failure::Unauthorized);
        }
        if status == StatusCode::FORBIDDEN {
            return Err(Failure::Final(MailboxError::Denied(format!(
                "{operation}: HTTP 403 Forbidden (EWS disabled for this mailbox or application?)"
            ))));
        }
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if location.to_ascii_lowercase().contains("genericerrorpage") {
                return Err(Failure::Retry {
                    reason: format!("HTTP {} to Exchange's error page", status.as_u16()),
                    retry_after: None,
                });
            }
            return Err(Failure::Final(MailboxError::Refused {
                code: format!("HTTP {}", status.as_u16()),
                message: format!(
                    "redirected to {location:?}; redirects are not followed, check the EWS URL (autodiscover)"
                ),
            }));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Failure::Retry {
                reason: format!("HTTP {}", status.as_u16()),
                retry_after: retry_after(&response, self.inner.clock.as_ref()),
            });
        }
        if status == StatusCode::BAD_GATEWAY || status == StatusCode::GATEWAY_TIMEOUT {
            return Err(Failure::Retry {
                reason: format!("HTTP {}", status.as_u16()),
                retry_after: None,
            });
        }
        if status != StatusCode::OK && status != StatusCode::INTERNAL_SERVER_ERROR {
            return Err(Failure::Final(MailboxError::Refused {
                code: format!("HTTP {}", status.as_u16()),
                message: format!(
                    "{operation}: unexpected status {}",
                    status.canonical_reason().unwrap_or("")
                ),
            }));
        }
        if stream && status == StatusCode::OK {
            return Ok(Delivered::Stream(OpenStream {
                response,
                _permit: permit,
            }));
        }
        let body = response.bytes().await.map_err(|e| Failure::Retry {
            reason: format!(
                "reading the response failed{}: {}",
                if e.is_timeout() { " (timed out)" } else { "" },
                crate::auth::error_chain(&e)
            ),
            retry_after: None,
        })?;
        drop(permit);
        classify_body(status, &body).map(Delivered::Envelope)
    }
}

/// Reads a 200 or 500 body: the operation element, or why not.
fn classify_body(status: StatusCode, body: &[u8]) -> Result<Element, Failure> {
    match response::parse_envelope(body) {
        Ok(op) => {
            if let Some(back_off) = in_band_server_busy(&op) {
                return Err(Failure::Throttled {
                    back_off: Some(back_off),
                    reason: format!("ErrorServerBusy in a {} message", op.name),
                });
            }
            if status == StatusCode::OK {
                Ok(op)
            } else {
                Err(Failure::Retry {
                    reason: format!("HTTP {} with a {} envelope", status.as_u16(), op.name),
                    retry_after: None,
                })
            }
        }
        Err(EwsError::Malformed(why)) => {
            let reason = if status == StatusCode::INTERNAL_SERVER_ERROR
                && contains(body, b"Server Error in '/EWS' Application")
            {
                "HTTP 500: ASP.NET's \"Server Error in '/EWS' Application\" page".to_owned()
            } else {
                format!("HTTP {}: not a SOAP response: {why}", status.as_u16())
            };
            Err(Failure::Retry {
                reason,
                retry_after: None,
            })
        }
        Err(error) => match error.into_mailbox_error() {
            MailboxError::Throttled(back_off) => Err(Failure::Throttled {
                back_off: Some(back_off),
                reason: "SOAP fault ErrorServerBusy".to_owned(),
            }),
            MailboxError::Transient(reason) => Err(Failure::Retry {
                reason,
                retry_after: None,
            }),
            other => Err(Failure::Final(other)),
        },
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `Some(back_off)` when a response message of `op` is a throttle: `ErrorServerBusy` (or an
/// internal error carrying a back-off), as [`EwsError::into_mailbox_error`] classifies it.
pub(crate) fn in_band_server_busy(op: &Element) -> Option<Duration> {
    response::response_messages(op)
        .iter()
        .filter(|m| m.is_error())
        .find_map(|m| match m.to_error().into_mailbox_error() {
            MailboxError::Throttled(back_off) => Some(back_off),
            _ => None,
        })
}

/// `Retry-After` as seconds or an HTTP date (read against `clock`).
fn retry_after(response: &reqwest::Response, clock: &dyn Clock) -> Option<Duration> {
    let value = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let ms = at.timestamp_millis() - clock.now_unix_ms();
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_band_busy_reads_back_off_from_the_message() {
        use crate::xml::{NS_MESSAGES, NS_TYPES};
        let xml = format!(
            r#"<m:SyncFolderItemsResponse xmlns:m="{NS_MESSAGES}" xmlns:t="{NS_TYPES}"><m:ResponseMessages>
            <m:SyncFolderItemsResponseMessage ResponseClass="Error">
              <m:MessageText>The server cannot service this request right now.</m:MessageText>
              <m:ResponseCode>ErrorServerBusy</m:ResponseCode>
              <m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>
              <m:MessageXml><t:Value Name="BackOffMilliseconds">5000</t:Value></m:MessageXml>
              <m:SyncState/>
            </m:SyncFolderItemsResponseMessage></m:ResponseMessages></m:SyncFolderItemsResponse>"#
        );
        let op = crate::xml::parse(xml.as_bytes()).unwrap();
        assert_eq!(in_band_server_busy(&op), Some(Duration::from_millis(5000)));
        let fine = xml
            .replace("ResponseClass=\"Error\"", "ResponseClass=\"Success\"")
            .replace("ErrorServerBusy", "NoError");
        let op = crate::xml::parse(fine.as_bytes()).unwrap();
        assert_eq!(in_band_server_busy(&op), None);
    }

    #[test]
    fn exponential_back_off_doubles_up_to_the_cap() {
        let client = EwsClient::new(
            reqwest::Client::new(),
            Arc::new(crate::auth::BasicAuth::new("u", "p".into())),
            EwsOptions {
                max_back_off: Duration::from_secs(3),
                ..EwsOptions::new(
                    "http://127.0.0.1:1/EWS/Exchange.asmx",
                    RequestContext {
                        server_version: "Exchange2013_SP1".into(),
                        impersonate: None,
                        folder_mailbox: None,
                    },
                )
            },
            vmr_core::clock::system(),
        );
        let waits: Vec<u128> = (1..=5)
            .map(|a| client.exponential_back_off(a).as_millis())
            .collect();
        assert_eq!(waits, vec![500, 1000, 2000, 3000, 3000]);
    }
}
