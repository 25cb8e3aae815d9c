//! Configuration: one TOML file plus environment overrides.
//!
//! Loading goes in three steps, and each step's errors name the key:
//! 1. the TOML file is parsed into a generic tree (syntax errors carry line
//!    and column);
//! 2. every environment variable `VMR__A__B__C=value` overrides the key
//!    `a.b.c` (array elements by index: `VMR__INTEGRATION__0__ALIAS_PREFIX`);
//!    values are parsed as TOML scalars when they look like one, else strings;
//! 3. the tree is deserialised into [`Config`] (unknown keys are errors, and
//!    the error names the path) and then [`Config::validate`] checks ranges and
//!    cross-field rules.
//!
//! Everything has a default, so an empty file starts a working demo.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vmr_protocol::{AuthMethod, PaneTexts};

/// A configuration problem, always naming the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
}

impl ConfigError {
    fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Which parts of the service this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Edge and management in one process (the default).
    #[default]
    All,
    /// Serves the pane and manifest; forwards alias requests to management.
    Edge,
    /// Validates tokens, allocates aliases, owns the database.
    Management,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub role: Role,
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub management: ManagementConfig,
    pub http_client: HttpClientConfig,
    #[serde(rename = "integration")]
    pub integrations: Vec<IntegrationConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            role: Role::All,
            server: ServerConfig::default(),
            storage: StorageConfig::default(),
            management: ManagementConfig::default(),
            http_client: HttpClientConfig::default(),
            integrations: vec![IntegrationConfig::default()],
        }
    }
}

/// `[server]`: the listener and what it serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Host (and port, if not 443) that Outlook uses to reach this server;
    /// every URL in the manifest is `https://<public_host>/…`.
    pub public_host: String,
    /// Serve plain HTTP. Only behind a TLS-terminating proxy.
    pub plain_http: bool,
    /// PEM certificate chain; with `tls_key`. Absent: a self-signed
    /// certificate for `public_host` is generated at start (demo only).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Where the self-signed certificate is written (so clients can trust it).
    pub self_signed_cert_out: Option<PathBuf>,
    /// The Trunk build of the pane.
    pub dist_dir: PathBuf,
    /// Icons, styles, help page and the local Office.js copy.
    pub static_dir: PathBuf,
    /// `local` (the copy under `static/office-js/`), `cdn` (Microsoft's), or
    /// any https URL of an Office.js.
    pub office_js: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            public_host: "localhost:8443".into(),
            plain_http: false,
            tls_cert: None,
            tls_key: None,
            self_signed_cert_out: None,
            dist_dir: "dist".into(),
            static_dir: "static".into(),
            office_js: "local".into(),
        }
    }
}

/// Microsoft's Office.js CDN location.
pub const OFFICE_JS_CDN: &str = "https://appsforoffice.microsoft.com/lib/1/hosted/office.js";

impl ServerConfig {
    /// `https://<public_host>` (or `http://` with `plain_http` and no proxy).
    pub fn public_origin(&self) -> String {
        format!("https://{}", self.public_host)
    }

    /// The Office.js URL the pane and manifest use.
    pub fn office_js_url(&self) -> String {
        match self.office_js.as_str() {
            "local" => format!("{}/office-js/office.js", self.public_origin()),
            "cdn" => OFFICE_JS_CDN.to_string(),
            url => url.to_string(),
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://path.db` or `postgres://user@host:port/db`.
    pub url: String,
    /// Connections in the pool.
    pub max_connections: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: "sqlite://vmr-scheduler.db".into(),
            max_connections: 8,
        }
    }
}

/// `[management]`: how an edge reaches management, and the secret both share.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagementConfig {
    /// Base URL of the management role (edge only), e.g. `https://mgmt:8444`.
    pub url: Option<String>,
    /// Shared secret the edge presents and management requires (≥ 16 chars).
    pub shared_secret: Option<String>,
    /// How long the edge waits for management before answering "deferred".
    pub timeout_ms: u64,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        ManagementConfig {
            url: None,
            shared_secret: None,
            timeout_ms: 3000,
        }
    }
}

/// `[http_client]`: outgoing HTTPS (metadata documents, edge → management).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpClientConfig {
    /// Extra PEM root certificates to trust (internal CAs, the demo's
    /// self-signed certificates).
    pub extra_ca_files: Vec<PathBuf>,
}

/// `[[integration]]`: one Exchange deployment with its own resource mailbox,
/// alias space, templates and add-in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntegrationConfig {
    /// Short id used in URLs (`[a-z0-9-]`).
    pub id: String,
    /// Equipment resource mailbox the pane adds as an attendee.
    pub resource_email: String,
    pub resource_name: String,
    /// Leading characters of every numeric alias (1–8).
    pub alias_prefix: String,
    /// Random digits after the prefix (5–15).
    pub alias_digits: u32,
    /// Domain appended to form the dialable alias.
    pub alias_domain: String,
    /// Secret key for tag MACs, 64 hex digits. Absent: derived from
    /// `id` and the storage URL (demo only; set it in production).
    pub tag_key: Option<String>,
    /// Stable add-in Id (a GUID) for the manifest.
    pub addin_id: String,
    /// Manifest version, `n.n.n.n`.
    pub addin_version: String,
    pub auth: AuthConfig,
    pub addin: AddinTexts,
    /// `[integration.pane]`: task pane texts.
    pub pane: PaneTexts,
    /// Show a debug log in the pane (for every user).
    pub pane_debug_logs: bool,
    /// Template overrides; see `templates.rs` for names and defaults.
    pub templates: BTreeMap<String, String>,
    /// Minutes before start participants can join (0–180).
    pub meeting_buffer_before: u32,
    /// Minutes after end participants can still join (0–180).
    pub meeting_buffer_after: u32,
}

impl Default for IntegrationConfig {
    fn default() -> Self {
        IntegrationConfig {
            id: "default".into(),
            resource_email: "vmr-scheduler@example.com".into(),
            resource_name: "Video Meeting Room".into(),
            alias_prefix: "88".into(),
            alias_digits: 6,
            alias_domain: "vc.example.com".into(),
            tag_key: None,
            addin_id: "6f0f9c1e-3a52-4d6b-9d4e-5c1f2b7a8e01".into(),
            addin_version: "1.0.0.0".into(),
            auth: AuthConfig::default(),
            addin: AddinTexts::default(),
            pane: PaneTexts::default(),
            pane_debug_logs: false,
            templates: BTreeMap::new(),
            meeting_buffer_before: 30,
            meeting_buffer_after: 60,
        }
    }
}

/// `[integration.auth]`: which tokens the pane sends and how they are checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub method: AuthMethod,
    /// Exchange metadata domains or URLs: a token's `amurl` must match one
    /// (a bare host matches any https URL on that host).
    pub exchange_metadata: Vec<String>,
    /// Seconds a fetched metadata document is trusted.
    pub metadata_cache_ttl_secs: u64,
    /// NAA: the Web API application id (`aud`).
    pub naa_api_application_id: Option<String>,
    /// NAA: the tenant's OIDC metadata URL.
    pub naa_oidc_metadata_url: Option<String>,
    /// NAA: tenant ids (`tid`) allowed.
    pub naa_allowed_tenants: Vec<String>,
    /// NAA: scope the token must carry in `scp`.
    pub naa_required_scope: String,
    /// NAA: the add-in's own (SPA) app registration the pane signs in with.
    pub naa_client_id: Option<String>,
    /// NAA: the authority the pane uses.
    pub naa_authority: String,
    /// NAA: https URL of MSAL.js (`msal-browser.min.js` from the npm package
    /// `@azure/msal-browser`, hosted by you).
    pub naa_msal_js: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            method: AuthMethod::ExchangeUserIdToken,
            exchange_metadata: Vec::new(),
            metadata_cache_ttl_secs: 3600,
            naa_api_application_id: None,
            naa_oidc_metadata_url: None,
            naa_allowed_tenants: Vec::new(),
            naa_required_scope: "access_as_user".into(),
            naa_client_id: None,
            naa_authority: "https://login.microsoftonline.com/organizations".into(),
            naa_msal_js: None,
        }
    }
}

/// `[integration.addin]`: the manifest's names, labels and switches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AddinTexts {
    pub display_name: String,
    pub description: String,
    pub provider_name: String,
    pub button_label: String,
    pub group_label: String,
    pub supertip_title: String,
    pub supertip_description: String,
    /// `SupportsSharedFolders` (delegates). Older Exchange CUs reject it.
    pub supports_shared_folders: bool,
}

impl Default for AddinTexts {
    fn default() -> Self {
        AddinTexts {
            display_name: "VMR Scheduling Service".into(),
            description: "Turns meetings into secure video meetings".into(),
            provider_name: "vmr-scheduler".into(),
            button_label: "Add a video meeting".into(),
            group_label: "Video meeting".into(),
            supertip_title: "Makes this a video meeting".into(),
            supertip_description: "Puts a single-use video meeting room into this meeting. \
                The meeting is not scheduled until you select Send."
                .into(),
            supports_shared_folders: true,
        }
    }
}

impl Config {
    /// Reads `path` (if given), applies `VMR__…` environment overrides from
    /// `env`, and validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let tree = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Syntax {
                        path: path.to_path_buf(),
                        message: e.to_string().trim().to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        let mut root = toml::Value::Table(tree);
        for (name, value) in env {
            if let Some(rest) = name.strip_prefix("VMR__") {
                apply_override(&mut root, rest, &value)?;
            }
        }
        match root {
            toml::Value::Table(tree) => Self::from_table(tree),
            _ => Err(ConfigError::key("(top level)", "must be a table")),
        }
    }

    /// Deserialises and validates an already-parsed tree.
    pub fn from_table(tree: toml::Table) -> Result<Config, ConfigError> {
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(tree)).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::key(
                    if key == "." {
                        "(top level)".into()
                    } else {
                        key
                    },
                    e.into_inner().to_string(),
                )
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Range and cross-field checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.public_host.is_empty() || self.server.public_host.contains('/') {
            return Err(ConfigError::key(
                "server.public_host",
                "must be a host name with an optional port, without scheme or path",
            ));
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(ConfigError::key(
                "server.tls_cert",
                "tls_cert and tls_key must be given together",
            ));
        }
        let office_js = self.server.office_js.as_str();
        if !matches!(office_js, "local" | "cdn") && !office_js.starts_with("https://") {
            return Err(ConfigError::key(
                "server.office_js",
                format!("must be \"local\", \"cdn\" or an https URL, found {office_js:?}"),
            ));
        }
        let storage = self.storage.url.as_str();
        if !(storage.starts_with("sqlite:")
            || storage.starts_with("postgres://")
            || storage.starts_with("postgresql://"))
        {
            return Err(ConfigError::key(
                "storage.url",
                format!("must start with sqlite: or postgres://, found {storage:?}"),
            ));
        }
        if self.storage.max_connections == 0 {
            return Err(ConfigError::key(
                "storage.max_connections",
                "must be at least 1",
            ));
        }
        if self.role != Role::All {
            match &self.management.shared_secret {
                Some(s) if s.chars().count() >= 16 => {}
                _ => {
                    return Err(ConfigError::key(
                        "management.shared_secret",
                        "edge and management roles need a shared secret of at least 16 characters",
                    ))
                }
            }
        }
        if self.role == Role::Edge {
            match &self.management.url {
                Some(u) if u.starts_with("https://") || u.starts_with("http://127.") => {}
                Some(u) => {
                    return Err(ConfigError::key(
                        "management.url",
                        format!("must be an https URL, found {u:?}"),
                    ))
                }
                None => {
                    return Err(ConfigError::key(
                        "management.url",
                        "the edge role needs the management URL",
                    ))
                }
            }
        }
        if self.integrations.is_empty() {
            return Err(ConfigError::key(
                "integration",
                "at least one integration is needed",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, integration) in self.integrations.iter().enumerate() {
            integration.validate(&format!("integration[{i}]"))?;
            if !seen.insert(integration.id.as_str()) {
                return Err(ConfigError::key(
                    format!("integration[{i}].id"),
                    format!("duplicate integration id {:?}", integration.id),
                ));
            }
        }
        Ok(())
    }

    /// The integration with this id.
    pub fn integration(&self, id: &str) -> Option<&IntegrationConfig> {
        self.integrations.iter().find(|i| i.id == id)
    }
}

impl IntegrationConfig {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{at}.{k}");
        if self.id.is_empty()
            || !self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ConfigError::key(
                key("id"),
                format!(
                    "must be non-empty and use only a-z, 0-9 and '-', found {:?}",
                    self.id
                ),
            ));
        }
        let prefix_len = self.alias_prefix.chars().count();
        if !(1..=8).contains(&prefix_len)
            || !self.alias_prefix.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(ConfigError::key(
                key("alias_prefix"),
                format!(
                    "must be 1 to 8 letters or digits, found {:?}",
                    self.alias_prefix
                ),
            ));
        }
        if !(5..=15).contains(&self.alias_digits) {
            return Err(ConfigError::key(
                key("alias_digits"),
                format!("must be between 5 and 15, found {}", self.alias_digits),
            ));
        }
        if self.alias_domain.is_empty()
            || self.alias_domain.len() > 192
            || !self
                .alias_domain
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(ConfigError::key(
                key("alias_domain"),
                format!("must be a domain name, found {:?}", self.alias_domain),
            ));
        }
        if !self.resource_email.contains('@') {
            return Err(ConfigError::key(
                key("resource_email"),
                format!("must be an e-mail address, found {:?}", self.resource_email),
            ));
        }
        if let Some(k) = &self.tag_key {
            if k.len() != 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::key(
                    key("tag_key"),
                    "must be 64 hex digits (32 bytes)",
                ));
            }
        }
        if uuid::Uuid::parse_str(&self.addin_id).is_err() {
            return Err(ConfigError::key(
                key("addin_id"),
                format!("must be a GUID, found {:?}", self.addin_id),
            ));
        }
        let parts: Vec<&str> = self.addin_version.split('.').collect();
        if parts.is_empty() || parts.len() > 4 || parts.iter().any(|p| p.parse::<u16>().is_err()) {
            return Err(ConfigError::key(
                key("addin_version"),
                format!("must look like 1.0.0.0, found {:?}", self.addin_version),
            ));
        }
        for (name, value) in [
            ("meeting_buffer_before", self.meeting_buffer_before),
            ("meeting_buffer_after", self.meeting_buffer_after),
        ] {
            if value > 180 {
                return Err(ConfigError::key(
                    key(name),
                    format!("must be 0 to 180 minutes, found {value}"),
                ));
            }
        }
        for (name, text, limit) in self.addin.texts() {
            let len = text.chars().count();
            if len == 0 || len > limit {
                return Err(ConfigError::key(
                    key(name),
                    format!("must be 1 to {limit} characters (manifest limit), found {len}"),
                ));
            }
        }
        for (name, text) in self.pane.fields() {
            if text.chars().count() > 250 {
                return Err(ConfigError::key(
                    key(&format!("pane.{name}")),
                    format!(
                        "is {} characters long; the limit is 250",
                        text.chars().count()
                    ),
                ));
            }
        }
        crate::templates::TemplateSet::compile(&self.templates)
            .map_err(|e| ConfigError::key(key("templates"), e.to_string()))?;
        if self.auth.method == AuthMethod::NaaToken {
            if self.auth.naa_api_application_id.is_none() {
                return Err(ConfigError::key(
                    key("auth.naa_api_application_id"),
                    "NAA_TOKEN needs the Web API application id",
                ));
            }
            match &self.auth.naa_oidc_metadata_url {
                Some(u) if u.starts_with("https://") => {}
                _ => {
                    return Err(ConfigError::key(
                        key("auth.naa_oidc_metadata_url"),
                        "NAA_TOKEN needs the tenant's https OIDC metadata URL",
                    ))
                }
            }
            if self.auth.naa_client_id.as_deref().is_none_or(str::is_empty) {
                return Err(ConfigError::key(
                    key("auth.naa_client_id"),
                    "NAA_TOKEN needs the add-in's own app registration (client id)",
                ));
            }
            match &self.auth.naa_msal_js {
                Some(u) if u.starts_with("https://") => {}
                _ => {
                    return Err(ConfigError::key(
                        key("auth.naa_msal_js"),
                        "NAA_TOKEN needs the https URL of msal-browser.min.js",
                    ))
                }
            }
            if self.auth.naa_allowed_tenants.is_empty() {
                return Err(ConfigError::key(
                    key("auth.naa_allowed_tenants"),
                    "NAA_TOKEN needs at least one allowed tenant id",
                ));
            }
        }
        Ok(())
    }

    /// The pane URL: the manifest's SourceLocation and the identity token's `aud`.
    pub fn pane_url(&self, server: &ServerConfig) -> String {
        format!(
            "{}/pane/index.html?integration={}",
            server.public_origin(),
            self.id
        )
    }
}

impl AddinTexts {
    /// Each text with its manifest length limit (short strings 125, long 250).
    fn texts(&self) -> Vec<(&'static str, &str, usize)> {
        vec![
            ("addin.display_name", &self.display_name, 125),
            ("addin.description", &self.description, 250),
            ("addin.provider_name", &self.provider_name, 250),
            ("addin.button_label", &self.button_label, 125),
            ("addin.group_label", &self.group_label, 125),
            ("addin.supertip_title", &self.supertip_title, 125),
            (
                "addin.supertip_description",
                &self.supertip_description,
                250,
            ),
        ]
    }
}

/// Sets `path` (`A__B__0__C`, case-insensitive) in `tree` to `raw`.
fn apply_override(tree: &mut toml::Value, path: &str, raw: &str) -> Result<(), ConfigError> {
    let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
    let dotted = parts.join(".");
    if parts.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::key(
            dotted,
            "empty segment in environment override name",
        ));
    }
    let value = parse_env_value(raw);
    let mut node: &mut toml::Value = tree;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        node = match node {
            toml::Value::Table(t) => {
                if last {
                    t.insert(part.clone(), value);
                    return Ok(());
                }
                let next_is_index = parts[i + 1].parse::<usize>().is_ok();
                t.entry(part.clone()).or_insert_with(|| {
                    if next_is_index {
                        toml::Value::Array(Vec::new())
                    } else {
                        toml::Value::Table(toml::Table::new())
                    }
                })
            }
            toml::Value::Array(a) => {
                let index: usize = part.parse().map_err(|_| {
                    ConfigError::key(dotted.clone(), format!("{part:?} is not an array index"))
                })?;
                if index > a.len() {
                    return Err(ConfigError::key(
                        dotted.clone(),
                        format!("index {index} skips elements (array has {})", a.len()),
                    ));
                }
                if index == a.len() {
                    a.push(toml::Value::Table(toml::Table::new()));
                }
                if last {
                    a[index] = value;
                    return Ok(());
                }
                &mut a[index]
            }
            _ => {
                return Err(ConfigError::key(
                    dotted.clone(),
                    format!("{part:?} is below a value that is not a table"),
                ))
            }
        };
    }
    Ok(())
}

fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("vmr-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("c.toml");
        std::fs::write(&path, toml).expect("write");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let result = Config::load(Some(&path), env);
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    fn err(toml: &str, env: &[(&str, &str)]) -> String {
        load(toml, env).expect_err("must be rejected").to_string()
    }

    #[test]
    fn empty_file_is_a_working_demo() {
        let c = load("", &[]).expect("defaults");
        assert_eq!(c.role, Role::All);
        assert_eq!(c.integrations.len(), 1);
        assert_eq!(
            c.integrations[0].pane_url(&c.server),
            "https://localhost:8443/pane/index.html?integration=default"
        );
    }

    #[test]
    fn environment_overrides_nested_keys_and_array_elements() {
        let c = load(
            "[[integration]]\nid = \"a\"\n",
            &[
                ("VMR__SERVER__PUBLIC_HOST", "addin.example.com"),
                ("VMR__INTEGRATION__0__ALIAS_DIGITS", "9"),
                ("VMR__INTEGRATION__0__PANE__TITLE", "Hello there"),
                ("VMR__INTEGRATION__1__ID", "b"),
                ("OTHER", "ignored"),
            ],
        )
        .expect("valid");
        assert_eq!(c.server.public_host, "addin.example.com");
        assert_eq!(c.integrations[0].alias_digits, 9);
        assert_eq!(c.integrations[0].pane.title, "Hello there");
        assert_eq!(c.integrations[1].id, "b");
    }

    #[test]
    fn errors_name_the_key() {
        let e = err("[server]\nlisten = \"nowhere\"\n", &[]);
        assert!(e.contains("server.listen"), "{e}");
        let e = err("[server]\nlistn = \"127.0.0.1:1\"\n", &[]);
        assert!(e.contains("listn"), "{e}");
        let e = err("[[integration]]\nalias_prefix = \"123456789\"\n", &[]);
        assert!(e.contains("integration[0].alias_prefix"), "{e}");
        let e = err("", &[("VMR__INTEGRATION__0__ALIAS_DIGITS", "16")]);
        assert!(
            e.contains("integration[0].alias_digits") && e.contains("16"),
            "{e}"
        );
        let e = err("role = \"edge\"\n", &[]);
        assert!(e.contains("management.shared_secret"), "{e}");
        let e = err("[server]\noffice_js = \"http://cdn\"\n", &[]);
        assert!(e.contains("server.office_js"), "{e}");
        let e = err(
            "[[integration]]\n[integration.addin]\nbutton_label = \"\"\n",
            &[],
        );
        assert!(e.contains("addin.button_label"), "{e}");
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let e = err("[server\nlisten = 1\n", &[]);
        assert!(e.contains("not valid TOML") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn template_errors_are_reported_at_load() {
        let e = err(
            "[[integration]]\n[integration.templates]\nmeeting_instructions = \"ok\\n{% if %}\"\n",
            &[],
        );
        assert!(e.contains("integration[0].templates"), "{e}");
        assert!(
            e.contains("meeting_instructions") && e.contains("line 2"),
            "{e}"
        );
    }
}
