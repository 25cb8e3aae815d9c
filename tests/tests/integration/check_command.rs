//! `vmr-scheduler check` against the simulated Exchange: a well set-up resource passes with
//! exit status 0; a resource whose Calendar Attendant strips bodies and files meetings itself
//! (`AutomateProcessing AutoUpdate`, `DeleteComments`), and a service account that may not
//! impersonate the resource, fail with status 1 and the exact PowerShell commands to run.

use std::process::Command;

use anyhow::{Context, Result};
use vmr_e2e::mailbox::{exchange_options, meeting, now_ms, watching_setup, RESOURCE};
use vmr_e2e::Sim;
use vmr_simulator::ews::{AutomateProcessing, CalendarProcessing};

const HOUR: i64 = 3_600_000;
const ALICE: &str = "alice@example.com";

/// Runs `vmr-scheduler --config <dir>/config.toml check <args>` on a config watching the
/// simulated resource; returns the exit status and standard output.
fn run_check(sim: &Sim, args: &[&str]) -> Result<(Option<i32>, String)> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config.toml");
    std::fs::write(&config, watching_setup(sim, "")?.toml(dir.path()))?;
    let output = Command::new(vmr_e2e::bin("vmr-scheduler")?)
        .arg("--config")
        .arg(&config)
        .arg("check")
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .context("running vmr-scheduler check")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!(
        "--- check {args:?}: {:?}\n{stdout}--- stderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.code(), stdout))
}

fn send_meeting(sim: &Sim, subject: &str) -> Result<String> {
    let start = now_ms() + 24 * HOUR;
    Ok(sim.running.simulator.ews.send_meeting(meeting(
        ALICE,
        subject,
        "<p>Join from the room.</p>",
        start,
        start + HOUR,
    ))?)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_resource_passes_and_an_empty_one_is_undetermined() -> Result<()> {
    let sim = Sim::start().await?;
    let (status, out) = run_check(&sim, &["--organizer", ALICE])?;
    assert_eq!(status, Some(0), "{out}");
    assert!(
        out.contains(
            "could not be determined, vmr@example.com's Inbox and Calendar hold no meeting yet"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "result: nothing to fix was found, but what is marked ?? could not be determined"
        ),
        "{out}"
    );
    assert!(
        out.contains("opened the sample organizer alice@example.com"),
        "{out}"
    );

    send_meeting(&sim, "Quarterly planning")?;
    let (status, out) = run_check(&sim, &["--organizer", ALICE])?;
    assert_eq!(status, Some(0), "{out}");
    assert!(out.contains("EWS reached and authenticated"), "{out}");
    assert!(
        out.contains("opened vmr@example.com (impersonated)"),
        "{out}"
    );
    assert!(
        out.contains("1 compared with the organizer's copy"),
        "{out}"
    );
    assert!(out.contains("result: all is fine, nothing to fix"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    assert!(!out.contains("Set-CalendarProcessing"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn stripped_bodies_and_auto_processing_are_found_with_the_fix() -> Result<()> {
    let sim = Sim::start().await?;
    let ews = &sim.running.simulator.ews;
    ews.set_automate_processing(RESOURCE, AutomateProcessing::AutoUpdate)?;
    ews.set_calendar_processing(
        RESOURCE,
        CalendarProcessing {
            delete_comments: true,
            ..CalendarProcessing::default()
        },
    )?;
    send_meeting(&sim, "Quarterly planning")?;
    let (status, out) = run_check(&sim, &["--organizer", ALICE])?;
    assert_eq!(status, Some(1), "{out}");
    assert!(out.contains("FAIL AutomateProcessing is not None"), "{out}");
    assert!(out.contains("FAIL DeleteComments is on"), "{out}");
    assert!(
        out.contains(
            "Set-CalendarProcessing -Identity 'vmr@example.com' -AutomateProcessing None \
             -DeleteComments $false\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("ok   DeleteSubject: subjects are kept"),
        "{out}"
    );

    // Subjects replaced by the organizer's name (Exchange's defaults for a room).
    ews.set_calendar_processing(
        RESOURCE,
        CalendarProcessing {
            delete_comments: true,
            delete_subject: true,
            add_organizer_to_subject: true,
        },
    )?;
    send_meeting(&sim, "Budget review")?;
    let (status, out) = run_check(&sim, &["--organizer", ALICE])?;
    assert_eq!(status, Some(1), "{out}");
    assert!(
        out.contains(
            "Set-CalendarProcessing -Identity 'vmr@example.com' -AutomateProcessing None \
             -DeleteComments $false -DeleteSubject $false -AddOrganizerToSubject $false\n"
        ),
        "{out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_impersonation_is_found_with_the_fix() -> Result<()> {
    let mut options = exchange_options();
    options.accounts[0].impersonate = vec![ALICE.into()];
    let sim = Sim::start_with(options).await?;
    let (status, out) = run_check(&sim, &[])?;
    assert_eq!(status, Some(1), "{out}");
    assert!(out.contains("ErrorImpersonateUserDenied"), "{out}");
    let account = vmr_e2e::mailbox::SERVICE_ACCOUNT;
    assert!(
        out.contains(&format!(
            "New-ManagementRoleAssignment -Name 'vmr-scheduler impersonation' -Role \
             ApplicationImpersonation -User '{account}'"
        )),
        "{out}"
    );
    assert!(!out.contains("all is fine"), "{out}");
    Ok(())
}
