//! What the admin API and page read and write: paged, filtered lists of the
//! scheduling tables (`scheduled_conference` with its VMR and meeting,
//! `scheduled_alias`, `recurring_conference`, `scheduling_operation`), each
//! integration's health, the VMRs' extra aliases (`conference_extra_alias`)
//! and the audit log (`admin_audit`).
//!
//! Every list takes a limit and an offset and answers with the total the
//! filter matches, so a page can say "51–100 of 734". Searches are
//! case-insensitive substring matches (`LOWER(…) LIKE`, with `%`, `_` and `\`
//! in the search text escaped). Writes (adding or removing an extra alias)
//! run in one transaction together with their audit row. The two generated
//! aliases of a VMR are never written here: an attempt to add, change or
//! remove one is refused with [`AdminWriteError::GeneratedAlias`].

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, Row};
use uuid::Uuid;

use crate::{query_err, Storage, StorageError};

/// The audit actor of the scheduling service's own writes (Pexip's log shows
/// the same user name).
pub const SERVICE_ACTOR: &str = "schedulingservice";
/// Most rows one page returns.
pub const MAX_PAGE: i64 = 500;
/// Longest extra alias accepted (characters).
pub const EXTRA_ALIAS_MAX_CHARS: usize = 250;
/// Longest extra alias description accepted (characters).
pub const EXTRA_ALIAS_DESCRIPTION_MAX_CHARS: usize = 250;

/// Which slice of a list to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    /// Rows wanted (clamped to 1..=[`MAX_PAGE`]).
    pub limit: i64,
    /// Rows skipped (negative counts as 0).
    pub offset: i64,
}

impl Default for Paging {
    fn default() -> Self {
        Paging {
            limit: 50,
            offset: 0,
        }
    }
}

impl Paging {
    fn clamped(self) -> (i64, i64) {
        (self.limit.clamp(1, MAX_PAGE), self.offset.max(0))
    }
}

/// One page of a list and how many rows the filter matches in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// Filter of [`Storage::admin_scheduled_conferences`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConferenceFilter {
    pub integration: Option<String>,
    /// The organizer's SMTP address (exact, case-insensitive).
    pub organizer: Option<String>,
    /// Windows ending after this time (Unix ms).
    pub from: Option<i64>,
    /// Windows starting before this time (Unix ms).
    pub to: Option<i64>,
    /// Substring of the VMR name, an alias (generated or extra), the subject
    /// or the organizer.
    pub search: Option<String>,
}

/// One scheduled conference (a window of a meeting or of one occurrence)
/// with its VMR and meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledConferenceRow {
    /// The window's id (`scheduled_conference.id`).
    pub id: String,
    pub integration: String,
    pub conference_id: String,
    /// The VMR's name.
    pub name: String,
    /// The generated alias and numeric alias.
    pub alias: String,
    pub numeric_alias: String,
    /// Aliases admins added.
    pub extra_aliases: Vec<String>,
    /// The subject as stored (what Exchange delivered).
    pub subject: String,
    pub organizer: Option<String>,
    pub start_time: i64,
    pub end_time: i64,
    pub is_series: bool,
    pub occurrence_index: i64,
    pub meeting_uid: String,
    /// When the VMR was deleted, if it was.
    pub deletion_time: Option<i64>,
}

/// An extra alias of a VMR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraAlias {
    pub id: String,
    pub conference_id: String,
    pub alias: String,
    pub description: String,
    pub created_at: i64,
    /// The admin (token label) who added it.
    pub created_by: String,
}

/// A VMR with everything the detail page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConferenceDetail {
    pub conference: crate::ConferenceRecord,
    /// The generated alias's uuid and state (`scheduled_alias`).
    pub alias_uuid: String,
    pub alias_state: String,
    pub meeting_uid: Option<String>,
    pub organizer: Option<String>,
    pub subject: Option<String>,
    pub meeting_state: Option<String>,
    pub is_series: bool,
    pub extra_aliases: Vec<ExtraAlias>,
    /// The VMR's windows, by start.
    pub windows: Vec<crate::WindowRecord>,
}

/// Filter of [`Storage::admin_aliases`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AliasFilter {
    pub integration: Option<String>,
    /// `allocated`, `bound` or `deleted`.
    pub state: Option<String>,
    /// Substring of the alias, numeric alias, uuid, meeting UID or organizer.
    pub search: Option<String>,
}

/// One `scheduled_alias` row as the admin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasRow {
    pub uuid: String,
    pub integration: String,
    pub alias: String,
    pub numeric_alias: String,
    pub state: String,
    pub created_at: i64,
    pub conference_deletion_time: Option<i64>,
    pub meeting_uid: Option<String>,
    pub organizer: Option<String>,
}

/// Filter of [`Storage::admin_recurring_conferences`] and
/// [`Storage::admin_audit`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimpleFilter {
    pub integration: Option<String>,
    pub search: Option<String>,
}

/// One series (`recurring_conference`) with its VMR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurringRow {
    pub id: String,
    pub integration: String,
    pub conference_id: String,
    pub name: String,
    pub alias: String,
    pub meeting_uid: String,
    pub subject: String,
    pub organizer: Option<String>,
    pub current_index: i64,
    pub is_depleted: bool,
}

/// Filter of [`Storage::admin_operations`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperationFilter {
    pub integration: Option<String>,
    pub success: Option<bool>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Substring of the transaction uuid, error code or description, or the
    /// resource id.
    pub search: Option<String>,
}

/// One processing log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRow {
    pub transaction_uuid: String,
    pub integration: String,
    pub creation_time: i64,
    pub success: bool,
    pub error_code: String,
    pub error_description: String,
    /// The meeting UID the entry is about.
    pub resource_id: String,
    pub item_id: String,
}

/// What the database knows about one integration's health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntegrationHealth {
    pub integration: String,
    /// When an item was last processed successfully.
    pub last_processed_at: Option<i64>,
    /// When a folder was last synchronised successfully (newest folder).
    pub last_sync_at: Option<i64>,
    /// Per folder: (folder, last successful sync).
    pub folders: Vec<(String, i64)>,
    /// Aliases ever issued, and how many per state.
    pub aliases_issued: i64,
    pub aliases_bound: i64,
    pub aliases_deleted: i64,
    /// The newest reply that failed to reach Exchange: (error, when queued).
    pub last_reply_error: Option<(String, i64)>,
    /// Replies waiting in the outbox.
    pub pending_replies: i64,
    /// The management instance leading the mailbox, with its last heartbeat.
    pub leader: Option<(String, i64)>,
}

/// One audit entry (an admin write, or the service's processing log shown
/// under [`SERVICE_ACTOR`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: String,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub detail: String,
}

/// An audit entry to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub object_type: &'a str,
    pub object_id: &'a str,
    pub detail: &'a str,
    pub at: i64,
}

/// Why an admin write was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminWriteError {
    #[error("no conference {0}")]
    NoConference(String),
    #[error("conference {0} is deleted; its aliases can no longer change")]
    ConferenceDeleted(String),
    #[error("{0:?} is one of the conference's generated aliases, which only the scheduling service sets; they cannot be added, changed or removed")]
    GeneratedAlias(String),
    #[error("the alias {alias:?} is already in use ({by})")]
    Taken { alias: String, by: String },
    #[error("the alias is not acceptable: {0}")]
    Invalid(String),
    #[error("conference {conference} has no extra alias {alias:?}")]
    NoExtraAlias { conference: String, alias: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A bind value of a dynamically built query.
#[derive(Debug, Clone)]
enum Arg {
    Text(String),
    Int(i64),
}

/// A `WHERE` clause built from optional filters, with `$n` placeholders.
#[derive(Debug, Default)]
struct Conditions {
    clauses: Vec<String>,
    args: Vec<Arg>,
}

impl Conditions {
    /// Adds `clause`, every `{}` in it standing for the same new placeholder bound to `arg`.
    fn add(&mut self, clause: &str, arg: Arg) {
        self.args.push(arg);
        let placeholder = format!("${}", self.args.len());
        self.clauses.push(clause.replace("{}", &placeholder));
    }

    fn text(&mut self, clause: &str, value: Option<&str>) {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            self.add(clause, Arg::Text(v.to_owned()));
        }
    }

    fn int(&mut self, clause: &str, value: Option<i64>) {
        if let Some(v) = value {
            self.add(clause, Arg::Int(v));
        }
    }

    fn search(&mut self, clause: &str, value: Option<&str>) {
        if let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) {
            self.add(clause, Arg::Text(like_pattern(v)));
        }
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// The placeholders for LIMIT and OFFSET after the filter's own.
    fn limit_offset(&self) -> String {
        format!(
            " LIMIT ${} OFFSET ${}",
            self.args.len() + 1,
            self.args.len() + 2
        )
    }

    fn bind<'q>(
        &self,
        mut q: sqlx::query::Query<'q, Any, AnyArguments>,
    ) -> sqlx::query::Query<'q, Any, AnyArguments> {
        for a in &self.args {
            q = match a {
                Arg::Text(s) => q.bind(s.clone()),
                Arg::Int(i) => q.bind(*i),
            };
        }
        q
    }
}

/// `%text%` in lower case with LIKE's wildcards and escape character escaped
/// (used with `ESCAPE '\'`).
fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// An extra alias as stored (trimmed, lower case), or why it is refused:
/// empty, too long, containing whitespace or control characters.
pub fn normalise_extra_alias(alias: &str) -> Result<String, AdminWriteError> {
    let alias = alias.trim();
    if alias.is_empty() {
        return Err(AdminWriteError::Invalid("the alias is empty".into()));
    }
    if alias.chars().count() > EXTRA_ALIAS_MAX_CHARS {
        return Err(AdminWriteError::Invalid(format!(
            "the alias is longer than {EXTRA_ALIAS_MAX_CHARS} characters"
        )));
    }
    if let Some(c) = alias.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(AdminWriteError::Invalid(format!(
            "the alias contains {c:?}; aliases have no spaces or control characters"
        )));
    }
    Ok(alias.to_lowercase())
}

fn get_bool(row: &AnyRow, column: &str) -> Result<bool, sqlx::Error> {
    Ok(row.try_get::<i64, _>(column)? != 0)
}

/// The parts of a list query [`Storage::page`] puts together.
struct ListSql<'a> {
    /// The selected columns.
    columns: &'a str,
    /// `" FROM …"` with its joins (the filter's `WHERE` follows).
    from: &'a str,
    /// The order, ending in a unique column so that pages never overlap.
    order_by: &'a str,
}

const SCHEDULED_FROM: &str = " FROM scheduled_conference sc \
     JOIN conference c ON c.id = sc.conference_id \
     LEFT JOIN meeting m ON m.integration = sc.integration AND m.uid = sc.meeting_uid";

impl Storage {
    /// One page of a filtered list, and how many rows the filter keeps in all: `SELECT
    /// {columns}{from}{WHERE …} ORDER BY {order_by} LIMIT … OFFSET …`, each row read by
    /// `read`.
    async fn page<T>(
        &self,
        sql: ListSql<'_>,
        c: &Conditions,
        paging: Paging,
        doing: &'static str,
        read: impl Fn(&AnyRow) -> Result<T, sqlx::Error>,
    ) -> Result<Page<T>, StorageError> {
        let ListSql {
            columns,
            from,
            order_by,
        } = sql;
        let count = format!("SELECT COUNT(*) AS n{from}{}", c.sql());
        let total = c
            .bind(sqlx::query(sqlx::AssertSqlSafe(count)))
            .fetch_one(&self.pool)
            .await
            .and_then(|row| row.try_get::<i64, _>("n"))
            .map_err(query_err(doing))?;
        let (limit, offset) = paging.clamped();
        let select = format!(
            "SELECT {columns}{from}{} ORDER BY {order_by}{}",
            c.sql(),
            c.limit_offset()
        );
        let items = c
            .bind(sqlx::query(sqlx::AssertSqlSafe(select)))
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err(doing))?
            .iter()
            .map(read)
            .collect::<Result<Vec<_>, _>>()
            .map_err(query_err(doing))?;
        Ok(Page {
            items,
            total,
            limit,
            offset,
        })
    }

    /// Scheduled conferences (one row per window) by start time, filtered.
    pub async fn admin_scheduled_conferences(
        &self,
        filter: &ConferenceFilter,
        paging: Paging,
    ) -> Result<Page<ScheduledConferenceRow>, StorageError> {
        const DOING: &str = "listing scheduled conferences";
        let mut c = Conditions::default();
        c.text("sc.integration = {}", filter.integration.as_deref());
        c.text(
            "LOWER(m.organizer_email) = LOWER({})",
            filter.organizer.as_deref(),
        );
        c.int("sc.end_time > {}", filter.from);
        c.int("sc.start_time < {}", filter.to);
        c.search(
            "(LOWER(c.name) LIKE {} ESCAPE '\\' OR LOWER(c.alias) LIKE {} ESCAPE '\\' \
             OR c.numeric_alias LIKE {} ESCAPE '\\' OR LOWER(sc.subject) LIKE {} ESCAPE '\\' \
             OR LOWER(m.organizer_email) LIKE {} ESCAPE '\\' OR EXISTS (SELECT 1 FROM \
             conference_extra_alias x WHERE x.conference_id = c.id AND x.alias LIKE {} ESCAPE '\\'))",
            filter.search.as_deref(),
        );
        let mut page = self
            .page(
                ListSql {
                    columns: "sc.id, sc.integration, sc.conference_id, sc.meeting_uid, \
                              sc.start_time, sc.end_time, sc.subject, sc.occurrence_index, \
                              c.name, c.alias, c.numeric_alias, c.deletion_time, \
                              m.organizer_email, CAST(CASE WHEN sc.recurring_conference_id \
                              IS NOT NULL OR m.is_series = 1 THEN 1 ELSE 0 END AS BIGINT) \
                              AS is_series",
                    from: SCHEDULED_FROM,
                    order_by: "sc.start_time, sc.id",
                },
                &c,
                paging,
                DOING,
                |r| {
                    Ok(ScheduledConferenceRow {
                        id: r.try_get("id")?,
                        integration: r.try_get("integration")?,
                        conference_id: r.try_get("conference_id")?,
                        name: r.try_get("name")?,
                        alias: r.try_get("alias")?,
                        numeric_alias: r.try_get("numeric_alias")?,
                        extra_aliases: Vec::new(),
                        subject: r.try_get("subject")?,
                        organizer: r.try_get("organizer_email")?,
                        start_time: r.try_get("start_time")?,
                        end_time: r.try_get("end_time")?,
                        is_series: get_bool(r, "is_series")?,
                        occurrence_index: r.try_get("occurrence_index")?,
                        meeting_uid: r.try_get("meeting_uid")?,
                        deletion_time: r.try_get("deletion_time")?,
                    })
                },
            )
            .await?;
        let mut ids: Vec<String> = page.items.iter().map(|i| i.conference_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let extras = self.extra_aliases_of(&ids).await?;
        for item in &mut page.items {
            item.extra_aliases = extras
                .iter()
                .filter(|x| x.conference_id == item.conference_id)
                .map(|x| x.alias.clone())
                .collect();
        }
        Ok(page)
    }

    /// The extra aliases admins added to these conferences, by alias (shown on the admin
    /// page, pushed into Infinity with the generated ones).
    pub async fn extra_aliases_of(&self, ids: &[String]) -> Result<Vec<ExtraAlias>, StorageError> {
        const DOING: &str = "reading extra aliases";
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, conference_id, alias, description, created_at, created_by \
             FROM conference_extra_alias WHERE conference_id IN ({}) ORDER BY alias",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in ids {
            q = q.bind(id.clone());
        }
        q.fetch_all(&self.pool)
            .await
            .map_err(query_err(DOING))?
            .iter()
            .map(|r| -> Result<ExtraAlias, sqlx::Error> {
                Ok(ExtraAlias {
                    id: r.try_get("id")?,
                    conference_id: r.try_get("conference_id")?,
                    alias: r.try_get("alias")?,
                    description: r.try_get("description")?,
                    created_at: r.try_get("created_at")?,
                    created_by: r.try_get("created_by")?,
                })
            })
            .collect::<Result<_, _>>()
            .map_err(query_err(DOING))
    }

    /// A VMR with its alias, meeting, extra aliases and windows.
    pub async fn admin_conference(
        &self,
        id: &str,
    ) -> Result<Option<ConferenceDetail>, StorageError> {
        const DOING: &str = "reading a conference for the admin";
        let Some(conference) = self.conference(id).await? else {
            return Ok(None);
        };
        let alias_row = sqlx::query("SELECT id, state FROM scheduled_alias WHERE id = $1")
            .bind(&conference.alias_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err(DOING))?;
        let (alias_uuid, alias_state) = match alias_row {
            Some(r) => (
                r.try_get("id").map_err(query_err(DOING))?,
                r.try_get("state").map_err(query_err(DOING))?,
            ),
            None => (conference.alias_id.clone(), "unknown".to_owned()),
        };
        let meeting = sqlx::query(
            "SELECT uid, organizer_email, subject, state, is_series FROM meeting \
             WHERE integration = $1 AND conference_id = $2 ORDER BY updated_at DESC LIMIT 1",
        )
        .bind(&conference.integration)
        .bind(&conference.id)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err(DOING))?;
        let (meeting_uid, organizer, subject, meeting_state, is_series) = match meeting {
            Some(r) => (
                Some(r.try_get::<String, _>("uid").map_err(query_err(DOING))?),
                Some(
                    r.try_get::<String, _>("organizer_email")
                        .map_err(query_err(DOING))?,
                ),
                Some(
                    r.try_get::<String, _>("subject")
                        .map_err(query_err(DOING))?,
                ),
                Some(r.try_get::<String, _>("state").map_err(query_err(DOING))?),
                get_bool(&r, "is_series").map_err(query_err(DOING))?,
            ),
            None => (None, None, None, None, false),
        };
        let windows = sqlx::query(
            "SELECT occurrence_index, original_start, start_time, end_time, subject \
             FROM scheduled_conference WHERE conference_id = $1 ORDER BY start_time, id",
        )
        .bind(&conference.id)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err(DOING))?
        .iter()
        .map(|r| -> Result<crate::WindowRecord, sqlx::Error> {
            Ok(crate::WindowRecord {
                occurrence_index: r.try_get("occurrence_index")?,
                original_start: r.try_get("original_start")?,
                start_time: r.try_get("start_time")?,
                end_time: r.try_get("end_time")?,
                subject: r.try_get("subject")?,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(query_err(DOING))?;
        let extra_aliases = self
            .extra_aliases_of(std::slice::from_ref(&conference.id))
            .await?;
        Ok(Some(ConferenceDetail {
            conference,
            alias_uuid,
            alias_state,
            meeting_uid,
            organizer,
            subject,
            meeting_state,
            is_series,
            extra_aliases,
            windows,
        }))
    }

    /// Aliases by creation time (newest first), filtered.
    pub async fn admin_aliases(
        &self,
        filter: &AliasFilter,
        paging: Paging,
    ) -> Result<Page<AliasRow>, StorageError> {
        const DOING: &str = "listing aliases";
        let mut c = Conditions::default();
        c.text("integration = {}", filter.integration.as_deref());
        c.text("state = {}", filter.state.as_deref());
        c.search(
            "(LOWER(alias) LIKE {} ESCAPE '\\' OR numeric_alias LIKE {} ESCAPE '\\' \
             OR id LIKE {} ESCAPE '\\' OR LOWER(meeting_uid) LIKE {} ESCAPE '\\' \
             OR LOWER(organizer_email) LIKE {} ESCAPE '\\')",
            filter.search.as_deref(),
        );
        self.page(
            ListSql {
                columns: "id, integration, alias, numeric_alias, state, created_at, \
                          conference_deletion_time, meeting_uid, organizer_email",
                from: " FROM scheduled_alias",
                order_by: "created_at DESC, id",
            },
            &c,
            paging,
            DOING,
            |r| {
                Ok(AliasRow {
                    uuid: r.try_get("id")?,
                    integration: r.try_get("integration")?,
                    alias: r.try_get("alias")?,
                    numeric_alias: r.try_get("numeric_alias")?,
                    state: r.try_get("state")?,
                    created_at: r.try_get("created_at")?,
                    conference_deletion_time: r.try_get("conference_deletion_time")?,
                    meeting_uid: r.try_get("meeting_uid")?,
                    organizer: r.try_get("organizer_email")?,
                })
            },
        )
        .await
    }

    /// Series with their VMR, by subject, filtered.
    pub async fn admin_recurring_conferences(
        &self,
        filter: &SimpleFilter,
        paging: Paging,
    ) -> Result<Page<RecurringRow>, StorageError> {
        const DOING: &str = "listing recurring conferences";
        let from = " FROM recurring_conference r JOIN conference c ON c.id = r.conference_id \
                    LEFT JOIN meeting m ON m.integration = r.integration AND m.uid = r.meeting_uid";
        let mut c = Conditions::default();
        c.text("r.integration = {}", filter.integration.as_deref());
        c.search(
            "(LOWER(r.subject) LIKE {} ESCAPE '\\' OR LOWER(c.name) LIKE {} ESCAPE '\\' \
             OR LOWER(c.alias) LIKE {} ESCAPE '\\' OR c.numeric_alias LIKE {} ESCAPE '\\' \
             OR LOWER(m.organizer_email) LIKE {} ESCAPE '\\' OR LOWER(r.meeting_uid) LIKE {} ESCAPE '\\')",
            filter.search.as_deref(),
        );
        self.page(
            ListSql {
                columns: "r.id, r.integration, r.conference_id, r.meeting_uid, r.current_index, \
                          r.is_depleted, r.subject, c.name, c.alias, m.organizer_email",
                from,
                order_by: "r.subject, r.id",
            },
            &c,
            paging,
            DOING,
            |r| {
                Ok(RecurringRow {
                    id: r.try_get("id")?,
                    integration: r.try_get("integration")?,
                    conference_id: r.try_get("conference_id")?,
                    name: r.try_get("name")?,
                    alias: r.try_get("alias")?,
                    meeting_uid: r.try_get("meeting_uid")?,
                    subject: r.try_get("subject")?,
                    organizer: r.try_get("organizer_email")?,
                    current_index: r.try_get("current_index")?,
                    is_depleted: get_bool(r, "is_depleted")?,
                })
            },
        )
        .await
    }

    /// The processing log, newest first, filtered.
    pub async fn admin_operations(
        &self,
        filter: &OperationFilter,
        paging: Paging,
    ) -> Result<Page<OperationRow>, StorageError> {
        const DOING: &str = "listing scheduling operations";
        let mut c = Conditions::default();
        c.text("integration = {}", filter.integration.as_deref());
        c.int("success = {}", filter.success.map(i64::from));
        c.int("creation_time >= {}", filter.from);
        c.int("creation_time < {}", filter.to);
        c.search(
            "(LOWER(transaction_uuid) LIKE {} ESCAPE '\\' OR LOWER(error_code) LIKE {} ESCAPE '\\' \
             OR LOWER(error_description) LIKE {} ESCAPE '\\' OR LOWER(resource_id) LIKE {} ESCAPE '\\')",
            filter.search.as_deref(),
        );
        self.page(
            ListSql {
                columns: "transaction_uuid, integration, creation_time, success, error_code, \
                          error_description, resource_id, item_id",
                from: " FROM scheduling_operation",
                order_by: "creation_time DESC, transaction_uuid",
            },
            &c,
            paging,
            DOING,
            |r| {
                Ok(OperationRow {
                    transaction_uuid: r.try_get("transaction_uuid")?,
                    integration: r.try_get("integration")?,
                    creation_time: r.try_get("creation_time")?,
                    success: get_bool(r, "success")?,
                    error_code: r.try_get("error_code")?,
                    error_description: r.try_get("error_description")?,
                    resource_id: r.try_get("resource_id")?,
                    item_id: r.try_get("item_id")?,
                })
            },
        )
        .await
    }

    /// What the database says about the integration's health.
    pub async fn admin_integration_health(
        &self,
        integration: &str,
    ) -> Result<IntegrationHealth, StorageError> {
        const DOING: &str = "reading an integration's health";
        let mut h = IntegrationHealth {
            integration: integration.to_owned(),
            last_processed_at: self.last_processed(integration).await?,
            ..IntegrationHealth::default()
        };
        let folders = sqlx::query(
            "SELECT folder, updated_at FROM sync_state WHERE integration = $1 ORDER BY folder",
        )
        .bind(integration)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err(DOING))?;
        for r in &folders {
            let folder: String = r.try_get("folder").map_err(query_err(DOING))?;
            let at: i64 = r.try_get("updated_at").map_err(query_err(DOING))?;
            h.folders.push((folder, at));
        }
        h.last_sync_at = h.folders.iter().map(|(_, at)| *at).max();
        let states = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM scheduled_alias WHERE integration = $1 GROUP BY state",
        )
        .bind(integration)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err(DOING))?;
        for r in &states {
            let state: String = r.try_get("state").map_err(query_err(DOING))?;
            let n: i64 = r.try_get("n").map_err(query_err(DOING))?;
            h.aliases_issued += n;
            match state.as_str() {
                "bound" => h.aliases_bound = n,
                "deleted" => h.aliases_deleted = n,
                _ => {}
            }
        }
        let failed = sqlx::query(
            "SELECT last_error, created_at FROM reply_outbox WHERE integration = $1 \
             AND last_error IS NOT NULL ORDER BY created_at DESC LIMIT 1",
        )
        .bind(integration)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err(DOING))?;
        if let Some(r) = failed {
            h.last_reply_error = Some((
                r.try_get("last_error").map_err(query_err(DOING))?,
                r.try_get("created_at").map_err(query_err(DOING))?,
            ));
        }
        let pending = sqlx::query(
            "SELECT COUNT(*) AS n FROM reply_outbox WHERE integration = $1 AND state = 'pending'",
        )
        .bind(integration)
        .fetch_one(&self.pool)
        .await
        .map_err(query_err(DOING))?;
        h.pending_replies = pending.try_get("n").map_err(query_err(DOING))?;
        let leader = sqlx::query(
            "SELECT instance_id, heartbeat_at FROM integration_leader WHERE integration = $1",
        )
        .bind(integration)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err(DOING))?;
        if let Some(r) = leader {
            h.leader = Some((
                r.try_get("instance_id").map_err(query_err(DOING))?,
                r.try_get("heartbeat_at").map_err(query_err(DOING))?,
            ));
        }
        Ok(h)
    }

    /// The newest successful folder sync of each integration that has one.
    pub async fn last_syncs(&self) -> Result<Vec<(String, i64)>, StorageError> {
        const DOING: &str = "reading the last mailbox syncs";
        sqlx::query(
            "SELECT integration, MAX(updated_at) AS at FROM sync_state GROUP BY integration \
             ORDER BY integration",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err(DOING))?
        .iter()
        .map(|r| -> Result<(String, i64), sqlx::Error> {
            Ok((r.try_get("integration")?, r.try_get("at")?))
        })
        .collect::<Result<_, _>>()
        .map_err(query_err(DOING))
    }

    /// Writes one audit entry (for writes made outside [`Storage::add_extra_alias`] and
    /// [`Storage::remove_extra_alias`], which audit themselves).
    pub async fn record_audit(&self, entry: &NewAudit<'_>) -> Result<String, StorageError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(query_err("writing an audit entry"))?;
        insert_audit(&mut conn, entry).await
    }

    /// The audit log, newest first: admin writes (`admin_audit`) and, under
    /// [`SERVICE_ACTOR`], the scheduling service's processing log. `search`
    /// matches actor, action, object id or detail; `integration` limits the
    /// service's entries to one integration.
    pub async fn admin_audit(
        &self,
        filter: &SimpleFilter,
        paging: Paging,
    ) -> Result<Page<AuditRow>, StorageError> {
        const DOING: &str = "listing the audit log";
        let union = format!(
            "SELECT id, at, actor, action, object_type, object_id, detail FROM admin_audit \
             UNION ALL SELECT transaction_uuid AS id, creation_time AS at, '{SERVICE_ACTOR}' AS actor, \
             CASE WHEN success = 1 THEN 'process_meeting' ELSE 'process_meeting_failed' END AS action, \
             'meeting' AS object_type, resource_id AS object_id, \
             integration || ' ' || error_code AS detail FROM scheduling_operation"
        );
        let mut c = Conditions::default();
        c.text(
            "(actor <> '{SERVICE_ACTOR}' OR detail LIKE {} || ' %')"
                .replace("{SERVICE_ACTOR}", SERVICE_ACTOR)
                .as_str(),
            filter.integration.as_deref(),
        );
        c.search(
            "(LOWER(actor) LIKE {} ESCAPE '\\' OR LOWER(action) LIKE {} ESCAPE '\\' \
             OR LOWER(object_id) LIKE {} ESCAPE '\\' OR LOWER(detail) LIKE {} ESCAPE '\\')",
            filter.search.as_deref(),
        );
        self.page(
            ListSql {
                columns: "id, at, actor, action, object_type, object_id, detail",
                from: &format!(" FROM ({union}) a"),
                order_by: "at DESC, id",
            },
            &c,
            paging,
            DOING,
            |r| {
                Ok(AuditRow {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    object_type: r.try_get("object_type")?,
                    object_id: r.try_get("object_id")?,
                    detail: r.try_get("detail")?,
                })
            },
        )
        .await
    }

    /// Adds an extra alias to a VMR, audited under `actor`, in one transaction.
    /// Refused when the conference is unknown or deleted, when the alias is one
    /// of this conference's generated aliases, or when any integration uses it
    /// already (a generated alias, an issued alias or another extra alias).
    pub async fn add_extra_alias(
        &self,
        conference_id: &str,
        alias: &str,
        description: &str,
        actor: &str,
        now: i64,
    ) -> Result<ExtraAlias, AdminWriteError> {
        let alias = normalise_extra_alias(alias)?;
        let description: String = description
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        if description.chars().count() > EXTRA_ALIAS_DESCRIPTION_MAX_CHARS {
            return Err(AdminWriteError::Invalid(format!(
                "the description is longer than {EXTRA_ALIAS_DESCRIPTION_MAX_CHARS} characters"
            )));
        }
        const DOING: &str = "adding an extra alias";
        let mut tx = self.begin_admin_write(DOING).await?;
        let conference = sqlx::query(
            "SELECT integration, alias, numeric_alias, deletion_time FROM conference WHERE id = $1",
        )
        .bind(conference_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query_err(DOING))?
        .ok_or_else(|| AdminWriteError::NoConference(conference_id.to_owned()))?;
        let integration: String = conference
            .try_get("integration")
            .map_err(query_err(DOING))?;
        let own_alias: String = conference.try_get("alias").map_err(query_err(DOING))?;
        let own_numeric: String = conference
            .try_get("numeric_alias")
            .map_err(query_err(DOING))?;
        let deleted: Option<i64> = conference
            .try_get("deletion_time")
            .map_err(query_err(DOING))?;
        if alias == own_alias.to_lowercase() || alias == own_numeric {
            return Err(AdminWriteError::GeneratedAlias(alias));
        }
        if deleted.is_some() {
            return Err(AdminWriteError::ConferenceDeleted(conference_id.to_owned()));
        }
        let issued = sqlx::query(
            "SELECT integration FROM scheduled_alias WHERE LOWER(alias) = $1 OR numeric_alias = $1 \
             OR alias = $1 LIMIT 1",
        )
        .bind(&alias)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query_err(DOING))?;
        if let Some(r) = issued {
            let other: String = r.try_get("integration").map_err(query_err(DOING))?;
            return Err(AdminWriteError::Taken {
                alias,
                by: format!("an alias issued by integration {other}"),
            });
        }
        let generated =
            sqlx::query("SELECT id FROM conference WHERE alias = $1 OR numeric_alias = $1 LIMIT 1")
                .bind(&alias)
                .fetch_optional(&mut *tx)
                .await
                .map_err(query_err(DOING))?;
        if let Some(r) = generated {
            let other: String = r.try_get("id").map_err(query_err(DOING))?;
            return Err(AdminWriteError::Taken {
                alias,
                by: format!("a generated alias of conference {other}"),
            });
        }
        let id = Uuid::new_v4().simple().to_string();
        let inserted = sqlx::query(
            "INSERT INTO conference_extra_alias (id, conference_id, integration, alias, description, \
             created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (alias) DO NOTHING RETURNING id",
        )
        .bind(&id)
        .bind(conference_id)
        .bind(&integration)
        .bind(&alias)
        .bind(&description)
        .bind(now)
        .bind(actor)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query_err(DOING))?;
        if inserted.is_none() {
            let owner =
                sqlx::query("SELECT conference_id FROM conference_extra_alias WHERE alias = $1")
                    .bind(&alias)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(query_err(DOING))?
                    .map(|r| r.try_get::<String, _>("conference_id"))
                    .transpose()
                    .map_err(query_err(DOING))?
                    .unwrap_or_default();
            return Err(AdminWriteError::Taken {
                alias,
                by: format!("an extra alias of conference {owner}"),
            });
        }
        insert_audit(
            &mut tx,
            &NewAudit {
                actor,
                action: "add_extra_alias",
                object_type: "conference",
                object_id: conference_id,
                detail: &alias,
                at: now,
            },
        )
        .await?;
        if self.push_queue_enabled() {
            crate::push_queue::enqueue_in(&mut tx, &integration, &[conference_id.to_owned()], now)
                .await?;
        }
        tx.commit().await.map_err(query_err(DOING))?;
        Ok(ExtraAlias {
            id,
            conference_id: conference_id.to_owned(),
            alias,
            description,
            created_at: now,
            created_by: actor.to_owned(),
        })
    }

    /// Removes an extra alias of a VMR, audited under `actor`. Refused with
    /// [`AdminWriteError::GeneratedAlias`] for the two generated aliases.
    pub async fn remove_extra_alias(
        &self,
        conference_id: &str,
        alias: &str,
        actor: &str,
        now: i64,
    ) -> Result<(), AdminWriteError> {
        const DOING: &str = "removing an extra alias";
        self.refuse_generated(conference_id, alias).await?;
        let alias = alias.trim().to_lowercase();
        let mut tx = self.begin_admin_write(DOING).await?;
        let removed = sqlx::query(
            "DELETE FROM conference_extra_alias WHERE conference_id = $1 AND alias = $2 \
             RETURNING integration",
        )
        .bind(conference_id)
        .bind(&alias)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query_err(DOING))?;
        let Some(removed) = removed else {
            return Err(AdminWriteError::NoExtraAlias {
                conference: conference_id.to_owned(),
                alias,
            });
        };
        if self.push_queue_enabled() {
            let integration: String = removed.try_get("integration").map_err(query_err(DOING))?;
            crate::push_queue::enqueue_in(&mut tx, &integration, &[conference_id.to_owned()], now)
                .await?;
        }
        insert_audit(
            &mut tx,
            &NewAudit {
                actor,
                action: "remove_extra_alias",
                object_type: "conference",
                object_id: conference_id,
                detail: &alias,
                at: now,
            },
        )
        .await?;
        tx.commit().await.map_err(query_err(DOING))?;
        Ok(())
    }

    /// `Err(GeneratedAlias)` when `alias` is one of the conference's two
    /// generated aliases, `Err(NoConference)` when there is no such conference.
    pub async fn refuse_generated(
        &self,
        conference_id: &str,
        alias: &str,
    ) -> Result<(), AdminWriteError> {
        let c = self
            .conference(conference_id)
            .await?
            .ok_or_else(|| AdminWriteError::NoConference(conference_id.to_owned()))?;
        let wanted = alias.trim().to_lowercase();
        if wanted == c.alias.to_lowercase() || wanted == c.numeric_alias {
            return Err(AdminWriteError::GeneratedAlias(alias.trim().to_owned()));
        }
        Ok(())
    }

    async fn begin_admin_write(
        &self,
        doing: &'static str,
    ) -> Result<sqlx::Transaction<'static, Any>, StorageError> {
        let begun = if self.sqlite {
            self.pool.begin_with("BEGIN IMMEDIATE").await
        } else {
            self.pool.begin().await
        };
        begun.map_err(query_err(doing))
    }
}

async fn insert_audit(
    conn: &mut sqlx::AnyConnection,
    entry: &NewAudit<'_>,
) -> Result<String, StorageError> {
    let id = Uuid::new_v4().simple().to_string();
    sqlx::query(
        "INSERT INTO admin_audit (id, at, actor, action, object_type, object_id, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(entry.at)
    .bind(entry.actor)
    .bind(entry.action)
    .bind(entry.object_type)
    .bind(entry.object_id)
    .bind(entry.detail)
    .execute(conn)
    .await
    .map_err(query_err("writing an audit entry"))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::{like_pattern, normalise_extra_alias, Conditions, Paging, MAX_PAGE};

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("Ab"), "%ab%");
        assert_eq!(like_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }

    #[test]
    fn conditions_number_placeholders_and_reuse_them() {
        let mut c = Conditions::default();
        c.text("a = {}", Some("x"));
        c.text("b = {}", None);
        c.search("(x LIKE {} OR y LIKE {})", Some("q"));
        assert_eq!(c.sql(), " WHERE a = $1 AND (x LIKE $2 OR y LIKE $2)");
        assert_eq!(c.limit_offset(), " LIMIT $3 OFFSET $4");
    }

    #[test]
    fn paging_is_clamped() {
        assert_eq!(
            Paging {
                limit: 0,
                offset: -5
            }
            .clamped(),
            (1, 0)
        );
        assert_eq!(
            Paging {
                limit: 10_000,
                offset: 3
            }
            .clamped(),
            (MAX_PAGE, 3)
        );
    }

    #[test]
    fn extra_aliases_are_trimmed_lowercased_and_checked() {
        assert_eq!(
            normalise_extra_alias("  Board@VC.example.com ").unwrap(),
            "board@vc.example.com"
        );
        assert!(normalise_extra_alias("").is_err());
        assert!(normalise_extra_alias("a b").is_err());
        assert!(normalise_extra_alias("a\u{7}").is_err());
        assert!(normalise_extra_alias(&"x".repeat(251)).is_err());
    }
}
