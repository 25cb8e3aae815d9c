//! One meeting item, processed: gather the facts ([`vmr_core::scheduling::Facts`]: the tag, the
//! alias, what we stored before), let [`vmr_core::scheduling::decide`] choose, and write the
//! outcome — meeting state, alias binding, VMR, occurrence windows, the audit row and the reply
//! to send — in one transaction ([`vmr_store::Storage::commit_scheduling`]). The reply itself
//! goes out afterwards from the outbox ([`super::replies`]), so a crash at any point leaves
//! either nothing or a complete change with its reply still to send.

use minijinja::context;
use vmr_core::meeting::{MeetingItem, MessageKind, RequestType, UnixMs};
use vmr_core::scheduling::{
    self, AcceptReply, AliasState, Decision, Facts, MeetingState, RejectReply, Schedule,
    StoredMeeting, TagFinding,
};
use vmr_store::{
    AliasBinding, Commit, CommitOutcome, MeetingRecord, NewConference, NewReply, OperationRecord,
    StorageError, StoredAlias, WindowRecord,
};

use super::WorkerContext;
use crate::alias_service::{self, AllocateError, Requested};
use crate::tag_resolution::{self, MeetingFacts, ResolvedTag, TagRejection};
use vmr_core::deferral::Statement;
use vmr_core::identity::Identity;

/// Most windows materialised for one series (beyond that the horizon rolls forward).
const MAX_WINDOWS: usize = 1_000;
/// How far back windows are kept: the admin view shows meetings of the last day.
const WINDOWS_FROM_PAST_MS: i64 = 24 * 3_600_000;

/// What processing one item did (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// A change was written; `reply` says whether a reply waits in the outbox.
    Changed { outcome: &'static str, reply: bool },
    /// Nothing to do.
    Unchanged { why: &'static str },
}

/// Processes one meeting item of the resource's mailbox. Errors are storage failures only
/// (the caller retries the batch later); everything about the meeting itself becomes a
/// decision.
pub async fn process(ctx: &WorkerContext, item: &MeetingItem) -> Result<Processed, StorageError> {
    let integration_id = ctx.integration.config.id.as_str();
    let record = ctx.storage.meeting(integration_id, &item.uid).await?;
    let found = if scheduling::needs_tag(item) {
        Some(find_tag(ctx, item, record.as_ref()).await?)
    } else {
        None
    };
    apply(ctx, item, record, found, Answer::Reply).await
}

/// Rebuilds a meeting from the resource's calendar item (`vmr-scheduler recover`): decided
/// and recorded like any item, without a reply (the organizer was answered long ago).
pub async fn rebuild(ctx: &WorkerContext, item: &MeetingItem) -> Result<Processed, StorageError> {
    let record = ctx
        .storage
        .meeting(&ctx.integration.config.id, &item.uid)
        .await?;
    let found = find_tag(ctx, item, record.as_ref()).await?;
    apply(ctx, item, record, Some(found), Answer::Silent).await
}

/// Whether a decision's reply goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Reply,
    /// Record the decision only: the item will be superseded before a reply could reach it.
    Silent,
}

/// Schedules a deferred meeting once its organizer's copy carries the alias `alias_id`
/// ([`super::deferred`]): decided as if the resource's item named that alias, without a
/// reply — the organizer's update that carries the instructions supersedes this item at
/// the resource, and that update is what gets the accept ([`deferral_follow_up`]).
pub async fn accept_completed(
    ctx: &WorkerContext,
    item: &MeetingItem,
    alias_id: &str,
) -> Result<Processed, StorageError> {
    let record = ctx
        .storage
        .meeting(&ctx.integration.config.id, &item.uid)
        .await?;
    let found = match ctx.storage.alias_by_id(alias_id).await? {
        Some(alias) => Found::Tag(TagFinding::Alias {
            state: alias_state(&alias),
            alias_id: alias.id,
        }),
        None => Found::GeneralError(format!("the deferred meeting's alias {alias_id} is gone")),
    };
    let answer = match found {
        Found::Tag(_) => Answer::Silent,
        Found::GeneralError(_) => Answer::Reply,
    };
    apply(ctx, item, record, Some(found), answer).await
}

/// Declines the resource's item of a deferred meeting with the general-error reply, saying
/// why in the operation log (for example: no right to act as the organizer).
pub async fn decline_deferred(
    ctx: &WorkerContext,
    item: &MeetingItem,
    detail: String,
) -> Result<Processed, StorageError> {
    let record = ctx
        .storage
        .meeting(&ctx.integration.config.id, &item.uid)
        .await?;
    apply(
        ctx,
        item,
        record,
        Some(Found::GeneralError(detail)),
        Answer::Reply,
    )
    .await
}

/// What the tag of an item came to.
enum Found {
    /// Something [`scheduling::decide`] weighs.
    Tag(TagFinding),
    /// A failure on our side (alias space exhausted, organizer unreachable): decline with the
    /// general-error reply and this detail.
    GeneralError(String),
}

/// Decides on `item` given what its tag was found to be, and commits the outcome.
async fn apply(
    ctx: &WorkerContext,
    item: &MeetingItem,
    record: Option<MeetingRecord>,
    found: Option<Found>,
    answer: Answer,
) -> Result<Processed, StorageError> {
    let now = ctx.clock.now_unix_ms();
    let stored = record.as_ref().and_then(stored_meeting);
    let (mut tag, failure) = match found {
        Some(Found::Tag(t)) => (Some(t), None),
        Some(Found::GeneralError(detail)) => (None, Some(detail)),
        None => (None, None),
    };
    if tag == Some(TagFinding::Deferred) {
        if let Some(s) = stored.as_ref() {
            if s.state == MeetingState::Declined && item.sequence <= s.sequence {
                return Ok(Processed::Unchanged {
                    why: "the deferred meeting was already declined",
                });
            }
        }
    }
    // At most two rounds: the database may find the alias bound or deleted in the meantime.
    for _ in 0..2 {
        let decided = match &failure {
            Some(detail) => Ok(general_error(item, stored.as_ref(), detail)),
            None => scheduling::decide(Facts {
                item,
                tag: tag.as_ref(),
                stored: stored.as_ref(),
                now,
            }),
        };
        let decision = match decided {
            Ok(decision) => decision,
            Err(e) => general_error(item, stored.as_ref(), &e.to_string()),
        };
        let decision = match decision {
            Decision::Nothing { why } => {
                match deferral_follow_up(ctx, item, record.as_ref(), stored.as_ref(), &tag) {
                    Some(d) => d,
                    None => {
                        tracing::debug!(uid = %item.uid, why, "nothing to do");
                        return Ok(Processed::Unchanged { why });
                    }
                }
            }
            d if d.fingerprint().is_some()
                && d.fingerprint() == stored.as_ref().map(|s| s.fingerprint.as_str()) =>
            {
                return Ok(Processed::Unchanged {
                    why: "this change was already answered",
                });
            }
            d => d,
        };
        // The alias the reply talks about: the one accepted, the one in conflict, or the
        // meeting's own.
        let alias_id = match (&decision, &tag) {
            (Decision::Accept { alias_id, .. }, _) => Some(alias_id.clone()),
            (Decision::Decline { .. }, Some(TagFinding::Alias { alias_id, .. })) => {
                Some(alias_id.clone())
            }
            _ => record.as_ref().and_then(|r| r.alias_id.clone()),
        };
        let alias = match alias_id {
            Some(id) => ctx.storage.alias_by_id(&id).await?,
            None => None,
        };
        let Some(mut commit) = plan(ctx, item, record.as_ref(), &decision, alias.as_ref(), now)
        else {
            return Ok(Processed::Unchanged {
                why: "nothing to record",
            });
        };
        if answer == Answer::Silent {
            commit.reply = None;
        }
        match ctx.storage.commit_scheduling(&commit).await? {
            CommitOutcome::Committed { reply_id, .. } => {
                let outcome = outcome_name(&decision);
                crate::metrics::service()
                    .record_meeting_processed(&ctx.integration.config.id, decision_kind(&decision));
                tracing::info!(uid = %item.uid, outcome, item = %item.item_id, "meeting processed");
                return Ok(Processed::Changed {
                    outcome,
                    reply: reply_id.is_some(),
                });
            }
            CommitOutcome::AliasBoundElsewhere { other_uid } => {
                tag = tag.map(|t| {
                    rebind(
                        t,
                        AliasState::Bound {
                            meeting_uid: other_uid,
                        },
                    )
                });
            }
            CommitOutcome::AliasDeleted => {
                tag = tag.map(|t| rebind(t, AliasState::Deleted));
            }
        }
    }
    Err(StorageError::Batch(format!(
        "meeting {}: the alias kept changing while it was being bound",
        item.uid
    )))
}

/// The organizer's update that a completed deferral sent ([`super::deferred`]) reaches the
/// resource as a new request naming the meeting's own alias with nothing else changed: it is
/// accepted — the organizer's first answer from the resource, so with the new-meeting text —
/// without drawing an alias. Only a request message other than the one last recorded
/// qualifies, so a re-read of the same message, or of the resource's calendar item, answers
/// nothing.
fn deferral_follow_up(
    ctx: &WorkerContext,
    item: &MeetingItem,
    record: Option<&MeetingRecord>,
    stored: Option<&StoredMeeting>,
    tag: &Option<TagFinding>,
) -> Option<Decision> {
    let (record, stored) = (record?, stored?);
    let deferred_alias = alias_service::worker_alias_id(&ctx.integration.config.id, &item.uid);
    let names_it =
        matches!(tag, Some(TagFinding::Alias { alias_id, .. }) if *alias_id == deferred_alias);
    let is_new_request = matches!(item.kind, MessageKind::Request(r) if r != RequestType::Outdated)
        && item.item_id != record.item_id;
    if !(names_it
        && is_new_request
        && stored.state == MeetingState::Accepted
        && stored.alias_id.as_deref() == Some(deferred_alias.as_str()))
    {
        return None;
    }
    Some(Decision::Accept {
        reply: if stored.schedule.is_series() {
            AcceptReply::NewSeries
        } else {
            AcceptReply::NewSingle
        },
        alias_id: deferred_alias,
        schedule: stored.schedule.clone(),
        sequence: item.sequence.max(stored.sequence),
        fingerprint: stored.fingerprint.clone(),
    })
}

fn rebind(tag: TagFinding, state: AliasState) -> TagFinding {
    match tag {
        TagFinding::Alias { alias_id, .. } => TagFinding::Alias { alias_id, state },
        other => other,
    }
}

/// The stored meeting as the decision needs it; a row we cannot read is treated as new
/// (its fingerprint then differs, so the meeting is answered again rather than lost).
fn stored_meeting(record: &MeetingRecord) -> Option<StoredMeeting> {
    let schedule: Schedule = match serde_json::from_str(&record.schedule_json) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(uid = %record.uid, error = %e, "stored schedule unreadable");
            return None;
        }
    };
    Some(StoredMeeting {
        state: MeetingState::parse(&record.state)?,
        alias_id: record.alias_id.clone(),
        sequence: u32::try_from(record.sequence).unwrap_or(0),
        schedule,
        fingerprint: record.fingerprint.clone(),
    })
}

/// Resolves the meeting's tag into what the decision needs. A valid TOK gets its alias here
/// (a fixed id per meeting, so a re-run finds it); once the deferred meeting was completed,
/// its TOK stands for that alias.
async fn find_tag(
    ctx: &WorkerContext,
    item: &MeetingItem,
    record: Option<&MeetingRecord>,
) -> Result<Found, StorageError> {
    // The delegate who sent the request on the organizer's behalf may have asked for the
    // room (Exchange lets only delegates send on behalf).
    let delegates: Vec<String> = item.sender.iter().map(|s| s.email.clone()).collect();
    let facts = MeetingFacts {
        uid: &item.uid,
        organizer_email: &item.organizer.email,
        delegates: &delegates,
    };
    let resolved = tag_resolution::resolve(
        &item.body.content,
        item.body.html,
        &ctx.integration,
        ctx.deferral_keys.as_deref(),
        &ctx.storage,
        facts,
        ctx.clock.now_unix(),
    )
    .await;
    let alias_id = match resolved {
        Ok(ResolvedTag::Alias(id)) => id.alias_uuid,
        Ok(ResolvedTag::Deferred(statement)) => {
            let alias_id = alias_service::worker_alias_id(&ctx.integration.config.id, &item.uid);
            let completed = record.is_some_and(|r| {
                r.alias_id.as_deref() == Some(alias_id.as_str())
                    && matches!(
                        MeetingState::parse(&r.state),
                        Some(MeetingState::Accepted | MeetingState::Cancelled)
                    )
            });
            if !completed {
                return Ok(
                    match reserve_deferred_alias(ctx, item, &statement, &alias_id).await {
                        Ok(()) => Found::Tag(TagFinding::Deferred),
                        Err(AllocateError::Storage(e)) => return Err(e),
                        Err(e) => {
                            Found::GeneralError(format!("no alias for the deferred meeting: {e}"))
                        }
                    },
                );
            }
            alias_id
        }
        Err(TagRejection::Storage(e)) => return Err(e),
        Err(rejection) => return replaced_alias(ctx, item, record, rejection.to_string()).await,
    };
    let alias = ctx.storage.alias_by_id(&alias_id).await?;
    match alias {
        Some(a) if a.integration == ctx.integration.config.id => {
            Ok(Found::Tag(TagFinding::Alias {
                state: alias_state(&a),
                alias_id: a.id,
            }))
        }
        _ => {
            let reason = "the tag names an alias this integration never issued".to_owned();
            replaced_alias(ctx, item, record, reason).await
        }
    }
}

/// A PXPS tag we cannot use, on a meeting whose alias recovery replaced
/// (`vmr-scheduler recover`): until the organizer's update arrives, the old tag stands for
/// the new alias. Any other meeting: the tag is invalid (`reason`).
async fn replaced_alias(
    ctx: &WorkerContext,
    item: &MeetingItem,
    record: Option<&MeetingRecord>,
    reason: String,
) -> Result<Found, StorageError> {
    let replacement = alias_service::worker_alias_id(&ctx.integration.config.id, &item.uid);
    let replaced = record.is_some_and(|r| {
        r.state == MeetingState::Accepted.as_str()
            && r.alias_id.as_deref() == Some(replacement.as_str())
    }) && matches!(
        vmr_protocol::tag::find_tag(&item.body.content, item.body.html),
        Some(Ok(vmr_protocol::tag::MeetingTag::Pxps(_)) | Err(_))
    );
    if replaced {
        if let Some(a) = ctx.storage.alias_by_id(&replacement).await? {
            return Ok(Found::Tag(TagFinding::Alias {
                state: alias_state(&a),
                alias_id: a.id,
            }));
        }
    }
    Ok(Found::Tag(TagFinding::Invalid { reason }))
}

/// Makes sure the deferred meeting's alias `alias_id` exists, drawing it for the TOK's
/// requester if not.
async fn reserve_deferred_alias(
    ctx: &WorkerContext,
    item: &MeetingItem,
    statement: &Statement,
    alias_id: &str,
) -> Result<(), AllocateError> {
    if ctx.storage.alias_by_id(alias_id).await?.is_some() {
        return Ok(());
    }
    let requester = Identity {
        user_id: statement.user_id.clone(),
        email: statement.email.clone(),
        display_name: statement.name.clone(),
        method: vmr_protocol::AuthMethod::ExchangeUserIdToken,
        expires_at: statement.exp,
    };
    ctx.draw_alias(
        &requester,
        &item.subject,
        Requested::DeferredTok { alias_id },
    )
    .await?;
    tracing::info!(uid = %item.uid, alias = alias_id, "alias drawn for a deferred meeting");
    Ok(())
}

fn alias_state(alias: &StoredAlias) -> AliasState {
    match (alias.state.as_str(), &alias.meeting_uid) {
        ("deleted", _) => AliasState::Deleted,
        (_, Some(uid)) => AliasState::Bound {
            meeting_uid: uid.clone(),
        },
        _ => AliasState::Allocated,
    }
}

/// A decline with the general-error template, for facts the decision could not use (for
/// example a recurrence in a time zone we do not know).
fn general_error(item: &MeetingItem, stored: Option<&StoredMeeting>, detail: &str) -> Decision {
    let schedule = Schedule::of_item(item);
    Decision::Decline {
        reply: RejectReply::GeneralError,
        detail: detail.to_owned(),
        fingerprint: format!("general_error:{}:{}", item.change_key, item.sequence),
        release: stored.is_some_and(|s| s.state == MeetingState::Accepted),
        sequence: item.sequence,
        schedule,
    }
}

/// The decision's kind, as the metrics count it.
fn decision_kind(decision: &Decision) -> &'static str {
    match decision {
        Decision::Accept { .. } => "accept",
        Decision::Decline { .. } => "decline",
        Decision::Cancel { .. } => "cancel",
        Decision::Defer { .. } => "defer",
        Decision::Nothing { .. } => "nothing",
    }
}

fn outcome_name(decision: &Decision) -> &'static str {
    match decision {
        Decision::Accept { reply, .. } => reply.template(),
        Decision::Decline { reply, .. } => reply.template(),
        Decision::Cancel { schedule: None, .. } => "cancelled",
        Decision::Cancel { .. } => "occurrence_cancelled",
        Decision::Defer { .. } => "deferred",
        Decision::Nothing { .. } => "nothing",
    }
}

/// Turns a decision into the one transaction that records it; `None` for
/// [`Decision::Nothing`].
fn plan(
    ctx: &WorkerContext,
    item: &MeetingItem,
    record: Option<&MeetingRecord>,
    decision: &Decision,
    alias: Option<&StoredAlias>,
    now: UnixMs,
) -> Option<Commit> {
    let integration = &ctx.integration;
    let transaction_uuid = uuid::Uuid::new_v4().simple().to_string();
    let revision = record.map_or(0, |r| r.revision) + 1;
    let texts = context! {
        subject => item.subject.clone(),
        organizer_name => item.organizer.name.clone(),
        organizer_email => item.organizer.email.clone(),
    };
    let subject = render_text(ctx, "conference_subject", texts.clone());
    let mut meeting = MeetingRecord {
        integration: integration.config.id.clone(),
        uid: item.uid.clone(),
        alias_id: record.and_then(|r| r.alias_id.clone()),
        conference_id: record.and_then(|r| r.conference_id.clone()),
        state: String::new(),
        is_series: false,
        sequence: i64::from(item.sequence),
        revision,
        schedule_json: String::new(),
        fingerprint: decision.fingerprint()?.to_owned(),
        organizer_email: item.organizer.email.clone(),
        subject: subject.clone(),
        item_id: item.item_id.clone(),
        updated_at: now,
    };
    let reply_to = |response: &str, body_html: String| NewReply {
        item_id: item.item_id.clone(),
        change_key: item.change_key.clone(),
        response: response.to_owned(),
        body_html,
    };
    let alias_ctx = |extra: minijinja::Value| {
        context! {
            alias => alias.map(|a| a.alias.clone()),
            numeric_alias => alias.map(|a| a.numeric_alias.clone()),
            start_time => rfc3339(item.start),
            end_time => rfc3339(item.end),
            ..extra
        }
    };
    let mut commit = Commit {
        meeting: meeting.clone(),
        binding: AliasBinding::None,
        conference: None,
        windows: None,
        recurring: None,
        delete_conference: false,
        operation: OperationRecord {
            transaction_uuid: transaction_uuid.clone(),
            success: true,
            error_code: String::new(),
            error_description: String::new(),
            item_id: item.item_id.clone(),
        },
        reply: None,
        now,
    };
    match decision {
        Decision::Nothing { .. } => return None,
        Decision::Accept {
            reply,
            alias_id,
            schedule,
            sequence,
            ..
        } => {
            meeting.state = MeetingState::Accepted.as_str().into();
            meeting.alias_id = Some(alias_id.clone());
            meeting.sequence = i64::from(*sequence);
            meeting.is_series = schedule.is_series();
            meeting.schedule_json = schedule_json(schedule);
            commit.binding = AliasBinding::Bind {
                alias_id: alias_id.clone(),
            };
            if let Some(a) = alias {
                commit.conference = Some(NewConference {
                    alias_id: alias_id.clone(),
                    name: render_text(ctx, "conference_name", texts.clone()),
                    description: render_text(ctx, "conference_description", texts.clone()),
                    alias: a.alias.clone(),
                    numeric_alias: a.numeric_alias.clone(),
                    theme: integration.config.ivr_theme.clone(),
                    host_identity_provider_group: integration
                        .config
                        .host_identity_provider_group
                        .clone(),
                    non_idp_participants: integration.config.non_idp_participants.as_str().into(),
                });
            }
            let (windows, recurring) = materialise(ctx, schedule, &subject, now);
            commit.windows = Some(windows);
            commit.recurring = recurring;
            let body = render_reply(ctx, reply.template(), alias_ctx(context! {}));
            commit.reply = Some(reply_to("accept", body));
        }
        Decision::Decline {
            reply,
            detail,
            schedule,
            sequence,
            release,
            ..
        } => {
            meeting.state = MeetingState::Declined.as_str().into();
            meeting.sequence = i64::from(*sequence);
            meeting.is_series = schedule.is_series();
            meeting.schedule_json = schedule_json(schedule);
            if *release && meeting.conference_id.is_some() {
                commit.windows = Some(Vec::new());
            }
            commit.operation.success = false;
            commit.operation.error_code = reply.error_code().into();
            commit.operation.error_description = detail.clone();
            let body = render_reply(
                ctx,
                reply.template(),
                alias_ctx(context! { correlation_id => transaction_uuid }),
            );
            commit.reply = Some(reply_to("decline", body));
        }
        Decision::Cancel {
            schedule,
            delete_vmr,
            ..
        } => {
            let previous = record.map(|r| r.schedule_json.clone()).unwrap_or_default();
            match schedule {
                Some(schedule) => {
                    meeting.state = record.map_or("accepted".into(), |r| r.state.clone());
                    meeting.is_series = true;
                    meeting.schedule_json = schedule_json(schedule);
                    let (windows, recurring) = if *delete_vmr {
                        (Vec::new(), Some((0, true)))
                    } else {
                        materialise(ctx, schedule, &subject, now)
                    };
                    commit.windows = Some(windows);
                    commit.recurring = recurring;
                }
                None => {
                    meeting.state = MeetingState::Cancelled.as_str().into();
                    meeting.is_series = record.is_some_and(|r| r.is_series);
                    meeting.schedule_json = previous;
                    if meeting.conference_id.is_some() {
                        commit.windows = Some(Vec::new());
                    }
                }
            }
            if *delete_vmr && meeting.conference_id.is_some() {
                commit.delete_conference = true;
                if let Some(alias_id) = meeting.alias_id.clone() {
                    commit.binding = AliasBinding::Delete { alias_id };
                }
            }
            commit.reply = Some(reply_to("remove", String::new()));
        }
        Decision::Defer { schedule, .. } => {
            meeting.state = MeetingState::Deferred.as_str().into();
            meeting.alias_id = Some(alias_service::worker_alias_id(
                &integration.config.id,
                &item.uid,
            ));
            meeting.is_series = schedule.is_series();
            meeting.schedule_json = schedule_json(schedule);
            commit.operation.error_code = "deferred".into();
            commit.operation.error_description =
                "a deferred request (TOK) waits for its alias".into();
        }
    }
    commit.meeting = meeting;
    Some(commit)
}

fn schedule_json(schedule: &Schedule) -> String {
    // A Schedule always serialises (plain data); an empty string would only make the stored
    // meeting unreadable, which `stored_meeting` treats as new.
    serde_json::to_string(schedule).unwrap_or_default()
}

/// The meeting's windows from a day ago to the horizon, and for a series where it stands
/// (`current_index`: the first occurrence not yet over; `is_depleted`: none left).
pub(crate) fn materialise(
    ctx: &WorkerContext,
    schedule: &Schedule,
    subject: &str,
    now: UnixMs,
) -> (Vec<WindowRecord>, Option<(i64, bool)>) {
    let until = now.saturating_add(ctx.horizon_ms);
    let windows = match schedule.windows(now - WINDOWS_FROM_PAST_MS, until, MAX_WINDOWS) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot expand the series; keeping no windows");
            Vec::new()
        }
    };
    let recurring = schedule.is_series().then(|| {
        let next = windows.iter().find(|w| w.end > now);
        match next {
            Some(w) => (i64::from(w.index), false),
            None => (
                windows.last().map_or(0, |w| i64::from(w.index)),
                !schedule.has_future_window(now).unwrap_or(false),
            ),
        }
    });
    let records = windows
        .iter()
        .map(|w| WindowRecord {
            occurrence_index: i64::from(w.index),
            original_start: w.original_start,
            start_time: w.start,
            end_time: w.end,
            subject: subject.to_owned(),
        })
        .collect();
    (records, recurring)
}

fn rfc3339(ms: UnixMs) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Renders a plain-text template; a failure is logged and gives an empty text (an admin's
/// broken template must not stop scheduling).
fn render_text(ctx: &WorkerContext, name: &str, vars: minijinja::Value) -> String {
    ctx.integration
        .templates
        .render(name, vars)
        .unwrap_or_else(|e| {
            tracing::error!(template = name, error = %e, "template failed");
            String::new()
        })
}

/// Renders a reply template; if the admin's template fails, the built-in general error text
/// is used so the organizer still hears back.
fn render_reply(ctx: &WorkerContext, name: &str, vars: minijinja::Value) -> String {
    match ctx.integration.templates.render(name, vars.clone()) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(template = name, error = %e, "reply template failed");
            ctx.integration
                .templates
                .render("reject_general_error", vars)
                .unwrap_or_default()
        }
    }
}
