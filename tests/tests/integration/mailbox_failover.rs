//! Several management instances share the mailboxes through PostgreSQL: three
//! `vmr-scheduler` processes on one database watch six resource mailboxes (six
//! integrations). Each integration is led by exactly one instance and they spread two per
//! instance; while meeting requests arrive for all six resources one instance is killed
//! with SIGKILL: its integrations get a new leader within 30 s (measured and printed), the
//! survivors lead three each, and every request got exactly one reply per change.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use vmr_e2e::cluster::{
    allocate_in, cluster_exchange_options, cluster_setup, integration_id, leaders_by_pid, resource,
    PostgresDb,
};
use vmr_e2e::mailbox::{meeting, now_ms, replies, wait_until, Allocated};
use vmr_e2e::{free_port, ServerProcess, Sim};
use vmr_simulator::ews::{MailboxKind, MeetingUpdate};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const INSTANCES: usize = 3;
const INTEGRATIONS: usize = 6;
const MEETINGS_PER_INTEGRATION: usize = 30;
const ORGANIZERS: usize = 6;
/// The bound on moving a dead instance's integrations.
const FAILOVER_BOUND: Duration = Duration::from_secs(30);

/// What a meeting of the mix is, and so what must come of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Accepted once.
    Single,
    /// Accepted, then moved: two accepts.
    Moved,
    /// No tag: one decline.
    NoTag,
}

impl Kind {
    fn of(i: usize) -> Kind {
        match i % 5 {
            0..=2 => Kind::Single,
            3 => Kind::Moved,
            _ => Kind::NoTag,
        }
    }

    /// (accepts, declines) the organizer must receive.
    fn replies(self) -> (usize, usize) {
        match self {
            Kind::Single => (1, 0),
            Kind::Moved => (2, 0),
            Kind::NoTag => (0, 1),
        }
    }

    fn state(self) -> &'static str {
        match self {
            Kind::Single | Kind::Moved => "accepted",
            Kind::NoTag => "declined",
        }
    }
}

struct Sent {
    integration: String,
    uid: String,
    kind: Kind,
    organizer: String,
    start: i64,
    moved: bool,
}

/// Integration → pid of its leader, once every integration has one and (if `spread`) each
/// of `pids` leads the same number.
async fn settled_leaders(
    store: &vmr_store::Storage,
    pids: &BTreeSet<i64>,
) -> Result<Option<BTreeMap<String, i64>>> {
    let leaders = leaders_by_pid(store).await?;
    let all_led = (0..INTEGRATIONS).all(|i| {
        leaders
            .get(&integration_id(i))
            .is_some_and(|pid| pids.contains(pid))
    });
    if !all_led {
        return Ok(None);
    }
    let mut per_pid: BTreeMap<i64, usize> = pids.iter().map(|&p| (p, 0)).collect();
    for pid in leaders.values() {
        *per_pid.entry(*pid).or_default() += 1;
    }
    let fair = INTEGRATIONS.div_ceil(pids.len());
    Ok(per_pid.values().all(|&n| n == fair).then_some(leaders))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run by cargo xtask test"]
async fn killing_one_of_three_instances_moves_its_mailboxes_within_30_s_and_repeats_nothing(
) -> Result<()> {
    let db = PostgresDb::create().await?;
    let outcome = failover_run(&db.url).await;
    db.finish().await;
    outcome
}

async fn failover_run(storage_url: &str) -> Result<()> {
    let sim = Sim::start_with(cluster_exchange_options(INTEGRATIONS)).await?;
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
    let setup = cluster_setup(&sim, INTEGRATIONS, storage_url)?;
    let mut servers = Vec::with_capacity(INSTANCES);
    for _ in 0..INSTANCES {
        let mut s = setup.clone();
        s.port = free_port()?;
        servers.push(ServerProcess::start(s)?);
    }
    let store = vmr_store::Storage::open(storage_url, 2).await?;
    let pids: BTreeSet<i64> = servers
        .iter()
        .filter_map(|s| s.pid().map(i64::from))
        .collect();
    assert_eq!(pids.len(), INSTANCES, "every process has a pid");

    // Every integration led by exactly one instance, two each.
    let started = Instant::now();
    let leaders = wait_until(Duration::from_secs(60), || settled_leaders(&store, &pids))
        .await
        .map_err(|e| anyhow::anyhow!("the integrations did not spread over the instances: {e}"))?;
    eprintln!(
        "failover test: {INTEGRATIONS} integrations spread over {INSTANCES} instances in {:.1} s: {leaders:?}",
        started.elapsed().as_secs_f64()
    );

    // Aliases for the tagged meetings, from every instance (they share the database).
    let base = {
        let day = chrono::DateTime::from_timestamp_millis(now_ms() + 7 * DAY)
            .map(|t| t.date_naive())
            .unwrap_or_default();
        day.and_hms_opt(9, 0, 0)
            .map(|t| t.and_utc().timestamp_millis())
            .unwrap_or_default()
    };
    let mut planned: Vec<(usize, usize, Option<Allocated>)> = Vec::new();
    for n in 0..MEETINGS_PER_INTEGRATION {
        for i in 0..INTEGRATIONS {
            let k = planned.len();
            let allocated = match Kind::of(n) {
                Kind::NoTag => None,
                _ => Some(
                    allocate_in(
                        &sim,
                        &servers[k % INSTANCES],
                        &integration_id(i),
                        &organizers[k % ORGANIZERS],
                        &format!("Meeting {k}"),
                    )
                    .await?,
                ),
            };
            planned.push((i, n, allocated));
        }
    }

    // The meetings go out for all six resources; half-way through, the instance leading the
    // default integration is killed and stays dead.
    let victim_pid = leaders[&integration_id(0)];
    let victim = servers
        .iter()
        .position(|s| s.pid().map(i64::from) == Some(victim_pid))
        .ok_or_else(|| anyhow::anyhow!("no process has pid {victim_pid}"))?;
    let orphans: Vec<String> = leaders
        .iter()
        .filter(|(_, &pid)| pid == victim_pid)
        .map(|(integration, _)| integration.clone())
        .collect();
    let mut sent: Vec<Sent> = Vec::with_capacity(planned.len());
    let mut killed_at = None;
    for (k, (i, n, allocated)) in planned.iter().enumerate() {
        let kind = Kind::of(*n);
        let organizer = organizers[k % ORGANIZERS].clone();
        let start = base + (k as i64 % 40) * HOUR;
        let body = match allocated {
            Some(a) => a.instructions_html.clone(),
            None => "<p>added by hand</p>".to_owned(),
        };
        let mut m = meeting(
            &organizer,
            &format!("Meeting {k}"),
            &body,
            start,
            start + HOUR,
        );
        m.resources = vec![resource(*i)];
        m.required = vec![organizers[(k + 1) % ORGANIZERS].clone()];
        let uid = ews.send_meeting(m)?;
        sent.push(Sent {
            integration: integration_id(*i),
            uid,
            kind,
            organizer,
            start,
            moved: false,
        });
        if k == planned.len() / 2 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            servers[victim].stop();
            killed_at = Some(Instant::now());
            eprintln!("failover test: killed instance pid {victim_pid}, leading {orphans:?}");
        }
    }
    let Some(killed_at) = killed_at else {
        bail!("the instance was never killed");
    };

    // Its integrations get a new leader within 30 s; the survivors lead three each.
    let survivors: BTreeSet<i64> = pids.iter().copied().filter(|&p| p != victim_pid).collect();
    let mut moved_after: BTreeMap<String, f64> = BTreeMap::new();
    loop {
        let leaders = leaders_by_pid(&store).await?;
        for orphan in &orphans {
            if !moved_after.contains_key(orphan)
                && leaders
                    .get(orphan)
                    .is_some_and(|pid| survivors.contains(pid))
            {
                moved_after.insert(orphan.clone(), killed_at.elapsed().as_secs_f64());
            }
        }
        if moved_after.len() == orphans.len() {
            break;
        }
        if killed_at.elapsed() > FAILOVER_BOUND {
            bail!(
                "after {FAILOVER_BOUND:?} only {moved_after:?} of {orphans:?} have a new leader \
                 (leaders now: {leaders:?})"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slowest = moved_after.values().copied().fold(0.0, f64::max);
    eprintln!("failover test: new leaders after {moved_after:?} s (slowest {slowest:.1} s)");
    let after = wait_until(Duration::from_secs(30), || {
        settled_leaders(&store, &survivors)
    })
    .await
    .map_err(|e| anyhow::anyhow!("the survivors did not share the integrations: {e}"))?;
    eprintln!("failover test: survivors lead {after:?}");

    // The moves, once each meeting has its first answer.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut pending = 0;
        for s in sent
            .iter_mut()
            .filter(|s| s.kind == Kind::Moved && !s.moved)
        {
            if replies(&sim, &s.organizer, &s.uid)?.is_empty() {
                pending += 1;
                continue;
            }
            ews.update_meeting(
                &s.uid,
                MeetingUpdate {
                    start: Some(s.start + DAY),
                    end: Some(s.start + DAY + HOUR),
                    ..MeetingUpdate::default()
                },
            )?;
            s.moved = true;
        }
        if pending == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{pending} meetings to move were never answered");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Everything answered, then after a quiet moment nothing more: exactly one reply per change.
    let expected_total: usize = sent
        .iter()
        .map(|s| s.kind.replies().0 + s.kind.replies().1)
        .sum();
    wait_until(Duration::from_secs(120), || async {
        let mut total = 0;
        for s in &sent {
            total += replies(&sim, &s.organizer, &s.uid)?.len();
        }
        Ok((total >= expected_total).then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("not every request was answered: {e}"))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut wrong = Vec::new();
    let mut total = 0;
    for s in &sent {
        let got = replies(&sim, &s.organizer, &s.uid)?;
        total += got.len();
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
                "{} {:?} {}: {accepts} accepts, {declines} declines",
                s.integration, s.kind, s.uid
            ));
        }
        let state = store
            .meeting(&s.integration, &s.uid)
            .await?
            .map(|m| m.state)
            .unwrap_or_else(|| "missing".into());
        if state != s.kind.state() {
            wrong.push(format!(
                "{} {:?} {}: state {state}",
                s.integration, s.kind, s.uid
            ));
        }
    }
    eprintln!(
        "failover test: {} meetings over {INTEGRATIONS} resources, {total} replies (expected \
         {expected_total}), failover {slowest:.1} s, {:.1} s in all",
        sent.len(),
        started.elapsed().as_secs_f64()
    );
    if !wrong.is_empty() {
        bail!("{} meetings went wrong:\n{}", wrong.len(), wrong.join("\n"));
    }
    assert_eq!(total, expected_total);
    assert!(slowest < FAILOVER_BOUND.as_secs_f64());
    Ok(())
}

/// On SQLite one instance leads: a second process on the same database file says so in its
/// log and stands by; when the first is killed the second takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_second_instance_stands_by_and_takes_over_when_the_first_dies() -> Result<()> {
    let sim = Sim::start().await?;
    let ews = sim.running.simulator.ews.clone();
    let mut first = ServerProcess::start(vmr_e2e::mailbox::watching_setup(&sim, "")?)?;
    let url = format!("sqlite://{}", first.dir.path().join("vmr.db").display());
    let mut second_setup = vmr_e2e::mailbox::watching_setup(&sim, "")?;
    second_setup.storage_url = Some(url.clone());
    let second = ServerProcess::start(second_setup)?;
    let store = vmr_store::Storage::open(&url, 2).await?;
    let (first_pid, second_pid) = match (first.pid(), second.pid()) {
        (Some(a), Some(b)) => (i64::from(a), i64::from(b)),
        _ => bail!("a process has no pid"),
    };
    let leader = || async {
        let instances = store.management_instances().await?;
        Ok(store
            .mailbox_leaders()
            .await?
            .into_iter()
            .find(|l| l.integration == "default")
            .and_then(|l| {
                instances
                    .into_iter()
                    .find(|i| i.instance_id == l.instance_id)
            })
            .map(|i| i.pid)) as Result<Option<i64>>
    };
    wait_until(Duration::from_secs(30), || async {
        Ok(leader().await?.filter(|&pid| pid == first_pid))
    })
    .await
    .map_err(|e| anyhow::anyhow!("the first instance did not lead: {e}"))?;
    wait_until(Duration::from_secs(20), || async {
        Ok(second.log_text().contains("stays standby").then_some(()))
    })
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "the second instance did not warn that it stands by: {e}; its log:\n{}",
            second.log_text()
        )
    })?;
    assert_eq!(leader().await?, Some(first_pid), "the second never led");

    let start = now_ms() + 7 * DAY;
    let organizer = vmr_simulator::outlook::DEFAULT_ORGANIZER;
    let before = ews.send_meeting(meeting(
        organizer,
        "Before",
        "<p>no tag</p>",
        start,
        start + HOUR,
    ))?;
    vmr_e2e::mailbox::wait_for_replies(&sim, organizer, &before, 1, Duration::from_secs(30))
        .await?;

    first.stop();
    let killed = Instant::now();
    wait_until(FAILOVER_BOUND, || async {
        Ok(leader().await?.filter(|&pid| pid == second_pid))
    })
    .await
    .map_err(|e| anyhow::anyhow!("the second instance did not take over: {e}"))?;
    eprintln!(
        "SQLite standby took over {:.1} s after the first instance was killed",
        killed.elapsed().as_secs_f64()
    );
    let after = ews.send_meeting(meeting(
        organizer,
        "After",
        "<p>no tag</p>",
        start + DAY,
        start + DAY + HOUR,
    ))?;
    vmr_e2e::mailbox::wait_for_replies(&sim, organizer, &after, 1, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replies(&sim, organizer, &before)?.len(), 1);
    assert_eq!(replies(&sim, organizer, &after)?.len(), 1);
    Ok(())
}
