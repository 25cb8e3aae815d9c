//! `vmr-scheduler recover [--dry-run]`: after the database was restored from a backup (or
//! lost), rebuild what the resource mailbox proves was scheduled.
//!
//! For each integration with an `[integration.exchange]` table, the resource's Calendar is
//! read from the start. Every meeting the resource accepted (singles and series masters, not
//! cancelled, with a window still to come) is sorted into a [`Plan`]:
//!
//! * already in the database → left alone;
//! * its `PXPS:-…#` tag names an alias the database still has → the meeting, its VMR and
//!   windows are rebuilt through the same decision and transaction as the worker's, without
//!   a reply (the organizer was answered long ago);
//! * its alias row is gone, but its tag checks out with the integration's key (configured
//!   `tag_key`, or one the restore kept) and the invitation shows exactly one alias of the
//!   integration's shape → the alias is put back as it was, then the meeting is rebuilt: the
//!   dial-in numbers attendees have keep working, nobody is sent anything;
//! * its alias is otherwise gone (its tag was signed with a key lost with the database) → a
//!   new alias is drawn (a fixed id per meeting, so a second run finds it), the organizer's own
//!   meeting gets the new instructions in place of the old ones as the organizer (every
//!   attendee gets the update, [`crate::mailbox_worker::organizer_copy`]), and the meeting is
//!   scheduled with it; the worker then accepts the organizer's update;
//! * a `TOK:-…#` tag → processed as the worker would (deferred, then completed by it);
//! * anything else (no tag, an alias deleted or bound to another meeting) → reported.
//!
//! `--dry-run` reads and sorts but writes and sends nothing. Progress is an `indicatif` bar
//! on a terminal, and a line per tenth of the items otherwise (logs).
//!
//! A real run writes what the mailbox worker writes, so it holds each integration's mailbox
//! lease while it works on it ([`vmr_store::CommandLease`]): on PostgreSQL no management
//! instance takes that mailbox meanwhile (they stand by and take it back afterwards); on
//! SQLite, or while an instance leads the mailbox, recover refuses to start and names the
//! instance to stop.

use std::fmt::Write as _;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vmr_core::body_edit::TagKind;
use vmr_core::identity::Identity;
use vmr_core::meeting::{ItemType, MeetingItem, MessageKind, MyResponse};
use vmr_core::scheduling::Schedule;
use vmr_exchange::mailbox::{Folder, Mailbox};
use vmr_protocol::tag::{find_tag, MeetingTag};
use vmr_store::{CommandLease, CommandLeaseError};

use crate::alias_service::{self, Requested};
use crate::app::ManagementState;
use crate::mailbox_worker::leadership::host_name;
use crate::mailbox_worker::organizer_copy::{self, Refusal};
use crate::mailbox_worker::processor::{self, Processed};
use crate::mailbox_worker::{read_folder, workers, Pages, WorkerContext};

/// What `recover` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct RecoverOptions {
    /// Read and report only.
    pub dry_run: bool,
    /// Only this integration (default: all with an `[integration.exchange]` table).
    pub integration: Option<String>,
}

/// What recovery does with one accepted meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The database has it.
    Present,
    /// Rebuild it with the alias its tag names.
    Rebuild,
    /// Its alias row is gone but its tag checks out and the invitation shows the alias: put
    /// the alias back as it was (same uuid, same numbers), then rebuild — no new
    /// instructions needed.
    Restore {
        alias_uuid: String,
        numeric_alias: String,
    },
    /// Its alias is lost: draw a new one and send new instructions as the organizer.
    Reissue { why: String },
    /// A deferred request (TOK): process it as the worker would.
    Deferred,
    /// Nothing can be done (why).
    Skip { why: String },
}

/// Counts and notes of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Calendar items read.
    pub read: usize,
    /// Accepted meetings with a window still to come.
    pub meetings: usize,
    pub present: usize,
    pub rebuilt: usize,
    /// Of the rebuilt, those whose alias row was put back from the invitation.
    pub restored_aliases: usize,
    pub reissued: usize,
    pub deferred: usize,
    pub skipped: usize,
    pub failed: usize,
    /// One line per meeting that was not simply present (what was or would be done).
    pub notes: Vec<String>,
}

impl Summary {
    /// The printable summary.
    pub fn text(&self, dry_run: bool) -> String {
        let verb = if dry_run { "would be " } else { "" };
        let mut t = String::new();
        for note in &self.notes {
            let _ = writeln!(t, "  {note}");
        }
        let _ = writeln!(
            t,
            "recover{}: {} calendar items read, {} accepted meetings to come: {} present, \
             {} {verb}rebuilt, {} {verb}given a new alias and new instructions, {} deferred \
             {verb}processed, {} skipped, {} failed; {} aliases {verb}read back from invitations",
            if dry_run { " (dry run)" } else { "" },
            self.read,
            self.meetings,
            self.present,
            self.rebuilt,
            self.reissued,
            self.deferred,
            self.skipped,
            self.failed,
            self.restored_aliases
        );
        t
    }
}

/// Runs recovery over the integrations of `state`.
pub async fn run(state: &ManagementState, options: &RecoverOptions) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    for (ctx, mailbox, _) in workers(state)? {
        let id = ctx.integration.config.id.clone();
        if options.integration.as_ref().is_some_and(|only| *only != id) {
            continue;
        }
        let lease = if options.dry_run {
            None
        } else {
            Some(take_lease(&ctx).await?)
        };
        let items = read_folder(mailbox.as_ref(), Folder::Calendar, Pages::All).await?;
        summary.read += items.len();
        let meetings: Vec<MeetingItem> = items
            .into_iter()
            .filter(|m| is_accepted_and_to_come(m, ctx.clock.now_unix_ms()))
            .collect();
        summary.meetings += meetings.len();
        let progress = progress_bar(meetings.len() as u64, &id);
        for (n, item) in meetings.iter().enumerate() {
            let plan = plan(&ctx, item).await?;
            let outcome = if options.dry_run {
                Ok(())
            } else {
                execute(&ctx, mailbox.as_ref(), item, &plan).await?
            };
            record(&mut summary, &id, item, &plan, outcome);
            progress.inc(1);
            report_progress(&progress, n + 1, meetings.len(), &id);
        }
        progress.finish_and_clear();
        if let Some(lease) = lease {
            lease.release().await?;
        }
    }
    Ok(summary)
}

/// The integration's mailbox lease for this run, or an error that names who works on the
/// mailbox and what to do.
async fn take_lease(ctx: &WorkerContext) -> anyhow::Result<CommandLease> {
    let id = &ctx.integration.config.id;
    match ctx
        .storage
        .take_command_lease(
            id,
            &host_name(),
            std::process::id(),
            ctx.clock.now_unix_ms(),
        )
        .await
    {
        Ok(lease) => Ok(lease),
        Err(CommandLeaseError::Busy(who)) => Err(anyhow::anyhow!(
            "integration {id}: {who}; recover writes what the mailbox worker writes, so it \
             does not run beside it: stop the management instances that lead this mailbox \
             (or run recover --dry-run, which writes nothing), then run recover again"
        )),
        Err(CommandLeaseError::Storage(e)) => Err(e.into()),
    }
}

/// A bar on a terminal; hidden otherwise (then [`report_progress`] prints lines).
fn progress_bar(len: u64, integration: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} meetings ({eta} left)")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("recover {integration}"));
    bar
}

/// Without a terminal: a progress line at every tenth of the meetings.
fn report_progress(bar: &ProgressBar, done: usize, total: usize, integration: &str) {
    if !bar.is_hidden() || total == 0 {
        return;
    }
    // Each time another tenth is complete.
    if done * 10 / total != (done - 1) * 10 / total {
        eprintln!("recover {integration}: {done}/{total} meetings");
    }
}

/// A single meeting or series the resource accepted that is not cancelled and not over.
fn is_accepted_and_to_come(item: &MeetingItem, now: i64) -> bool {
    item.kind == MessageKind::CalendarItem
        && matches!(item.item_type, ItemType::Single | ItemType::RecurringMaster)
        && item.my_response == MyResponse::Accept
        && !item.is_cancelled
        && Schedule::of_item(item)
            .has_future_window(now)
            .unwrap_or(true)
}

/// Sorts one meeting (reads only).
async fn plan(ctx: &WorkerContext, item: &MeetingItem) -> anyhow::Result<Plan> {
    let integration = &ctx.integration;
    if ctx
        .storage
        .meeting(&integration.config.id, &item.uid)
        .await?
        .is_some()
    {
        return Ok(Plan::Present);
    }
    let id = match find_tag(&item.body.content, item.body.html) {
        None => {
            return Ok(Plan::Skip {
                why: "its body carries no tag".into(),
            })
        }
        Some(Err(e)) => {
            return Ok(Plan::Reissue {
                why: format!("its tag is unreadable ({e})"),
            })
        }
        Some(Ok(MeetingTag::Tok(_))) => return Ok(Plan::Deferred),
        Some(Ok(MeetingTag::Pxps(id))) => id,
    };
    if let Err(e) = integration.tag_key.verify(&id) {
        return Ok(Plan::Reissue {
            why: format!("its tag does not check out with this integration's key ({e})"),
        });
    }
    let Some(alias) = ctx.storage.alias_by_id(&id.alias_uuid).await? else {
        let cfg = &integration.config;
        let shown = alias_in_body(
            &item.body.content,
            item.body.html,
            &cfg.alias_prefix,
            cfg.alias_digits,
            &cfg.alias_domain,
        );
        return Ok(match shown {
            Some(numeric_alias) => Plan::Restore {
                alias_uuid: id.alias_uuid,
                numeric_alias,
            },
            None => Plan::Reissue {
                why: format!(
                    "its alias {} is not in the database and the invitation does not show it",
                    id.alias_uuid
                ),
            },
        });
    };
    Ok(match (alias.state.as_str(), &alias.meeting_uid) {
        _ if alias.integration != integration.config.id => Plan::Skip {
            why: format!("its alias belongs to integration {}", alias.integration),
        },
        ("deleted", _) => Plan::Skip {
            why: format!("its alias {} was deleted", alias.alias),
        },
        (_, Some(other)) if *other != item.uid => Plan::Skip {
            why: format!("its alias {} is bound to meeting {other}", alias.alias),
        },
        _ => Plan::Rebuild,
    })
}

/// Carries out one plan. `Ok(Err(_))`: this meeting failed (reported, the run goes on);
/// `Err(_)`: the run cannot go on (database or mailbox down).
async fn execute(
    ctx: &WorkerContext,
    mailbox: &dyn Mailbox,
    item: &MeetingItem,
    plan: &Plan,
) -> anyhow::Result<Result<(), String>> {
    let processed = match plan {
        Plan::Present | Plan::Skip { .. } => return Ok(Ok(())),
        Plan::Rebuild => processor::rebuild(ctx, item).await?,
        Plan::Restore {
            alias_uuid,
            numeric_alias,
        } => {
            if let Err(why) = restore_alias(ctx, item, alias_uuid, numeric_alias).await? {
                return Ok(Err(why));
            }
            processor::rebuild(ctx, item).await?
        }
        Plan::Deferred => processor::process(ctx, item).await?,
        Plan::Reissue { .. } => {
            let alias_id = alias_service::worker_alias_id(&ctx.integration.config.id, &item.uid);
            let alias = match ctx.storage.alias_by_id(&alias_id).await? {
                Some(a) => a,
                None => {
                    draw_alias(ctx, item, &alias_id).await?;
                    match ctx.storage.alias_by_id(&alias_id).await? {
                        Some(a) => a,
                        None => return Ok(Err(format!("alias {alias_id} was not stored"))),
                    }
                }
            };
            match organizer_copy::rewrite(ctx, mailbox, item, &alias, TagKind::Pxps).await? {
                Ok(()) => processor::accept_completed(ctx, item, &alias.id).await?,
                Err(Refusal(why)) => return Ok(Err(why)),
            }
        }
    };
    Ok(match processed {
        Processed::Changed { outcome, .. } if outcome.starts_with("accept") => Ok(()),
        Processed::Changed {
            outcome: "deferred",
            ..
        } => Ok(()),
        Processed::Changed { outcome, .. } => Err(format!("the meeting was {outcome}")),
        Processed::Unchanged { why } => Err(why.to_owned()),
    })
}

/// Puts a lost alias row back as the invitation shows it. `Ok(Err(_))`: its numbers are
/// taken by another alias (then nothing is written).
async fn restore_alias(
    ctx: &WorkerContext,
    item: &MeetingItem,
    alias_uuid: &str,
    numeric_alias: &str,
) -> anyhow::Result<Result<(), String>> {
    let cfg = &ctx.integration.config;
    let alias = format!("{numeric_alias}@{}", cfg.alias_domain);
    let row = vmr_store::NewAlias {
        id: alias_uuid,
        integration: &cfg.id,
        numeric_alias,
        alias: &alias,
        created_at: ctx.clock.now_unix(),
        auth_method: "RECOVERY",
        requester_id: &item.organizer.email,
        requester_email: Some(&item.organizer.email),
        organizer_email: Some(&item.organizer.email),
        organizer_name: Some(&item.organizer.name),
        subject: Some(&item.subject),
    };
    if ctx.storage.insert_alias_if_new(&row).await? {
        ctx.integration
            .issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Ok(()))
    } else {
        Ok(Err(format!(
            "alias {alias} shown in the invitation is already used by another alias"
        )))
    }
}

/// The one numeric alias of this integration's shape (`prefix` + `digits` digits, followed
/// by `@domain`) the body shows, if it shows exactly one.
pub fn alias_in_body(
    body: &str,
    html: bool,
    prefix: &str,
    digits: u32,
    domain: &str,
) -> Option<String> {
    let text: Vec<char> = vmr_core::body_edit::VisibleText::new(body, html)
        .as_string()
        .chars()
        .collect();
    let at_domain: Vec<char> = format!("@{domain}").to_lowercase().chars().collect();
    let want = prefix.chars().count() + digits as usize;
    let mut found: Vec<String> = Vec::new();
    for i in 0..text.len() {
        let matches = text.len() >= i + at_domain.len()
            && text[i..i + at_domain.len()]
                .iter()
                .zip(&at_domain)
                .all(|(a, b)| a.to_lowercase().eq(std::iter::once(*b)));
        if !matches {
            continue;
        }
        let start = text[..i]
            .iter()
            .rposition(|c| !c.is_ascii_digit())
            .map_or(0, |p| p + 1);
        let number: String = text[start..i].iter().collect();
        if number.len() == want && number.starts_with(prefix) && !found.contains(&number) {
            found.push(number);
        }
    }
    match found.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// Draws the replacement alias for `item` under the fixed id `alias_id`, for its organizer.
async fn draw_alias(ctx: &WorkerContext, item: &MeetingItem, alias_id: &str) -> anyhow::Result<()> {
    let organizer = Identity {
        user_id: item.organizer.email.clone(),
        email: Some(item.organizer.email.clone()),
        display_name: Some(item.organizer.name.clone()),
        method: vmr_protocol::AuthMethod::ExchangeUserIdToken,
        expires_at: 0,
    };
    ctx.draw_alias(&organizer, &item.subject, Requested::Recovery { alias_id })
        .await?;
    Ok(())
}

fn record(
    summary: &mut Summary,
    integration: &str,
    item: &MeetingItem,
    plan: &Plan,
    outcome: Result<(), String>,
) {
    let what = format!(
        "{integration}: \"{}\" ({})",
        item.subject, item.organizer.email
    );
    if let Err(why) = outcome {
        summary.failed += 1;
        summary.notes.push(format!("FAILED {what}: {why}"));
        return;
    }
    match plan {
        Plan::Present => summary.present += 1,
        Plan::Rebuild => {
            summary.rebuilt += 1;
            summary.notes.push(format!("rebuilt {what}"));
        }
        Plan::Restore { numeric_alias, .. } => {
            summary.rebuilt += 1;
            summary.restored_aliases += 1;
            summary.notes.push(format!(
                "rebuilt {what} with its alias {numeric_alias} read back from the invitation"
            ));
        }
        Plan::Reissue { why } => {
            summary.reissued += 1;
            summary
                .notes
                .push(format!("new alias and instructions for {what}: {why}"));
        }
        Plan::Deferred => {
            summary.deferred += 1;
            summary.notes.push(format!("deferred request {what}"));
        }
        Plan::Skip { why } => {
            summary.skipped += 1;
            summary.notes.push(format!("skipped {what}: {why}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::alias_in_body;

    #[test]
    fn the_alias_is_read_back_only_when_the_body_shows_exactly_one() {
        let one =
            "<p>Join 88123456@VC.example.com or dial 88123456</p><p>88123456@vc.example.com</p>";
        assert_eq!(
            alias_in_body(one, true, "88", 6, "vc.example.com").as_deref(),
            Some("88123456")
        );
        let two = "<p>88123456@vc.example.com and 88654321@vc.example.com</p>";
        assert_eq!(alias_in_body(two, true, "88", 6, "vc.example.com"), None);
        // Wrong length, wrong prefix, other domain, digits glued on.
        for body in [
            "8812345@vc.example.com",
            "77123456@vc.example.com",
            "88123456@vc.example.org",
            "188123456@vc.example.com",
        ] {
            assert_eq!(
                alias_in_body(body, false, "88", 6, "vc.example.com"),
                None,
                "{body}"
            );
        }
        assert_eq!(
            alias_in_body(
                "call:88123456@vc.example.com.",
                false,
                "88",
                6,
                "vc.example.com"
            )
            .as_deref(),
            Some("88123456")
        );
    }
}
