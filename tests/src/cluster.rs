//! Several management instances on one database, several resource mailboxes: the
//! simulated Exchange with one resource per integration, a config with one
//! `[[integration]]` per resource (the first is the harness's `default`, watching
//! [`RESOURCE`]), a fresh PostgreSQL database per test, aliases allocated per integration
//! the way the pane gets them, and who leads which mailbox as the database says.

use anyhow::{bail, Context, Result};
use sqlx::{AnyConnection, Connection, Executor};
use vmr_simulator::ews::{ExchangeOptions, MailboxKind, MailboxSpec};

pub use crate::mailbox::allocate_in;
use crate::mailbox::{exchange_options, exchange_toml, watching_setup, RESOURCE};
use crate::{ServerSetup, Sim};

/// The id of integration `i` (`default` for 0, the harness's integration).
pub fn integration_id(i: usize) -> String {
    if i == 0 {
        "default".to_owned()
    } else {
        format!("room{i}")
    }
}

/// The resource mailbox integration `i` watches ([`RESOURCE`] for 0).
pub fn resource(i: usize) -> String {
    if i == 0 {
        RESOURCE.to_owned()
    } else {
        format!("vmr{i}@example.com")
    }
}

/// The simulated Exchange of [`exchange_options`] with `integrations` resource mailboxes.
pub fn cluster_exchange_options(integrations: usize) -> ExchangeOptions {
    let mut options = exchange_options();
    for i in 1..integrations {
        options.mailboxes.push(MailboxSpec {
            email: resource(i),
            name: format!("Video Meeting Room {i}"),
            kind: MailboxKind::Resource,
            automate: None,
        });
        options.accounts[0].full_access.push(resource(i));
    }
    options
}

/// A `role = "all"` setup on `storage_url` watching `integrations` resource mailboxes, one
/// integration each (alias prefixes 88, then 81, 82, …; no allocation limits).
pub fn cluster_setup(sim: &Sim, integrations: usize, storage_url: &str) -> Result<ServerSetup> {
    if !(1..=9).contains(&integrations) {
        bail!("between 1 and 9 integrations, not {integrations}");
    }
    let mut setup = watching_setup(sim, "")?;
    setup.storage_url = Some(storage_url.to_owned());
    let q = |s: &str| toml::Value::from(s).to_string();
    let metadata: Vec<String> = setup.exchange_metadata.iter().map(|m| q(m)).collect();
    for i in 1..integrations {
        setup.extra_toml.push_str(&format!(
            "\n[[integration]]\nid = {id}\nresource_email = {email}\n\
             resource_name = \"Video Meeting Room {i}\"\nalias_prefix = \"8{i}\"\n\
             alias_digits = {digits}\nalias_domain = \"vc.example.com\"\n{exchange}\n\
             [integration.auth]\nexchange_metadata = [{metadata}]\n",
            id = q(&integration_id(i)),
            email = q(&resource(i)),
            digits = setup.alias_digits,
            exchange = exchange_toml(sim, ""),
            metadata = metadata.join(", "),
        ));
    }
    Ok(setup)
}

/// A fresh database on the PostgreSQL server `VMR_TEST_POSTGRES_URL` names (panics naming
/// the variable when it is unset); dropped by [`PostgresDb::finish`].
pub struct PostgresDb {
    pub url: String,
    server: String,
    name: String,
}

impl PostgresDb {
    pub async fn create() -> Result<PostgresDb> {
        sqlx::any::install_default_drivers();
        let server = std::env::var("VMR_TEST_POSTGRES_URL").unwrap_or_default();
        assert!(
            !server.trim().is_empty(),
            "VMR_TEST_POSTGRES_URL is not set: this test needs a PostgreSQL server; run it \
             through `cargo xtask test`, which starts one"
        );
        let name = format!("vmr_cluster_{}", uuid_like());
        let mut admin = AnyConnection::connect(&server)
            .await
            .context("connecting to VMR_TEST_POSTGRES_URL")?;
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        admin.close().await.ok();
        let mut url = url::Url::parse(&server).context("VMR_TEST_POSTGRES_URL is not a URL")?;
        url.set_path(&format!("/{name}"));
        Ok(PostgresDb {
            url: url.to_string(),
            server,
            name,
        })
    }

    /// Drops the database (best effort).
    pub async fn finish(self) {
        if let Ok(mut admin) = AnyConnection::connect(&self.server).await {
            let _ = admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                )))
                .await;
        }
    }
}

/// 32 lowercase hex digits from the clock and the pid (database names allow no dashes).
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}{:x}", std::process::id())
}

/// Who leads each integration right now, as the database says: integration → the pid of
/// the leading process, only where the lease (the advisory lock) is actually held and the
/// leader row names a registered instance.
pub async fn leaders_by_pid(
    store: &vmr_store::Storage,
) -> Result<std::collections::BTreeMap<String, i64>> {
    let instances = store.management_instances().await?;
    let mut leaders = std::collections::BTreeMap::new();
    for leader in store.mailbox_leaders().await? {
        if !store.mailbox_lease_held(&leader.integration).await? {
            continue;
        }
        if let Some(instance) = instances
            .iter()
            .find(|i| i.instance_id == leader.instance_id)
        {
            leaders.insert(leader.integration, instance.pid);
        }
    }
    Ok(leaders)
}
