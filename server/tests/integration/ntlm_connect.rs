//! `[integration.exchange.auth] method = "ntlm"` from configuration to a working mailbox:
//! `connect::ews_mailbox` builds the NTLM authenticator with the configured extra CA, and a
//! sync against the simulated Exchange (Extended Protection Required) authenticates with a
//! channel binding. Without the extra CA the simulator's certificate is not trusted.

use vmr_core::config::{ExchangeAuth, ExchangeConfig, MailboxAccess};
use vmr_core::secret::Secret;
use vmr_exchange::mailbox::{Folder, MailboxError};
use vmr_server::mailbox_worker::connect::ews_mailbox;
use vmr_simulator::ews::ntlm::NtlmStep;
use vmr_simulator::ews::{DEFAULT_RESOURCE, DEFAULT_SERVICE_PASSWORD};

use crate::in_process;

fn config(url: String, ca_file: Option<std::path::PathBuf>) -> ExchangeConfig {
    let mut config = ExchangeConfig::new(
        url,
        ExchangeAuth::Ntlm {
            username: "CONTOSO\\svc-vmr".to_owned(),
            password: Secret::new(DEFAULT_SERVICE_PASSWORD),
        },
    );
    config.access = MailboxAccess::Impersonation;
    config.ca_file = ca_file;
    config
}

#[tokio::test]
async fn a_configured_ntlm_mailbox_syncs_with_channel_binding() {
    let (sim, _dir, cert) = in_process::simulator().await;

    let mailbox = ews_mailbox(
        "integration[0].exchange",
        &config(sim.simulator.ews_url(), Some(cert)),
        DEFAULT_RESOURCE,
        vmr_core::clock::system(),
    )
    .expect("mailbox");
    mailbox
        .sync(Folder::Calendar, None)
        .await
        .expect("SyncFolderItems over NTLM");
    let steps: Vec<NtlmStep> = sim
        .simulator
        .ews
        .ntlm()
        .records()
        .iter()
        .map(|r| r.step)
        .collect();
    assert_eq!(
        steps[..2],
        [NtlmStep::Challenged, NtlmStep::Authenticated],
        "{steps:?}"
    );

    // The same without the extra CA: the simulator's self-signed certificate is refused.
    let untrusted = ews_mailbox(
        "integration[0].exchange",
        &config(sim.simulator.ews_url(), None),
        DEFAULT_RESOURCE,
        vmr_core::clock::system(),
    )
    .expect("mailbox");
    match untrusted.sync(Folder::Calendar, None).await {
        Err(MailboxError::Transient(reason)) => {
            assert!(reason.contains("TLS handshake"), "{reason}")
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}
