//! Recurrence expansion as Outlook and Exchange lay series out: every pattern kind, the three
//! range kinds, daylight-saving changes in Berlin and Los Angeles, local times in the
//! spring-forward gap, exceptions, invalid input, and properties over random series.

use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Weekday};
use chrono_tz::Tz;
use proptest::prelude::*;
use vmr_core::meeting::{MovedOccurrence, UnixMs};
use vmr_core::recurrence::{
    apply_exceptions, last_end, occurrences, DayKind, Occurrence, Pattern, Range, Recurrence,
    RecurrenceError, Series, WeekIndex,
};
use vmr_core::windows_zones;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

/// UTC instant in ms.
fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> UnixMs {
    date(y, m, d)
        .and_hms_opt(h, min, 0)
        .expect("valid time")
        .and_utc()
        .timestamp_millis()
}

fn zone(id: &str) -> Tz {
    windows_zones::zone(id).unwrap_or_else(|| panic!("no zone for {id}"))
}

/// The instant of a local time that exists exactly once in `id`.
fn local(id: &str, y: i32, m: u32, d: u32, h: u32, min: u32) -> UnixMs {
    zone(id)
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .single()
        .unwrap_or_else(|| panic!("{y}-{m}-{d} {h}:{min} is not a single local time in {id}"))
        .timestamp_millis()
}

fn local_time_of(id: Option<&str>, ms: UnixMs) -> NaiveDateTime {
    let at = DateTime::from_timestamp_millis(ms).expect("in range");
    match id {
        Some(id) => at.with_timezone(&zone(id)).naive_local(),
        None => at.naive_utc(),
    }
}

/// Every occurrence of a series that ends, whatever its time.
fn all(
    rec: &Recurrence,
    first_start: UnixMs,
    first_end: UnixMs,
    tz: Option<&str>,
) -> Vec<Occurrence> {
    occurrences(
        rec,
        first_start,
        first_end,
        tz,
        i64::MIN,
        i64::MAX,
        usize::MAX,
    )
    .expect("expands")
}

fn starts(list: &[Occurrence]) -> Vec<UnixMs> {
    list.iter().map(|o| o.start).collect()
}

fn indexes(list: &[Occurrence]) -> Vec<u32> {
    list.iter().map(|o| o.index).collect()
}

/// The starts of occurrences at `h:min` UTC on these dates.
fn at_utc(h: u32, min: u32, dates: &[(i32, u32, u32)]) -> Vec<UnixMs> {
    dates
        .iter()
        .map(|&(y, m, d)| utc(y, m, d, h, min))
        .collect()
}

fn weekly(interval: u32, days: &[Weekday], first_day_of_week: Weekday) -> Pattern {
    Pattern::Weekly {
        interval,
        days: days.to_vec(),
        first_day_of_week,
    }
}

#[test]
fn daily_every_second_day_counts_from_the_range_start() {
    let rec = Recurrence {
        pattern: Pattern::Daily { interval: 2 },
        range: Range::Numbered {
            start: date(2026, 3, 2),
            count: 5,
        },
    };
    let first = utc(2026, 3, 2, 9, 0);
    let list = all(&rec, first, first + HOUR, None);
    assert_eq!(
        starts(&list),
        at_utc(
            9,
            0,
            &[
                (2026, 3, 2),
                (2026, 3, 4),
                (2026, 3, 6),
                (2026, 3, 8),
                (2026, 3, 10)
            ]
        )
    );
    assert_eq!(indexes(&list), vec![0, 1, 2, 3, 4]);
    for o in &list {
        assert_eq!(o.end - o.start, HOUR);
        assert_eq!(o.original_start, o.start);
    }
}

#[test]
fn weekly_monday_and_wednesday_until_an_inclusive_end_date() {
    let tz = Some("W. Europe Standard Time");
    let rec = Recurrence {
        pattern: weekly(1, &[Weekday::Wed, Weekday::Mon], Weekday::Sun),
        range: Range::EndDate {
            start: date(2026, 1, 5),
            end: date(2026, 1, 21),
        },
    };
    let first = local("W. Europe Standard Time", 2026, 1, 5, 9, 0);
    let list = all(&rec, first, first + HOUR, tz);
    // 09:00 in Berlin in January is 08:00 UTC; the end date (a Wednesday) is included.
    assert_eq!(
        starts(&list),
        at_utc(
            8,
            0,
            &[
                (2026, 1, 5),
                (2026, 1, 7),
                (2026, 1, 12),
                (2026, 1, 14),
                (2026, 1, 19),
                (2026, 1, 21)
            ]
        )
    );
    assert_eq!(indexes(&list), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(
        last_end(&rec, first, first + HOUR, tz).unwrap(),
        Some(utc(2026, 1, 21, 9, 0))
    );
}

#[test]
fn weekly_interval_two_counts_weeks_by_the_first_day_of_the_week() {
    // The range starts on Sunday 2026-01-04. Weeks begun on Sunday: week 0 is Jan 4–10 and
    // holds Monday Jan 5. Weeks begun on Monday: week 0 is Dec 29–Jan 4, whose Monday is before
    // the range start, so the first Monday counted is in week 2 (Jan 12).
    let first = utc(2026, 1, 5, 9, 0);
    let mondays = |first_day_of_week| Recurrence {
        pattern: weekly(2, &[Weekday::Mon], first_day_of_week),
        range: Range::Numbered {
            start: date(2026, 1, 4),
            count: 3,
        },
    };
    assert_eq!(
        starts(&all(&mondays(Weekday::Sun), first, first + HOUR, None)),
        at_utc(9, 0, &[(2026, 1, 5), (2026, 1, 19), (2026, 2, 2)])
    );
    assert_eq!(
        starts(&all(&mondays(Weekday::Mon), first, first + HOUR, None)),
        at_utc(9, 0, &[(2026, 1, 12), (2026, 1, 26), (2026, 2, 9)])
    );

    // Sunday and Monday, weeks begun on Monday: Sunday Jan 4 ends week 0 and is index 0.
    let both = Recurrence {
        pattern: weekly(2, &[Weekday::Mon, Weekday::Sun], Weekday::Mon),
        range: Range::Numbered {
            start: date(2026, 1, 4),
            count: 5,
        },
    };
    let list = all(&both, first, first + HOUR, None);
    assert_eq!(
        starts(&list),
        at_utc(
            9,
            0,
            &[
                (2026, 1, 4),
                (2026, 1, 12),
                (2026, 1, 18),
                (2026, 1, 26),
                (2026, 2, 1)
            ]
        )
    );
    assert_eq!(indexes(&list), vec![0, 1, 2, 3, 4]);
    // Weeks begun on Sunday: Jan 4 and 5 in week 0, Jan 18 and 19 in week 2.
    let sunday_weeks = Recurrence {
        pattern: weekly(2, &[Weekday::Mon, Weekday::Sun], Weekday::Sun),
        ..both
    };
    assert_eq!(
        starts(&all(&sunday_weeks, first, first + HOUR, None)),
        at_utc(
            9,
            0,
            &[
                (2026, 1, 4),
                (2026, 1, 5),
                (2026, 1, 18),
                (2026, 1, 19),
                (2026, 2, 1)
            ]
        )
    );
}

#[test]
fn absolute_monthly_31st_falls_on_the_last_day_of_shorter_months() {
    let rec = Recurrence {
        pattern: Pattern::AbsoluteMonthly {
            interval: 1,
            day_of_month: 31,
        },
        range: Range::Numbered {
            start: date(2026, 1, 31),
            count: 6,
        },
    };
    let first = utc(2026, 1, 31, 12, 0);
    assert_eq!(
        starts(&all(&rec, first, first + HOUR, None)),
        at_utc(
            12,
            0,
            &[
                (2026, 1, 31),
                (2026, 2, 28),
                (2026, 3, 31),
                (2026, 4, 30),
                (2026, 5, 31),
                (2026, 6, 30)
            ]
        )
    );
    // Interval 3 from a range start after the 15th of January: January is counted (and has
    // no occurrence left), so April is the first month, then July.
    let quarterly = Recurrence {
        pattern: Pattern::AbsoluteMonthly {
            interval: 3,
            day_of_month: 15,
        },
        range: Range::Numbered {
            start: date(2026, 1, 20),
            count: 2,
        },
    };
    let list = all(&quarterly, first, first + HOUR, None);
    assert_eq!(
        starts(&list),
        at_utc(12, 0, &[(2026, 4, 15), (2026, 7, 15)])
    );
    assert_eq!(indexes(&list), vec![0, 1]);
}

#[test]
fn relative_monthly_second_tuesday_last_friday_and_last_weekday() {
    let first = utc(2026, 1, 13, 10, 0);
    let monthly = |day, index| Recurrence {
        pattern: Pattern::RelativeMonthly {
            interval: 1,
            day,
            index,
        },
        range: Range::Numbered {
            start: date(2026, 1, 1),
            count: 5,
        },
    };
    let cases: [(DayKind, WeekIndex, [u32; 5]); 5] = [
        (
            DayKind::Day(Weekday::Tue),
            WeekIndex::Second,
            [13, 10, 10, 14, 12],
        ),
        (
            DayKind::Day(Weekday::Fri),
            WeekIndex::Last,
            [30, 27, 27, 24, 29],
        ),
        (DayKind::Weekday, WeekIndex::Last, [30, 27, 31, 30, 29]),
        (DayKind::Weekday, WeekIndex::Third, [5, 4, 4, 3, 5]),
        (DayKind::WeekendDay, WeekIndex::First, [3, 1, 1, 4, 2]),
    ];
    for (day, index, days) in cases {
        let expected: Vec<UnixMs> = days
            .iter()
            .zip(1..)
            .map(|(&d, m)| utc(2026, m, d, 10, 0))
            .collect();
        assert_eq!(
            starts(&all(&monthly(day, index), first, first + HOUR, None)),
            expected,
            "{index:?} {day:?}"
        );
    }
    // The last day of the month ("Day", Last).
    let last_day = monthly(DayKind::AnyDay, WeekIndex::Last);
    assert_eq!(
        starts(&all(&last_day, first, first + HOUR, None))[1],
        utc(2026, 2, 28, 10, 0)
    );
}

#[test]
fn absolute_yearly_february_29_is_february_28_in_other_years() {
    let rec = Recurrence {
        pattern: Pattern::AbsoluteYearly {
            month: 2,
            day_of_month: 29,
        },
        range: Range::Numbered {
            start: date(2024, 2, 29),
            count: 5,
        },
    };
    let first = utc(2024, 2, 29, 8, 0);
    let list = all(&rec, first, first + HOUR, None);
    assert_eq!(
        starts(&list),
        at_utc(
            8,
            0,
            &[
                (2024, 2, 29),
                (2025, 2, 28),
                (2026, 2, 28),
                (2027, 2, 28),
                (2028, 2, 29)
            ]
        )
    );
    assert_eq!(indexes(&list), vec![0, 1, 2, 3, 4]);
}

#[test]
fn relative_yearly_last_sunday_of_march() {
    let rec = |start| Recurrence {
        pattern: Pattern::RelativeYearly {
            month: 3,
            day: DayKind::Day(Weekday::Sun),
            index: WeekIndex::Last,
        },
        range: Range::Numbered { start, count: 3 },
    };
    let first = utc(2026, 3, 29, 9, 0);
    assert_eq!(
        starts(&all(&rec(date(2026, 1, 1)), first, first + HOUR, None)),
        at_utc(9, 0, &[(2026, 3, 29), (2027, 3, 28), (2028, 3, 26)])
    );
    // A range starting after this year's date begins next year, at index 0.
    let later = all(&rec(date(2026, 4, 1)), first, first + HOUR, None);
    assert_eq!(later[0].start, utc(2027, 3, 28, 9, 0));
    assert_eq!(indexes(&later), vec![0, 1, 2]);
}

#[test]
fn no_end_series_jumps_to_a_window_centuries_ahead() {
    let first = utc(2026, 1, 1, 9, 0);
    let daily = Recurrence {
        pattern: Pattern::Daily { interval: 1 },
        range: Range::NoEnd {
            start: date(2026, 1, 1),
        },
    };
    let began = Instant::now();
    let list = occurrences(
        &daily,
        first,
        first + HOUR,
        None,
        utc(2400, 6, 1, 0, 0),
        utc(2400, 6, 3, 0, 0),
        100,
    )
    .unwrap();
    assert!(
        began.elapsed() < Duration::from_millis(500),
        "took {:?}",
        began.elapsed()
    );
    assert_eq!(starts(&list), at_utc(9, 0, &[(2400, 6, 1), (2400, 6, 2)]));
    // 2026-01-01 to 2400-06-01 is 136 752 days.
    assert_eq!(indexes(&list), vec![136_752, 136_753]);

    // Weekly in Berlin, monthly and yearly: right dates and indexes far ahead, too.
    let tz = Some("W. Europe Standard Time");
    let monday = local("W. Europe Standard Time", 2026, 1, 5, 9, 0);
    let weekly_series = Recurrence {
        pattern: weekly(1, &[Weekday::Mon, Weekday::Thu], Weekday::Sun),
        range: Range::NoEnd {
            start: date(2026, 1, 5),
        },
    };
    let far = occurrences(
        &weekly_series,
        monday,
        monday + HOUR,
        tz,
        utc(2300, 7, 1, 0, 0),
        utc(2300, 7, 8, 0, 0),
        10,
    )
    .unwrap();
    // 2300-07-01 is a Sunday. (chrono-tz stops applying summer time near 2100, so the local
    // times are converted by chrono-tz itself here.)
    assert_eq!(
        starts(&far),
        vec![
            local("W. Europe Standard Time", 2300, 7, 2, 9, 0),
            local("W. Europe Standard Time", 2300, 7, 5, 9, 0)
        ]
    );
    let weeks = (date(2300, 7, 2) - date(2026, 1, 5)).num_days() / 7;
    assert_eq!(far[0].index as i64, 2 * weeks);

    let monthly = Recurrence {
        pattern: Pattern::AbsoluteMonthly {
            interval: 1,
            day_of_month: 10,
        },
        range: Range::NoEnd {
            start: date(2026, 1, 1),
        },
    };
    let far = occurrences(
        &monthly,
        first,
        first + HOUR,
        None,
        utc(3000, 1, 1, 0, 0),
        utc(3000, 3, 1, 0, 0),
        10,
    )
    .unwrap();
    assert_eq!(starts(&far), at_utc(9, 0, &[(3000, 1, 10), (3000, 2, 10)]));
    assert_eq!(far[0].index, (3000 - 2026) * 12);

    // Nothing is expanded after 4500; a huge window stops there.
    let beyond = occurrences(
        &daily,
        first,
        first + HOUR,
        None,
        utc(4600, 1, 1, 0, 0),
        i64::MAX,
        10,
    )
    .unwrap();
    assert!(beyond.is_empty());
    let last_years = occurrences(
        &daily,
        first,
        first + HOUR,
        None,
        utc(4500, 12, 30, 0, 0),
        i64::MAX,
        usize::MAX,
    )
    .unwrap();
    assert_eq!(
        starts(&last_years),
        at_utc(9, 0, &[(4500, 12, 30), (4500, 12, 31)])
    );
    assert_eq!(last_end(&daily, first, first + HOUR, None).unwrap(), None);
}

#[test]
fn limits_and_windows() {
    let first = utc(2026, 1, 1, 9, 0);
    let daily = Recurrence {
        pattern: Pattern::Daily { interval: 1 },
        range: Range::NoEnd {
            start: date(2026, 1, 1),
        },
    };
    let five = occurrences(&daily, first, first + HOUR, None, first, i64::MAX, 5).unwrap();
    assert_eq!(indexes(&five), vec![0, 1, 2, 3, 4]);
    // A window that starts inside an occurrence includes it; one that ends at a start does not.
    let inside = occurrences(
        &daily,
        first,
        first + HOUR,
        None,
        first + DAY + 30 * 60_000,
        first + 2 * DAY,
        10,
    )
    .unwrap();
    assert_eq!(indexes(&inside), vec![1]);
    assert!(
        occurrences(&daily, first, first + HOUR, None, first, first, 10)
            .unwrap()
            .is_empty()
    );
    assert!(occurrences(&daily, first, first + HOUR, None, 0, first, 10)
        .unwrap()
        .is_empty());
    assert!(
        occurrences(&daily, first, first + HOUR, None, first, i64::MAX, 0)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn numbered_and_end_date_ranges_end_where_they_say() {
    let first = utc(2026, 1, 1, 9, 0);
    let numbered = Recurrence {
        pattern: Pattern::Daily { interval: 3 },
        range: Range::Numbered {
            start: date(2026, 1, 1),
            count: 10,
        },
    };
    let list = all(&numbered, first, first + 2 * HOUR, None);
    assert_eq!(list.len(), 10);
    assert_eq!(list[9].start, utc(2026, 1, 28, 9, 0));
    assert_eq!(
        last_end(&numbered, first, first + 2 * HOUR, None).unwrap(),
        Some(utc(2026, 1, 28, 11, 0))
    );
    // A window after the last occurrence has none.
    assert!(occurrences(
        &numbered,
        first,
        first + 2 * HOUR,
        None,
        utc(2026, 1, 29, 0, 0),
        i64::MAX,
        10
    )
    .unwrap()
    .is_empty());

    // A series of four billion occurrences stops at 4500-12-31 and answers at once.
    let endless = Recurrence {
        range: Range::Numbered {
            start: date(2026, 1, 1),
            count: u32::MAX,
        },
        ..numbered.clone()
    };
    let began = Instant::now();
    let end = last_end(&endless, first, first + HOUR, None).unwrap();
    assert!(began.elapsed() < Duration::from_millis(500));
    let end = end.expect("a numbered series ends");
    assert!(end <= utc(4501, 1, 1, 0, 0) && end > utc(4500, 12, 28, 0, 0));

    // End date: the last occurrence on or before it, the end date itself included.
    let monthly = Recurrence {
        pattern: Pattern::RelativeMonthly {
            interval: 2,
            day: DayKind::Day(Weekday::Mon),
            index: WeekIndex::First,
        },
        range: Range::EndDate {
            start: date(2026, 1, 1),
            end: date(2026, 9, 7),
        },
    };
    let list = all(&monthly, first, first + HOUR, None);
    // First Mondays of Jan, Mar, May, Jul, Sep 2026: 5, 2, 4, 6, 7.
    assert_eq!(
        starts(&list),
        at_utc(
            9,
            0,
            &[
                (2026, 1, 5),
                (2026, 3, 2),
                (2026, 5, 4),
                (2026, 7, 6),
                (2026, 9, 7)
            ]
        )
    );
    assert_eq!(
        last_end(&monthly, first, first + HOUR, None).unwrap(),
        Some(utc(2026, 9, 7, 10, 0))
    );
    let one_day_short = Recurrence {
        range: Range::EndDate {
            start: date(2026, 1, 1),
            end: date(2026, 9, 6),
        },
        ..monthly
    };
    assert_eq!(
        last_end(&one_day_short, first, first + HOUR, None).unwrap(),
        Some(utc(2026, 7, 6, 10, 0))
    );
}

#[test]
fn berlin_weekly_meeting_keeps_nine_o_clock_across_both_changes_of_2027() {
    let tz = Some("W. Europe Standard Time");
    let first = utc(2027, 3, 18, 8, 0); // Thursday 09:00 CET
    let rec = Recurrence {
        pattern: weekly(1, &[Weekday::Thu], Weekday::Mon),
        range: Range::NoEnd {
            start: date(2027, 3, 18),
        },
    };
    // Clocks go forward on Sunday 2027-03-28.
    let spring = occurrences(
        &rec,
        first,
        first + HOUR,
        tz,
        first,
        utc(2027, 4, 2, 0, 0),
        10,
    )
    .unwrap();
    assert_eq!(
        starts(&spring),
        vec![
            utc(2027, 3, 18, 8, 0),
            utc(2027, 3, 25, 8, 0),
            utc(2027, 4, 1, 7, 0)
        ]
    );
    // ... and back on Sunday 2027-10-31.
    let autumn = occurrences(
        &rec,
        first,
        first + HOUR,
        tz,
        utc(2027, 10, 27, 0, 0),
        utc(2027, 11, 5, 0, 0),
        10,
    )
    .unwrap();
    assert_eq!(
        starts(&autumn),
        vec![utc(2027, 10, 28, 7, 0), utc(2027, 11, 4, 8, 0)]
    );
    for o in spring.iter().chain(&autumn) {
        assert_eq!(o.end - o.start, HOUR, "the duration stays an hour");
        assert_eq!(
            local_time_of(tz, o.start).time(),
            chrono::NaiveTime::from_hms_opt(9, 0, 0).unwrap()
        );
    }
    // Same answer with the IANA name.
    let iana = occurrences(
        &rec,
        first,
        first + HOUR,
        Some("Europe/Berlin"),
        first,
        utc(2027, 4, 2, 0, 0),
        10,
    )
    .unwrap();
    assert_eq!(iana, spring);
}

#[test]
fn pacific_monthly_meeting_follows_the_us_changes() {
    let tz = Some("Pacific Standard Time");
    // First Monday of each month, 10:00 in Los Angeles, from February 2027. US summer time
    // runs from 2027-03-14 to 2027-11-07.
    let first = local("Pacific Standard Time", 2027, 2, 1, 10, 0);
    assert_eq!(first, utc(2027, 2, 1, 18, 0));
    let rec = Recurrence {
        pattern: Pattern::RelativeMonthly {
            interval: 1,
            day: DayKind::Day(Weekday::Mon),
            index: WeekIndex::First,
        },
        range: Range::EndDate {
            start: date(2027, 2, 1),
            end: date(2027, 12, 31),
        },
    };
    let list = all(&rec, first, first + 90 * 60_000, tz);
    let picked: Vec<UnixMs> = [0, 1, 2, 9, 10].iter().map(|&i| list[i].start).collect();
    assert_eq!(
        picked,
        vec![
            utc(2027, 2, 1, 18, 0),  // PST
            utc(2027, 3, 1, 18, 0),  // PST, before March 14
            utc(2027, 4, 5, 17, 0),  // PDT
            utc(2027, 11, 1, 17, 0), // PDT, before November 7
            utc(2027, 12, 6, 18, 0), // PST
        ]
    );
    assert_eq!(list.len(), 11);
    assert!(list.iter().all(|o| o.end - o.start == 90 * 60_000));
}

#[test]
fn local_times_in_the_gap_move_forward_and_repeated_ones_take_the_first() {
    let tz = Some("W. Europe Standard Time");
    let rec = |start| Recurrence {
        pattern: Pattern::Daily { interval: 1 },
        range: Range::Numbered { start, count: 3 },
    };
    // 02:30 daily; on 2027-03-28 02:30 does not exist in Berlin: 03:30 CEST (01:30 UTC).
    let first = local("W. Europe Standard Time", 2027, 3, 27, 2, 30);
    let spring = all(&rec(date(2027, 3, 27)), first, first + HOUR, tz);
    assert_eq!(
        starts(&spring),
        vec![
            utc(2027, 3, 27, 1, 30),
            utc(2027, 3, 28, 1, 30),
            utc(2027, 3, 29, 0, 30)
        ]
    );
    assert_eq!(
        local_time_of(tz, spring[1].start),
        date(2027, 3, 28).and_hms_opt(3, 30, 0).unwrap()
    );
    assert_eq!(spring[1].end - spring[1].start, HOUR);
    // On 2027-10-31 02:30 happens twice; the first is 02:30 CEST (00:30 UTC).
    let first = local("W. Europe Standard Time", 2027, 10, 30, 2, 30);
    let autumn = all(&rec(date(2027, 10, 30)), first, first + HOUR, tz);
    assert_eq!(
        starts(&autumn),
        vec![
            utc(2027, 10, 30, 0, 30),
            utc(2027, 10, 31, 0, 30),
            utc(2027, 11, 1, 1, 30)
        ]
    );
    // In Los Angeles the gap is 02:00–03:00 on 2027-03-14.
    let first = local("Pacific Standard Time", 2027, 3, 13, 2, 15);
    let la = all(
        &rec(date(2027, 3, 13)),
        first,
        first + HOUR,
        Some("Pacific Standard Time"),
    );
    assert_eq!(
        local_time_of(Some("Pacific Standard Time"), la[1].start),
        date(2027, 3, 14).and_hms_opt(3, 15, 0).unwrap()
    );
}

#[test]
fn other_exchange_zones() {
    // Sydney's summer time ends on the first Sunday of April 2027 (April 4): 09:00 AEDT is
    // 22:00 UTC the day before, 09:00 AEST 23:00.
    let tz = Some("AUS Eastern Standard Time");
    let first = local("AUS Eastern Standard Time", 2027, 4, 1, 9, 0);
    let rec = Recurrence {
        pattern: Pattern::Daily { interval: 7 },
        range: Range::Numbered {
            start: date(2027, 4, 1),
            count: 2,
        },
    };
    assert_eq!(
        starts(&all(&rec, first, first + HOUR, tz)),
        vec![utc(2027, 3, 31, 22, 0), utc(2027, 4, 7, 23, 0)]
    );
    // India has no summer time; London has.
    let first = local("India Standard Time", 2027, 3, 1, 9, 0);
    assert_eq!(first, utc(2027, 3, 1, 3, 30));
    let monthly = Recurrence {
        pattern: Pattern::AbsoluteMonthly {
            interval: 1,
            day_of_month: 1,
        },
        range: Range::Numbered {
            start: date(2027, 3, 1),
            count: 2,
        },
    };
    assert_eq!(
        starts(&all(
            &monthly,
            first,
            first + HOUR,
            Some("India Standard Time")
        )),
        vec![utc(2027, 3, 1, 3, 30), utc(2027, 4, 1, 3, 30)]
    );
    let first = local("GMT Standard Time", 2027, 3, 1, 9, 0);
    assert_eq!(
        starts(&all(
            &monthly,
            first,
            first + HOUR,
            Some("GMT Standard Time")
        )),
        vec![utc(2027, 3, 1, 9, 0), utc(2027, 4, 1, 8, 0)]
    );
    assert_eq!(
        all(&monthly, first, first + HOUR, Some("UTC")),
        all(&monthly, first, first + HOUR, None)
    );
}

#[test]
fn exceptions_move_and_delete_occurrences() {
    let first = utc(2026, 1, 5, 9, 0);
    let rec = Recurrence {
        pattern: weekly(1, &[Weekday::Mon], Weekday::Sun),
        range: Range::Numbered {
            start: date(2026, 1, 5),
            count: 5,
        },
    };
    let deleted = [utc(2026, 1, 12, 9, 0)];
    let moved = [
        // Monday Jan 19 → Tuesday Jan 20, 14:00–15:30.
        MovedOccurrence {
            original_start: utc(2026, 1, 19, 9, 0),
            start: utc(2026, 1, 20, 14, 0),
            end: utc(2026, 1, 20, 15, 30),
        },
        // Monday Jan 26 → Sunday Jan 4, before the first one.
        MovedOccurrence {
            original_start: utc(2026, 1, 26, 9, 0),
            start: utc(2026, 1, 4, 9, 0),
            end: utc(2026, 1, 4, 10, 0),
        },
    ];
    let applied = apply_exceptions(all(&rec, first, first + HOUR, None), &moved, &deleted);
    assert_eq!(indexes(&applied), vec![3, 0, 2, 4]);
    assert_eq!(applied[0].original_start, utc(2026, 1, 26, 9, 0));
    assert_eq!(applied[0].start, utc(2026, 1, 4, 9, 0));
    assert_eq!(
        (applied[2].start, applied[2].end, applied[2].original_start),
        (
            utc(2026, 1, 20, 14, 0),
            utc(2026, 1, 20, 15, 30),
            utc(2026, 1, 19, 9, 0)
        )
    );

    let series = Series {
        recurrence: &rec,
        first_start: first,
        first_end: first + HOUR,
        time_zone: None,
        moved: &moved,
        deleted: &deleted,
    };
    // Tuesday Jan 20 alone: only the moved occurrence, though its original day is outside.
    let tuesday = series
        .occurrences(utc(2026, 1, 20, 0, 0), utc(2026, 1, 21, 0, 0), 10)
        .unwrap();
    assert_eq!(tuesday.len(), 1);
    assert_eq!(tuesday[0].index, 2);
    assert_eq!(tuesday[0].original_start, utc(2026, 1, 19, 9, 0));
    // Monday Jan 19 and Jan 12: nothing (moved away, deleted).
    assert!(series
        .occurrences(utc(2026, 1, 19, 0, 0), utc(2026, 1, 20, 0, 0), 10)
        .unwrap()
        .is_empty());
    assert!(series
        .occurrences(utc(2026, 1, 12, 0, 0), utc(2026, 1, 13, 0, 0), 10)
        .unwrap()
        .is_empty());
    // The whole of January, limited to 2: the first two by start after the moves.
    let two = series
        .occurrences(utc(2026, 1, 1, 0, 0), utc(2026, 2, 1, 0, 0), 2)
        .unwrap();
    assert_eq!(indexes(&two), vec![3, 0]);
    let january = series
        .occurrences(utc(2026, 1, 1, 0, 0), utc(2026, 2, 1, 0, 0), 10)
        .unwrap();
    assert_eq!(indexes(&january), vec![3, 0, 2]);
    // Index 4 (Feb 2) is last by the pattern; nothing moved later.
    assert_eq!(series.last_end().unwrap(), Some(utc(2026, 2, 2, 10, 0)));
    let later = [MovedOccurrence {
        original_start: utc(2026, 2, 2, 9, 0),
        start: utc(2026, 2, 20, 9, 0),
        end: utc(2026, 2, 20, 11, 0),
    }];
    let moved_last = Series {
        moved: &later,
        ..series
    };
    assert_eq!(
        moved_last.last_end().unwrap(),
        Some(utc(2026, 2, 20, 11, 0))
    );
    // A move whose original start is not an occurrence of the pattern is left out.
    let stray = [MovedOccurrence {
        original_start: utc(2026, 1, 6, 9, 0),
        start: utc(2026, 1, 7, 9, 0),
        end: utc(2026, 1, 7, 10, 0),
    }];
    let stray_series = Series {
        moved: &stray,
        deleted: &[],
        ..series
    };
    assert!(stray_series
        .occurrences(utc(2026, 1, 7, 0, 0), utc(2026, 1, 8, 0, 0), 10)
        .unwrap()
        .is_empty());
}

#[test]
fn series_of_a_meeting_item_reads_its_fields() {
    use vmr_core::meeting::{Body, ItemType, MeetingItem, MessageKind, MyResponse, Person};
    let rec = Recurrence {
        pattern: Pattern::Daily { interval: 1 },
        range: Range::Numbered {
            start: date(2026, 1, 5),
            count: 2,
        },
    };
    let item = MeetingItem {
        item_id: "AAMk".into(),
        change_key: "CQ".into(),
        kind: MessageKind::CalendarItem,
        item_type: ItemType::RecurringMaster,
        uid: "040000008200E00074C5B7101A82E008".into(),
        recurrence_id: None,
        subject: "Stand-up".into(),
        body: Body::default(),
        organizer: Person::default(),
        sender: None,
        attendees: vec![],
        resources: vec![],
        start: utc(2026, 1, 5, 8, 0),
        end: utc(2026, 1, 5, 8, 15),
        time_zone: Some("W. Europe Standard Time".into()),
        recurrence: Some(rec.clone()),
        moved_occurrences: vec![],
        deleted_occurrences: vec![utc(2026, 1, 6, 8, 0)],
        sequence: 0,
        is_cancelled: false,
        my_response: MyResponse::Accept,
        last_modified: 0,
    };
    let series = Series::of_item(&item).expect("a master has a series");
    assert_eq!(series.time_zone, Some("W. Europe Standard Time"));
    let shown = series.occurrences(i64::MIN, i64::MAX, 10).unwrap();
    assert_eq!(starts(&shown), vec![utc(2026, 1, 5, 8, 0)]);
    let single = MeetingItem {
        recurrence: None,
        ..item
    };
    assert!(Series::of_item(&single).is_none());
}

#[test]
fn invalid_input_says_what_is_wrong() {
    let first = utc(2026, 1, 5, 9, 0);
    let numbered = |pattern| Recurrence {
        pattern,
        range: Range::Numbered {
            start: date(2026, 1, 5),
            count: 3,
        },
    };
    let error = |rec: &Recurrence| {
        occurrences(rec, first, first + HOUR, None, 0, i64::MAX, 10)
            .expect_err("invalid")
            .to_string()
    };
    assert_eq!(
        error(&numbered(Pattern::Daily { interval: 0 })),
        "invalid recurrence: pattern interval is 0; it must be at least 1"
    );
    assert_eq!(
        error(&numbered(weekly(1, &[], Weekday::Sun))),
        "invalid recurrence: weekly pattern names no day of the week"
    );
    assert_eq!(
        error(&numbered(Pattern::AbsoluteMonthly {
            interval: 1,
            day_of_month: 32
        })),
        "invalid recurrence: day_of_month 32 is not in 1..=31"
    );
    assert_eq!(
        error(&numbered(Pattern::AbsoluteYearly {
            month: 2,
            day_of_month: 0
        })),
        "invalid recurrence: day_of_month 0 is not in 1..=31"
    );
    assert_eq!(
        error(&numbered(Pattern::RelativeYearly {
            month: 13,
            day: DayKind::Weekday,
            index: WeekIndex::First
        })),
        "invalid recurrence: month 13 is not in 1..=12"
    );
    let daily = Pattern::Daily { interval: 1 };
    assert_eq!(
        error(&Recurrence {
            pattern: daily.clone(),
            range: Range::Numbered {
                start: date(2026, 1, 5),
                count: 0
            }
        }),
        "invalid recurrence: numbered range has 0 occurrences"
    );
    assert_eq!(
        error(&Recurrence {
            pattern: daily.clone(),
            range: Range::EndDate {
                start: date(2026, 1, 5),
                end: date(2026, 1, 4)
            }
        }),
        "invalid recurrence: range end date 2026-01-04 is before its start date 2026-01-05"
    );
    let rec = numbered(daily);
    assert_eq!(
        occurrences(&rec, first, first - 1, None, 0, 1, 10),
        Err(RecurrenceError::Invalid(format!(
            "the master ends at {} ms, before it starts at {first} ms",
            first - 1
        )))
    );
    assert_eq!(
        occurrences(&rec, first, first + HOUR, None, 10, 9, 10),
        Err(RecurrenceError::Invalid(
            "window starts at 10 ms, after its end 9 ms".into()
        ))
    );
    assert_eq!(
        occurrences(
            &rec,
            first,
            first + HOUR,
            Some("Mars Standard Time"),
            0,
            1,
            10
        ),
        Err(RecurrenceError::UnknownTimeZone(
            "Mars Standard Time".into()
        ))
    );
    assert_eq!(
        last_end(&rec, first, first + HOUR, Some("pacific standard time")),
        Err(RecurrenceError::UnknownTimeZone(
            "pacific standard time".into()
        ))
    );
    // A series that is valid but has no occurrence: Mondays from a Tuesday to a Thursday.
    let empty = Recurrence {
        pattern: weekly(1, &[Weekday::Mon], Weekday::Sun),
        range: Range::EndDate {
            start: date(2026, 1, 6),
            end: date(2026, 1, 8),
        },
    };
    assert!(all(&empty, first, first + HOUR, None).is_empty());
    assert_eq!(
        last_end(&empty, first, first + HOUR, None),
        Err(RecurrenceError::Invalid(
            "no occurrence between the range start 2026-01-06 and its end 2026-01-08".into()
        ))
    );
}

// --- properties over random series ---------------------------------------------------------

const ZONES: &[&str] = &[
    "UTC",
    "W. Europe Standard Time",
    "Pacific Standard Time",
    "GMT Standard Time",
    "AUS Eastern Standard Time",
    "India Standard Time",
    "Lord Howe Standard Time",
    "Chatham Islands Standard Time",
    "Samoa Standard Time",
];

fn weekday() -> impl Strategy<Value = Weekday> {
    (0u8..7).prop_map(|n| Weekday::try_from(n).expect("0..7 is a weekday"))
}

fn day_kind() -> impl Strategy<Value = DayKind> {
    prop_oneof![
        weekday().prop_map(DayKind::Day),
        Just(DayKind::AnyDay),
        Just(DayKind::Weekday),
        Just(DayKind::WeekendDay),
    ]
}

fn week_index() -> impl Strategy<Value = WeekIndex> {
    prop_oneof![
        Just(WeekIndex::First),
        Just(WeekIndex::Second),
        Just(WeekIndex::Third),
        Just(WeekIndex::Fourth),
        Just(WeekIndex::Last),
    ]
}

fn pattern() -> impl Strategy<Value = Pattern> {
    prop_oneof![
        (1u32..5).prop_map(|interval| Pattern::Daily { interval }),
        (1u32..4, prop::collection::vec(weekday(), 1..5), weekday()).prop_map(
            |(interval, days, first_day_of_week)| Pattern::Weekly {
                interval,
                days,
                first_day_of_week
            }
        ),
        (1u32..4, 1u32..32).prop_map(|(interval, day_of_month)| Pattern::AbsoluteMonthly {
            interval,
            day_of_month
        }),
        (1u32..4, day_kind(), week_index()).prop_map(|(interval, day, index)| {
            Pattern::RelativeMonthly {
                interval,
                day,
                index,
            }
        }),
        (1u32..13, 1u32..32).prop_map(|(month, day_of_month)| Pattern::AbsoluteYearly {
            month,
            day_of_month
        }),
        (1u32..13, day_kind(), week_index())
            .prop_map(|(month, day, index)| Pattern::RelativeYearly { month, day, index }),
    ]
}

fn range() -> impl Strategy<Value = Range> {
    let start = (0u64..3650).prop_map(|days| date(2020, 1, 1) + chrono::Days::new(days));
    prop_oneof![
        start.clone().prop_map(|start| Range::NoEnd { start }),
        (start.clone(), 0u64..1200).prop_map(|(start, days)| Range::EndDate {
            start,
            end: start + chrono::Days::new(days)
        }),
        (start, 1u32..80).prop_map(|(start, count)| Range::Numbered { start, count }),
    ]
}

fn range_start(range: &Range) -> NaiveDate {
    match range {
        Range::NoEnd { start } | Range::EndDate { start, .. } | Range::Numbered { start, .. } => {
            *start
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn occurrences_are_in_the_window_in_order_at_the_series_local_time(
        pattern in pattern(),
        range in range(),
        zone_at in 0..ZONES.len(),
        minute_of_day in (0u32..96).prop_map(|quarter| quarter * 15),
        duration in (0i64..13).prop_map(|quarters| quarters * 15 * 60_000),
        from_days in -60i64..1500,
        window_days in 0i64..400,
        limit in 1usize..120,
    ) {
        let id = ZONES[zone_at];
        let tz = zone(id);
        let start_date = range_start(&range);
        let time = chrono::NaiveTime::from_hms_opt(minute_of_day / 60, minute_of_day % 60, 0)
            .expect("time of day");
        // The master starts on the range start at that local time (if it exists that day).
        let first = tz.from_local_datetime(&start_date.and_time(time)).earliest();
        prop_assume!(first.is_some());
        let first = first.expect("checked").timestamp_millis();
        let rec = Recurrence { pattern, range: range.clone() };
        let from = first + from_days * DAY;
        let until = from + window_days * DAY;

        let list = occurrences(&rec, first, first + duration, Some(id), from, until, limit)
            .expect("valid series");
        prop_assert!(list.len() <= limit);

        // The same window cut from a walk from the very start: the skip ahead loses nothing.
        let from_start = occurrences(&rec, first, first + duration, Some(id), i64::MIN, until, usize::MAX)
            .expect("valid series");
        for (position, o) in from_start.iter().enumerate() {
            prop_assert_eq!(o.index as usize, position, "indexes count from 0 without gaps");
        }
        let expected: Vec<Occurrence> = from_start
            .iter()
            .filter(|o| o.start < until && (o.end > from || (o.start == o.end && o.start >= from)))
            .take(limit)
            .copied()
            .collect();
        prop_assert_eq!(&list, &expected);

        let end_date = match range { Range::EndDate { end, .. } => Some(end), _ => None };
        let count = match range { Range::Numbered { count, .. } => Some(count), _ => None };
        for pair in list.windows(2) {
            prop_assert!(pair[0].start < pair[1].start, "in order: {:?}", pair);
            prop_assert!(pair[0].index < pair[1].index, "indexes increase: {:?}", pair);
        }
        for o in &list {
            prop_assert!(o.start < until && (o.end > from || (o.start == o.end && o.start >= from)),
                "{:?} outside [{}, {})", o, from, until);
            prop_assert_eq!(o.end - o.start, duration);
            prop_assert_eq!(o.original_start, o.start);
            let at = local_time_of(Some(id), o.start);
            if at.time() == time {
                // A repeated local time takes the earlier instant.
                let earliest = tz.from_local_datetime(&at).earliest().expect("exists");
                prop_assert_eq!(o.start, earliest.timestamp_millis());
            } else {
                // Only a local time in a gap moves, and only forward, to the same or next day.
                let gap_day = [at.date(), at.date().pred_opt().expect("date")]
                    .into_iter()
                    .find(|day| tz.from_local_datetime(&day.and_time(time)).earliest().is_none());
                prop_assert!(gap_day.is_some(), "{:?} at {} local, not {}", o, at, time);
                prop_assert!(at > gap_day.expect("checked").and_time(time));
            }
            let day = if at.time() == time { at.date() } else {
                [at.date(), at.date().pred_opt().expect("date")]
                    .into_iter()
                    .find(|day| tz.from_local_datetime(&day.and_time(time)).earliest().is_none())
                    .expect("checked")
            };
            prop_assert!(day >= start_date, "{} before the range start {}", day, start_date);
            if let Some(end) = end_date {
                prop_assert!(day <= end, "{} after the end date {}", day, end);
            }
            if let Some(count) = count {
                prop_assert!(o.index < count);
            }
        }

        // last_end agrees with the expansion for ranges that end.
        if !matches!(range, Range::NoEnd { .. }) {
            let whole = all(&rec, first, first + duration, Some(id));
            match last_end(&rec, first, first + duration, Some(id)) {
                Ok(end) => prop_assert_eq!(end, whole.last().map(|o| o.end)),
                Err(error) => {
                    prop_assert!(whole.is_empty(), "{}", error);
                }
            }
        }
    }
}

#[test]
fn long_series_expand_fast() {
    // A weekly series over centuries, asked for one week at a time at many points.
    let first = utc(2026, 1, 5, 9, 0);
    let rec = Recurrence {
        pattern: weekly(1, &[Weekday::Mon, Weekday::Wed, Weekday::Fri], Weekday::Sun),
        range: Range::NoEnd {
            start: date(2026, 1, 5),
        },
    };
    let began = Instant::now();
    for year in (2030..4500).step_by(10) {
        let from = utc(year, 6, 1, 0, 0);
        let list = occurrences(
            &rec,
            first,
            first + HOUR,
            Some("W. Europe Standard Time"),
            from,
            from + 7 * DAY,
            10,
        )
        .unwrap();
        assert_eq!(list.len(), 3, "three days a week in {year}");
    }
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "247 windows took {:?}",
        began.elapsed()
    );
}

#[test]
fn a_window_before_the_series_is_empty_and_the_first_occurrence_is_index_0() {
    let first = utc(2026, 1, 5, 9, 0);
    let rec = Recurrence {
        pattern: Pattern::Daily { interval: 1 },
        range: Range::NoEnd {
            start: date(2026, 1, 5),
        },
    };
    assert!(occurrences(&rec, first, first + HOUR, None, 0, first, 10)
        .unwrap()
        .is_empty());
    let list = occurrences(&rec, first, first + HOUR, None, 0, first + 1, 10).unwrap();
    assert_eq!(list[0].index, 0);
    assert_eq!(list[0].start, first);
}
