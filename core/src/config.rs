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

use crate::secret::Secret;

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
    pub limits: LimitsConfig,
    pub admin: AdminConfig,
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
            limits: LimitsConfig::default(),
            admin: AdminConfig::default(),
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
    /// `local` (the copy under `static/office-js/`, plus the admin-supplied
    /// `MicrosoftAjax.js` next to it), `cdn` (Microsoft's), or any https URL
    /// of an Office.js.
    pub office_js: String,
    /// How long the pane waits for `Office.onReady` before it says that
    /// Office.js could not start (milliseconds, 1000–60000).
    pub office_js_timeout_ms: u32,
    /// Extra script URLs (https, or absolute paths on the add-in host) the
    /// pane loads before Office.js, in this order (Pexip's
    /// `additional_add_in_script_sources`).
    pub additional_add_in_script_sources: Vec<String>,
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
            office_js: "cdn".into(),
            office_js_timeout_ms: 5000,
            additional_add_in_script_sources: Vec::new(),
        }
    }
}

/// Where Office.js fetches `MicrosoftAjax.js` from when the page lacks it;
/// air-gapped sites download it from here on a connected machine.
pub const MICROSOFT_AJAX_CDN: &str = "https://ajax.aspnetcdn.com/ajax/3.5/MicrosoftAjax.js";
/// File name of the local `MicrosoftAjax.js`, next to the local `office.js`.
pub const MICROSOFT_AJAX_FILE: &str = "MicrosoftAjax.js";

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

    /// `office_js = "local"`: the pane and everything it loads come from the
    /// add-in host only.
    pub fn is_local_office_js(&self) -> bool {
        self.office_js == "local"
    }

    /// Folder of the local Office.js copy (`<static_dir>/office-js`, served
    /// at `/office-js/`).
    pub fn local_office_js_dir(&self) -> PathBuf {
        self.static_dir.join("office-js")
    }

    /// The classic scripts the pane loads before its own code, in order:
    /// `MicrosoftAjax.js` (local mode only), the additional sources, Office.js.
    pub fn pane_script_urls(&self) -> Vec<String> {
        let mut urls = Vec::new();
        if self.is_local_office_js() {
            urls.push(format!(
                "{}/office-js/{MICROSOFT_AJAX_FILE}",
                self.public_origin()
            ));
        }
        urls.extend(self.additional_add_in_script_sources.iter().cloned());
        urls.push(self.office_js_url());
        urls
    }

    fn validate_office_js(&self) -> Result<(), ConfigError> {
        if !(1000..=60_000).contains(&self.office_js_timeout_ms) {
            return Err(ConfigError::key(
                "server.office_js_timeout_ms",
                format!(
                    "must be between 1000 and 60000 milliseconds, found {}",
                    self.office_js_timeout_ms
                ),
            ));
        }
        for (i, src) in self.additional_add_in_script_sources.iter().enumerate() {
            let is_path = src.starts_with('/') && !src.starts_with("//");
            let plain = !src.is_empty()
                && src.len() <= 2048
                && !src
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "\"'<>`".contains(c));
            if !plain || !(is_path || src.starts_with("https://")) {
                return Err(ConfigError::key(
                    format!("server.additional_add_in_script_sources[{i}]"),
                    format!(
                        "must be an https URL or an absolute path on the add-in host \
                         (no spaces or quotes), found {src:?}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// In local mode: the files the pane needs from the add-in host are there
    /// (`office.js` from setup, `MicrosoftAjax.js` from the admin). Checked by
    /// `check-config` and at start, not by [`Config::validate`], since it
    /// reads the disk.
    pub fn check_office_js_files(&self) -> Result<(), ConfigError> {
        if !self.is_local_office_js() {
            return Ok(());
        }
        let dir = self.local_office_js_dir();
        let office = dir.join("office.js");
        if !office.is_file() {
            return Err(ConfigError::key(
                "server.office_js",
                format!(
                    "\"local\" serves Office.js from {}, which is missing: run `cargo xtask setup` \
                     (it copies the npm package @microsoft/office-js there) or copy that \
                     package's dist/ folder there yourself",
                    dir.display()
                ),
            ));
        }
        let ajax = dir.join(MICROSOFT_AJAX_FILE);
        let present = std::fs::metadata(&ajax).is_ok_and(|m| m.is_file() && m.len() > 0);
        if !present {
            return Err(ConfigError::key(
                "server.office_js",
                microsoft_ajax_instruction(&ajax),
            ));
        }
        Ok(())
    }
}

/// What to do when `MicrosoftAjax.js` is missing in local mode.
pub fn microsoft_ajax_instruction(path: &Path) -> String {
    format!(
        "\"local\" needs {MICROSOFT_AJAX_FILE} at {path}, and it is missing. Office.js loads it \
         from Microsoft's CDN otherwise, which an air-gapped pane cannot reach, so the pane would \
         never start. It is in no package registry: on a machine with internet access download \
         {MICROSOFT_AJAX_CDN} and copy it to {path} (or run \
         `VMR_MICROSOFT_AJAX_JS=<downloaded file> cargo xtask setup`, which copies it there)",
        path = path.display()
    )
}

#[cfg(test)]
mod office_js_tests {
    use super::*;

    fn local_in(dir: &Path) -> ServerConfig {
        ServerConfig {
            office_js: "local".into(),
            static_dir: dir.to_path_buf(),
            ..ServerConfig::default()
        }
    }

    #[test]
    fn local_mode_needs_office_js_and_microsoft_ajax() {
        let dir = std::env::temp_dir().join(format!("vmr-office-js-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let server = local_in(&dir);
        let e = server.check_office_js_files().expect_err("no office.js");
        assert!(e.to_string().contains("server.office_js"), "{e}");
        assert!(e.to_string().contains("cargo xtask setup"), "{e}");
        let office = dir.join("office-js");
        std::fs::create_dir_all(&office).expect("mkdir");
        std::fs::write(office.join("office.js"), "/* office */").expect("write");
        let e = server
            .check_office_js_files()
            .expect_err("no MicrosoftAjax.js");
        let text = e.to_string();
        assert!(text.contains("config key `server.office_js`"), "{text}");
        assert!(text.contains(MICROSOFT_AJAX_CDN), "{text}");
        assert!(
            text.contains(&office.join(MICROSOFT_AJAX_FILE).display().to_string()),
            "{text}"
        );
        std::fs::write(office.join(MICROSOFT_AJAX_FILE), "").expect("write");
        assert!(
            server.check_office_js_files().is_err(),
            "an empty file is refused"
        );
        std::fs::write(office.join(MICROSOFT_AJAX_FILE), "var Sys;").expect("write");
        server.check_office_js_files().expect("complete");
        let cdn = ServerConfig {
            static_dir: dir.join("nowhere"),
            ..ServerConfig::default()
        };
        cdn.check_office_js_files()
            .expect("cdn mode reads no files");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn script_order_is_ajax_extras_office() {
        let mut server = local_in(Path::new("static"));
        server.public_host = "addin.example.com".into();
        server.additional_add_in_script_sources = vec![
            "/static/site.js".into(),
            "https://cdn.example.com/x.js".into(),
        ];
        assert_eq!(
            server.pane_script_urls(),
            [
                "https://addin.example.com/office-js/MicrosoftAjax.js",
                "/static/site.js",
                "https://cdn.example.com/x.js",
                "https://addin.example.com/office-js/office.js",
            ]
        );
        server.office_js = "cdn".into();
        assert_eq!(server.pane_script_urls().len(), 3, "no MicrosoftAjax.js");
    }

    #[test]
    fn bad_sources_and_timeouts_name_their_key() {
        for bad in [
            "http://x.example/a.js",
            "//x.example/a.js",
            "a.js",
            "/a b.js",
            "/a\".js",
        ] {
            let server = ServerConfig {
                additional_add_in_script_sources: vec!["/ok.js".into(), bad.into()],
                ..ServerConfig::default()
            };
            let e = server.validate_office_js().expect_err(bad).to_string();
            assert!(
                e.contains("server.additional_add_in_script_sources[1]"),
                "{e}"
            );
        }
        let server = ServerConfig {
            office_js_timeout_ms: 10,
            ..ServerConfig::default()
        };
        let e = server.validate_office_js().expect_err("too short");
        assert!(e.to_string().contains("server.office_js_timeout_ms"), "{e}");
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
    pub shared_secret: Option<Secret>,
    /// How long the edge waits for management before answering "deferred".
    pub timeout_ms: u64,
    /// Id of the current deferral key (carried in every TOK it signs).
    pub deferral_key_id: String,
    /// Key (64 hex digits) under which edges sign deferred-request statements
    /// (TOK) and management checks them; shared by the edges and management,
    /// distinct from `shared_secret`. Needed by the edge and management roles.
    pub deferral_key: Option<Secret>,
    /// Earlier deferral keys still accepted (rotation): TOKs already in
    /// meetings keep working until they expire.
    pub previous_deferral_keys: Vec<DeferralKeyConfig>,
    /// How long a TOK stays valid, in hours (default 7 days).
    pub deferral_ttl_hours: u64,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        ManagementConfig {
            url: None,
            shared_secret: None,
            timeout_ms: 3000,
            deferral_key_id: "1".into(),
            deferral_key: None,
            previous_deferral_keys: Vec::new(),
            deferral_ttl_hours: 7 * 24,
        }
    }
}

/// `[[management.previous_deferral_keys]]`: an older deferral key, still accepted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeferralKeyConfig {
    /// The key's id.
    pub id: String,
    /// 64 hex digits.
    pub key: Secret,
}

/// `[limits]`: what one requester, and everyone together, may ask of the service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Alias allocations one requester may make per hour (a burst of this many,
    /// then one per 3600/n seconds). 0: no per-requester limit.
    pub allocations_per_requester_per_hour: u32,
    /// Alias allocations per second over all requesters. 0: no global limit.
    pub allocations_per_second: u32,
    /// Longest time one HTTP request may take, in milliseconds.
    pub request_timeout_ms: u64,
    /// Requests served at the same time; more wait.
    pub max_concurrent_requests: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            allocations_per_requester_per_hour: 60,
            allocations_per_second: 500,
            request_timeout_ms: 30_000,
            max_concurrent_requests: 1024,
        }
    }
}

/// `[admin]`: who may read `/metrics` and the detailed `/readyz`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// A separate listener (plain HTTP; bind it to loopback or an admin
    /// network) serving `/metrics`, `/readyz` and `/healthz` without auth.
    pub listen: Option<SocketAddr>,
    /// SHA-256 (hex) of admin API tokens; a request to `/metrics` or
    /// `/readyz/detail` on the main listener with `Authorization: Bearer
    /// <token>` whose hash is listed is served. Empty: those routes are only
    /// on the admin listener.
    pub api_token_sha256: Vec<String>,
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
    pub tag_key: Option<Secret>,
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
        self.server.validate_office_js()?;
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
                Some(s) if s.expose().chars().count() >= 16 => {}
                _ => {
                    return Err(ConfigError::key(
                        "management.shared_secret",
                        "edge and management roles need a shared secret of at least 16 characters",
                    ))
                }
            }
        }
        if self.role != Role::All {
            self.validate_deferral_keys()?;
        }
        if self.role == Role::Edge {
            match &self.management.url {
                Some(u) => check_management_url(u)?,
                None => {
                    return Err(ConfigError::key(
                        "management.url",
                        "the edge role needs the management URL",
                    ))
                }
            }
        }
        for (i, hash) in self.admin.api_token_sha256.iter().enumerate() {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::key(
                    format!("admin.api_token_sha256[{i}]"),
                    "must be the SHA-256 of a token in 64 hex digits (sha256sum)",
                ));
            }
        }
        if self.limits.request_timeout_ms == 0 {
            return Err(ConfigError::key(
                "limits.request_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.limits.max_concurrent_requests == 0 {
            return Err(ConfigError::key(
                "limits.max_concurrent_requests",
                "must be at least 1",
            ));
        }
        if self.integrations.is_empty() {
            return Err(ConfigError::key(
                "integration",
                "at least one integration is needed",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut resources = std::collections::BTreeSet::new();
        for (i, integration) in self.integrations.iter().enumerate() {
            integration.validate(&format!("integration[{i}]"))?;
            if !seen.insert(integration.id.as_str()) {
                return Err(ConfigError::key(
                    format!("integration[{i}].id"),
                    format!("duplicate integration id {:?}", integration.id),
                ));
            }
            if !resources.insert(integration.resource_email.to_ascii_lowercase()) {
                return Err(ConfigError::key(
                    format!("integration[{i}].resource_email"),
                    format!(
                        "{:?} is already the resource of another integration; each integration needs its own resource mailbox",
                        integration.resource_email
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The deferral key (and previous ones) are 64 hex digits, with distinct ids,
    /// and differ from the shared secret.
    fn validate_deferral_keys(&self) -> Result<(), ConfigError> {
        let m = &self.management;
        let check = |key: &str, secret: Option<&Secret>| -> Result<(), ConfigError> {
            match secret {
                Some(k) if k.expose().len() == 64 && k.expose().bytes().all(|b| b.is_ascii_hexdigit()) => {
                    if m.shared_secret.as_ref().is_some_and(|s| s.expose() == k.expose()) {
                        return Err(ConfigError::key(
                            key,
                            "must differ from management.shared_secret",
                        ));
                    }
                    Ok(())
                }
                Some(_) => Err(ConfigError::key(key, "must be 64 hex digits (openssl rand -hex 32)")),
                None => Err(ConfigError::key(
                    key,
                    "edge and management roles need a deferral key of 64 hex digits (openssl rand -hex 32), the same on every edge and on management",
                )),
            }
        };
        check("management.deferral_key", m.deferral_key.as_ref())?;
        if m.deferral_key_id.trim().is_empty() || m.deferral_key_id.len() > 32 {
            return Err(ConfigError::key(
                "management.deferral_key_id",
                "must be 1-32 characters",
            ));
        }
        let mut ids = std::collections::BTreeSet::from([m.deferral_key_id.as_str()]);
        for (i, old) in m.previous_deferral_keys.iter().enumerate() {
            check(
                &format!("management.previous_deferral_keys[{i}].key"),
                Some(&old.key),
            )?;
            if !ids.insert(old.id.as_str()) {
                return Err(ConfigError::key(
                    format!("management.previous_deferral_keys[{i}].id"),
                    format!("duplicate deferral key id {:?}", old.id),
                ));
            }
        }
        if m.deferral_ttl_hours == 0 || m.deferral_ttl_hours > 90 * 24 {
            return Err(ConfigError::key(
                "management.deferral_ttl_hours",
                "must be between 1 and 2160 (90 days)",
            ));
        }
        Ok(())
    }

    /// The integration with this id.
    pub fn integration(&self, id: &str) -> Option<&IntegrationConfig> {
        self.integrations.iter().find(|i| i.id == id)
    }
}

/// `management.url`: https, or plain http only to a loopback IP address.
fn check_management_url(raw: &str) -> Result<(), ConfigError> {
    let fail = |why: String| ConfigError::key("management.url", why);
    let url = url::Url::parse(raw).map_err(|e| fail(format!("{raw:?} is not a URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(fail(
            "must not carry user info; the edge authenticates with management.shared_secret".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(fail(format!("{raw:?} must not have a query or fragment")));
    }
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => Ok(()),
        ("http", Some(url::Host::Ipv4(ip))) if ip.is_loopback() => Ok(()),
        ("http", Some(url::Host::Ipv6(ip))) if ip.is_loopback() => Ok(()),
        _ => Err(fail(format!(
            "must be an https URL (plain http only to a loopback IP address), found {raw:?}"
        ))),
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
            let k = k.expose();
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

    const DEFERRAL: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn split_roles_need_a_deferral_key_and_a_safe_management_url() {
        let edge = |url: &str, key: &str| {
            format!(
                "role = \"edge\"\n[management]\nurl = \"{url}\"\nshared_secret = \"a-long-enough-secret\"\n{key}"
            )
        };
        let key = format!("deferral_key = \"{DEFERRAL}\"\n");
        load(&edge("https://mgmt.internal:8444", &key), &[]).expect("valid edge");
        load(&edge("http://127.0.0.1:8444", &key), &[]).expect("loopback http");
        load(&edge("http://[::1]:8444", &key), &[]).expect("loopback v6 http");
        for bad in [
            "http://mgmt.internal:8444",
            "http://127.0.0.1.evil.example:80",
            "https://user:pw@mgmt.internal",
            "ftp://mgmt.internal",
            "not a url",
        ] {
            let e = err(&edge(bad, &key), &[]);
            assert!(e.contains("management.url"), "{bad}: {e}");
        }
        let e = err(&edge("https://mgmt.internal", ""), &[]);
        assert!(e.contains("management.deferral_key"), "{e}");
        let e = err(
            &edge("https://mgmt.internal", "deferral_key = \"abc\"\n"),
            &[],
        );
        assert!(e.contains("64 hex digits"), "{e}");
    }

    #[test]
    fn two_integrations_cannot_share_a_resource_mailbox() {
        let e = err(
            "[[integration]]\nid = \"a\"\nresource_email = \"room@example.com\"\n\
             [[integration]]\nid = \"b\"\nresource_email = \"ROOM@example.com\"\n",
            &[],
        );
        assert!(e.contains("integration[1].resource_email"), "{e}");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let c = load(
            &format!(
                "role = \"management\"\n[management]\nshared_secret = \"edge-secret-123456789\"\n\
                 deferral_key = \"{DEFERRAL}\"\n[[integration]]\ntag_key = \"{DEFERRAL}\"\n"
            ),
            &[],
        )
        .expect("valid");
        let shown = format!("{c:?}");
        assert!(!shown.contains("edge-secret"), "{shown}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
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
                ("VMR__INTEGRATION__1__RESOURCE_EMAIL", "room-b@example.com"),
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
