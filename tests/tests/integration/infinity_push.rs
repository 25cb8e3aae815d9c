//! Push mode end to end: the real `vmr-scheduler` process with `[infinity]` pointed at the
//! simulated Infinity management API (HTTPS, Basic auth, trusting the simulator's certificate
//! through `ca_file`) accepts a meeting through the simulated Exchange while Infinity is down;
//! the VMR appears with both generated aliases once Infinity is back; a restart's reconcile
//! recreates a VMR deleted by hand and removes a stale one with our tag, leaving an
//! administrator's own VMR alone; the cancellation deletes the VMR.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use vmr_e2e::mailbox::{
    allocate, meeting, now_ms, open_store, wait_for_replies, wait_until, watching_setup,
};
use vmr_e2e::{ServerProcess, Sim};
use vmr_simulator::infinity::{InfinityServer, DEFAULT_ADMIN, DEFAULT_ADMIN_PASSWORD};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const WAIT: Duration = Duration::from_secs(30);
const ALICE: &str = "alice@example.com";
const TAG: &str = "VMR Scheduling for Exchange: default";

/// `[infinity]` for the simulator: short back-offs so the test measures the push, not a pause.
fn infinity_toml(sim: &Sim) -> String {
    let q = |s: &str| toml::Value::from(s).to_string();
    format!(
        "[infinity]\nurl = {url}\nusername = {user}\npassword = {password}\nca_file = {ca}\n\
         poll_interval_ms = 200\nretry_initial_ms = 200\nretry_max_secs = 1\n",
        url = q(sim.running.origin()),
        user = q(DEFAULT_ADMIN),
        password = q(DEFAULT_ADMIN_PASSWORD),
        ca = q(&sim.cert_file.display().to_string()),
    )
}

fn infinity(sim: &Sim) -> &InfinityServer {
    &sim.running.simulator.infinity
}

async fn wait_for_vmr(sim: &Sim, server: &ServerProcess, name: &str) -> Result<Value> {
    match wait_until(WAIT, || async { Ok(infinity(sim).conference_named(name)) }).await {
        Ok(v) => Ok(v),
        Err(e) => bail!(
            "{e}: VMR {name:?} not in Infinity; requests: {:?}\nthe server's log:\n{}",
            infinity(sim).requests(),
            server.log_text()
        ),
    }
}

/// An admin-only ops route of `server`: status and body.
async fn ops_get(server: &ServerProcess, path: &str) -> Result<(u16, String)> {
    let response = vmr_e2e::insecure_client()?
        .get(format!("{}{path}", server.origin()))
        .bearer_auth(vmr_e2e::E2E_ADMIN_TOKEN)
        .send()
        .await?;
    Ok((response.status().as_u16(), response.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_meeting_becomes_a_vmr_in_infinity_once_it_is_back() -> Result<()> {
    let sim = Sim::start().await?;
    infinity(&sim).set_down(true);
    let mut setup = watching_setup(&sim, "")?;
    setup.extra_toml.push_str(&infinity_toml(&sim));
    let mut server = ServerProcess::start(setup)?;

    // Accepted while Infinity answers 503: the reply goes out, the push waits in the queue.
    let a = allocate(&sim, &server, ALICE, "Planning").await?;
    let start = (now_ms() / DAY + 1) * DAY + 9 * HOUR;
    let uid = sim.running.simulator.ews.send_meeting(meeting(
        ALICE,
        "Planning",
        &a.instructions_html,
        start,
        start + HOUR,
    ))?;
    let got = wait_for_replies(&sim, ALICE, &uid, 1, WAIT).await?;
    assert_eq!(
        got[0].item_class, "IPM.Schedule.Meeting.Resp.Pos",
        "{got:?}"
    );
    let store = open_store(&server).await?;
    let queued = wait_until(WAIT, || async {
        let q = store.push_queue().await?;
        Ok(q.iter().any(|r| r.attempts > 0).then_some(q))
    })
    .await?;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert!(infinity(&sim)
        .conference_named("Planning (Alice)")
        .is_none());
    // Not ready while Infinity is unreachable, saying why; the waiting push is counted.
    let readyz = ops_get(&server, "/readyz/detail").await?;
    assert_eq!(readyz.0, 503, "{}", readyz.1);
    assert!(readyz.1.contains("Infinity unreachable"), "{}", readyz.1);
    let metrics = ops_get(&server, "/metrics").await?.1;
    assert!(
        metrics.contains("vmr_push_queue_depth{integration=\"default\"} 1"),
        "{metrics}"
    );

    // Infinity returns: the VMR appears with both generated aliases and our tag.
    infinity(&sim).set_down(false);
    let back = Instant::now();
    let vmr = wait_for_vmr(&sim, &server, "Planning (Alice)").await?;
    let took = back.elapsed();
    eprintln!("VMR appeared {took:?} after Infinity returned");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(vmr["tag"], TAG);
    assert_eq!(vmr["service_type"], "conference");
    let mut expected = vec![a.alias.clone(), a.numeric_alias.clone()];
    expected.sort();
    assert_eq!(infinity(&sim).alias_names_of("Planning (Alice)"), expected);
    wait_until(WAIT, || async {
        Ok((store.push_queue_depth().await?.values().sum::<u64>() == 0).then_some(()))
    })
    .await?;
    let readyz = wait_until(WAIT, || async {
        let r = ops_get(&server, "/readyz/detail").await?;
        Ok((r.0 == 200).then_some(r.1))
    })
    .await?;
    assert!(readyz.contains("\"reachable\":true"), "{readyz}");
    let metrics = ops_get(&server, "/metrics").await?.1;
    assert!(
        metrics.contains("vmr_push_queue_depth{integration=\"default\"} 0"),
        "{metrics}"
    );

    // Drift while the process is down: the VMR deleted by hand, a stale one with our tag,
    // an administrator's own VMR. The restart's reconcile repairs ours only.
    server.stop();
    assert!(infinity(&sim).delete_conference_named("Planning (Alice)"));
    infinity(&sim)
        .create_conference(json!({"name": "Left over (Bob)", "tag": TAG}))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    infinity(&sim)
        .create_conference(json!({"name": "Lobby", "aliases": [{"alias": "lobby@vc.example.com"}]}))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let lobby = infinity(&sim).conference_named("Lobby");
    server.restart()?;
    wait_for_vmr(&sim, &server, "Planning (Alice)").await?;
    wait_until(WAIT, || async {
        Ok(infinity(&sim)
            .conference_named("Left over (Bob)")
            .is_none()
            .then_some(()))
    })
    .await?;
    assert_eq!(
        infinity(&sim).conference_named("Lobby"),
        lobby,
        "not ours: untouched"
    );
    assert_eq!(infinity(&sim).alias_names_of("Planning (Alice)"), expected);

    // Cancelled: the VMR goes.
    sim.running.simulator.ews.cancel_meeting(&uid)?;
    let gone = wait_until(WAIT, || async {
        Ok(infinity(&sim)
            .conference_named("Planning (Alice)")
            .is_none()
            .then_some(()))
    })
    .await;
    if let Err(e) = gone {
        bail!(
            "{e}: the cancelled meeting's VMR stayed; log:\n{}",
            server.log_text()
        );
    }
    let conference = store
        .conference_for_alias(&a.alias_uuid)
        .await?
        .expect("conference row");
    assert!(conference.deletion_time.is_some());
    assert!(infinity(&sim).conference_named("Lobby").is_some());
    Ok(())
}
