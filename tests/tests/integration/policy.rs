//! Infinity's external policy end to end: the real `vmr-scheduler` process
//! watches the simulated Exchange's resource mailbox; an organizer gets an
//! alias the pane's way and sends meetings; once the server has accepted one
//! over EWS, dialling its alias (as Infinity asks, over HTTPS with basic auth)
//! starts the VMR inside the join window, and is refused for a meeting
//! tomorrow and after the cancellation.

use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::Value;
use vmr_e2e::mailbox::{allocate, meeting, now_ms, wait_for_replies, wait_until, watching_setup};
use vmr_e2e::{ServerProcess, Sim};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const WAIT: Duration = Duration::from_secs(30);
const ALICE: &str = "alice@example.com";
const USER: &str = "infinity";
const PASSWORD: &str = "e2e-policy-password";

/// Infinity's question about `local_alias`, answered by `server`.
async fn ask(server: &ServerProcess, local_alias: &str) -> Result<Value> {
    let r = vmr_e2e::insecure_client()?
        .get(format!(
            "{}/policy/v1/service/configuration",
            server.origin()
        ))
        .basic_auth(USER, Some(PASSWORD))
        .query(&[
            ("local_alias", local_alias),
            ("remote_alias", "sip:bob@example.com"),
            ("call_direction", "dial_in"),
            ("protocol", "sip"),
        ])
        .send()
        .await?;
    if r.status() != 200 {
        bail!("policy answered {} for {local_alias}", r.status());
    }
    Ok(r.json().await?)
}

/// Waits until the answer for `local_alias` has `action` (and a `result` when `service`).
async fn wait_for(server: &ServerProcess, local_alias: &str, want: &str) -> Result<Value> {
    let found = wait_until(WAIT, || async {
        let v = ask(server, local_alias).await?;
        let got = match (v["action"].as_str(), v.get("result").is_some()) {
            (Some("continue"), true) => "service",
            (Some(a), _) => a,
            _ => "?",
        };
        Ok((got == want).then_some(v))
    })
    .await;
    match found {
        Ok(v) => Ok(v),
        Err(e) => bail!(
            "{e}: {local_alias} never answered {want}; last answer {}; the server's log:\n{}",
            ask(server, local_alias).await?,
            server.log_text()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_accepted_over_ews_can_be_dialled_in_its_window() -> Result<()> {
    let sim = Sim::start().await?;
    let mut setup = watching_setup(&sim, "")?;
    setup.extra_toml.push_str(&format!(
        "\n[policy]\nbasic_auth_user = \"{USER}\"\nbasic_auth_password = \"{PASSWORD}\"\n\
         allow_from = [\"127.0.0.1\", \"::1\"]\n"
    ));
    let server = ServerProcess::start(setup)?;
    let ews = &sim.running.simulator.ews;

    // Starts in 10 minutes: inside the 30-minute buffer before the start.
    let soon = allocate(&sim, &server, ALICE, "Stand-up").await?;
    let start = now_ms() + 10 * MINUTE;
    let uid = ews.send_meeting(meeting(
        ALICE,
        "Stand-up",
        &soon.instructions_html,
        start,
        start + HOUR,
    ))?;
    // Tomorrow: accepted too, but its window is not open now.
    let later = allocate(&sim, &server, ALICE, "Review").await?;
    let tomorrow = now_ms() + 24 * HOUR;
    let later_uid = ews.send_meeting(meeting(
        ALICE,
        "Review",
        &later.instructions_html,
        tomorrow,
        tomorrow + HOUR,
    ))?;
    for u in [&uid, &later_uid] {
        let replies = wait_for_replies(&sim, ALICE, u, 1, WAIT).await?;
        assert_eq!(
            replies[0].item_class, "IPM.Schedule.Meeting.Resp.Pos",
            "{replies:?}"
        );
    }

    let answer = wait_for(&server, &format!("sip:{}", soon.alias), "service").await?;
    assert_eq!(answer["status"], "success", "{answer}");
    let result = &answer["result"];
    assert_eq!(result["service_type"], "conference", "{answer}");
    assert_eq!(result["name"], "Stand-up (Alice)", "{answer}");
    assert!(
        result["service_tag"]
            .as_str()
            .is_some_and(|t| t.starts_with("sched-")),
        "{answer}"
    );
    assert_eq!(result["non_idp_participants"], "disallow_all", "{answer}");
    let numeric = ask(&server, &soon.numeric_alias).await?;
    assert_eq!(
        numeric["result"], *result,
        "the numeric alias reaches the same VMR"
    );

    let tomorrow_answer = ask(&server, &later.alias).await?;
    assert_eq!(
        tomorrow_answer,
        serde_json::json!({"status": "success", "action": "reject"}),
        "tomorrow's meeting is outside its window"
    );
    let unknown = ask(&server, "sip:12345@elsewhere.example.com").await?;
    assert_eq!(
        unknown,
        serde_json::json!({"status": "success", "action": "continue"}),
        "an alias we never issued: Infinity decides"
    );

    // Cancelled: new callers are refused.
    ews.cancel_meeting(&uid)?;
    wait_for(&server, &soon.alias, "reject").await?;
    Ok(())
}
