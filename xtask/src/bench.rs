//! `cargo xtask bench`: prints the numbers behind the performance budgets.
//! A benchmark, not a test: it measures and reports; it fails only when a
//! run cannot be measured or the uniqueness run finds a duplicate.
//!
//! Sections, in order (`--only a,b` picks some):
//!
//! * `size` — pane transfer size: brotli bytes of wasm + js + css (budget ≤ 90 KB);
//! * `pane` — pane ready: navigation start → button enabled, p50 over
//!   repeated loads in headless Chromium inside the simulated Outlook (budget
//!   ≤ 150 ms); click → instructions inserted, p50 (budget ≤ 100 ms);
//! * `rss` — server idle RSS (budget ≤ 30 MB);
//! * `alloc` — alias allocations/s and p99 latency at 64 concurrent HTTPS
//!   clients (wrk), allocation limits off, on SQLite and PostgreSQL, next to the same server's
//!   `/healthz` rate; twice: with cached tokens (`--users` users, each token
//!   verified once and then remembered, as Outlook resends it) and with a
//!   fresh token on every request (every request takes the full RS256 path).
//!   Only 2xx answers count (a wrk Lua script counts them per thread). The
//!   fresh tokens are signed before the runs (RSA signing in the simulator
//!   manages a few hundred a second on two cores, so `--fresh-tokens` sets
//!   how long that takes; the run fails if it uses them all up);
//! * `unique` — N allocations through 4 edge processes into one management
//!   process, then a duplicate count (`--unique N`, default 1,000,000; 0
//!   leaves it out); any duplicate fails the bench;
//! * `backlog` — mailbox processing after an outage: `--backlog N` meeting
//!   requests (default 10,000, each with a valid tag) wait in the simulated
//!   resource mailbox while the server is down; the server starts and answers
//!   them all: meetings/s and EWS requests per meeting (goals of issue 8:
//!   ≥ 300 meetings/s, ≤ 1.2 requests per meeting).
//! * `policy` — Infinity's external policy: `--policy-conferences N` scheduled
//!   conferences (default 100,000) in the database, on SQLite and on
//!   PostgreSQL; wrk asks `GET /policy/v1/service/configuration` about
//!   `--policy-rate` times a second (default 2,000: 64 keep-alive
//!   connections, each pacing itself with `delay()`) over HTTPS with basic auth, dialling a mix of open,
//!   closed and unknown aliases in their SIP, numeric and full forms: p50, p99
//!   and max latency and the achieved rate (goal of issue 9: p99 ≤ 2 ms at
//!   2,000 requests/s).
//!
//! Everything runs on loopback against release builds.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vmr_e2e::{Browser, ServerProcess, ServerSetup, Sim};
use vmr_simulator::exchange_identity::IdentityClaims;
use vmr_simulator::outlook::{ComposeScenario, EMPTY_PANE_PATH};

use crate::{cmd, pane, postgres, setup};

/// Concurrent clients in the throughput runs.
const CLIENTS: usize = 64;
/// wrk threads; the fresh tokens are split between them.
const WRK_THREADS: usize = 2;

/// Appended to every bench server's config: no per-requester or global
/// allocation limit.
const BENCH_LIMITS_TOML: &str =
    "\n[limits]\nallocations_per_requester_per_hour = 0\nallocations_per_second = 0\n";

/// Flags of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Allocations in the uniqueness run (underscores allowed; 0 leaves it out).
    #[arg(long, default_value = "1_000_000", value_parser = parse_count)]
    pub unique: u64,
    /// Length of each wrk run, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: u64,
    /// Distinct users (tokens) in the cached-token allocation run.
    #[arg(long, default_value = "1_000", value_parser = parse_count)]
    pub users: u64,
    /// Tokens signed in advance for the fresh-token run; the run fails if it
    /// needs more (one per request).
    #[arg(long, default_value = "60_000", value_parser = parse_count)]
    pub fresh_tokens: u64,
    /// Meeting requests waiting in the resource mailbox in the backlog run.
    #[arg(long, default_value = "10_000", value_parser = parse_count)]
    pub backlog: u64,
    /// Scheduled conferences in the database of the policy run.
    #[arg(long, default_value = "100_000", value_parser = parse_count)]
    pub policy_conferences: u64,
    /// Policy requests per second (open loop).
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub policy_rate: u32,
    /// Run only these sections (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Section>,
}

/// The parts of the bench, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// Pane transfer size.
    Size,
    /// Pane timings in headless Chromium.
    Pane,
    /// Server idle RSS.
    Rss,
    /// Allocation throughput (cached and fresh tokens) next to /healthz.
    Alloc,
    /// Uniqueness through edges into management.
    Unique,
    /// Mailbox backlog after an outage.
    Backlog,
    /// Infinity policy look-ups with scheduled conferences in the database.
    Policy,
}

impl BenchArgs {
    fn runs(&self, section: Section) -> bool {
        self.only.is_empty() || self.only.contains(&section)
    }

    fn run_length(&self) -> Duration {
        Duration::from_secs(self.duration)
    }
}

/// `1_000_000` or `1000000`.
fn parse_count(s: &str) -> Result<u64, String> {
    s.replace('_', "")
        .parse()
        .map_err(|e| format!("`{s}` is not a whole number: {e}"))
}

/// Runs the selected benchmarks and prints the results.
pub fn run(args: &BenchArgs) -> Result<()> {
    setup::run()?;
    if args.runs(Section::Size) || args.runs(Section::Pane) {
        pane::build()?;
    }
    cmd(
        "cargo",
        &[
            "build",
            "--release",
            "--bins",
            "-p",
            "vmr-server",
            "-p",
            "vmr-simulator",
        ],
        None,
    )?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        if args.runs(Section::Size) {
            transfer_size()?;
        }
        let sim = Sim::start().await?;
        let mut setup = ServerSetup::with_simulator(&sim)?;
        setup.release = true;
        // The bench measures capacity, so the allocation limits (which would
        // answer 429 long before) are off; every other setting is the default.
        setup.extra_toml.push_str(BENCH_LIMITS_TOML);
        if args.runs(Section::Pane) || args.runs(Section::Rss) {
            let server = ServerProcess::start(setup.clone())?;
            if args.runs(Section::Pane) {
                pane_timings(&sim, &server).await?;
            }
            if args.runs(Section::Rss) {
                idle_rss(&server).await?;
            }
        }
        if args.runs(Section::Alloc) {
            allocation(args, &sim, &setup).await?;
        }
        if args.runs(Section::Unique) {
            uniqueness(&sim, &setup, args.unique).await?;
        }
        if args.runs(Section::Backlog) && args.backlog > 0 {
            backlog(args.backlog).await?;
        }
        if args.runs(Section::Policy) {
            policy(args, &setup).await?;
        }
        Ok(())
    })
}

/// `[policy]` of the policy run's servers.
const POLICY_USER: &str = "infinity";
const POLICY_PASSWORD: &str = "bench-policy-password";

/// The policy run on both engines.
async fn policy(args: &BenchArgs, setup: &ServerSetup) -> Result<()> {
    println!(
        "\n== Infinity policy: {} scheduled conferences, {} requests/s for {} s over HTTPS \
         (wrk, 64 paced connections, basic auth) ==",
        args.policy_conferences, args.policy_rate, args.duration
    );
    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite://{}", dir.path().join("policy.db").display());
    policy_run(args, setup, "SQLite", &sqlite).await?;
    let pg = postgres::start()?;
    policy_run(args, setup, "PostgreSQL", &pg.url).await?;
    drop(pg);
    Ok(())
}

/// Fills `url`, starts a release server on it with `[policy]`, and measures.
async fn policy_run(args: &BenchArgs, base: &ServerSetup, engine: &str, url: &str) -> Result<()> {
    use vmr_e2e::policy_load::fill_scheduled_conferences;
    let started = Instant::now();
    let count = usize::try_from(args.policy_conferences)?;
    let filled = fill_scheduled_conferences(url, count, vmr_e2e::mailbox::now_ms()).await?;
    let fill_secs = started.elapsed().as_secs_f64();
    let mut setup = base.clone();
    setup.port = vmr_e2e::free_port()?;
    setup.storage_url = Some(url.to_owned());
    // The fill spreads windows over two days either side of now: with the default 24 h grace
    // the first lifetime sweep, at server start, would expire 500 of them (transactions the
    // policy index then follows) while wrk runs. That start-up transient is not what this
    // measures; a 30-day grace keeps every VMR alive.
    setup.extra_toml.push_str(&format!(
        "\n[policy]\nbasic_auth_user = \"{POLICY_USER}\"\nbasic_auth_password = \"{POLICY_PASSWORD}\"\n\
         allow_from = [\"127.0.0.1\", \"::1\"]\n[lifetime]\ngrace_hours = 720\n"
    ));
    let started = Instant::now();
    let server = ServerProcess::start(setup)?;
    let start_secs = started.elapsed().as_secs_f64();
    let (Some(open), Some(closed)) = (filled.open.first(), filled.closed.first()) else {
        bail!("the fill left no open or no closed window to dial");
    };
    // Half open windows (SIP, full and numeric forms), the rest closed or unknown.
    let mut dialled = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        let o = &filled.open[i % filled.open.len()];
        let c = &filled.closed[i % filled.closed.len()];
        let numeric = |a: &str| a.split('@').next().unwrap_or(a).to_owned();
        dialled.push(match i % 10 {
            0..=2 => format!("sip:{o}"),
            3 => o.clone(),
            4 => numeric(o),
            5 | 6 => numeric(c),
            7 => format!("sip:{c}:5061;transport=tls"),
            _ => format!("sip:77{i:06}@vc.example.com"),
        });
    }
    // The answers are right before they are timed.
    let http = client()?;
    let ask = |alias: &str| {
        http.get(format!(
            "{}/policy/v1/service/configuration",
            server.origin()
        ))
        .basic_auth(POLICY_USER, Some(POLICY_PASSWORD))
        .query(&[("local_alias", alias)])
        .send()
    };
    let answer: serde_json::Value = ask(open).await?.json().await?;
    if answer.get("result").is_none() {
        bail!("{open} should be inside its window; the server answered {answer}");
    }
    let answer: serde_json::Value = ask(closed).await?.json().await?;
    if answer["action"] != "reject" {
        bail!("{closed} should be outside its window; the server answered {answer}");
    }
    let lua = policy_request_lua(&dialled, args.policy_rate);
    let url = format!("{}/policy/v1/service/configuration", server.origin());
    // Warm-up (connections, caches), then the measured run.
    wrk(&url, &lua, Duration::from_secs(2))?;
    let run = wrk(&url, &lua, args.run_length())?;
    let (p50, max) = (run.p50_ms, run.max_ms);
    let rss = server.pid().map(rss_kib).transpose()?.unwrap_or(0);
    println!(
        "  {engine:<10} policy: {:>6.0} answers/s (target {}), p50 {p50:.2} ms, p99 {:.2} ms, \
         max {max:.2} ms, {} non-2xx | filled in {fill_secs:.1} s, server up (index loaded) \
         in {start_secs:.1} s, RSS {} MiB (goal: p99 ≤ 2 ms at 2,000/s)",
        run.rate,
        args.policy_rate,
        run.p99_ms,
        run.non_2xx,
        rss / 1024,
    );
    Ok(())
}

/// `Authorization` of the policy run (`infinity:bench-policy-password` in base64).
const POLICY_AUTHORIZATION: &str = "Basic aW5maW5pdHk6YmVuY2gtcG9saWN5LXBhc3N3b3Jk";

/// Lua for paced policy requests: each of wrk's [`CLIENTS`] connections asks,
/// then waits `CLIENTS / rate` seconds (wrk's `delay()`), so together they ask
/// about `rate` times a second; the dialled aliases cycle through `dialled`.
fn policy_request_lua(dialled: &[String], rate: u32) -> String {
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let list = dialled
        .iter()
        .map(|a| format!("\"{}\"", encode(a)))
        .collect::<Vec<_>>()
        .join(",\n");
    let delay_ms = (CLIENTS as f64 * 1000.0 / f64::from(rate)).round() as u64;
    format!(
        "local aliases = {{ {list} }}\n\
         local i = 0\n\
         request = function()\n\
           i = i + 1\n\
           local a = aliases[((i * {CLIENTS} + math.random(0, {CLIENTS})) % #aliases) + 1]\n\
           return wrk.format(\"GET\", \"/policy/v1/service/configuration?local_alias=\" .. a ..\n\
             \"&call_direction=dial_in&protocol=sip&remote_alias=sip%3Acaller%40example.com\",\n\
             {{ [\"Authorization\"] = \"{POLICY_AUTHORIZATION}\" }})\n\
         end\n\
         function delay()\n  return {delay_ms}\nend"
    )
}

/// Organizers the backlog's meetings come from (their replies are counted per Inbox).
const BACKLOG_ORGANIZERS: usize = 10;

/// The backlog run: allocate, stop the server, queue `count` requests, start it, time the
/// answers.
async fn backlog(count: u64) -> Result<()> {
    use vmr_e2e::mailbox::{allocate, meeting, now_ms, watching_setup, RESOURCE};
    use vmr_simulator::ews::{FolderName, MailboxKind};
    let sim = Sim::start().await?;
    let ews = sim.running.simulator.ews.clone();
    let organizers: Vec<String> = (0..BACKLOG_ORGANIZERS)
        .map(|i| format!("backlog{i}@example.com"))
        .collect();
    for o in &organizers {
        ews.add_mailbox(o, o, MailboxKind::User);
    }
    let mut setup = watching_setup(&sim, "")?;
    setup.release = true;
    let mut server = ServerProcess::start(setup)?;
    let started = Instant::now();
    let mut instructions = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let organizer = &organizers[i % BACKLOG_ORGANIZERS];
        instructions.push(
            allocate(&sim, &server, organizer, "Backlog")
                .await?
                .instructions_html,
        );
    }
    println!(
        "backlog: {count} aliases allocated in {:.1} s; the server stops (the outage)",
        started.elapsed().as_secs_f64()
    );
    server.stop();
    let start = (now_ms() / 86_400_000 + 2) * 86_400_000;
    for (i, body) in instructions.iter().enumerate() {
        let organizer = &organizers[i % BACKLOG_ORGANIZERS];
        let at = start + (i as i64 % 96) * 900_000;
        let mut m = meeting(organizer, &format!("Backlog {i}"), body, at, at + 1_800_000);
        m.required.clear();
        ews.send_meeting(m)?;
    }
    let requests_before = ews.requests().len();
    let inbox_of = |o: &String| -> Result<usize> {
        Ok(ews.count_messages(o, FolderName::Inbox, "IPM.Schedule.Meeting.Resp")?)
    };
    let waiting = ews.mailbox_messages(RESOURCE, FolderName::Inbox)?.len();
    println!("backlog: {waiting} meeting requests wait in {RESOURCE}; the server starts");
    let started = Instant::now();
    server.restart()?;
    let timeout = Duration::from_secs(60 + count / 20);
    loop {
        let mut answered = 0;
        for o in &organizers {
            answered += inbox_of(o)?;
        }
        if answered as u64 >= count {
            break;
        }
        if started.elapsed() > timeout {
            bail!("backlog: only {answered} of {count} answered after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let requests = ews.requests().len() - requests_before;
    println!(
        "backlog: {count} meetings answered in {seconds:.1} s (from process start): \
         {:.0} meetings/s, {:.2} EWS requests per meeting ({requests} requests)",
        count as f64 / seconds,
        requests as f64 / count as f64
    );
    Ok(())
}

fn transfer_size() -> Result<()> {
    println!("\n== pane transfer size (brotli) ==");
    let mut total = 0;
    for (name, size) in pane::transfer_sizes()? {
        println!("  {name:<48} {size:>8} B");
        total += size;
    }
    println!(
        "  total wasm+js+css                                {total:>8} B = {:.1} KB (budget 90 KB)",
        total as f64 / 1000.0
    );
    Ok(())
}

async fn idle_rss(server: &ServerProcess) -> Result<()> {
    // Let the server settle after start-up (or the pane loads) before reading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_kib(server.pid().unwrap_or(0))?;
    println!(
        "\n== server idle RSS ==\n  {:.1} MB (budget 30 MB)",
        rss as f64 / 1024.0
    );
    Ok(())
}

/// The add-in host every allocation-run server answers for, so one set of
/// signed tokens (their audience is the pane URL) serves both engines.
const BENCH_PUBLIC_HOST: &str = "vmr.bench.test";

async fn allocation(args: &BenchArgs, sim: &Sim, setup: &ServerSetup) -> Result<()> {
    println!(
        "\n== alias allocation, {CLIENTS} concurrent HTTPS clients (wrk), {}s runs, 2xx answers only ==",
        args.duration
    );
    let mut setup = setup.clone();
    setup.public_host = Some(BENCH_PUBLIC_HOST.to_string());
    // Signed once: each server process has its own token cache, so a token
    // is new to each of them.
    let started = Instant::now();
    let tokens = BenchTokens {
        cached: sign_tokens(sim, &setup.pane_url(), "user", args.users)?,
        fresh: sign_tokens(sim, &setup.pane_url(), "fresh", args.fresh_tokens)?,
        dir: tempfile::tempdir()?,
    };
    write_token_files(tokens.dir.path(), &tokens.fresh)?;
    eprintln!(
        "xtask bench: signed {} + {} tokens in {:.1} s",
        tokens.cached.len(),
        tokens.fresh.len(),
        started.elapsed().as_secs_f64()
    );

    let sqlite = ServerProcess::start(setup.clone())?;
    throughput(args, "SQLite", &tokens, &sqlite).await?;
    drop(sqlite);
    let pg = postgres::start()?;
    let mut pg_setup = setup.clone();
    pg_setup.port = vmr_e2e::free_port()?;
    pg_setup.storage_url = Some(pg.url.clone());
    let pg_server = ServerProcess::start(pg_setup)?;
    throughput(args, "PostgreSQL", &tokens, &pg_server).await?;
    drop(pg_server);
    drop(pg);
    Ok(())
}

/// The tokens of the allocation runs.
struct BenchTokens {
    /// `--users` tokens, sent round-robin (verified once each, then cached).
    cached: Vec<String>,
    /// `--fresh-tokens` tokens, each sent once.
    fresh: Vec<String>,
    /// Holds `fresh` as one file per wrk thread (see [`write_token_files`]).
    dir: tempfile::TempDir,
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn pane_timings(sim: &Sim, server: &ServerProcess) -> Result<()> {
    const LOADS: usize = 21;
    let browser = Browser::start().await?;
    let c = &browser.client;
    let mut ready = Vec::new();
    let mut click = Vec::new();
    for i in 0..LOADS {
        browser
            .open(sim, &ComposeScenario::new(server.setup.pane_url()))
            .await?;
        let button = browser.add_button().await?;
        let t = mark(c, "vmr-ready").await?;
        button.click().await?;
        browser.wait_id("state-success").await?;
        let done = mark(c, "vmr-done").await? - mark(c, "vmr-click").await?;
        // The first load is cold (nothing cached); report it apart.
        if i == 0 {
            println!("\n== pane in headless Chromium (simulated Outlook, loopback) ==");
            println!("  first (cold) load: ready {t:.0} ms, click→inserted {done:.0} ms");
        } else {
            ready.push(t);
            click.push(done);
        }
    }
    ready.sort_by(f64::total_cmp);
    click.sort_by(f64::total_cmp);
    println!(
        "  pane ready (navigation start → button enabled): p50 {:.0} ms, p90 {:.0} ms over {} loads (budget p50 150 ms)",
        percentile(&ready, 0.5),
        percentile(&ready, 0.9),
        ready.len()
    );
    println!(
        "  click → instructions inserted: p50 {:.0} ms, p90 {:.0} ms (budget p50 100 ms)",
        percentile(&click, 0.5),
        percentile(&click, 0.9)
    );
    // The baseline: a page with nothing but the same Office.js, same window.
    let empty_url = format!("{}{EMPTY_PANE_PATH}", sim.origin());
    let mut empty = Vec::new();
    for _ in 0..LOADS {
        browser.open(sim, &ComposeScenario::new(&empty_url)).await?;
        empty.push(wait_mark(c, "vmr-ready").await?);
    }
    empty.sort_by(f64::total_cmp);
    let (pane_p50, empty_p50) = (percentile(&ready, 0.5), percentile(&empty, 0.5));
    println!(
        "  empty page with the same Office.js: ready p50 {empty_p50:.0} ms; the pane adds {:.0} ms (goal ≤ 60 ms)",
        pane_p50 - empty_p50
    );
    browser.close().await;

    // As a new user's Outlook loads it over a WAN link: 40 ms round trip,
    // 20 Mbit/s, nothing cached (a new browser per load).
    const LINK_LOADS: usize = 5;
    let link = |url: String| async move {
        let mut times = Vec::new();
        for _ in 0..LINK_LOADS {
            let b = Browser::start().await?;
            b.throttle(40, 2_500_000).await?;
            b.open(sim, &ComposeScenario::new(&url)).await?;
            times.push(wait_mark(&b.client, "vmr-ready").await?);
            b.close().await;
        }
        times.sort_by(f64::total_cmp);
        anyhow::Ok(percentile(&times, 0.5))
    };
    let pane_link = link(server.setup.pane_url()).await?;
    let empty_link = link(empty_url.clone()).await?;
    println!(
        "  at 40 ms RTT and 20 Mbit/s, cold: pane ready p50 {pane_link:.0} ms (goal ≤ 250 ms), empty page {empty_link:.0} ms ({LINK_LOADS} loads each)"
    );
    Ok(())
}

/// Waits (up to 30 s) for the performance mark `name` in the current frame.
async fn wait_mark(c: &fantoccini::Client, name: &str) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match mark(c, name).await {
            Ok(t) => return Ok(t),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => return Err(e),
        }
    }
}

async fn mark(c: &fantoccini::Client, name: &str) -> Result<f64> {
    let v = c
        .execute(
            "const m = performance.getEntriesByName(arguments[0]); return m.length ? m[m.length-1].startTime : null;",
            vec![serde_json::Value::String(name.into())],
        )
        .await?;
    v.as_f64()
        .with_context(|| format!("no performance mark {name}"))
}

fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .pool_max_idle_per_host(CLIENTS)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// One wrk run, counted by [`COUNTING_LUA`].
struct WrkResult {
    /// 2xx answers per second of the run.
    rate: f64,
    /// 99th percentile latency of every answer, in ms.
    p99_ms: f64,
    /// Median latency, in ms.
    p50_ms: f64,
    /// Slowest answer, in ms.
    max_ms: f64,
    /// Requests answered with anything but 2xx.
    non_2xx: u64,
    /// Whether a thread ran out of prepared requests (fresh tokens).
    exhausted: bool,
}

/// Appended to every wrk script: each thread counts its 2xx answers and its
/// other answers, and `done` prints the sums on one line wrk's own report
/// does not use. Scripts may set `exhausted = 1` when they run out of input.
const COUNTING_LUA: &str = r#"
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
ok = 0
other = 0
exhausted = 0
function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local total_ok, total_other, out = 0, 0, 0
  for _, t in ipairs(threads) do
    total_ok = total_ok + t:get("ok")
    total_other = total_other + t:get("other")
    out = out + t:get("exhausted")
  end
  io.write(string.format("vmr-bench: 2xx %d other %d exhausted %d duration_us %d\n",
    total_ok, total_other, out, summary.duration))
end
"#;

/// Loads `url` with wrk (C, [`WRK_THREADS`] threads, [`CLIENTS`] keep-alive
/// HTTPS connections) for `length`, with `lua` (plus [`COUNTING_LUA`]) as its
/// script. A lean load generator matters here: the machine has two cores, and
/// a heavy client would measure itself.
fn wrk(url: &str, lua: &str, length: Duration) -> Result<WrkResult> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("request.lua");
    std::fs::write(&script, format!("{lua}\n{COUNTING_LUA}"))?;
    let out = std::process::Command::new("wrk")
        .args([
            &format!("-t{WRK_THREADS}"),
            &format!("-c{CLIENTS}"),
            &format!("-d{}s", length.as_secs()),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .context("running wrk (cargo xtask setup installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&text)
}

/// Reads the counting line and the 99% latency from wrk's output.
fn parse_wrk(text: &str) -> Result<WrkResult> {
    let counts: Vec<u64> = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("vmr-bench:"))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .step_by(2)
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let [ok, other, exhausted, duration_us] = counts[..] else {
        bail!(
            "no `vmr-bench: 2xx … other … exhausted … duration_us …` line in wrk output:\n{text}"
        );
    };
    if duration_us == 0 {
        bail!("wrk reports a run of 0 µs:\n{text}");
    }
    let p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| parse_duration_ms(v.trim()))
        .with_context(|| format!("no 99% latency in wrk output:\n{text}"))?;
    let p50_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("50%"))
        .and_then(|v| parse_duration_ms(v.trim()))
        .with_context(|| format!("no 50% latency in wrk output:\n{text}"))?;
    // "    Latency   avg   stdev   max   +/- stdev"
    let max_ms = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Latency"))
        .find_map(|v| v.split_whitespace().nth(2).and_then(parse_duration_ms))
        .with_context(|| format!("no maximum latency in wrk output:\n{text}"))?;
    Ok(WrkResult {
        rate: ok as f64 / (duration_us as f64 / 1e6),
        p99_ms,
        p50_ms,
        max_ms,
        non_2xx: other,
        exhausted: exhausted > 0,
    })
}

/// `812.00us`, `3.21ms`, `1.02s` → milliseconds.
fn parse_duration_ms(v: &str) -> Option<f64> {
    let (num, factor) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * factor)
}

/// Lua for `POST /api/v1/alias` with the Bearer token given by `token()`.
fn alias_request_lua(token_source: &str) -> String {
    format!(
        "{token_source}\n\
         local body = '{{\"integration\":\"default\",\"subject\":\"bench\"}}'\n\
         request = function()\n\
           return wrk.format(\"POST\", nil, {{\n\
             [\"Content-Type\"] = \"application/json\",\n\
             [\"Authorization\"] = \"Bearer \" .. token()\n\
           }}, body)\n\
         end\n"
    )
}

/// Signs `count` identity tokens for distinct users `{prefix}{i}@example.com`,
/// on every core (RSA signing is the slow part of preparing a run).
/// `pane_url` is the audience.
fn sign_tokens(sim: &Sim, pane_url: &str, prefix: &str, count: u64) -> Result<Vec<String>> {
    let issuer = &sim.running.simulator.exchange;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let mut tokens = Vec::with_capacity(count as usize);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    (w..count)
                        .step_by(workers as usize)
                        .map(|i| {
                            issuer.identity_token(&IdentityClaims::new(
                                pane_url.to_string(),
                                format!("{prefix}{i}@example.com"),
                            ))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(part) => tokens.extend(part),
                Err(_) => bail!("a token-signing thread panicked"),
            }
        }
        Ok(())
    })?;
    Ok(tokens)
}

/// Writes `tokens` as [`WRK_THREADS`] files `tokens-<thread>.txt` in `dir`,
/// one token a line, so each wrk thread reads (and holds) only its share.
fn write_token_files(dir: &Path, tokens: &[String]) -> Result<()> {
    let share = tokens.len().div_ceil(WRK_THREADS);
    for i in 0..WRK_THREADS {
        let start = (i * share).min(tokens.len());
        let end = ((i + 1) * share).min(tokens.len());
        let mut text = tokens[start..end].join("\n");
        text.push('\n');
        std::fs::write(dir.join(format!("tokens-{i}.txt")), text)?;
    }
    Ok(())
}

async fn throughput(
    args: &BenchArgs,
    engine: &str,
    tokens: &BenchTokens,
    server: &ServerProcess,
) -> Result<()> {
    let http = client()?;
    let origin = server.origin();
    let alias_url = format!("{origin}/api/v1/alias");
    let warm_token = tokens
        .cached
        .first()
        .context("--users must be at least 1")?;
    // Warm up the metadata cache, and prove the request is right.
    let warm = http
        .post(&alias_url)
        .bearer_auth(warm_token)
        .json(&serde_json::json!({"integration": "default", "subject": "bench"}))
        .send()
        .await?;
    if !warm.status().is_success() {
        bail!("warm-up allocation failed: {}", warm.text().await?);
    }
    let length = args.run_length();
    let health = wrk(&format!("{origin}/healthz"), "", length)?;

    // Cached: `--users` users, each with their own token, round-robin: every
    // token is verified in full once, then remembered (as Outlook resends it).
    let list = tokens
        .cached
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(",\n");
    let cached = wrk(
        &alias_url,
        &alias_request_lua(&format!(
            "local tokens = {{ {list} }}\n\
             local i = 0\n\
             function token()\n  i = i + 1\n  return tokens[(i % #tokens) + 1]\nend"
        )),
        length,
    )?;
    report(engine, "cached token", &cached, Some(&health));

    // Fresh: a token never seen before on every request, so each one takes
    // the full RS256 path. Each wrk thread reads its own share of the tokens;
    // one that runs out stops and says so, and the run then does not count.
    let dir_lua = tokens.dir.path().to_str().context("non-UTF-8 temp dir")?;
    let fresh = wrk(
        &alias_url,
        &alias_request_lua(&format!(
            "local tokens = {{}}\n\
             local next_token = 1\n\
             function init(args)\n\
               local f = assert(io.open({dir_lua:?} .. \"/tokens-\" .. id .. \".txt\", \"r\"))\n\
               for line in f:lines() do tokens[#tokens + 1] = line end\n\
               f:close()\n\
             end\n\
             function token()\n\
               local t = tokens[next_token]\n\
               next_token = next_token + 1\n\
               if t == nil then\n\
                 exhausted = 1\n\
                 pcall(function() wrk.thread:stop() end)\n\
                 return \"used-up\"\n\
               end\n\
               return t\n\
             end"
        )),
        length,
    )?;
    if fresh.exhausted {
        bail!(
            "the fresh-token run used up its {} tokens before {} s were over, so its rate \
             would be wrong; raise --fresh-tokens (or lower --duration)",
            tokens.fresh.len(),
            args.duration
        );
    }
    report(engine, "fresh token", &fresh, None);
    Ok(())
}

/// One result line; the cached run also shows `/healthz` and the ratio.
fn report(engine: &str, kind: &str, alias: &WrkResult, health: Option<&WrkResult>) {
    let mut line = format!(
        "  {engine:<10} alias, {kind:<12}: {:>7.0} allocations/s, p99 {:>6.1} ms, {} non-2xx",
        alias.rate, alias.p99_ms, alias.non_2xx
    );
    if let Some(h) = health {
        line.push_str(&format!(
            " | /healthz: {:>7.0} req/s, p99 {:>6.1} ms | ratio {:.0}% (goals: ≥ 5,000/s on SQLite, ≥ 40%)",
            h.rate,
            h.p99_ms,
            100.0 * alias.rate / h.rate
        ));
    }
    println!("{line}");
}

async fn uniqueness(sim: &Sim, base: &ServerSetup, total: u64) -> Result<()> {
    if total == 0 {
        return Ok(());
    }
    println!("\n== uniqueness: {total} allocations via 4 edge processes into 1 management ==");
    let mut mgmt = base.clone();
    mgmt.role = "management";
    mgmt.port = vmr_e2e::free_port()?;
    // A 10-digit space keeps 1,000,000 draws well under the refusal threshold.
    mgmt.alias_digits = 10;
    // One deployment: every role answers for the same add-in host.
    let public_host = "vmr.bench.test".to_string();
    mgmt.public_host = Some(public_host.clone());
    // Management's certificate is made first so the edges can trust it.
    let certs = tempfile::tempdir()?;
    let (cert, key) = vmr_e2e::certificate_files(certs.path())?;
    mgmt.tls_files = Some((cert.clone(), key));
    let management = ServerProcess::start(mgmt)?;
    let mut edges = Vec::new();
    for _ in 0..4 {
        let mut e = base.clone();
        e.role = "edge";
        e.port = vmr_e2e::free_port()?;
        e.management_url = Some(management.origin());
        e.public_host = Some(public_host.clone());
        e.extra_ca_files.push(cert.clone());
        edges.push(ServerProcess::start(e)?);
    }
    let http = client()?;
    let issued = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let edge_origin = edges[i % edges.len()].origin();
        let pane_url = management.setup.pane_url();
        let token = sim
            .running
            .simulator
            .exchange
            .identity_token(&IdentityClaims::new(
                pane_url,
                "bench@example.com".to_string(),
            ));
        let (http, issued, failed) = (http.clone(), issued.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while issued.fetch_add(1, Ordering::Relaxed) < total {
                let r = http
                    .post(format!("{edge_origin}/api/v1/alias"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"integration": "default"}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let v: serde_json::Value = r.json().await.unwrap_or_default();
                        match v["allocated"]["numeric_alias"].as_str() {
                            Some(n) => seen.push(n.to_string()),
                            None => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    let secs = start.elapsed().as_secs_f64();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    let duplicates = n - all.len();
    println!(
        "  {n} allocated in {secs:.0} s ({:.0}/s), {} failed, {duplicates} duplicates",
        n as f64 / secs,
        failed.load(Ordering::Relaxed),
    );
    if n == 0 {
        bail!("the uniqueness run allocated nothing, so it proves nothing");
    }
    if duplicates > 0 {
        bail!("the uniqueness run found {duplicates} duplicate aliases among {n}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{parse_count, parse_wrk};

    const WRK_OUTPUT: &str = "Running 2s test @ https://127.0.0.1:1/api/v1/alias
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.28ms    1.36ms  29.18ms   82.79%
    Req/Sec     5.00k   300.00     5.50k    70.00%
  Latency Distribution
     50%    4.10ms
     75%    5.00ms
     90%    6.20ms
     99%   12.50ms
  20000 requests in 2.00s, 9.00MB read
  Non-2xx or 3xx responses: 500
Requests/sec:  10000.00
vmr-bench: 2xx 19000 other 1000 exhausted 0 duration_us 2000000
";

    #[test]
    fn only_2xx_answers_make_the_rate() {
        let r = parse_wrk(WRK_OUTPUT).expect("parses");
        assert_eq!(r.rate, 9_500.0, "19,000 2xx answers in 2 s");
        assert_eq!(r.non_2xx, 1_000);
        assert_eq!(r.p99_ms, 12.5);
        assert_eq!(r.p50_ms, 4.1);
        assert_eq!(r.max_ms, 29.18);
        assert!(!r.exhausted);
        let out = WRK_OUTPUT.replace("exhausted 0", "exhausted 1");
        assert!(parse_wrk(&out).expect("parses").exhausted);
    }

    #[test]
    fn output_without_the_counting_line_is_an_error() {
        let out = WRK_OUTPUT.replace("vmr-bench:", "something else:");
        assert!(parse_wrk(&out).is_err());
    }

    #[test]
    fn counts_accept_underscores() {
        assert_eq!(parse_count("1_000_000"), Ok(1_000_000));
        assert!(parse_count("a lot").is_err());
    }
}
