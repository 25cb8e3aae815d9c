//! EWS items into the meeting model: `t:CalendarItem`, `t:MeetingRequest` and
//! `t:MeetingCancellation` become [`MeetingItem`]s; every other item element (`t:Message`,
//! `t:MeetingResponse`, `t:Item`, …) is reported as [`Fetched::Other`] with its item class.
//!
//! What real servers send is accepted: times with fractional seconds and `Z` or an offset,
//! `xs:date` values with a `Z` or `±hh:mm` suffix in recurrence ranges, organizers with an
//! X.500 (`EX`) address instead of SMTP, elements in any order. The meeting's id is the
//! CleanGlobalObjectId in upper-case hex: from the PSETID_Meeting 0x23 extended property when
//! present, else derived from `calendar:UID` by zeroing its instance date.

use base64::Engine;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Weekday};
use vmr_core::meeting::{
    Body, ItemType, MeetingItem, MessageKind, MovedOccurrence, MyResponse, Person, RequestType,
    UnixMs,
};
use vmr_core::recurrence::{DayKind, Pattern, Range, Recurrence, WeekIndex};

use crate::ews::request::{PROP_CLEAN_GLOBAL_OBJECT_ID, PSETID_MEETING};
use crate::mailbox::Fetched;
use crate::xml::{Element, NS_TYPES};

/// The 16-byte class id every Outlook GlobalObjectId starts with, in hex.
pub const GLOBAL_OBJECT_ID_CLASS: &str = "040000008200E00074C5B7101A82E008";

/// Reads one item element of a `GetItem` or `FindItem` reply. Missing required fields
/// (`ItemId`; for meetings `UID`, `Start`, `End`) or unreadable values are an error naming the
/// field.
pub fn read_item(el: &Element) -> Result<Fetched, String> {
    let item_id = el
        .child(NS_TYPES, "ItemId")
        .ok_or_else(|| format!("<{}> has no ItemId", el.name))?;
    let id = item_id
        .attr("Id")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| format!("<{}>: ItemId has no Id", el.name))?
        .to_owned();
    let item_class = el
        .child_text(NS_TYPES, "ItemClass")
        .unwrap_or("")
        .to_owned();
    let is_types = el.ns.as_deref() == Some(NS_TYPES);
    let kind = match el.name.as_str() {
        "CalendarItem" if is_types => MessageKind::CalendarItem,
        "MeetingCancellation" if is_types => MessageKind::Cancellation,
        "MeetingRequest" if is_types => {
            if item_class.starts_with("IPM.Schedule.Meeting.Canceled") {
                MessageKind::Cancellation
            } else {
                MessageKind::Request(request_type(el.child_text(NS_TYPES, "MeetingRequestType")))
            }
        }
        _ => return Ok(Fetched::Other { id, item_class }),
    };
    let change_key = item_id.attr("ChangeKey").unwrap_or("").to_owned();
    let what = |field: &str| format!("{} {id}: {field}", el.name);

    let uid = clean_global_object_id(el).ok_or_else(|| what("no UID"))?;
    let start = required_time(el, "Start").map_err(|e| what(&e))?;
    let end = required_time(el, "End").map_err(|e| what(&e))?;
    let recurrence_id = match optional_time(el, "RecurrenceId").map_err(|e| what(&e))? {
        Some(t) => Some(t),
        None => optional_time(el, "OriginalStart").map_err(|e| what(&e))?,
    };
    let recurrence = match el.child(NS_TYPES, "Recurrence") {
        Some(r) => Some(read_recurrence(r).map_err(|e| what(&format!("Recurrence: {e}")))?),
        None => None,
    };
    let item_type = match el.child_text(NS_TYPES, "CalendarItemType") {
        Some("Single") => ItemType::Single,
        Some("Occurrence") => ItemType::Occurrence,
        Some("Exception") => ItemType::Exception,
        Some("RecurringMaster") => ItemType::RecurringMaster,
        Some(other) if !other.is_empty() => {
            return Err(what(&format!("unknown CalendarItemType {other:?}")))
        }
        _ if recurrence.is_some() => ItemType::RecurringMaster,
        _ => ItemType::Single,
    };
    let body = el
        .child(NS_TYPES, "Body")
        .map(|b| Body {
            html: b
                .attr("BodyType")
                .is_some_and(|t| t.eq_ignore_ascii_case("HTML")),
            content: b.text.clone(),
        })
        .unwrap_or_default();
    // A MeetingCancellation has no Organizer element: its sender (`From`) is the organizer.
    let organizer = ["Organizer", "From"]
        .iter()
        .find_map(|name| el.child(NS_TYPES, name))
        .and_then(|o| o.child(NS_TYPES, "Mailbox"))
        .map(person)
        .unwrap_or_default();
    // A delegate who sent a request on the organizer's behalf: `Sender` differs from `From`.
    let sender = el
        .child(NS_TYPES, "Sender")
        .and_then(|s| s.child(NS_TYPES, "Mailbox"))
        .map(person)
        .filter(|s| !s.email.is_empty() && !s.email.eq_ignore_ascii_case(&organizer.email));
    let attendees = ["RequiredAttendees", "OptionalAttendees"]
        .iter()
        .flat_map(|list| attendee_list(el, list))
        .collect();
    let resources = attendee_list(el, "Resources");
    let time_zone = el
        .child_text(NS_TYPES, "StartTimeZoneId")
        .filter(|z| !z.is_empty())
        .or_else(|| {
            el.child(NS_TYPES, "StartTimeZone")
                .and_then(|z| z.attr("Id"))
                .filter(|z| !z.is_empty())
        })
        .map(str::to_owned);
    let mut moved_occurrences = Vec::new();
    if let Some(list) = el.child(NS_TYPES, "ModifiedOccurrences") {
        for occurrence in list.children_named(NS_TYPES, "Occurrence") {
            let field = |name: &str| {
                required_time(occurrence, name)
                    .map_err(|e| what(&format!("ModifiedOccurrences: {e}")))
            };
            moved_occurrences.push(MovedOccurrence {
                original_start: field("OriginalStart")?,
                start: field("Start")?,
                end: field("End")?,
            });
        }
    }
    let mut deleted_occurrences = Vec::new();
    if let Some(list) = el.child(NS_TYPES, "DeletedOccurrences") {
        for occurrence in list.children_named(NS_TYPES, "DeletedOccurrence") {
            deleted_occurrences.push(
                required_time(occurrence, "Start")
                    .map_err(|e| what(&format!("DeletedOccurrences: {e}")))?,
            );
        }
    }
    let sequence = match el.child_text(NS_TYPES, "AppointmentSequenceNumber") {
        Some(n) if !n.is_empty() => n
            .parse::<u32>()
            .map_err(|_| what(&format!("AppointmentSequenceNumber {n:?} is not a number")))?,
        _ => 0,
    };
    let my_response = match el.child_text(NS_TYPES, "MyResponseType") {
        Some("Organizer") => MyResponse::Organizer,
        Some("Tentative") => MyResponse::Tentative,
        Some("Accept") => MyResponse::Accept,
        Some("Decline") => MyResponse::Decline,
        Some("NoResponseReceived") => MyResponse::NoResponseReceived,
        _ => MyResponse::Unknown,
    };
    let last_modified = optional_time(el, "LastModifiedTime")
        .map_err(|e| what(&e))?
        .unwrap_or(0);

    Ok(Fetched::Meeting(Box::new(MeetingItem {
        item_id: id.clone(),
        change_key,
        kind,
        item_type,
        uid,
        recurrence_id,
        subject: el.child_text(NS_TYPES, "Subject").unwrap_or("").to_owned(),
        body,
        organizer,
        sender,
        attendees,
        resources,
        start,
        end,
        time_zone,
        recurrence,
        moved_occurrences,
        deleted_occurrences,
        sequence,
        is_cancelled: el
            .child_text(NS_TYPES, "IsCancelled")
            .is_some_and(|v| v == "true" || v == "1"),
        my_response,
        last_modified,
    })))
}

fn request_type(value: Option<&str>) -> RequestType {
    match value {
        Some("NewMeetingRequest") => RequestType::New,
        Some("FullUpdate") => RequestType::FullUpdate,
        Some("InformationalUpdate") => RequestType::InformationalUpdate,
        Some("SilentUpdate") => RequestType::SilentUpdate,
        Some("Outdated") => RequestType::Outdated,
        _ => RequestType::Other,
    }
}

/// A mailbox (`t:Mailbox`) as a person. The address is kept (lower-cased) only when it is an
/// SMTP address: an `EX` routing type carries an X.500 DN, which is left out.
fn person(mailbox: &Element) -> Person {
    let address = mailbox.child_text(NS_TYPES, "EmailAddress").unwrap_or("");
    Person {
        name: mailbox
            .child_text(NS_TYPES, "Name")
            .unwrap_or("")
            .to_owned(),
        email: if address.contains('@') {
            address.to_lowercase()
        } else {
            String::new()
        },
    }
}

fn attendee_list(el: &Element, list: &str) -> Vec<Person> {
    el.child(NS_TYPES, list)
        .map(|l| {
            l.children_named(NS_TYPES, "Attendee")
                .filter_map(|a| a.child(NS_TYPES, "Mailbox"))
                .map(person)
                .collect()
        })
        .unwrap_or_default()
}

/// The item's CleanGlobalObjectId in upper-case hex: the 0x23 extended property if present
/// and readable, else derived from `calendar:UID` ([`clean_uid`]).
fn clean_global_object_id(el: &Element) -> Option<String> {
    let from_property = el
        .children_named(NS_TYPES, "ExtendedProperty")
        .filter(|p| {
            p.child(NS_TYPES, "ExtendedFieldURI").is_some_and(|uri| {
                uri.attr("PropertySetId")
                    .is_some_and(|s| s.eq_ignore_ascii_case(PSETID_MEETING))
                    && uri.attr("PropertyId") == Some(PROP_CLEAN_GLOBAL_OBJECT_ID)
            })
        })
        .find_map(|p| p.child_text(NS_TYPES, "Value").and_then(base64_to_hex));
    from_property.or_else(|| {
        el.child_text(NS_TYPES, "UID")
            .filter(|u| !u.is_empty())
            .map(clean_uid)
    })
}

/// Base64 bytes as upper-case hex (`None` when not base64 or empty).
pub fn base64_to_hex(value: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()
        .filter(|b| !b.is_empty())?;
    Some(bytes.iter().map(|b| format!("{b:02X}")).collect())
}

/// Upper-case hex as base64 (`None` when not hex), e.g. to search for a CleanGlobalObjectId.
pub fn hex_to_base64(hex: &str) -> Option<String> {
    let hex = hex.trim();
    if !hex.len().is_multiple_of(2) || hex.is_empty() {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// A `calendar:UID` as a CleanGlobalObjectId: an Outlook GlobalObjectId in hex (starting with
/// [`GLOBAL_OBJECT_ID_CLASS`]) gets its 4 instance-date bytes (offset 16) zeroed and is
/// upper-cased; any other UID (a foreign iCalendar UID) is returned as given.
pub fn clean_uid(uid: &str) -> String {
    let uid = uid.trim();
    let is_goid = uid.len() >= 40
        && uid.is_ascii()
        && uid.bytes().all(|b| b.is_ascii_hexdigit())
        && uid[..32].eq_ignore_ascii_case(GLOBAL_OBJECT_ID_CLASS);
    if !is_goid {
        return uid.to_owned();
    }
    let upper = uid.to_ascii_uppercase();
    format!("{}00000000{}", &upper[..32], &upper[40..])
}

/// Parses an `xs:dateTime` leniently: fractional seconds, `Z` or an offset; a value without a
/// zone is taken as UTC (what EWS means without a `TimeZoneContext`).
pub fn parse_time(value: &str) -> Option<UnixMs> {
    let value = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t.timestamp_millis());
    }
    NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

/// Parses an `xs:date` that may carry a `Z` or `±hh:mm` suffix (`2014-03-08-08:00`).
pub fn parse_date(value: &str) -> Option<NaiveDate> {
    let value = value.trim();
    let (date, zone) = (value.get(..10)?, value.get(10..)?);
    let zone_ok = zone.is_empty()
        || zone == "Z"
        || (zone.len() == 6
            && (zone.starts_with('+') || zone.starts_with('-'))
            && zone.as_bytes()[3] == b':'
            && zone[1..3].bytes().all(|b| b.is_ascii_digit())
            && zone[4..].bytes().all(|b| b.is_ascii_digit()));
    if !zone_ok {
        return None;
    }
    NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()
}

fn optional_time(el: &Element, name: &str) -> Result<Option<UnixMs>, String> {
    match el.child_text(NS_TYPES, name) {
        None | Some("") => Ok(None),
        Some(v) => parse_time(v)
            .map(Some)
            .ok_or_else(|| format!("{name} {v:?} is not a date-time")),
    }
}

fn required_time(el: &Element, name: &str) -> Result<UnixMs, String> {
    optional_time(el, name)?.ok_or_else(|| format!("no {name}"))
}

fn weekday(name: &str) -> Option<Weekday> {
    Some(match name {
        "Sunday" => Weekday::Sun,
        "Monday" => Weekday::Mon,
        "Tuesday" => Weekday::Tue,
        "Wednesday" => Weekday::Wed,
        "Thursday" => Weekday::Thu,
        "Friday" => Weekday::Fri,
        "Saturday" => Weekday::Sat,
        _ => return None,
    })
}

fn day_kind(name: &str) -> Option<DayKind> {
    match name {
        "Day" => Some(DayKind::AnyDay),
        "Weekday" => Some(DayKind::Weekday),
        "WeekendDay" => Some(DayKind::WeekendDay),
        other => weekday(other).map(DayKind::Day),
    }
}

fn month(name: &str) -> Option<u32> {
    vmr_core::recurrence::MONTH_NAMES
        .iter()
        .position(|m| *m == name)
        .map(|i| i as u32 + 1)
}

/// Reads `t:Recurrence` (one pattern element, one range element).
pub fn read_recurrence(r: &Element) -> Result<Recurrence, String> {
    let text = |el: &Element, name: &str| -> Result<String, String> {
        el.child_text(NS_TYPES, name)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("{} has no {name}", el.name))
    };
    let number = |el: &Element, name: &str| -> Result<u32, String> {
        let v = text(el, name)?;
        v.parse::<u32>()
            .map_err(|_| format!("{}/{name} {v:?} is not a number", el.name))
    };
    let single_day = |el: &Element| -> Result<DayKind, String> {
        let v = text(el, "DaysOfWeek")?;
        day_kind(&v).ok_or_else(|| format!("{}/DaysOfWeek {v:?} is not one day kind", el.name))
    };
    let index = |el: &Element| -> Result<WeekIndex, String> {
        let v = text(el, "DayOfWeekIndex")?;
        Ok(match v.as_str() {
            "First" => WeekIndex::First,
            "Second" => WeekIndex::Second,
            "Third" => WeekIndex::Third,
            "Fourth" => WeekIndex::Fourth,
            "Last" => WeekIndex::Last,
            _ => return Err(format!("{}/DayOfWeekIndex {v:?} is unknown", el.name)),
        })
    };
    let month_of = |el: &Element| -> Result<u32, String> {
        let v = text(el, "Month")?;
        month(&v).ok_or_else(|| format!("{}/Month {v:?} is not a month", el.name))
    };

    let mut pattern = None;
    let mut range = None;
    for el in r
        .children
        .iter()
        .filter(|c| c.ns.as_deref() == Some(NS_TYPES))
    {
        match el.name.as_str() {
            "DailyRecurrence" => {
                pattern = Some(Pattern::Daily {
                    interval: number(el, "Interval")?,
                })
            }
            "WeeklyRecurrence" => {
                let list = text(el, "DaysOfWeek")?;
                let mut days: Vec<Weekday> = Vec::new();
                for name in list.split_whitespace() {
                    let expanded: Vec<Weekday> = match day_kind(name) {
                        Some(DayKind::Day(d)) => vec![d],
                        Some(DayKind::Weekday) => {
                            vec![
                                Weekday::Mon,
                                Weekday::Tue,
                                Weekday::Wed,
                                Weekday::Thu,
                                Weekday::Fri,
                            ]
                        }
                        Some(DayKind::WeekendDay) => vec![Weekday::Sat, Weekday::Sun],
                        Some(DayKind::AnyDay) => vec![
                            Weekday::Mon,
                            Weekday::Tue,
                            Weekday::Wed,
                            Weekday::Thu,
                            Weekday::Fri,
                            Weekday::Sat,
                            Weekday::Sun,
                        ],
                        None => {
                            return Err(format!(
                                "WeeklyRecurrence/DaysOfWeek has an unknown day {name:?}"
                            ))
                        }
                    };
                    for d in expanded {
                        if !days.contains(&d) {
                            days.push(d);
                        }
                    }
                }
                let first_day_of_week = match el.child_text(NS_TYPES, "FirstDayOfWeek") {
                    None | Some("") => Weekday::Sun,
                    Some(v) => weekday(v).ok_or_else(|| {
                        format!("WeeklyRecurrence/FirstDayOfWeek {v:?} is not a day")
                    })?,
                };
                pattern = Some(Pattern::Weekly {
                    interval: number(el, "Interval")?,
                    days,
                    first_day_of_week,
                });
            }
            "AbsoluteMonthlyRecurrence" => {
                pattern = Some(Pattern::AbsoluteMonthly {
                    interval: number(el, "Interval")?,
                    day_of_month: number(el, "DayOfMonth")?,
                })
            }
            "RelativeMonthlyRecurrence" => {
                pattern = Some(Pattern::RelativeMonthly {
                    interval: number(el, "Interval")?,
                    day: single_day(el)?,
                    index: index(el)?,
                })
            }
            "AbsoluteYearlyRecurrence" => {
                pattern = Some(Pattern::AbsoluteYearly {
                    month: month_of(el)?,
                    day_of_month: number(el, "DayOfMonth")?,
                })
            }
            "RelativeYearlyRecurrence" => {
                pattern = Some(Pattern::RelativeYearly {
                    month: month_of(el)?,
                    day: single_day(el)?,
                    index: index(el)?,
                })
            }
            "DailyRegeneration"
            | "WeeklyRegeneration"
            | "MonthlyRegeneration"
            | "YearlyRegeneration" => {
                return Err(format!("{} is a task pattern, not a meeting's", el.name))
            }
            "NoEndRecurrence" | "EndDateRecurrence" | "NumberedRecurrence" => {
                let date = |name: &str| -> Result<NaiveDate, String> {
                    let v = text(el, name)?;
                    parse_date(&v).ok_or_else(|| format!("{}/{name} {v:?} is not a date", el.name))
                };
                let start = date("StartDate")?;
                range = Some(match el.name.as_str() {
                    "NoEndRecurrence" => Range::NoEnd { start },
                    "EndDateRecurrence" => Range::EndDate {
                        start,
                        end: date("EndDate")?,
                    },
                    _ => Range::Numbered {
                        start,
                        count: number(el, "NumberOfOccurrences")?,
                    },
                });
            }
            _ => {}
        }
    }
    Ok(Recurrence {
        pattern: pattern.ok_or("no recurrence pattern")?,
        range: range.ok_or("no recurrence range")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::parse;

    const GOID_HEX: &str = "040000008200E00074C5B7101A82E008000000007069352667BBC9010000000000000000100000000C74ABD802575A41BC09B0E12352657B";
    const GOID_BASE64: &str =
        "BAAAAIIA4AB0xbcQGoLgCAAAAABwaTUmZ7vJAQAAAAAAAAAAEAAAAAx0q9gCV1pBvAmw4SNSZXs=";

    #[test]
    fn the_reference_test_vector_converts_both_ways() {
        assert_eq!(base64_to_hex(GOID_BASE64).as_deref(), Some(GOID_HEX));
        assert_eq!(hex_to_base64(GOID_HEX).as_deref(), Some(GOID_BASE64));
        assert_eq!(hex_to_base64("0G"), None);
        assert_eq!(base64_to_hex("not base64!"), None);
    }

    #[test]
    fn an_exception_uid_loses_its_instance_date() {
        // Same id with the instance date 2026-02-02 (07EA 02 02) at offset 16, lower case.
        let exception = GOID_HEX.replacen("00000000", "07EA0202", 1).to_lowercase();
        assert_ne!(exception.to_uppercase(), GOID_HEX);
        assert_eq!(clean_uid(&exception), GOID_HEX);
        assert_eq!(clean_uid(GOID_HEX), GOID_HEX);
        // A foreign iCalendar UID is kept as given.
        assert_eq!(clean_uid("abc123@google.com"), "abc123@google.com");
    }

    #[test]
    fn times_and_dates_are_read_leniently() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_time("1970-01-01T00:00:01.25Z"), Some(1250));
        assert_eq!(parse_time("1970-01-01T01:00:01+01:00"), Some(1000));
        assert_eq!(parse_time("1970-01-01T00:00:01"), Some(1000));
        assert_eq!(parse_time("yesterday"), None);
        let d = NaiveDate::from_ymd_opt(2014, 3, 8).unwrap();
        for v in [
            "2014-03-08",
            "2014-03-08Z",
            "2014-03-08-08:00",
            "2014-03-08+05:30",
        ] {
            assert_eq!(parse_date(v), Some(d), "{v}");
        }
        assert_eq!(parse_date("2014-03-08T00:00"), None);
        assert_eq!(parse_date("2014-3-8"), None);
    }

    #[test]
    fn the_extended_property_wins_over_the_uid() {
        let xml = format!(
            r#"<t:CalendarItem xmlns:t="{NS_TYPES}"><t:ItemId Id="A" ChangeKey="C"/>
              <t:ExtendedProperty><t:ExtendedFieldURI PropertySetId="6ed8da90-450b-101b-98da-00aa003f1305" PropertyId="35" PropertyType="Binary"/><t:Value>{GOID_BASE64}</t:Value></t:ExtendedProperty>
              <t:UID>0400000082</t:UID><t:Start>2026-01-12T09:00:00Z</t:Start><t:End>2026-01-12T09:30:00Z</t:End></t:CalendarItem>"#
        );
        let Fetched::Meeting(m) = read_item(&parse(xml.as_bytes()).unwrap()).unwrap() else {
            panic!("not a meeting")
        };
        assert_eq!(m.uid, GOID_HEX);
        assert_eq!(m.item_type, ItemType::Single);
        assert_eq!(m.kind, MessageKind::CalendarItem);
    }

    #[test]
    fn missing_required_fields_are_named() {
        let xml = format!(
            r#"<t:MeetingRequest xmlns:t="{NS_TYPES}"><t:ItemId Id="A"/><t:UID>{GOID_HEX}</t:UID><t:Start>2026-01-12T09:00:00Z</t:Start></t:MeetingRequest>"#
        );
        let err = read_item(&parse(xml.as_bytes()).unwrap()).unwrap_err();
        assert!(err.contains("no End"), "{err}");
        let xml =
            format!(r#"<t:CalendarItem xmlns:t="{NS_TYPES}"><t:ItemId Id="A"/></t:CalendarItem>"#);
        let err = read_item(&parse(xml.as_bytes()).unwrap()).unwrap_err();
        assert!(err.contains("UID"), "{err}");
        let xml = format!(
            r#"<t:Message xmlns:t="{NS_TYPES}"><t:ItemClass>IPM.Note</t:ItemClass></t:Message>"#
        );
        let err = read_item(&parse(xml.as_bytes()).unwrap()).unwrap_err();
        assert!(err.contains("ItemId"), "{err}");
    }

    #[test]
    fn weekly_day_lists_expand_day_kinds() {
        let xml = format!(
            r#"<t:Recurrence xmlns:t="{NS_TYPES}"><t:WeeklyRecurrence><t:Interval>2</t:Interval><t:DaysOfWeek>Monday Weekday WeekendDay</t:DaysOfWeek></t:WeeklyRecurrence><t:NumberedRecurrence><t:StartDate>2026-01-05Z</t:StartDate><t:NumberOfOccurrences>4</t:NumberOfOccurrences></t:NumberedRecurrence></t:Recurrence>"#
        );
        let r = read_recurrence(&parse(xml.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            r.pattern,
            Pattern::Weekly {
                interval: 2,
                days: vec![
                    Weekday::Mon,
                    Weekday::Tue,
                    Weekday::Wed,
                    Weekday::Thu,
                    Weekday::Fri,
                    Weekday::Sat,
                    Weekday::Sun
                ],
                first_day_of_week: Weekday::Sun
            }
        );
        assert_eq!(
            r.range,
            Range::Numbered {
                start: NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(),
                count: 4
            }
        );
    }
}
