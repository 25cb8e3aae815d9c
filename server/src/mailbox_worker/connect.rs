//! From an integration's `[integration.exchange]` table to a connected [`Mailbox`]: the HTTPS
//! client (extra CA, or the demo's accept-anything switch), the authenticator (Basic, NTLMv2 with
//! channel binding on connections of its own with the same TLS trust, or OAuth2 client
//! credentials with a secret or a certificate), the EWS client (server version,
//! impersonation or delegate access, concurrency, timeouts) and the notification listener.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use vmr_core::clock::SharedClock;
use vmr_core::config::{ExchangeAuth, ExchangeConfig, MailboxAccess, OAuthCredential};
use vmr_core::secret::Secret;
use vmr_exchange::auth::{
    Authenticator, BasicAuth, ClientCertificate, ClientCredential, OAuth2ClientCredentials,
};
use vmr_exchange::ews::client::{EwsClient, EwsOptions};
use vmr_exchange::ews::mailbox::EwsMailbox;
use vmr_exchange::ews::request::RequestContext;
use vmr_exchange::ews::streaming::ListenerOptions;
use vmr_exchange::mailbox::{Folder, Mailbox};
use vmr_exchange::ntlm::{NtlmAuth, NtlmTls};

/// The EWS mailbox `key` (for errors, e.g. `integration[0].exchange`) describes, watching
/// `mailbox` (the configured one or the integration's resource).
pub fn ews_mailbox(
    key: &str,
    exchange: &ExchangeConfig,
    mailbox: &str,
    clock: SharedClock,
) -> Result<Arc<dyn Mailbox>> {
    let client = ews_client(key, exchange, mailbox, clock)?;
    let listener = ListenerOptions {
        streaming: exchange.streaming,
        connection_minutes: exchange.streaming_timeout_minutes,
        pull_interval: exchange.poll_interval().min(Duration::from_secs(30)),
        ..ListenerOptions::default()
    };
    let folders = Folder::ALL.to_vec();
    Ok(Arc::new(
        EwsMailbox::with_listener_options(client, folders, listener)
            .with_sync_batch(exchange.sync_batch_size),
    ))
}

/// The EWS transport `key`'s table describes, acting on `mailbox` (impersonating it, or
/// opening it as a delegate, as `access` says).
pub fn ews_client(
    key: &str,
    exchange: &ExchangeConfig,
    mailbox: &str,
    clock: SharedClock,
) -> Result<EwsClient> {
    let http = https_client(exchange).with_context(|| format!("{key}: HTTPS client"))?;
    let auth = authenticator(key, exchange, clock.clone())?;
    let context = match exchange.access {
        MailboxAccess::Impersonation => RequestContext {
            server_version: exchange.server_version.clone(),
            impersonate: Some(mailbox.to_owned()),
            folder_mailbox: None,
        },
        MailboxAccess::Delegate => RequestContext {
            server_version: exchange.server_version.clone(),
            impersonate: None,
            folder_mailbox: Some(mailbox.to_owned()),
        },
    };
    let mut options = EwsOptions::new(exchange.ews_url.clone(), context);
    options.anchor_mailbox = Some(mailbox.to_owned());
    options.max_concurrency = usize::try_from(exchange.max_concurrency).unwrap_or(1);
    options.request_timeout = exchange.request_timeout();
    Ok(EwsClient::new(http, auth, options, clock))
}

fn https_client(exchange: &ExchangeConfig) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10));
    if let Some(ca) = &exchange.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{} holds no PEM certificate", ca.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    if exchange.danger_accept_invalid_certs {
        builder = builder.danger_accept_invalid_certs(true);
    }
    Ok(builder.build()?)
}

fn authenticator(
    key: &str,
    exchange: &ExchangeConfig,
    clock: SharedClock,
) -> Result<Arc<dyn Authenticator>> {
    Ok(match &exchange.auth {
        ExchangeAuth::Basic { username, password } => {
            Arc::new(BasicAuth::new(username.clone(), password.clone()))
        }
        ExchangeAuth::Ntlm { username, password } => {
            // NTLM opens its own connections: the same trust as the reqwest client's.
            let extra_ca = match &exchange.ca_file {
                Some(ca) => std::fs::read(ca)
                    .with_context(|| format!("{key}.ca_file: reading {}", ca.display()))?,
                None => Vec::new(),
            };
            let tls = NtlmTls::new(&extra_ca, exchange.danger_accept_invalid_certs)
                .with_context(|| format!("{key}.ca_file"))?;
            Arc::new(NtlmAuth::new(
                username.clone(),
                password.clone(),
                tls,
                clock,
            ))
        }
        ExchangeAuth::OAuth2 {
            token_url,
            client_id,
            scope,
            credential,
            ..
        } => {
            let credential = match credential {
                OAuthCredential::Secret(secret) => ClientCredential::Secret(secret.clone()),
                OAuthCredential::Certificate {
                    certificate,
                    private_key,
                } => {
                    let cert = std::fs::read_to_string(certificate).with_context(|| {
                        format!("{key}.auth.certificate: reading {}", certificate.display())
                    })?;
                    let key_pem =
                        Secret::new(std::fs::read_to_string(private_key).with_context(|| {
                            format!("{key}.auth.private_key: reading {}", private_key.display())
                        })?);
                    ClientCredential::Certificate(Box::new(
                        ClientCertificate::from_pem(&cert, &key_pem)
                            .with_context(|| format!("{key}.auth.certificate"))?,
                    ))
                }
            };
            Arc::new(OAuth2ClientCredentials::new(
                token_url.clone(),
                client_id.clone(),
                credential,
                scope.clone(),
                clock,
            ))
        }
    })
}
