//! The external policy server's brain: which service Pexip Infinity should
//! start for a dialled alias, answered from memory.
//!
//! Infinity asks `GET /policy/v1/service/configuration?local_alias=…` on every
//! call (`http::policy_api` serves it), so the answer never waits on the
//! database: [`PolicyService`] keeps an in-memory index of every scheduled
//! VMR — its aliases (generated alias, numeric alias, extra aliases admins
//! added), its service fields and its occurrence windows — and of every alias
//! ever issued. The index is loaded whole at start-up, then follows the
//! database once a second through `vmr_store::policy_feed` (meetings written
//! since the last look, aliases issued since, extra aliases), re-reading what
//! was written in the last [`FOLLOW_MARGIN_MS`] so commits still in flight
//! are not missed, and is rebuilt from scratch every
//! [`FULL_RELOAD_INTERVAL`] as a backstop. A request takes a read lock, a
//! hash look-up or two and a binary search over the VMR's windows.
//!
//! The decision for a dialled alias ([`PolicyService::decide`]):
//! * one of our VMRs whose meeting is live (not cancelled or declined, the
//!   VMR not deleted) and one of whose windows contains now, stretched by
//!   its integration's `meeting_buffer_before` / `meeting_buffer_after`
//!   (`start − before ≤ now < end + after`) → `continue` with the service;
//! * an alias we issued, outside every window (or cancelled, deleted, never
//!   scheduled) → `reject`;
//! * an alias we never issued → `continue` without a service (Infinity's own
//!   configuration decides) or `reject`, per `policy.unknown_alias`.
//!
//! Infinity asks only when a call arrives: a conference already running when
//! its window closes is not cut off; only new callers are refused.
//!
//! Dialled aliases arrive the way Infinity sends them ([`DialledAlias::parse`]):
//! `sip:`/`sips:`/`h323:`/`tel:` prefixes, `;parameters`, a display name
//! around `<…>`, any host or port after `@`, any letter case. A full alias
//! matches first; otherwise the part before `@` (or the whole alias when it
//! has no host) is matched against the VMRs' numeric aliases and the local
//! parts of their aliases, so `88123456`, `88123456@10.0.0.1` and
//! `sip:88123456@vc.example.com:5061;transport=tls` all reach the same VMR.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use serde::Serialize;
use vmr_core::clock::SharedClock;
use vmr_core::config::{Config, PolicyServiceOptions, UnknownAliasAction};
use vmr_store::policy_feed::{ExtraAlias, IssuedAlias, MeetingStamp, WindowSpan};
use vmr_store::{ConferenceRecord, Storage, StorageError};

/// How far before now the index re-reads changes (ms of `updated_at`):
/// longer than any scheduling transaction takes, and than the clock
/// difference between management instances.
pub const FOLLOW_MARGIN_MS: i64 = 30_000;
/// How often the index follows the database.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);
/// How often the index is rebuilt from scratch (a backstop for writes that
/// bypass the scheduling commit).
pub const FULL_RELOAD_INTERVAL: Duration = Duration::from_secs(600);
/// Join window before the start when a VMR's integration is no longer
/// configured (minutes, Pexip's default).
const DEFAULT_BUFFER_BEFORE_MIN: i64 = 30;
/// Join window after the end when a VMR's integration is no longer configured.
const DEFAULT_BUFFER_AFTER_MIN: i64 = 60;

/// A dialled alias, normalised for look-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialledAlias {
    /// `user@host` in lower case, without scheme, parameters or port; `None`
    /// when the alias has no host part.
    pub full: Option<String>,
    /// The part before `@` in lower case (digits only when it is a telephone
    /// number written with `+`, spaces, dots, dashes or brackets).
    pub user: String,
}

impl DialledAlias {
    /// Normalises `local_alias` as Infinity sends it; `None` when nothing
    /// dialable is left.
    pub fn parse(local_alias: &str) -> Option<DialledAlias> {
        let mut s = local_alias.trim();
        // `"Name" <sip:alias@host>`: the address inside the brackets.
        if let (Some(open), Some(close)) = (s.find('<'), s.rfind('>')) {
            if open < close {
                s = s[open + 1..close].trim();
            }
        }
        let lower = s.to_lowercase();
        let mut rest = lower.as_str();
        for scheme in ["sips:", "sip:", "h323:", "tel:"] {
            if let Some(r) = rest.strip_prefix(scheme) {
                rest = r;
                break;
            }
        }
        // URI parameters and headers.
        if let Some(i) = rest.find([';', '?']) {
            rest = &rest[..i];
        }
        let (user, host) = match rest.split_once('@') {
            Some((u, h)) => (u.trim(), Some(strip_port(h.trim()))),
            None => (rest.trim(), None),
        };
        let user = telephone_digits(user).unwrap_or_else(|| user.to_owned());
        if user.is_empty() {
            return None;
        }
        let full = host
            .filter(|h| !h.is_empty())
            .map(|h| format!("{user}@{}", h.trim_end_matches('.')));
        Some(DialledAlias { full, user })
    }
}

/// The host without a port (`host:5061`, `[2001:db8::1]:5061`).
fn strip_port(host: &str) -> &str {
    if let Some(inner) = host.strip_prefix('[') {
        return inner.split(']').next().unwrap_or(inner);
    }
    match host.split_once(':') {
        // One colon: host:port. More: a bare IPv6 address, kept whole.
        Some((h, port)) if !port.contains(':') => h,
        _ => host,
    }
}

/// The digits of a telephone number written with `+`, spaces or visual
/// separators (`+88 123-456`, `(88) 123.456`), if `user` is one.
fn telephone_digits(user: &str) -> Option<String> {
    let has_separators = user
        .chars()
        .any(|c| matches!(c, '+' | ' ' | '-' | '.' | '(' | ')'));
    let only_number = user
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')'));
    if !has_separators || !only_number {
        return None;
    }
    let digits: String = user.chars().filter(char::is_ascii_digit).collect();
    (!digits.is_empty()).then_some(digits)
}

/// The look-up keys of one of our aliases: its full form (if it has a host)
/// and its user part.
fn alias_keys(alias: &str) -> (Option<String>, Option<String>) {
    match DialledAlias::parse(alias) {
        Some(d) => (d.full, Some(d.user)),
        None => (None, None),
    }
}

/// The `result` of a `continue` answer: a VMR (`service_type: conference`).
/// Absent optional fields are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceConfiguration {
    pub service_type: &'static str,
    /// The VMR's unique name (Infinity's `service_name`).
    pub name: String,
    /// `sched-<conference id>`: stable for the VMR's lifetime.
    pub service_tag: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ivr_theme_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_identity_provider_group: Option<String>,
    pub non_idp_participants: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_pin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_guests: Option<bool>,
}

/// What to tell Infinity about a dialled alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// One of our VMRs, inside one of its windows.
    Service(Arc<ServiceConfiguration>),
    /// One of our aliases, outside every window (or no longer scheduled).
    OutsideWindow,
    /// Not an alias we issued; answer `continue` (Infinity decides).
    UnknownContinue,
    /// Not an alias we issued; answer `reject`.
    UnknownReject,
}

impl Decision {
    /// The label metrics and logs use.
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Service(_) => "continue",
            Decision::OutsideWindow => "reject",
            Decision::UnknownContinue => "unknown_continue",
            Decision::UnknownReject => "unknown_reject",
        }
    }
}

/// One scheduled VMR as the index holds it.
#[derive(Debug)]
struct IndexedConference {
    integration: String,
    service: Arc<ServiceConfiguration>,
    /// The meeting is live and the VMR not deleted.
    live: bool,
    /// Windows sorted by start.
    starts: Vec<i64>,
    /// `ends_max[i]` = the latest end among windows `0..=i`.
    ends_max: Vec<i64>,
}

impl IndexedConference {
    /// Whether some window, stretched by the buffers, contains `now`.
    fn open_at(&self, now: i64, before_ms: i64, after_ms: i64) -> bool {
        if !self.live {
            return false;
        }
        // Windows with start − before ≤ now, i.e. start ≤ now + before.
        let opened = self
            .starts
            .partition_point(|&s| s <= now.saturating_add(before_ms));
        opened > 0 && self.ends_max[opened - 1] > now.saturating_sub(after_ms)
    }
}

/// The index itself (behind the service's lock).
#[derive(Debug, Default)]
struct IndexState {
    /// The last stamp applied per meeting `(integration, uid)`.
    meetings: HashMap<(String, String), MeetingStamp>,
    /// By conference id.
    conferences: HashMap<String, Arc<IndexedConference>>,
    /// Full alias → conference ids.
    by_full: HashMap<String, Vec<String>>,
    /// User part / numeric alias → conference ids.
    by_user: HashMap<String, Vec<String>>,
    /// Extra aliases (read whole each time), same two key kinds.
    extra_full: HashMap<String, Vec<String>>,
    extra_user: HashMap<String, Vec<String>>,
    /// Keys of every alias ever issued.
    issued_full: HashSet<String>,
    issued_user: HashSet<String>,
    /// Largest `meeting.updated_at` seen (ms).
    meeting_cursor: i64,
    /// Largest `scheduled_alias.created_at` seen (s).
    alias_cursor: i64,
}

fn add_key(map: &mut HashMap<String, Vec<String>>, key: Option<String>, id: &str) {
    if let Some(key) = key {
        let ids = map.entry(key).or_default();
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_owned());
        }
    }
}

impl IndexState {
    fn add_issued(&mut self, a: &IssuedAlias) {
        let (full, user) = alias_keys(&a.alias);
        self.issued_full.extend(full);
        self.issued_user.extend(user);
        self.issued_user.extend(alias_keys(&a.numeric_alias).1);
        self.alias_cursor = self.alias_cursor.max(a.created_at);
    }

    fn set_extra(&mut self, extra: &[ExtraAlias]) {
        self.extra_full.clear();
        self.extra_user.clear();
        for x in extra {
            let (full, user) = alias_keys(&x.alias);
            add_key(&mut self.extra_full, full, &x.conference_id);
            add_key(&mut self.extra_user, user, &x.conference_id);
        }
    }

    /// Applies one meeting as read: its conference (if any) replaced with
    /// the fresh fields and windows.
    fn apply(
        &mut self,
        stamp: MeetingStamp,
        conference: Option<ConferenceRecord>,
        mut windows: Vec<WindowSpan>,
        options: &dyn Fn(&str) -> PolicyServiceOptions,
    ) {
        let key = (stamp.integration.clone(), stamp.uid.clone());
        // A meeting that moved to another conference leaves the old one without windows.
        if let Some(old) = self
            .meetings
            .get(&key)
            .and_then(|m| m.conference_id.clone())
        {
            if stamp.conference_id.as_deref() != Some(old.as_str()) {
                if let Some(c) = self.conferences.get(&old) {
                    let closed = IndexedConference {
                        integration: c.integration.clone(),
                        service: c.service.clone(),
                        live: false,
                        starts: Vec::new(),
                        ends_max: Vec::new(),
                    };
                    self.conferences.insert(old, Arc::new(closed));
                }
            }
        }
        self.meeting_cursor = self.meeting_cursor.max(stamp.updated_at);
        if let Some(c) = conference {
            let (full, user) = alias_keys(&c.alias);
            add_key(&mut self.by_full, full.clone(), &c.id);
            add_key(&mut self.by_user, user.clone(), &c.id);
            add_key(&mut self.by_user, alias_keys(&c.numeric_alias).1, &c.id);
            // A VMR's aliases were issued, whatever the alias table says.
            self.issued_full.extend(full);
            self.issued_user.extend(user);
            self.issued_user.extend(alias_keys(&c.numeric_alias).1);
            let live = c.deletion_time.is_none()
                && !matches!(stamp.state.as_str(), "cancelled" | "declined");
            windows.sort_by_key(|w| (w.start_time, w.end_time));
            let starts = windows.iter().map(|w| w.start_time).collect();
            let mut latest = i64::MIN;
            let ends_max = windows
                .iter()
                .map(|w| {
                    latest = latest.max(w.end_time);
                    latest
                })
                .collect();
            let o = options(&c.integration);
            let service = ServiceConfiguration {
                service_type: "conference",
                service_tag: format!("sched-{}", c.id),
                name: c.name,
                description: c.description,
                ivr_theme_name: c.theme,
                host_identity_provider_group: c.host_identity_provider_group,
                non_idp_participants: c.non_idp_participants,
                pin: o.pin.map(|p| p.expose().to_owned()),
                guest_pin: o.guest_pin.map(|p| p.expose().to_owned()),
                allow_guests: o.allow_guests,
            };
            let indexed = IndexedConference {
                integration: c.integration,
                service: Arc::new(service),
                live,
                starts,
                ends_max,
            };
            self.conferences.insert(c.id, Arc::new(indexed));
        }
        self.meetings.insert(key, stamp);
    }
}

/// Decisions taken, by kind (also sent to `/metrics` by the HTTP layer).
#[derive(Debug, Default)]
pub struct PolicyStats {
    pub continued: AtomicU64,
    pub rejected: AtomicU64,
    pub unknown_continued: AtomicU64,
    pub unknown_rejected: AtomicU64,
    /// Successful follow-ups of the database.
    pub refreshes: AtomicU64,
    /// Failed follow-ups (the index keeps answering from what it has).
    pub refresh_failures: AtomicU64,
}

/// The policy index and what it needs to decide.
pub struct PolicyService {
    state: RwLock<IndexState>,
    storage: Storage,
    clock: SharedClock,
    /// Per integration: (before, after) in ms.
    buffers: HashMap<String, (i64, i64)>,
    /// Per integration: pin, guest pin, allow_guests.
    options: HashMap<String, PolicyServiceOptions>,
    defaults: PolicyServiceOptions,
    unknown_alias: UnknownAliasAction,
    /// Serialises refreshes (the periodic task and explicit calls).
    refreshing: tokio::sync::Mutex<()>,
    /// What was decided.
    pub stats: PolicyStats,
}

impl std::fmt::Debug for PolicyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyService")
            .field("conferences", &self.read().conferences.len())
            .field("unknown_alias", &self.unknown_alias)
            .finish_non_exhaustive()
    }
}

impl PolicyService {
    /// Loads the whole index from `storage` (settings from `config`); call
    /// [`PolicyService::spawn_follower`] to keep it current.
    pub async fn load(
        config: &Config,
        storage: Storage,
        clock: SharedClock,
    ) -> Result<Arc<PolicyService>, StorageError> {
        let minutes = |m: u32| i64::from(m) * 60_000;
        let buffers = config
            .integrations
            .iter()
            .map(|i| {
                (
                    i.id.clone(),
                    (
                        minutes(i.meeting_buffer_before),
                        minutes(i.meeting_buffer_after),
                    ),
                )
            })
            .collect();
        let options = config
            .integrations
            .iter()
            .map(|i| (i.id.clone(), config.policy.service_options(&i.id)))
            .collect();
        let service = Arc::new(PolicyService {
            state: RwLock::new(IndexState::default()),
            storage,
            clock,
            buffers,
            options,
            defaults: config.policy.service_options(""),
            unknown_alias: config.policy.unknown_alias,
            refreshing: tokio::sync::Mutex::new(()),
            stats: PolicyStats::default(),
        });
        service.reload().await?;
        Ok(service)
    }

    fn read(&self) -> RwLockReadGuard<'_, IndexState> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, IndexState> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn options_for(&self, integration: &str) -> PolicyServiceOptions {
        self.options
            .get(integration)
            .cloned()
            .unwrap_or_else(|| self.defaults.clone())
    }

    fn buffers_for(&self, integration: &str) -> (i64, i64) {
        self.buffers.get(integration).copied().unwrap_or((
            DEFAULT_BUFFER_BEFORE_MIN * 60_000,
            DEFAULT_BUFFER_AFTER_MIN * 60_000,
        ))
    }

    /// Rebuilds the index from scratch and swaps it in.
    pub async fn reload(&self) -> Result<(), StorageError> {
        let _one_at_a_time = self.refreshing.lock().await;
        // Meetings first: anything committed after this read carries a newer
        // `updated_at` and is picked up by the next follow-up.
        let stamps = self.storage.policy_meetings_after(i64::MIN).await?;
        let conferences = self.storage.policy_all_conferences().await?;
        let windows = self.storage.policy_all_windows().await?;
        let aliases = self.storage.policy_aliases_after(i64::MIN).await?;
        let extra = self.storage.policy_extra_aliases().await?;
        let mut by_id: HashMap<String, ConferenceRecord> =
            conferences.into_iter().map(|c| (c.id.clone(), c)).collect();
        let mut by_meeting: HashMap<(String, String), Vec<WindowSpan>> = HashMap::new();
        for (integration, uid, span) in windows {
            by_meeting.entry((integration, uid)).or_default().push(span);
        }
        let mut state = IndexState::default();
        let options = |i: &str| self.options_for(i);
        for stamp in stamps {
            let key = (stamp.integration.clone(), stamp.uid.clone());
            let conference = stamp.conference_id.as_ref().and_then(|id| by_id.remove(id));
            let spans = by_meeting.remove(&key).unwrap_or_default();
            state.apply(stamp, conference, spans, &options);
        }
        for a in &aliases {
            state.add_issued(a);
        }
        state.set_extra(&extra);
        let size = state.conferences.len();
        *self.write() = state;
        tracing::debug!(conferences = size, "policy index loaded");
        Ok(())
    }

    /// Reads what changed since the last look and applies it; returns how
    /// many meetings were re-read.
    pub async fn refresh(&self) -> Result<usize, StorageError> {
        let _one_at_a_time = self.refreshing.lock().await;
        // New rows are those after the cursor; rows written within the margin
        // before now may still be joined by commits that were in flight, so
        // that stretch is read again (the stamps tell what really changed).
        let now = self.clock.now_unix_ms();
        let (meeting_after, alias_after) = {
            let s = self.read();
            (
                s.meeting_cursor.min(now.saturating_sub(FOLLOW_MARGIN_MS)),
                s.alias_cursor
                    .min((now / 1000).saturating_sub(FOLLOW_MARGIN_MS / 1000)),
            )
        };
        let stamps = self.storage.policy_meetings_after(meeting_after).await?;
        let changed: Vec<MeetingStamp> = {
            let s = self.read();
            stamps
                .into_iter()
                .filter(|m| s.meetings.get(&(m.integration.clone(), m.uid.clone())) != Some(m))
                .collect()
        };
        let mut fresh = Vec::with_capacity(changed.len());
        for stamp in changed {
            let (conference, windows) = self
                .storage
                .policy_meeting_detail(
                    &stamp.integration,
                    &stamp.uid,
                    stamp.conference_id.as_deref(),
                )
                .await?;
            fresh.push((stamp, conference, windows));
        }
        let aliases = self.storage.policy_aliases_after(alias_after).await?;
        let extra = self.storage.policy_extra_aliases().await?;
        let reread = fresh.len();
        let options = |i: &str| self.options_for(i);
        let mut s = self.write();
        for (stamp, conference, windows) in fresh {
            s.apply(stamp, conference, windows, &options);
        }
        for a in &aliases {
            s.add_issued(a);
        }
        s.set_extra(&extra);
        Ok(reread)
    }

    /// Follows the database every [`FOLLOW_INTERVAL`] and rebuilds the index
    /// every [`FULL_RELOAD_INTERVAL`], until the service is dropped.
    pub fn spawn_follower(service: &Arc<PolicyService>) {
        let weak: Weak<PolicyService> = Arc::downgrade(service);
        tokio::spawn(async move {
            let mut last_reload = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(FOLLOW_INTERVAL).await;
                let Some(service) = weak.upgrade() else {
                    return;
                };
                let full = last_reload.elapsed() >= FULL_RELOAD_INTERVAL;
                let done = if full {
                    last_reload = tokio::time::Instant::now();
                    service.reload().await.map(|()| 0)
                } else {
                    service.refresh().await
                };
                match done {
                    Ok(_) => {
                        service.stats.refreshes.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        service
                            .stats
                            .refresh_failures
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "policy index could not follow the database; answering from what it has");
                    }
                }
            }
        });
    }

    /// How many VMRs the index holds.
    pub fn conference_count(&self) -> usize {
        self.read().conferences.len()
    }

    /// The decision for `local_alias` now (the injected clock's time).
    pub fn decide(&self, local_alias: &str) -> Decision {
        self.decide_at(local_alias, self.clock.now_unix_ms())
    }

    /// The decision for `local_alias` at `now` (Unix ms).
    pub fn decide_at(&self, local_alias: &str, now: i64) -> Decision {
        let decision = self.lookup(local_alias, now);
        let counter = match &decision {
            Decision::Service(_) => &self.stats.continued,
            Decision::OutsideWindow => &self.stats.rejected,
            Decision::UnknownContinue => &self.stats.unknown_continued,
            Decision::UnknownReject => &self.stats.unknown_rejected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        decision
    }

    fn lookup(&self, local_alias: &str, now: i64) -> Decision {
        let unknown = match self.unknown_alias {
            UnknownAliasAction::Continue => Decision::UnknownContinue,
            UnknownAliasAction::Reject => Decision::UnknownReject,
        };
        let Some(dialled) = DialledAlias::parse(local_alias) else {
            return unknown;
        };
        let s = self.read();
        let full_hits = dialled
            .full
            .as_ref()
            .and_then(|f| s.by_full.get(f).or_else(|| s.extra_full.get(f)));
        let ids: Vec<&String> = match full_hits {
            Some(ids) => ids.iter().collect(),
            None => s
                .by_user
                .get(&dialled.user)
                .into_iter()
                .chain(s.extra_user.get(&dialled.user))
                .flatten()
                .collect(),
        };
        for id in &ids {
            if let Some(c) = s.conferences.get(*id) {
                let (before, after) = self.buffers_for(&c.integration);
                if c.open_at(now, before, after) {
                    return Decision::Service(c.service.clone());
                }
            }
        }
        let issued = !ids.is_empty()
            || dialled
                .full
                .as_ref()
                .is_some_and(|f| s.issued_full.contains(f))
            || s.issued_user.contains(&dialled.user);
        if issued {
            Decision::OutsideWindow
        } else {
            unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{strip_port, DialledAlias};

    fn parsed(s: &str) -> (Option<String>, String) {
        let d = DialledAlias::parse(s).expect(s);
        (d.full, d.user)
    }

    #[test]
    fn dialled_aliases_are_normalised_as_infinity_sends_them() {
        let full = (
            Some("88123456@vc.example.com".to_string()),
            "88123456".to_string(),
        );
        for s in [
            "88123456@vc.example.com",
            "sip:88123456@vc.example.com",
            "SIPS:88123456@VC.Example.COM",
            "sip:88123456@vc.example.com:5061;transport=tls",
            "h323:88123456@vc.example.com",
            "<sip:88123456@vc.example.com>",
            "\"Alice\" <sip:88123456@vc.example.com;user=phone>",
            "88123456@vc.example.com.",
            " 88123456@vc.example.com ",
        ] {
            assert_eq!(parsed(s), full, "{s}");
        }
        assert_eq!(parsed("88123456"), (None, "88123456".into()));
        assert_eq!(parsed("tel:+88123456"), (None, "88123456".into()));
        assert_eq!(
            parsed("tel:+88-123-456;phone-context=x"),
            (None, "88123456".into())
        );
        assert_eq!(
            parsed("88123456@10.0.0.1"),
            (Some("88123456@10.0.0.1".into()), "88123456".into())
        );
        assert_eq!(
            parsed("sip:88123456@[2001:db8::1]:5061"),
            (Some("88123456@2001:db8::1".into()), "88123456".into())
        );
        assert_eq!(parsed("Meet.Alice@VC.example.com").1, "meet.alice");
        assert!(DialledAlias::parse("").is_none());
        assert!(DialledAlias::parse("sip:").is_none());
        assert!(DialledAlias::parse("sip:@vc.example.com").is_none());
    }

    #[test]
    fn ports_are_cut_but_ipv6_addresses_kept() {
        assert_eq!(strip_port("vc.example.com:5061"), "vc.example.com");
        assert_eq!(strip_port("vc.example.com"), "vc.example.com");
        assert_eq!(strip_port("2001:db8::1"), "2001:db8::1");
        assert_eq!(strip_port("[2001:db8::1]:5061"), "2001:db8::1");
    }
}
