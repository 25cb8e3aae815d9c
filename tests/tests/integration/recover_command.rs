//! `vmr-scheduler recover` end to end: meetings are scheduled through the real server and the
//! simulated Exchange, the database is put back to an earlier backup (or deleted), and
//! recovery rebuilds every meeting from the resource's calendar — sending new instructions,
//! as the organizer, only where an alias was lost.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use vmr_e2e::mailbox::{
    allocate, meeting, now_ms, open_store, replies, text_of, wait_for_replies, wait_until,
    watching_setup,
};
use vmr_e2e::{ServerProcess, Sim};
use vmr_protocol::tag::{find_tag, MeetingTag};
use vmr_simulator::ews::FolderName;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const WAIT: Duration = Duration::from_secs(30);
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const DB_FILES: [&str; 3] = ["vmr.db", "vmr.db-wal", "vmr.db-shm"];

fn tomorrow(hours: i64) -> i64 {
    (now_ms() / DAY + 1) * DAY + (9 + hours) * HOUR
}

/// Runs `vmr-scheduler recover` with the server's config; exit code and output (stdout then
/// stderr).
fn recover(server: &ServerProcess, args: &[&str]) -> Result<(Option<i32>, String)> {
    let output = Command::new(vmr_e2e::bin("vmr-scheduler")?)
        .arg("--config")
        .arg(server.dir.path().join("config.toml"))
        .arg("recover")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .context("running vmr-scheduler recover")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.code(), text))
}

fn copy_db(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for name in DB_FILES {
        let _ = std::fs::remove_file(to.join(name));
        if from.join(name).exists() {
            std::fs::copy(from.join(name), to.join(name))?;
        }
    }
    Ok(())
}

/// The PXPS alias uuids in the update messages `who` received about `uid`.
fn tagged_updates(sim: &Sim, who: &str, uid: &str) -> Result<Vec<String>> {
    Ok(sim
        .running
        .simulator
        .ews
        .mailbox_messages(who, FolderName::Inbox)?
        .into_iter()
        .filter(|m| m.uid.as_deref() == Some(uid))
        .filter_map(|m| match find_tag(&m.body.content, m.body.html) {
            Some(Ok(MeetingTag::Pxps(id))) => Some(id.alias_uuid),
            _ => None,
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_rebuilds_a_restored_database_and_reissues_only_lost_aliases() -> Result<()> {
    let sim = Sim::start().await?;
    let ews = &sim.running.simulator.ews;
    let mut server = ServerProcess::start(watching_setup(&sim, "")?)?;

    // A: scheduled before the backup. B: alias drawn before the backup, meeting after.
    let a = allocate(&sim, &server, ALICE, "Alpha").await?;
    let uid_a = ews.send_meeting(meeting(
        ALICE,
        "Alpha",
        &a.instructions_html,
        tomorrow(0),
        tomorrow(1),
    ))?;
    wait_for_replies(&sim, ALICE, &uid_a, 1, WAIT).await?;
    let b = allocate(&sim, &server, ALICE, "Bravo").await?;
    server.stop();
    let backup = tempfile::tempdir()?;
    copy_db(server.dir.path(), backup.path())?;
    server.restart()?;

    // After the backup: B is sent, C is allocated and sent.
    let uid_b = ews.send_meeting(meeting(
        ALICE,
        "Bravo",
        &b.instructions_html,
        tomorrow(2),
        tomorrow(3),
    ))?;
    // Charlie's organizer cut the instructions down to the tag: once the alias row is lost,
    // nothing shows its numbers.
    let c = allocate(&sim, &server, ALICE, "Charlie").await?;
    let uid_c = ews.send_meeting(meeting(
        ALICE,
        "Charlie",
        &format!("<p>See you there.</p><p>{}</p>", c.tag),
        tomorrow(4),
        tomorrow(5),
    ))?;
    wait_for_replies(&sim, ALICE, &uid_b, 1, WAIT).await?;
    wait_for_replies(&sim, ALICE, &uid_c, 1, WAIT).await?;
    server.stop();

    // The database is restored from the backup.
    copy_db(backup.path(), server.dir.path())?;

    // Dry run: the plan, and nothing written or sent.
    let (code, out) = recover(&server, &["--dry-run"])?;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("rebuilt") && out.contains("\"Bravo\""),
        "{out}"
    );
    assert!(
        out.contains("new alias and instructions for default: \"Charlie\""),
        "{out}"
    );
    assert!(
        out.contains("recover (dry run): 3 calendar items read, 3 accepted meetings to come: 1 present, 1 would be rebuilt, 1 would be given a new alias"),
        "{out}"
    );
    assert!(
        out.contains("recover default: 3/3 meetings"),
        "no progress shown: {out}"
    );
    {
        let store = open_store(&server).await?;
        assert!(
            store.meeting("default", &uid_b).await?.is_none(),
            "dry run wrote"
        );
        assert_eq!(
            store.count_aliases("default").await?,
            2,
            "dry run drew an alias"
        );
        drop(store);
    }
    assert!(
        tagged_updates(&sim, BOB, &uid_c)?.len() == 1,
        "dry run sent an update"
    );

    // The real run.
    let (code, out) = recover(&server, &[])?;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("3 accepted meetings to come: 1 present, 1 rebuilt, 1 given a new alias and new instructions, 0 deferred processed, 0 skipped, 0 failed"),
        "{out}"
    );
    let store = open_store(&server).await?;
    let stored_b = store
        .meeting("default", &uid_b)
        .await?
        .context("B rebuilt")?;
    assert_eq!(stored_b.state, "accepted");
    assert_eq!(stored_b.alias_id.as_deref(), Some(b.alias_uuid.as_str()));
    assert!(
        store.conference_for_alias(&b.alias_uuid).await?.is_some(),
        "B's VMR"
    );
    assert_eq!(store.windows("default", &uid_b).await?.len(), 1);
    let stored_c = store
        .meeting("default", &uid_c)
        .await?
        .context("C rebuilt")?;
    assert_eq!(stored_c.state, "accepted");
    let new_c = stored_c.alias_id.clone().context("C's alias")?;
    assert_ne!(new_c, c.alias_uuid);
    let new_alias = store.alias_by_id(&new_c).await?.context("new alias")?;
    assert_eq!(new_alias.state, "bound");
    assert!(
        store.conference_for_alias(&new_c).await?.is_some(),
        "C's VMR"
    );
    assert_eq!(store.count_aliases("default").await?, 3);
    drop(store);

    // Only C's attendees got new instructions, from the organizer; nobody got a reply yet.
    let c_updates = tagged_updates(&sim, BOB, &uid_c)?;
    assert_eq!(
        c_updates,
        vec![c.alias_uuid.clone(), new_c.clone()],
        "{c_updates:?}"
    );
    assert_eq!(tagged_updates(&sim, BOB, &uid_a)?.len(), 1);
    assert_eq!(tagged_updates(&sim, BOB, &uid_b)?.len(), 1);
    let update = sim
        .running
        .simulator
        .ews
        .mailbox_messages(BOB, FolderName::Inbox)?
        .into_iter()
        .rfind(|m| m.uid.as_deref() == Some(uid_c.as_str()))
        .context("update")?;
    assert_eq!(update.from.map(|p| p.email), Some(ALICE.to_owned()));
    let text = text_of(&update.body);
    assert!(text.contains(&new_alias.numeric_alias), "{text}");
    assert!(!text.contains(&c.tag), "the old tag stayed: {text}");
    assert!(
        text.contains("See you there."),
        "the organizer's text went: {text}"
    );
    for uid in [&uid_a, &uid_b, &uid_c] {
        assert_eq!(replies(&sim, ALICE, uid)?.len(), 1);
    }

    // A second run finds everything present.
    let (code, out) = recover(&server, &[])?;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("3 present, 0 rebuilt, 0 given"), "{out}");

    // The server, back: it accepts the organizer's update of C (with the new alias) and
    // answers nothing else again.
    server.restart()?;
    let got = wait_for_replies(&sim, ALICE, &uid_c, 2, WAIT).await?;
    assert_eq!(got[1].item_class, "IPM.Schedule.Meeting.Resp.Pos");
    assert!(text_of(&got[1].body).contains(&new_alias.numeric_alias));
    tokio::time::sleep(Duration::from_secs(6)).await;
    for (uid, n) in [(&uid_a, 1), (&uid_b, 1), (&uid_c, 2)] {
        let got = replies(&sim, ALICE, uid)?;
        if got.len() != n {
            bail!(
                "{uid}: {} replies, expected {n}: {:?}\n{}",
                got.len(),
                got,
                server.log_text()
            );
        }
    }
    let store = open_store(&server).await?;
    assert_eq!(
        store.count_aliases("default").await?,
        3,
        "an alias too many"
    );
    let c_now = wait_until(WAIT, || async {
        Ok(store
            .meeting("default", &uid_c)
            .await?
            .filter(|m| m.state == "accepted"))
    })
    .await?;
    assert_eq!(c_now.alias_id.as_deref(), Some(new_c.as_str()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_after_deleting_the_database_keeps_every_alias_the_invitations_show() -> Result<()>
{
    let sim = Sim::start().await?;
    let ews = &sim.running.simulator.ews;
    let mut setup = watching_setup(&sim, "")?;
    // The tag key is configured, so it outlives the database.
    setup.integration_toml = format!(
        "tag_key = \"{}\"\n{}",
        "5eed".repeat(16),
        setup.integration_toml
    );
    let mut server = ServerProcess::start(setup)?;

    let a = allocate(&sim, &server, ALICE, "Alpha").await?;
    let uid_a = ews.send_meeting(meeting(
        ALICE,
        "Alpha",
        &a.instructions_html,
        tomorrow(0),
        tomorrow(1),
    ))?;
    let b = allocate(&sim, &server, ALICE, "Bravo").await?;
    let uid_b = ews.send_meeting(meeting(
        ALICE,
        "Bravo",
        &b.instructions_html,
        tomorrow(2),
        tomorrow(3),
    ))?;
    // Charlie's organizer cut the instructions down to the tag: nothing shows the alias.
    let c = allocate(&sim, &server, ALICE, "Charlie").await?;
    let uid_c = ews.send_meeting(meeting(
        ALICE,
        "Charlie",
        &format!("<p>See you there.</p><p>{}</p>", c.tag),
        tomorrow(4),
        tomorrow(5),
    ))?;
    for uid in [&uid_a, &uid_b, &uid_c] {
        wait_for_replies(&sim, ALICE, uid, 1, WAIT).await?;
    }
    server.stop();
    for name in DB_FILES {
        let _ = std::fs::remove_file(server.dir.path().join(name));
    }

    let (code, out) = recover(&server, &[])?;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("3 accepted meetings to come: 0 present, 2 rebuilt, 1 given a new alias and new instructions, 0 deferred processed, 0 skipped, 0 failed; 2 aliases read back from invitations"),
        "{out}"
    );
    assert!(
        out.contains(&format!("with its alias {} read back", a.numeric_alias)),
        "{out}"
    );
    let store = open_store(&server).await?;
    for (uid, alloc) in [(&uid_a, &a), (&uid_b, &b)] {
        let m = store
            .meeting("default", uid)
            .await?
            .context("meeting back")?;
        assert_eq!(m.state, "accepted");
        assert_eq!(m.alias_id.as_deref(), Some(alloc.alias_uuid.as_str()));
        let alias = store
            .alias_by_id(&alloc.alias_uuid)
            .await?
            .context("alias back")?;
        assert_eq!(
            (alias.alias.as_str(), alias.state.as_str()),
            (alloc.alias.as_str(), "bound")
        );
        assert!(store
            .conference_for_alias(&alloc.alias_uuid)
            .await?
            .is_some());
        // Nobody was sent new instructions for these.
        assert_eq!(tagged_updates(&sim, BOB, uid)?.len(), 1);
    }
    let m = store.meeting("default", &uid_c).await?.context("C back")?;
    let new_c = m.alias_id.clone().context("C's alias")?;
    assert_ne!(new_c, c.alias_uuid);
    assert_eq!(
        tagged_updates(&sim, BOB, &uid_c)?,
        vec![c.alias_uuid.clone(), new_c]
    );
    drop(store);

    // The server, back: only Charlie's update is answered.
    server.restart()?;
    wait_for_replies(&sim, ALICE, &uid_c, 2, WAIT).await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    for (uid, n) in [(&uid_a, 1), (&uid_b, 1), (&uid_c, 2)] {
        let got = replies(&sim, ALICE, uid)?;
        if got.len() != n {
            bail!(
                "{uid}: {} replies, expected {n}: {:?}\n{}",
                got.len(),
                got,
                server.log_text()
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_refuses_to_run_beside_the_management_instance_that_leads_the_mailbox() -> Result<()>
{
    let sim = Sim::start().await?;
    let ews = &sim.running.simulator.ews;
    let mut server = ServerProcess::start(watching_setup(&sim, "")?)?;
    let a = allocate(&sim, &server, ALICE, "Alpha").await?;
    let uid_a = ews.send_meeting(meeting(
        ALICE,
        "Alpha",
        &a.instructions_html,
        tomorrow(0),
        tomorrow(1),
    ))?;
    wait_for_replies(&sim, ALICE, &uid_a, 1, WAIT).await?;

    // The server leads the mailbox: a real run is refused and says whom to stop; a dry run,
    // which writes nothing, may look.
    let pid = server.pid().context("the server runs")?;
    let (code, out) = recover(&server, &[])?;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("integration default: management instance ")
            && out.contains(&format!("(pid {pid}, last heartbeat"))
            && out.contains("runs on this database and leads every mailbox")
            && out.contains("stop the management instances that lead this mailbox"),
        "{out}"
    );
    let (code, out) = recover(&server, &["--dry-run"])?;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 present"), "{out}");

    // Stopped, the mailbox is recover's.
    server.stop();
    let (code, out) = recover(&server, &[])?;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("1 accepted meetings to come: 1 present, 0 rebuilt"),
        "{out}"
    );
    Ok(())
}
