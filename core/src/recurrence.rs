//! Recurring series: the pattern and range Exchange describes (EWS `t:Recurrence`, Graph
//! `patternedRecurrence`) and their expansion into occurrence windows in the organizer's time
//! zone, daylight-saving changes included.
//!
//! TODO(helper): expansion.

use chrono::{NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

use crate::meeting::UnixMs;

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
