//! One configured integration made ready to serve: its config plus what is
//! derived from it once at start (compiled templates, token settings, tag key,
//! the count of aliases issued so far).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use vmr_protocol::{AuthMethod, NaaPaneSettings, PaneConfig, Person};

use vmr_auth::TokenSettings;
use vmr_core::config::{IntegrationConfig, ServerConfig};
use vmr_core::meeting_tag::TagKey;
use vmr_core::templates::TemplateSet;

/// A ready integration.
#[derive(Debug)]
pub struct Integration {
    pub config: IntegrationConfig,
    pub templates: TemplateSet,
    pub token_settings: TokenSettings,
    pub tag_key: TagKey,
    /// Aliases issued so far (all states); kept current by the alias service.
    pub issued: AtomicU64,
}

impl Integration {
    /// Builds the runtime form; the caller supplies the tag key (from config
    /// or storage) and the issued count (from storage, 0 on an edge).
    pub fn new(
        config: IntegrationConfig,
        templates: TemplateSet,
        server: &ServerConfig,
        tag_key: TagKey,
        issued: u64,
    ) -> Integration {
        let token_settings = TokenSettings {
            method: config.auth.method,
            audience: config.pane_url(server),
            exchange_metadata: config.auth.exchange_metadata.clone(),
            metadata_cache_ttl: Duration::from_secs(config.auth.metadata_cache_ttl_secs),
            naa_api_application_id: config.auth.naa_api_application_id.clone(),
            naa_oidc_metadata_url: config.auth.naa_oidc_metadata_url.clone(),
            naa_allowed_tenants: config.auth.naa_allowed_tenants.clone(),
            naa_required_scope: config.auth.naa_required_scope.clone(),
            naa_client_id: config.auth.naa_client_id.clone(),
        };
        Integration {
            config,
            templates,
            token_settings,
            tag_key,
            issued: AtomicU64::new(issued),
        }
    }

    /// The equipment resource the pane adds as a required attendee.
    pub fn resource(&self) -> Person {
        Person {
            name: self.config.resource_name.clone(),
            email: self.config.resource_email.clone(),
        }
    }

    /// What `GET /api/v1/pane-config` answers.
    pub fn pane_config(&self) -> PaneConfig {
        PaneConfig {
            integration: self.config.id.clone(),
            auth_method: self.config.auth.method,
            debug_logs: self.config.pane_debug_logs,
            texts: self.config.pane.clone(),
            naa: self.naa_pane_settings(),
        }
    }

    fn naa_pane_settings(&self) -> Option<NaaPaneSettings> {
        let auth = &self.config.auth;
        if auth.method != AuthMethod::NaaToken {
            return None;
        }
        Some(NaaPaneSettings {
            client_id: auth.naa_client_id.clone()?,
            authority: auth.naa_authority.clone(),
            scopes: vec![format!(
                "api://{}/{}",
                auth.naa_api_application_id.clone()?,
                auth.naa_required_scope
            )],
            msal_js: auth.naa_msal_js.clone()?,
        })
    }
}
