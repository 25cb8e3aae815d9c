//! Recurring series: the pattern and range Exchange describes (EWS `t:Recurrence`, Graph
//! `patternedRecurrence`) and their expansion into occurrence windows in the organizer's time
//! zone, daylight-saving changes included.
//!
//! The mailbox backends read a series master (its `Start`/`End` in UTC, its Windows time zone
//! id and its [`Recurrence`]); the scheduling decisions need the concrete windows of its
//! occurrences, to reserve a room per series and to know until when it is in use.
//! [`occurrences`] and [`last_end`] expand the pattern alone; [`Series`] adds the master's
//! moved and deleted occurrences ([`apply_exceptions`]).
//!
//! Rules, as Outlook and Exchange apply them:
//! * Each occurrence starts at the master's local time of day (in the series' time zone, see
//!   [`crate::windows_zones`]) and lasts as long as the master, in absolute time: a 09:00
//!   meeting in Berlin stays at 09:00 local across the daylight-saving change, so its UTC
//!   time moves by an hour.
//! * The range start date is the first date counted; occurrences before it do not exist and
//!   do not take an index. `index` counts the remaining ones from 0 (a `Numbered` range of
//!   `count` has indexes `0..count`). An `EndDate` range includes its end date.
//! * Daily and weekly intervals count from the range start: weekly ones from the week (begun on
//!   `first_day_of_week`) that contains it, monthly ones from its month, yearly ones from its
//!   year.
//! * A day of month past the month's end means the month's last day: "the 31st" is
//!   April 30, and a yearly February 29 is February 28 in years that are not leap years.
//! * A local time that does not exist (in the spring-forward gap) moves forward by the gap
//!   (02:30 on that day → 03:30); one that exists twice takes the first (earlier) instant.
//! * Nothing is expanded after 4500-12-31 (Exchange's own "no end" is 4500-08-31).
//! * Daylight-saving rules are chrono-tz's; its tables stop applying summer time near 2100,
//!   so occurrences after that keep standard time.

use chrono::{
    DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta,
    TimeZone, Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::meeting::{MeetingItem, MovedOccurrence, UnixMs};
use crate::windows_zones;

/// Month names as EWS writes them in `t:Month` (English, January first).
pub const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Which days a relative pattern counts (EWS `DayOfWeekType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DayKind {
    /// One named day.
    Day(Weekday),
    /// `Day`: any day of the month.
    AnyDay,
    /// `Weekday`: Monday to Friday.
    Weekday,
    /// `WeekendDay`: Saturday or Sunday.
    WeekendDay,
}

/// Which one of the matching days in a month (EWS `DayOfWeekIndex`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WeekIndex {
    First,
    Second,
    Third,
    Fourth,
    Last,
}

/// The repeating rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pattern {
    Daily {
        interval: u32,
    },
    Weekly {
        interval: u32,
        days: Vec<Weekday>,
        first_day_of_week: Weekday,
    },
    AbsoluteMonthly {
        interval: u32,
        day_of_month: u32,
    },
    RelativeMonthly {
        interval: u32,
        day: DayKind,
        index: WeekIndex,
    },
    AbsoluteYearly {
        month: u32,
        day_of_month: u32,
    },
    RelativeYearly {
        month: u32,
        day: DayKind,
        index: WeekIndex,
    },
}

/// Where the series starts and ends (dates in the organizer's time zone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Range {
    NoEnd { start: NaiveDate },
    EndDate { start: NaiveDate, end: NaiveDate },
    Numbered { start: NaiveDate, count: u32 },
}

/// A recurrence: one pattern, one range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recurrence {
    pub pattern: Pattern,
    pub range: Range,
}

/// One occurrence of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occurrence {
    /// 0-based position in the series by the pattern (deleted occurrences keep their index).
    pub index: u32,
    /// When it starts by the pattern (what EWS calls `OriginalStart` / `RecurrenceId`).
    pub original_start: UnixMs,
    pub start: UnixMs,
    pub end: UnixMs,
}

/// Why a series cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecurrenceError {
    /// The time zone is neither a Windows time zone id nor an IANA name.
    #[error("unknown time zone {0:?}: neither a Windows time zone id nor an IANA name")]
    UnknownTimeZone(String),
    /// The pattern, the range, the master's times or the window make no sense; says what.
    #[error("invalid recurrence: {0}")]
    Invalid(String),
}

/// The last date ever expanded.
const LAST_DATE: NaiveDate = match NaiveDate::from_ymd_opt(4500, 12, 31) {
    Some(date) => date,
    None => panic!("4500-12-31 is a date"),
};

/// Occurrences of the series whose window `[start, end)` overlaps `[from, until)`, in order,
/// at most `limit`. A zero-length occurrence overlaps when `from <= start < until`.
///
/// `first_start`/`first_end`: the master's Start/End (UTC ms); they give the local time of day
/// and the duration. `time_zone`: a Windows or IANA id (`None` → UTC).
///
/// The expansion starts near `from` (arithmetic, not a walk from the range start) and stops at
/// `until`, at `limit`, at the range's end or at 4500-12-31, whichever comes first.
pub fn occurrences(
    rec: &Recurrence,
    first_start: UnixMs,
    first_end: UnixMs,
    time_zone: Option<&str>,
    from: UnixMs,
    until: UnixMs,
    limit: usize,
) -> Result<Vec<Occurrence>, RecurrenceError> {
    let plan = Plan::new(rec, first_start, first_end, time_zone)?;
    if from > until {
        return Err(RecurrenceError::Invalid(format!(
            "window starts at {from} ms, after its end {until} ms"
        )));
    }
    Ok(plan.window(from, until, limit))
}

/// End of the last occurrence, `None` for a series without end (`NoEnd`).
///
/// An `EndDate` range with no occurrence at all (say weekly on Mondays from a Tuesday to the
/// Thursday after) is [`RecurrenceError::Invalid`].
pub fn last_end(
    rec: &Recurrence,
    first_start: UnixMs,
    first_end: UnixMs,
    time_zone: Option<&str>,
) -> Result<Option<UnixMs>, RecurrenceError> {
    let plan = Plan::new(rec, first_start, first_end, time_zone)?;
    let last_period = match rec.range {
        Range::NoEnd { .. } => return Ok(None),
        Range::EndDate { .. } => plan.period_of_date(plan.end_date),
        Range::Numbered { count, .. } => plan
            .period_of_index(u64::from(count).saturating_sub(1))
            .min(plan.period_of_date(plan.end_date)),
    };
    let mut last = None;
    plan.walk(last_period.saturating_sub(1), |occurrence| {
        last = Some(occurrence.end);
        true
    });
    match last {
        Some(end) => Ok(Some(end)),
        None => Err(RecurrenceError::Invalid(format!(
            "no occurrence between the range start {} and its end {}",
            plan.start, plan.end_date
        ))),
    }
}

/// Applies a series' exceptions to occurrences expanded by the pattern: those whose
/// `original_start` is in `deleted` are dropped; those in `moved` take the moved start and end
/// (keeping `index` and `original_start`). The result is ordered by start (a move can change
/// the order).
///
/// This neither adds nor drops by window: an occurrence moved into a window from outside it is
/// not in `occurrences` to begin with, and one moved out stays. [`Series::occurrences`] expands
/// and applies exceptions for a window, both cases included.
pub fn apply_exceptions(
    occurrences: Vec<Occurrence>,
    moved: &[MovedOccurrence],
    deleted: &[UnixMs],
) -> Vec<Occurrence> {
    let mut applied: Vec<Occurrence> = occurrences
        .into_iter()
        .filter(|occurrence| !deleted.contains(&occurrence.original_start))
        .map(|mut occurrence| {
            if let Some(to) = moved
                .iter()
                .find(|m| m.original_start == occurrence.original_start)
            {
                occurrence.start = to.start;
                occurrence.end = to.end;
            }
            occurrence
        })
        .collect();
    applied.sort_by_key(|occurrence| (occurrence.start, occurrence.index));
    applied
}

/// A recurring series as the master item describes it: pattern and range, the master's
/// Start/End and time zone, and the occurrences moved or deleted since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Series<'a> {
    pub recurrence: &'a Recurrence,
    /// The master's Start (UTC ms).
    pub first_start: UnixMs,
    /// The master's End (UTC ms).
    pub first_end: UnixMs,
    /// Windows or IANA time zone id; `None` → UTC.
    pub time_zone: Option<&'a str>,
    pub moved: &'a [MovedOccurrence],
    /// Original starts of deleted occurrences.
    pub deleted: &'a [UnixMs],
}

impl<'a> Series<'a> {
    /// The series a master item describes, `None` when the item has no recurrence.
    pub fn of_item(item: &'a MeetingItem) -> Option<Self> {
        Some(Series {
            recurrence: item.recurrence.as_ref()?,
            first_start: item.start,
            first_end: item.end,
            time_zone: item.time_zone.as_deref(),
            moved: &item.moved_occurrences,
            deleted: &item.deleted_occurrences,
        })
    }

    /// The occurrences as the calendar shows them (exceptions applied) whose window overlaps
    /// `[from, until)`, by start, at most `limit`. This includes an occurrence moved into the
    /// window from outside it and leaves out one moved away from it.
    ///
    /// A moved occurrence whose original start is not an occurrence of the pattern is left out
    /// (and logged): Exchange never sends one, and it would have no index.
    pub fn occurrences(
        &self,
        from: UnixMs,
        until: UnixMs,
        limit: usize,
    ) -> Result<Vec<Occurrence>, RecurrenceError> {
        let plan = Plan::new(
            self.recurrence,
            self.first_start,
            self.first_end,
            self.time_zone,
        )?;
        if from > until {
            return Err(RecurrenceError::Invalid(format!(
                "window starts at {from} ms, after its end {until} ms"
            )));
        }
        // Each exception takes at most one pattern occurrence out of the window.
        let reserve = self.moved.len().saturating_add(self.deleted.len());
        let mut by_pattern = plan.window(from, until, limit.saturating_add(reserve));
        for moved in self.moved {
            let moved_in = overlaps(moved.start, moved.end, from, until)
                && !by_pattern
                    .iter()
                    .any(|o| o.original_start == moved.original_start);
            if !moved_in {
                continue;
            }
            match plan.occurrence_starting_at(moved.original_start) {
                Some(original) => by_pattern.push(original),
                None => tracing::warn!(
                    original_start = moved.original_start,
                    "moved occurrence does not match the series pattern; left out"
                ),
            }
        }
        let mut shown = apply_exceptions(by_pattern, self.moved, self.deleted);
        shown.retain(|o| overlaps(o.start, o.end, from, until));
        shown.truncate(limit);
        Ok(shown)
    }

    /// When the series is over: the end of its last occurrence by the pattern or the end of a
    /// moved occurrence, whichever is later; `None` for a series without end. An upper bound
    /// when the last occurrences were deleted.
    pub fn last_end(&self) -> Result<Option<UnixMs>, RecurrenceError> {
        let by_pattern = last_end(
            self.recurrence,
            self.first_start,
            self.first_end,
            self.time_zone,
        )?;
        Ok(by_pattern.map(|end| self.moved.iter().map(|m| m.end).fold(end, UnixMs::max)))
    }
}

/// Whether `[start, end)` overlaps `[from, until)`; a zero-length window at `from` does.
fn overlaps(start: UnixMs, end: UnixMs, from: UnixMs, until: UnixMs) -> bool {
    start < until && (end > from || (start == end && start >= from))
}

/// How the days of the pattern are laid out in periods. Period `k` of a daily or weekly
/// pattern starts `k * step_days` days after `origin`; period `k` of a monthly or yearly one is
/// the month `first_month + k * step_months` (months counted as `year * 12 + month - 1`).
#[derive(Debug, Clone)]
enum Layout {
    Days {
        origin: NaiveDate,
        step_days: u64,
        /// Days after the period's start, ascending.
        offsets: Vec<u64>,
    },
    Months {
        first_month: i64,
        step_months: i64,
        day: DayRule,
    },
}

#[derive(Debug, Clone, Copy)]
enum DayRule {
    Absolute(u32),
    Relative(DayKind, WeekIndex),
}

/// A validated series, ready to expand.
#[derive(Debug, Clone)]
struct Plan {
    layout: Layout,
    /// Range start: the first date counted.
    start: NaiveDate,
    /// Last date counted: the range's end date, or [`LAST_DATE`].
    end_date: NaiveDate,
    count: Option<u64>,
    /// Occurrences in period 0 (on or after `start`).
    first_period_count: u64,
    /// Occurrences in every later period.
    per_period: u64,
    time: NaiveTime,
    duration_ms: i64,
    tz: Tz,
}

fn invalid(what: String) -> RecurrenceError {
    RecurrenceError::Invalid(what)
}

fn check_interval(interval: u32) -> Result<i64, RecurrenceError> {
    if interval == 0 {
        return Err(invalid(
            "pattern interval is 0; it must be at least 1".into(),
        ));
    }
    Ok(i64::from(interval))
}

fn check_day_of_month(day: u32) -> Result<u32, RecurrenceError> {
    if !(1..=31).contains(&day) {
        return Err(invalid(format!("day_of_month {day} is not in 1..=31")));
    }
    Ok(day)
}

fn check_month(month: u32) -> Result<i64, RecurrenceError> {
    if !(1..=12).contains(&month) {
        return Err(invalid(format!("month {month} is not in 1..=12")));
    }
    Ok(i64::from(month) - 1)
}

fn month_number(date: NaiveDate) -> i64 {
    i64::from(date.year()) * 12 + i64::from(date.month0())
}

impl Plan {
    fn new(
        rec: &Recurrence,
        first_start: UnixMs,
        first_end: UnixMs,
        time_zone: Option<&str>,
    ) -> Result<Self, RecurrenceError> {
        let tz = match time_zone {
            None => Tz::UTC,
            Some(id) => windows_zones::zone(id)
                .ok_or_else(|| RecurrenceError::UnknownTimeZone(id.to_owned()))?,
        };
        if first_end < first_start {
            return Err(invalid(format!(
                "the master ends at {first_end} ms, before it starts at {first_start} ms"
            )));
        }
        let time = DateTime::from_timestamp_millis(first_start)
            .ok_or_else(|| {
                invalid(format!(
                    "the master's start {first_start} ms is out of range"
                ))
            })?
            .with_timezone(&tz)
            .time();
        let (start, end_date, count) = match rec.range {
            Range::NoEnd { start } => (start, LAST_DATE, None),
            Range::EndDate { start, end } => {
                if end < start {
                    return Err(invalid(format!(
                        "range end date {end} is before its start date {start}"
                    )));
                }
                (start, end.min(LAST_DATE), None)
            }
            Range::Numbered { start, count } => {
                if count == 0 {
                    return Err(invalid("numbered range has 0 occurrences".into()));
                }
                (start, LAST_DATE, Some(u64::from(count)))
            }
        };
        if start > LAST_DATE {
            return Err(invalid(format!(
                "range start {start} is after {LAST_DATE}, the last date expanded"
            )));
        }
        let layout = match &rec.pattern {
            Pattern::Daily { interval } => Layout::Days {
                origin: start,
                step_days: check_interval(*interval)?.unsigned_abs(),
                offsets: vec![0],
            },
            Pattern::Weekly {
                interval,
                days,
                first_day_of_week,
            } => {
                let step = check_interval(*interval)?.unsigned_abs();
                if days.is_empty() {
                    return Err(invalid("weekly pattern names no day of the week".into()));
                }
                let mut offsets: Vec<u64> = days
                    .iter()
                    .map(|day| u64::from(day.days_since(*first_day_of_week)))
                    .collect();
                offsets.sort_unstable();
                offsets.dedup();
                let into_week = u64::from(start.weekday().days_since(*first_day_of_week));
                Layout::Days {
                    origin: start - Days::new(into_week),
                    step_days: 7 * step,
                    offsets,
                }
            }
            Pattern::AbsoluteMonthly {
                interval,
                day_of_month,
            } => Layout::Months {
                first_month: month_number(start),
                step_months: check_interval(*interval)?,
                day: DayRule::Absolute(check_day_of_month(*day_of_month)?),
            },
            Pattern::RelativeMonthly {
                interval,
                day,
                index,
            } => Layout::Months {
                first_month: month_number(start),
                step_months: check_interval(*interval)?,
                day: DayRule::Relative(*day, *index),
            },
            Pattern::AbsoluteYearly {
                month,
                day_of_month,
            } => Layout::Months {
                first_month: i64::from(start.year()) * 12 + check_month(*month)?,
                step_months: 12,
                day: DayRule::Absolute(check_day_of_month(*day_of_month)?),
            },
            Pattern::RelativeYearly { month, day, index } => Layout::Months {
                first_month: i64::from(start.year()) * 12 + check_month(*month)?,
                step_months: 12,
                day: DayRule::Relative(*day, *index),
            },
        };
        let per_period = match &layout {
            Layout::Days { offsets, .. } => offsets.len() as u64,
            Layout::Months { .. } => 1,
        };
        let mut plan = Plan {
            layout,
            start,
            end_date,
            count,
            first_period_count: 0,
            per_period,
            time,
            duration_ms: first_end - first_start,
            tz,
        };
        plan.first_period_count = plan.period_dates(0).map_or(0, |dates| dates.len() as u64);
        Ok(plan)
    }

    /// The dates of period `k` on or after the range start, ascending; `None` past the
    /// calendar's end.
    fn period_dates(&self, k: u64) -> Option<Vec<NaiveDate>> {
        let dates = match &self.layout {
            Layout::Days {
                origin,
                step_days,
                offsets,
            } => {
                let period_start =
                    origin.checked_add_days(Days::new(k.checked_mul(*step_days)?))?;
                offsets
                    .iter()
                    .map(|offset| period_start.checked_add_days(Days::new(*offset)))
                    .collect::<Option<Vec<_>>>()?
            }
            Layout::Months {
                first_month,
                step_months,
                day,
            } => {
                let k = i64::try_from(k).ok()?;
                let month = first_month.checked_add(k.checked_mul(*step_months)?)?;
                let year = i32::try_from(month.div_euclid(12)).ok()?;
                let month0 = u32::try_from(month.rem_euclid(12)).ok()?;
                vec![day_in_month(year, month0 + 1, *day)?]
            }
        };
        Some(dates.into_iter().filter(|d| *d >= self.start).collect())
    }

    /// The last period that begins on or before `date` (0 when `date` is before the first).
    fn period_of_date(&self, date: NaiveDate) -> u64 {
        match &self.layout {
            Layout::Days {
                origin, step_days, ..
            } => {
                let days = (date - *origin).num_days();
                u64::try_from(days).map_or(0, |days| days / step_days)
            }
            Layout::Months {
                first_month,
                step_months,
                ..
            } => {
                let months = month_number(date) - first_month;
                u64::try_from(months / step_months).unwrap_or(0)
            }
        }
    }

    /// The period that holds the occurrence with this index.
    fn period_of_index(&self, index: u64) -> u64 {
        if index < self.first_period_count {
            0
        } else {
            1 + (index - self.first_period_count) / self.per_period
        }
    }

    /// Index of the first occurrence in period `k`.
    fn first_index(&self, k: u64) -> u64 {
        if k == 0 {
            0
        } else {
            self.first_period_count
                .saturating_add((k - 1).saturating_mul(self.per_period))
        }
    }

    /// The occurrence on `date` with this index.
    fn occurrence(&self, index: u32, date: NaiveDate) -> Occurrence {
        let start = local_instant(&self.tz, date.and_time(self.time));
        Occurrence {
            index,
            original_start: start,
            start,
            end: start.saturating_add(self.duration_ms),
        }
    }

    /// Calls `visit` with each occurrence of the range from period `k` on, in order, until it
    /// returns `false` or the range (or the calendar, or [`LAST_DATE`]) ends.
    fn walk(&self, first_period: u64, mut visit: impl FnMut(Occurrence) -> bool) {
        let mut k = first_period;
        loop {
            let Some(dates) = self.period_dates(k) else {
                return;
            };
            for (index, date) in (self.first_index(k)..).zip(dates) {
                if date > self.end_date || self.count.is_some_and(|count| index >= count) {
                    return;
                }
                let Ok(index) = u32::try_from(index) else {
                    return;
                };
                if !visit(self.occurrence(index, date)) {
                    return;
                }
            }
            let Some(next) = k.checked_add(1) else {
                return;
            };
            k = next;
        }
    }

    /// The first period that can hold an occurrence ending after `instant`.
    fn period_ending_after(&self, instant: UnixMs) -> Option<u64> {
        let probe = instant.saturating_sub(self.duration_ms);
        let Some(at) = DateTime::from_timestamp_millis(probe) else {
            // Before every representable date: start at the beginning; after: nothing.
            return (probe < 0).then_some(0);
        };
        // Two days' margin covers any UTC offset and local clocks that go back over midnight.
        let local_date = at.with_timezone(&self.tz).date_naive();
        let date = local_date
            .checked_sub_days(Days::new(2))
            .unwrap_or(NaiveDate::MIN);
        if date > self.end_date {
            return None;
        }
        Some(self.period_of_date(date))
    }

    /// Occurrences by the pattern overlapping `[from, until)`, at most `limit`.
    fn window(&self, from: UnixMs, until: UnixMs, limit: usize) -> Vec<Occurrence> {
        let mut found = Vec::new();
        if limit == 0 {
            return found;
        }
        let Some(first_period) = self.period_ending_after(from) else {
            return found;
        };
        self.walk(first_period, |occurrence| {
            if occurrence.start >= until {
                return false;
            }
            if overlaps(occurrence.start, occurrence.end, from, until) {
                found.push(occurrence);
            }
            found.len() < limit
        });
        found
    }

    /// The occurrence that starts at `original_start` by the pattern, if there is one.
    fn occurrence_starting_at(&self, original_start: UnixMs) -> Option<Occurrence> {
        let first_period = self.period_ending_after(original_start.saturating_add(1))?;
        let mut found = None;
        self.walk(first_period, |occurrence| {
            if occurrence.original_start == original_start {
                found = Some(occurrence);
            }
            occurrence.original_start < original_start
        });
        found
    }
}

/// The date of a monthly or yearly day rule in a month (`month` 1..=12).
fn day_in_month(year: i32, month: u32, rule: DayRule) -> Option<NaiveDate> {
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let last = first
        .checked_add_months(chrono::Months::new(1))?
        .pred_opt()?;
    match rule {
        DayRule::Absolute(day) => NaiveDate::from_ymd_opt(year, month, day.min(last.day())),
        DayRule::Relative(kind, index) => {
            let matches = |date: &NaiveDate| match kind {
                DayKind::Day(weekday) => date.weekday() == weekday,
                DayKind::AnyDay => true,
                DayKind::Weekday => !matches!(date.weekday(), Weekday::Sat | Weekday::Sun),
                DayKind::WeekendDay => matches!(date.weekday(), Weekday::Sat | Weekday::Sun),
            };
            let mut days = first.iter_days().take_while(|d| *d <= last).filter(matches);
            match index {
                WeekIndex::First => days.next(),
                WeekIndex::Second => days.nth(1),
                WeekIndex::Third => days.nth(2),
                WeekIndex::Fourth => days.nth(3),
                WeekIndex::Last => days.last(),
            }
        }
    }
}

/// The UTC instant (ms) of a local time in `tz`. A local time that falls in a gap (spring
/// forward) is read with the offset in force before the gap, which moves it forward by the
/// gap's length; one that occurs twice (fall back) takes the earlier instant.
fn local_instant(tz: &Tz, local: NaiveDateTime) -> UnixMs {
    let resolved = match tz.from_local_datetime(&local) {
        LocalResult::Single(at) => Some(at),
        LocalResult::Ambiguous(first, second) => Some(first.min(second)),
        LocalResult::None => None,
    };
    if let Some(at) = resolved {
        return at.timestamp_millis();
    }
    // In a gap: find the offset just before it (gaps last hours; Samoa's 2011 one a day).
    let offset_before = (1..=48).find_map(|hours| {
        let earlier = local.checked_sub_signed(TimeDelta::hours(hours))?;
        tz.from_local_datetime(&earlier)
            .earliest()
            .map(|at| at.offset().fix().local_minus_utc())
    });
    let offset_seconds = i64::from(offset_before.unwrap_or(0));
    local.and_utc().timestamp_millis() - offset_seconds * 1000
}
