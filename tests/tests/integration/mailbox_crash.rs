//! Crash safety of mailbox processing: 500 meetings (a mix of every case) are sent while the
//! management process is killed with SIGKILL at random moments and restarted, at least six
//! times. At the end every meeting has exactly one correct state and the organizer received
//! exactly one reply per change.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chrono::{Datelike, Weekday};
use vmr_core::recurrence::{Pattern, Range, Recurrence};
use vmr_e2e::mailbox::{
    allocate, meeting, now_ms, open_store, replies, wait_until, watching_setup, Allocated,
};
use vmr_e2e::{ServerProcess, Sim};
use vmr_simulator::ews::{MailboxKind, MeetingUpdate};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const MEETINGS: usize = 500;
const ORGANIZERS: usize = 10;
const KILLS: usize = 6;

/// What a meeting of the mix is, and so what must come of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Accepted once.
    Single,
    /// Accepted, then moved: two accepts.
    Moved,
    /// Accepted, then cancelled: one accept, then the meeting is cancelled.
    Cancelled,
    /// A weekly series, then one occurrence moved and one cancelled: two accepts.
    Series,
    /// No tag: one decline.
    NoTag,
    /// Edited tag: one decline.
    Tampered,
    /// The tag of an earlier `Single`: one decline (conflict).
    Copy,
    /// Entirely in the past: one decline.
    Past,
}

impl Kind {
    fn of(i: usize) -> Kind {
        match i % 20 {
            0..=6 => Kind::Single,
            7 | 8 => Kind::Moved,
            9 => Kind::Cancelled,
            10 | 11 => Kind::Series,
            12 | 13 => Kind::NoTag,
            14 | 15 => Kind::Tampered,
            16 | 17 => Kind::Copy,
            _ => Kind::Past,
        }
    }

    /// (accepts, declines) the organizer must receive.
    fn replies(self) -> (usize, usize) {
        match self {
            Kind::Single | Kind::Cancelled => (1, 0),
            Kind::Moved | Kind::Series => (2, 0),
            Kind::NoTag | Kind::Tampered | Kind::Copy | Kind::Past => (0, 1),
        }
    }

    /// The meeting's final state in the database.
    fn state(self) -> &'static str {
        match self {
            Kind::Single | Kind::Moved | Kind::Series => "accepted",
            Kind::Cancelled => "cancelled",
            _ => "declined",
        }
    }
}

struct Sent {
    uid: String,
    kind: Kind,
    organizer: String,
    start: i64,
    /// For series: the original starts of the occurrences moved and cancelled later.
    occurrences: Option<(i64, i64)>,
}

/// A tiny deterministic generator (the seed is printed so a failure can be replayed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn next_monday_9_utc(days_ahead: i64) -> (chrono::NaiveDate, i64) {
    let mut date = chrono::DateTime::from_timestamp_millis(now_ms() + days_ahead * DAY)
        .expect("now")
        .date_naive();
    while date.weekday() != Weekday::Mon {
        date = date.succ_opt().expect("date");
    }
    let start = date
        .and_hms_opt(9, 0, 0)
        .expect("time")
        .and_utc()
        .timestamp_millis();
    (date, start)
}

async fn kill_and_restart(
    server: &mut ServerProcess,
    rng: &mut Lcg,
    kills: &mut usize,
) -> Result<()> {
    tokio::time::sleep(Duration::from_millis(200 + rng.below(1300))).await;
    tokio::task::block_in_place(|| server.restart())?;
    *kills += 1;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_management_at_random_moments_loses_and_repeats_nothing() -> Result<()> {
    crash_run(None).await
}

/// The same on PostgreSQL: the database `VMR_TEST_POSTGRES_URL` names (the throwaway server
/// `cargo xtask test` starts; no other test migrates into that database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run by cargo xtask test"]
async fn on_postgresql_killing_management_loses_and_repeats_nothing() -> Result<()> {
    let url = std::env::var("VMR_TEST_POSTGRES_URL").unwrap_or_default();
    assert!(
        !url.trim().is_empty(),
        "VMR_TEST_POSTGRES_URL is not set: this test needs a PostgreSQL server; run it through \
         `cargo xtask test`, which starts one"
    );
    crash_run(Some(url)).await
}

async fn crash_run(storage_url: Option<String>) -> Result<()> {
    let seed = std::env::var("VMR_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() as u64);
    eprintln!("crash test seed: {seed} (VMR_CRASH_SEED={seed} replays it)");
    let mut rng = Lcg(seed);
    let sim = Sim::start().await?;
    let ews = sim.running.simulator.ews.clone();
    let organizers: Vec<String> = (0..ORGANIZERS)
        .map(|i| format!("organizer{i}@example.com"))
        .collect();
    for o in &organizers {
        ews.add_mailbox(
            o,
            &vmr_simulator::exchange_identity::display_name_for(o),
            MailboxKind::User,
        );
    }
    let mut setup = watching_setup(&sim, "")?;
    let engine = if storage_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    setup.storage_url = storage_url;
    let mut server = ServerProcess::start(setup)?;
    let started = Instant::now();

    // Aliases first (the pane's part), then every meeting is sent while the process is
    // killed and restarted.
    let (series_date, series_start) = next_monday_9_utc(7);
    let single_start = series_start + 2 * HOUR;
    let mut allocated: Vec<Option<Allocated>> = Vec::with_capacity(MEETINGS);
    for i in 0..MEETINGS {
        let kind = Kind::of(i);
        let organizer = &organizers[i % ORGANIZERS];
        allocated.push(match kind {
            Kind::NoTag | Kind::Copy => None,
            _ => Some(allocate(&sim, &server, organizer, &format!("Meeting {i}")).await?),
        });
    }
    let mut sent: Vec<Sent> = Vec::with_capacity(MEETINGS);
    let mut kills = 0;
    let mut last_single: Option<Allocated> = None;
    for i in 0..MEETINGS {
        let kind = Kind::of(i);
        let organizer = organizers[i % ORGANIZERS].clone();
        let subject = format!("Meeting {i}");
        let start = single_start + (i as i64 % 48) * HOUR;
        let (body, start, mut occurrences) = match (kind, &allocated[i]) {
            (Kind::NoTag, _) => ("<p>added by hand</p>".to_owned(), start, None),
            (Kind::Copy, _) => {
                let Some(original) = &last_single else {
                    bail!("no single before copy {i}")
                };
                (original.instructions_html.clone(), start, None)
            }
            (Kind::Tampered, Some(a)) => (a.tampered_instructions(), start, None),
            (Kind::Past, Some(a)) => (a.instructions_html.clone(), start - 30 * DAY, None),
            (Kind::Series, Some(a)) => (a.instructions_html.clone(), series_start, Some((0, 0))),
            (_, Some(a)) => (a.instructions_html.clone(), start, None),
            (_, None) => bail!("meeting {i} has no alias"),
        };
        if kind == Kind::Single {
            last_single = allocated[i].clone();
        }
        let mut m = meeting(&organizer, &subject, &body, start, start + HOUR);
        if kind == Kind::Series {
            m.time_zone = "UTC".into();
            m.recurrence = Some(Recurrence {
                pattern: Pattern::Weekly {
                    interval: 1,
                    days: vec![Weekday::Mon],
                    first_day_of_week: Weekday::Sun,
                },
                range: Range::Numbered {
                    start: series_date,
                    count: 8,
                },
            });
            occurrences = Some((series_start + 2 * 7 * DAY, series_start + 4 * 7 * DAY));
        }
        m.required = vec![organizers[(i + 1) % ORGANIZERS].clone()];
        let uid = ews.send_meeting(m)?;
        sent.push(Sent {
            uid,
            kind,
            organizer,
            start,
            occurrences,
        });
        if i % 170 == 169 {
            kill_and_restart(&mut server, &mut rng, &mut kills).await?;
        }
    }

    // Follow-ups once each meeting has its first answer, with more kills in between.
    let follow_ups: Vec<usize> = (0..sent.len())
        .filter(|&i| matches!(sent[i].kind, Kind::Moved | Kind::Cancelled | Kind::Series))
        .collect();
    let mut done = 0;
    while done < follow_ups.len() {
        let mut progressed = false;
        for &i in &follow_ups[done..] {
            let s = &sent[i];
            if replies(&sim, &s.organizer, &s.uid)?.is_empty() {
                break;
            }
            match s.kind {
                Kind::Moved => ews.update_meeting(
                    &s.uid,
                    MeetingUpdate {
                        start: Some(s.start + DAY),
                        end: Some(s.start + DAY + HOUR),
                        ..MeetingUpdate::default()
                    },
                )?,
                Kind::Cancelled => ews.cancel_meeting(&s.uid)?,
                _ => {
                    let (moved, cancelled) = s.occurrences.unwrap_or_default();
                    ews.move_occurrence(&s.uid, moved, moved + DAY, moved + DAY + HOUR)?;
                    ews.cancel_occurrence(&s.uid, cancelled)?;
                }
            }
            done += 1;
            progressed = true;
            if done % 25 == 0 {
                kill_and_restart(&mut server, &mut rng, &mut kills).await?;
            }
        }
        if !progressed {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if started.elapsed() > Duration::from_secs(180) {
            bail!("follow-ups stalled: {done} of {}", follow_ups.len());
        }
    }
    while kills < KILLS {
        kill_and_restart(&mut server, &mut rng, &mut kills).await?;
    }

    // Everything answered: the expected number of replies in total …
    let expected_total: usize = sent
        .iter()
        .map(|s| s.kind.replies().0 + s.kind.replies().1)
        .sum();
    let store = open_store(&server).await?;
    wait_until(Duration::from_secs(120), || async {
        let mut total = 0;
        for s in &sent {
            total += replies(&sim, &s.organizer, &s.uid)?.len();
        }
        let cancelled_done = store.count_meetings_by_state("default").await?;
        let cancelled = cancelled_done.get("cancelled").copied().unwrap_or(0);
        let want_cancelled = sent.iter().filter(|s| s.kind == Kind::Cancelled).count() as u64;
        Ok((total >= expected_total && cancelled >= want_cancelled).then_some(()))
    })
    .await?;
    // … and after a quiet moment, nothing more: exactly one reply per change, the right state.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut wrong = Vec::new();
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &sent {
        let got = replies(&sim, &s.organizer, &s.uid)?;
        let accepts = got
            .iter()
            .filter(|m| m.item_class.ends_with(".Pos"))
            .count();
        let declines = got
            .iter()
            .filter(|m| m.item_class.ends_with(".Neg"))
            .count();
        if (accepts, declines) != s.kind.replies() {
            wrong.push(format!(
                "{:?} {}: {accepts} accepts, {declines} declines",
                s.kind, s.uid
            ));
        }
        let state = store
            .meeting("default", &s.uid)
            .await?
            .map(|m| m.state)
            .unwrap_or_else(|| "missing".into());
        if state != s.kind.state() {
            wrong.push(format!("{:?} {}: state {state}", s.kind, s.uid));
        }
        *by_state.entry(s.kind.state()).or_default() += 1;
        let windows = store.windows("default", &s.uid).await?.len();
        let want_windows = match s.kind {
            Kind::Single | Kind::Moved => 1,
            Kind::Series => 7,
            _ => 0,
        };
        if windows != want_windows {
            wrong.push(format!("{:?} {}: {windows} windows", s.kind, s.uid));
        }
    }
    let replies_total: usize = sent
        .iter()
        .map(|s| replies(&sim, &s.organizer, &s.uid).map(|r| r.len()))
        .sum::<Result<usize, _>>()?;
    eprintln!(
        "crash test ({engine}): {MEETINGS} meetings, {kills} kills, {replies_total} replies (expected \
         {expected_total}), states {by_state:?}, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if !wrong.is_empty() {
        bail!("{} meetings went wrong:\n{}", wrong.len(), wrong.join("\n"));
    }
    assert!(kills >= KILLS);
    Ok(())
}
