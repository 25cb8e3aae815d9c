//! `vmr-scheduler check`: for every integration with an `[integration.exchange]` table, reaches
//! EWS, authenticates, opens the resource mailbox the way the worker does (impersonation or
//! delegate access) and, with `--organizer`, a sample organizer's mailbox too; then reads what
//! the resource mailbox holds to find out how Exchange's Calendar Attendant treats it.
//!
//! EWS cannot read `Get-CalendarProcessing`, so the settings that break the service are
//! detected from their traces in the mailbox:
//!
//! * `AutomateProcessing` not None: calendar items the attendant filed as tentative (or left
//!   unanswered) that the service never answered — the service only puts a meeting on the
//!   calendar by accepting it;
//! * `DeleteComments`: meeting items whose body is empty while the organizer's copy has one
//!   (without the organizer's copy: every meeting item has an empty body);
//! * `DeleteSubject` / `AddOrganizerToSubject`: subjects emptied, replaced by the organizer's
//!   name or prefixed with it.
//!
//! What cannot be determined (an empty mailbox, no organizer copy to compare with) is said so.
//! The report ends with the exact `Set-CalendarProcessing` / `New-ManagementRoleAssignment` /
//! `Add-MailboxPermission` commands to run. `main.rs` prints it and exits 0 only when
//! [`Report::must_fix`] is false.

use std::fmt::Write as _;

use vmr_core::clock::SharedClock;
use vmr_core::config::{Config, ExchangeAuth, ExchangeConfig, MailboxAccess};
use vmr_core::meeting::{Body, MeetingItem, MessageKind, MyResponse};
use vmr_exchange::ews::client::EwsClient;
use vmr_exchange::ews::mailbox::EwsMailbox;
use vmr_exchange::ews::request;
use vmr_exchange::ews::response;
use vmr_exchange::mailbox::{Folder, Mailbox, MailboxError};

use crate::mailbox_worker::connect::ews_client;
use crate::mailbox_worker::{read_folder, Pages};

/// Items read from each of the resource's folders (the first page of a full sync).
pub const SAMPLE_ITEMS: u32 = 100;

/// What `check` is asked to do beyond the configuration.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// A sample organizer (SMTP address) to impersonate, and whose calendar copies the
    /// resource's items are compared with.
    pub organizer: Option<String>,
}

/// The outcome of one `check` run: the printable text and whether something must be fixed.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// What was checked, found and must be run, line by line.
    pub text: String,
    /// At least one problem was found (exit status 1).
    pub must_fix: bool,
    /// Something could not be determined (said on a `??` line; not a failure by itself).
    pub undetermined: bool,
    /// Integrations checked (0: the configuration has no `[integration.exchange]`).
    pub integrations: usize,
}

impl Report {
    fn line(&mut self, mark: &str, what: impl std::fmt::Display) {
        let _ = writeln!(self.text, "  {mark:<4} {what}");
    }

    fn ok(&mut self, what: impl std::fmt::Display) {
        self.line("ok", what);
    }

    fn fail(&mut self, what: impl std::fmt::Display) {
        self.must_fix = true;
        self.line("FAIL", what);
    }

    fn unknown(&mut self, what: impl std::fmt::Display) {
        self.undetermined = true;
        self.line("??", what);
    }
}

/// Checks every integration of `config` that has an `[integration.exchange]` table.
pub async fn run(config: &Config, options: &CheckOptions, clock: SharedClock) -> Report {
    let mut report = Report::default();
    for (i, integration) in config.integrations.iter().enumerate() {
        let (Some(exchange), Some(resource)) =
            (&integration.exchange, integration.watched_mailbox())
        else {
            continue;
        };
        report.integrations += 1;
        let _ = writeln!(
            report.text,
            "integration {:?}: resource {resource} at {} ({})",
            integration.id,
            exchange.ews_url,
            access_described(exchange)
        );
        let key = format!("integration[{i}].exchange");
        check_integration(&mut report, &key, exchange, resource, options, &clock).await;
    }
    if report.integrations == 0 {
        report.text.push_str(
            "no integration has an [integration.exchange] table: there is no mailbox to check\n",
        );
    } else if report.must_fix {
        report
            .text
            .push_str("result: something must be fixed (see FAIL and the commands above)\n");
    } else if report.undetermined {
        report.text.push_str(
            "result: nothing to fix was found, but what is marked ?? could not be determined\n",
        );
    } else {
        report
            .text
            .push_str("result: all is fine, nothing to fix\n");
    }
    report
}

fn access_described(exchange: &ExchangeConfig) -> String {
    let account = account_of(exchange);
    match exchange.access {
        MailboxAccess::Impersonation => format!("impersonation by {account}"),
        MailboxAccess::Delegate => format!("delegate access by {account}"),
    }
}

/// The service account (Basic, NTLM) or the app registration (OAuth2).
fn account_of(exchange: &ExchangeConfig) -> String {
    match &exchange.auth {
        ExchangeAuth::Basic { username, .. } | ExchangeAuth::Ntlm { username, .. } => {
            username.clone()
        }
        ExchangeAuth::OAuth2 { client_id, .. } => client_id.clone(),
    }
}

/// Why a mailbox could not be opened, and the command that fixes it.
fn explain_denied(
    report: &mut Report,
    exchange: &ExchangeConfig,
    mailbox: &str,
    error: &MailboxError,
) {
    let text = error.to_string();
    let account = account_of(exchange);
    let q = powershell_quote;
    if text.contains("ErrorImpersonateUserDenied") || text.contains("ErrorAccessDenied") {
        match (exchange.access, &exchange.auth) {
            (
                MailboxAccess::Impersonation,
                ExchangeAuth::Basic { .. } | ExchangeAuth::Ntlm { .. },
            ) => {
                report.fail(format!(
                    "{account} may not impersonate {mailbox} ({text}); run:\n         \
                     New-ManagementRoleAssignment -Name {} -Role ApplicationImpersonation -User {}",
                    q("vmr-scheduler impersonation"),
                    q(&account)
                ));
            }
            (MailboxAccess::Impersonation, ExchangeAuth::OAuth2 { .. }) => {
                report.fail(format!(
                    "the app {account} may not impersonate {mailbox} ({text}); grant it the \
                     full_access_as_app permission, or run:\n         \
                     New-ManagementRoleAssignment -App {} -Role {}",
                    q(&account),
                    q("Application EWS.AccessAsApp")
                ));
            }
            (MailboxAccess::Delegate, _) => {
                report.fail(format!(
                    "{account} has no full access to {mailbox} ({text}); run:\n         \
                     Add-MailboxPermission -Identity {} -User {} -AccessRights FullAccess \
                     -AutoMapping $false",
                    q(mailbox),
                    q(&account)
                ));
            }
        }
    } else if text.contains("ErrorNonExistentMailbox") {
        report.fail(format!("{mailbox} has no mailbox on this server ({text})"));
    } else if text.contains("HTTP 401") || text.contains("token") {
        report.fail(format!(
            "authentication as {account} failed ({text}); check the credentials in \
             [integration.exchange.auth]"
        ));
    } else {
        report.fail(format!("{mailbox} cannot be opened: {text}"));
    }
}

/// A PowerShell single-quoted string.
fn powershell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `GetFolder` on the Inbox and Calendar of the mailbox `client` acts on: proves EWS is
/// reachable, the credentials work and the mailbox may be opened. Returns the item counts.
async fn probe_folders(client: &EwsClient) -> Result<(u64, u64), MailboxError> {
    let envelope = request::get_folder(client.context(), &Folder::ALL);
    let op = client.call("GetFolder", envelope).await?;
    let mut counts = Vec::new();
    for result in response::parse_get_folder(&op) {
        let info = result.map_err(|e| e.into_mailbox_error())?;
        counts.push(info.total_count.unwrap_or(0));
    }
    match counts.as_slice() {
        [inbox, calendar] => Ok((*inbox, *calendar)),
        _ => Err(MailboxError::Transient(format!(
            "GetFolder answered {} folders for 2",
            counts.len()
        ))),
    }
}

async fn check_integration(
    report: &mut Report,
    key: &str,
    exchange: &ExchangeConfig,
    resource: &str,
    options: &CheckOptions,
    clock: &SharedClock,
) {
    let client = match ews_client(key, exchange, resource, clock.clone()) {
        Ok(c) => c,
        Err(e) => {
            report.fail(format!("cannot set up the EWS client: {e:#}"));
            return;
        }
    };
    match probe_folders(&client).await {
        Ok((inbox, calendar)) => {
            report.ok("EWS reached and authenticated");
            report.ok(format!(
                "opened {resource} ({}): Inbox {inbox} items, Calendar {calendar} items",
                match exchange.access {
                    MailboxAccess::Impersonation => "impersonated",
                    MailboxAccess::Delegate => "as a delegate",
                }
            ));
        }
        Err(MailboxError::Denied(text)) => {
            explain_denied(report, exchange, resource, &MailboxError::Denied(text));
            return;
        }
        Err(e) => {
            report.fail(format!("cannot reach EWS at {}: {e}", exchange.ews_url));
            return;
        }
    }
    let organizer_mailbox = match &options.organizer {
        Some(organizer) => open_organizer(report, key, exchange, organizer, clock).await,
        None => {
            report.unknown(
                "no sample organizer impersonated (pass --organizer <smtp> to check it and to \
                 compare the resource's copies with the organizer's)",
            );
            None
        }
    };
    let resource_mailbox =
        EwsMailbox::new(client, Folder::ALL.to_vec()).with_sync_batch(SAMPLE_ITEMS);
    let items = match read_meetings(&resource_mailbox).await {
        Ok(items) => items,
        Err(e) => {
            report.fail(format!("cannot read {resource}'s Inbox and Calendar: {e}"));
            return;
        }
    };
    let organizer_copies = match (&options.organizer, &organizer_mailbox) {
        (Some(organizer), Some(_)) => {
            organizer_copies(report, organizer, &resource_mailbox, &items).await
        }
        _ => Vec::new(),
    };
    let findings = analyse(&items, &organizer_copies);
    report_findings(report, resource, &findings);
}

async fn open_organizer(
    report: &mut Report,
    key: &str,
    exchange: &ExchangeConfig,
    organizer: &str,
    clock: &SharedClock,
) -> Option<EwsMailbox> {
    let client = match ews_client(key, exchange, organizer, clock.clone()) {
        Ok(c) => c,
        Err(e) => {
            report.fail(format!("cannot set up the EWS client: {e:#}"));
            return None;
        }
    };
    match probe_folders(&client).await {
        Ok(_) => {
            report.ok(format!("opened the sample organizer {organizer}"));
            Some(EwsMailbox::new(client, vec![Folder::Calendar]))
        }
        Err(e @ MailboxError::Denied(_)) => {
            explain_denied(report, exchange, organizer, &e);
            None
        }
        Err(e) => {
            report.fail(format!("cannot open the sample organizer {organizer}: {e}"));
            None
        }
    }
}

/// The meeting requests and calendar items among the first [`SAMPLE_ITEMS`] of the resource's
/// Inbox and Calendar.
async fn read_meetings(mailbox: &EwsMailbox) -> Result<Vec<MeetingItem>, MailboxError> {
    let mut meetings = Vec::new();
    for folder in Folder::ALL {
        let items = read_folder(mailbox, folder, Pages::First).await?;
        meetings.extend(
            items
                .into_iter()
                .filter(|item| !matches!(item.kind, MessageKind::Cancellation)),
        );
    }
    Ok(meetings)
}

/// The organizer's own calendar item for each resource item `organizer` organized
/// (`None` where it is not found), in the order of `items`.
async fn organizer_copies(
    report: &mut Report,
    organizer: &str,
    mailbox: &EwsMailbox,
    items: &[MeetingItem],
) -> Vec<Option<MeetingItem>> {
    let mut copies = Vec::with_capacity(items.len());
    let mut failed = None;
    for item in items {
        if !item.organizer.email.eq_ignore_ascii_case(organizer) || failed.is_some() {
            copies.push(None);
            continue;
        }
        match mailbox.organizer_item(organizer, &item.uid).await {
            Ok(copy) => copies.push(copy),
            Err(e) => {
                failed = Some(e);
                copies.push(None);
            }
        }
    }
    if let Some(e) = failed {
        report.unknown(format!(
            "could not read {organizer}'s calendar to compare with: {e}"
        ));
    }
    copies
}

/// How sure a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Seen against the organizer's own copy, or a trace only the setting leaves.
    Confirmed,
    /// Likely from the resource's items alone (no organizer copy to compare with).
    Probable,
}

/// What the resource mailbox shows about the Calendar Attendant's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Meeting items read (requests and calendar items).
    pub items: usize,
    /// Items compared with the organizer's copy.
    pub compared: usize,
    /// Calendar items the attendant filed but nobody answered (AutoUpdate), with one subject.
    pub auto_filed: Vec<String>,
    pub delete_comments: Option<Evidence>,
    pub delete_subject: Option<Evidence>,
    pub add_organizer_to_subject: Option<Evidence>,
}

/// `true` when a body holds no text (an empty HTML document counts as empty).
fn is_empty_body(body: &Body) -> bool {
    let text = if body.html {
        vmr_protocol::tag::html_to_plain(&body.content)
    } else {
        body.content.clone()
    };
    text.trim().is_empty()
}

fn organizer_name(item: &MeetingItem) -> &str {
    if item.organizer.name.is_empty() {
        &item.organizer.email
    } else {
        &item.organizer.name
    }
}

fn stronger(a: Option<Evidence>, b: Evidence) -> Option<Evidence> {
    match a {
        Some(Evidence::Confirmed) => a,
        _ => Some(b),
    }
}

/// Reads the settings' traces from `items` (the resource's meeting items) and `copies` (the
/// organizer's copy of each, where found).
pub fn analyse(items: &[MeetingItem], copies: &[Option<MeetingItem>]) -> Findings {
    let mut findings = Findings {
        items: items.len(),
        ..Findings::default()
    };
    let mut empty_bodies = 0;
    for (i, item) in items.iter().enumerate() {
        if matches!(item.kind, MessageKind::CalendarItem)
            && !item.is_cancelled
            && matches!(
                item.my_response,
                MyResponse::Tentative | MyResponse::NoResponseReceived | MyResponse::Unknown
            )
        {
            findings.auto_filed.push(item.subject.clone());
        }
        let name = organizer_name(item);
        let subject = item.subject.trim();
        let body_empty = is_empty_body(&item.body);
        if body_empty {
            empty_bodies += 1;
        }
        match copies.get(i).and_then(Option::as_ref) {
            Some(copy) => {
                findings.compared += 1;
                if body_empty && !is_empty_body(&copy.body) {
                    findings.delete_comments = Some(Evidence::Confirmed);
                }
                let original = copy.subject.trim();
                if subject != original {
                    if subject.is_empty() {
                        findings.delete_subject = Some(Evidence::Confirmed);
                    } else if subject == name {
                        findings.delete_subject = Some(Evidence::Confirmed);
                        findings.add_organizer_to_subject = Some(Evidence::Confirmed);
                    } else if subject.starts_with(name) {
                        findings.add_organizer_to_subject = Some(Evidence::Confirmed);
                    }
                }
            }
            None => {
                if subject.is_empty() {
                    findings.delete_subject = stronger(findings.delete_subject, Evidence::Probable);
                } else if !name.is_empty() && subject == name {
                    findings.delete_subject = stronger(findings.delete_subject, Evidence::Probable);
                    findings.add_organizer_to_subject =
                        stronger(findings.add_organizer_to_subject, Evidence::Probable);
                } else if !name.is_empty() && subject.starts_with(&format!("{name} ")) {
                    findings.add_organizer_to_subject =
                        stronger(findings.add_organizer_to_subject, Evidence::Probable);
                }
            }
        }
    }
    if findings.delete_comments.is_none() && !items.is_empty() && empty_bodies == items.len() {
        findings.delete_comments = Some(Evidence::Probable);
    }
    findings
}

fn evidence_word(evidence: Evidence) -> &'static str {
    match evidence {
        Evidence::Confirmed => "seen",
        Evidence::Probable => "probably (no organizer copy to compare with)",
    }
}

fn report_findings(report: &mut Report, resource: &str, findings: &Findings) {
    if findings.items == 0 {
        report.unknown(format!(
            "AutomateProcessing, DeleteComments, DeleteSubject, AddOrganizerToSubject: could not \
             be determined, {resource}'s Inbox and Calendar hold no meeting yet; send it a test \
             meeting (with a body) and run check again"
        ));
        return;
    }
    let mut switches: Vec<&str> = Vec::new();
    if findings.auto_filed.is_empty() {
        report.ok(format!(
            "AutomateProcessing: no meeting on the calendar that the service did not answer \
             ({} meeting items read)",
            findings.items
        ));
    } else {
        report.fail(format!(
            "AutomateProcessing is not None: the Calendar Attendant put {} meeting(s) on the \
             calendar as tentative without an answer (e.g. {:?})",
            findings.auto_filed.len(),
            findings.auto_filed[0]
        ));
        switches.push("-AutomateProcessing None");
    }
    let compared = if findings.compared > 0 {
        format!("{} compared with the organizer's copy", findings.compared)
    } else {
        "none compared with an organizer's copy".to_owned()
    };
    match findings.delete_comments {
        Some(evidence) => {
            report.fail(format!(
                "DeleteComments is on: meeting bodies are stripped ({}; {compared})",
                evidence_word(evidence)
            ));
            switches.push("-DeleteComments $false");
        }
        None if findings.compared > 0 => {
            report.ok(format!("DeleteComments: bodies are kept ({compared})"))
        }
        None => report.ok(format!(
            "DeleteComments: meeting bodies are present ({compared})"
        )),
    }
    match findings.delete_subject {
        Some(evidence) => {
            report.fail(format!(
                "DeleteSubject is on: subjects are removed ({})",
                evidence_word(evidence)
            ));
            switches.push("-DeleteSubject $false");
        }
        None => report.ok("DeleteSubject: subjects are kept"),
    }
    match findings.add_organizer_to_subject {
        Some(evidence) => {
            report.fail(format!(
                "AddOrganizerToSubject is on: the organizer's name is put in the subject ({})",
                evidence_word(evidence)
            ));
            switches.push("-AddOrganizerToSubject $false");
        }
        None => report.ok("AddOrganizerToSubject: subjects are not changed"),
    }
    if !switches.is_empty() {
        report.line(
            "fix",
            format!(
                "Set-CalendarProcessing -Identity {} {}",
                powershell_quote(resource),
                switches.join(" ")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmr_core::meeting::{ItemType, Person, RequestType};

    fn item(kind: MessageKind, subject: &str, body: &str, response: MyResponse) -> MeetingItem {
        MeetingItem {
            item_id: "id".into(),
            change_key: "ck".into(),
            kind,
            item_type: ItemType::Single,
            uid: "AB".into(),
            recurrence_id: None,
            subject: subject.into(),
            body: Body {
                html: true,
                content: format!("<html><body>{body}</body></html>"),
            },
            organizer: Person {
                name: "Alice".into(),
                email: "alice@example.com".into(),
            },
            sender: None,
            attendees: Vec::new(),
            resources: Vec::new(),
            start: 0,
            end: 1,
            time_zone: None,
            recurrence: None,
            moved_occurrences: Vec::new(),
            deleted_occurrences: Vec::new(),
            sequence: 0,
            is_cancelled: false,
            my_response: response,
            last_modified: 0,
        }
    }

    const REQUEST: MessageKind = MessageKind::Request(RequestType::New);

    #[test]
    fn a_request_with_body_and_subject_is_fine() {
        let items = [item(
            REQUEST,
            "Plan",
            "Agenda",
            MyResponse::NoResponseReceived,
        )];
        let copies = [Some(item(
            MessageKind::CalendarItem,
            "Plan",
            "Agenda",
            MyResponse::Organizer,
        ))];
        let f = analyse(&items, &copies);
        assert_eq!(f.compared, 1);
        assert!(f.auto_filed.is_empty());
        assert_eq!(f.delete_comments, None);
        assert_eq!(f.delete_subject, None);
        assert_eq!(f.add_organizer_to_subject, None);
    }

    #[test]
    fn stripped_items_and_tentative_calendar_copies_are_found() {
        let items = [
            item(REQUEST, "Alice", "", MyResponse::NoResponseReceived),
            item(
                MessageKind::CalendarItem,
                "Alice",
                "",
                MyResponse::NoResponseReceived,
            ),
        ];
        let original = item(
            MessageKind::CalendarItem,
            "Plan",
            "Agenda",
            MyResponse::Organizer,
        );
        let f = analyse(&items, &[Some(original.clone()), Some(original)]);
        assert_eq!(f.auto_filed.len(), 1);
        assert_eq!(f.delete_comments, Some(Evidence::Confirmed));
        assert_eq!(f.delete_subject, Some(Evidence::Confirmed));
        assert_eq!(f.add_organizer_to_subject, Some(Evidence::Confirmed));
        // Without the organizer's copy the same traces are only probable.
        let f = analyse(&items, &[None, None]);
        assert_eq!(f.delete_comments, Some(Evidence::Probable));
        assert_eq!(f.delete_subject, Some(Evidence::Probable));
    }

    #[test]
    fn an_accepted_calendar_item_is_the_services_answer() {
        let items = [item(
            MessageKind::CalendarItem,
            "Plan",
            "x",
            MyResponse::Accept,
        )];
        assert!(analyse(&items, &[None]).auto_filed.is_empty());
    }
}
