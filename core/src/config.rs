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
use std::time::Duration;

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
    pub policy: PolicyConfig,
    pub infinity: InfinityConfig,
    pub lifetime: LifetimeConfig,
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
            policy: PolicyConfig::default(),
            infinity: InfinityConfig::default(),
            lifetime: LifetimeConfig::default(),
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

/// `[admin]`: who may read `/metrics`, the detailed `/readyz`, the admin API
/// (`/api/admin/v1/`) and the admin page (`/admin/`), and what `/readyz` requires.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// A separate listener (plain HTTP; bind it to loopback or an admin
    /// network) serving `/metrics`, `/readyz` and `/healthz` without auth.
    pub listen: Option<SocketAddr>,
    /// SHA-256 (hex) of admin API tokens; a request to `/metrics` or
    /// `/readyz/detail` on the main listener with `Authorization: Bearer
    /// <token>` whose hash is listed is served. Empty: those routes are only
    /// on the admin listener. Writes made with such a token are audited as
    /// `token-<first 8 hex digits of the hash>`.
    pub api_token_sha256: Vec<String>,
    /// `[[admin.token]]`: named admin tokens (`label` is who the audit log
    /// names, `sha256` the token's SHA-256 in hex). Same rights as
    /// `api_token_sha256`.
    #[serde(rename = "token")]
    pub tokens: Vec<AdminTokenConfig>,
    /// How long an admin page session lasts after login, in minutes (5–1440).
    pub session_minutes: u32,
    /// `/readyz` fails when an integration with a mailbox last synchronised
    /// longer ago than this, in seconds (0: the age is reported, never fails).
    pub readyz_max_mailbox_sync_age_secs: u64,
    /// `[admin.oidc]`: sign-in to the admin page with an OpenID Connect provider
    /// (Entra ID or any other) beside the admin tokens.
    pub oidc: Option<AdminOidcConfig>,
}

/// `[admin.oidc]`: the admin page's single sign-on (authorization code flow with PKCE).
/// Whoever signs in must be listed in `allowed_users` or carry one of `allowed_groups`
/// in the ID token's `groups` claim; the audit log names them by their sign-in name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminOidcConfig {
    /// The issuer, e.g. `https://login.microsoftonline.com/<tenant id>/v2.0`; its
    /// `/.well-known/openid-configuration` names the endpoints and keys.
    pub issuer: String,
    /// The application (client) id registered with the provider.
    pub client_id: String,
    /// Its client secret: inline, `client_secret_env` or `client_secret_file`.
    pub client_secret: Option<Secret>,
    /// Environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// File holding the client secret (trailing newlines trimmed).
    pub client_secret_file: Option<PathBuf>,
    /// Sign-in names (`preferred_username`, else `email`) that may administer, any case.
    pub allowed_users: Vec<String>,
    /// Group object ids; a user whose ID token lists one of them in `groups` may administer.
    pub allowed_groups: Vec<String>,
    /// What the sign-in button says (default "Sign in with single sign-on").
    pub button_label: Option<String>,
}

impl AdminOidcConfig {
    /// Checks `[admin.oidc]`; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = url::Url::parse(&self.issuer).map_err(|e| {
            ConfigError::key(
                "admin.oidc.issuer",
                format!("{:?} is not a URL: {e}", self.issuer),
            )
        })?;
        if url.scheme() != "https" || url.host_str().is_none() {
            return Err(ConfigError::key(
                "admin.oidc.issuer",
                "must be an https:// URL with a host, e.g. https://login.microsoftonline.com/<tenant id>/v2.0",
            ));
        }
        if self.client_id.trim().is_empty() {
            return Err(ConfigError::key(
                "admin.oidc.client_id",
                "is required: the application (client) id registered with the provider",
            ));
        }
        if self.client_secret.is_none() {
            return Err(ConfigError::key(
                "admin.oidc.client_secret",
                "is required (or client_secret_env / client_secret_file)",
            ));
        }
        if self.allowed_users.is_empty() && self.allowed_groups.is_empty() {
            return Err(ConfigError::key(
                "admin.oidc.allowed_users",
                "name who may administer: allowed_users (sign-in names) and/or allowed_groups \
                 (group object ids); without either nobody could sign in",
            ));
        }
        if let Some(i) = self.allowed_users.iter().position(|u| u.trim().is_empty()) {
            return Err(ConfigError::key(
                format!("admin.oidc.allowed_users[{i}]"),
                "is empty",
            ));
        }
        if let Some(i) = self.allowed_groups.iter().position(|g| g.trim().is_empty()) {
            return Err(ConfigError::key(
                format!("admin.oidc.allowed_groups[{i}]"),
                "is empty",
            ));
        }
        Ok(())
    }

    /// Whether a user with sign-in name `user` and groups `groups` may administer.
    pub fn allows(&self, user: &str, groups: &[String]) -> bool {
        self.allowed_users
            .iter()
            .any(|u| u.trim().eq_ignore_ascii_case(user.trim()))
            || groups
                .iter()
                .any(|g| self.allowed_groups.iter().any(|a| a.trim() == g))
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: None,
            api_token_sha256: Vec::new(),
            tokens: Vec::new(),
            session_minutes: 480,
            readyz_max_mailbox_sync_age_secs: 1800,
            oidc: None,
        }
    }
}

/// One `[[admin.token]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminTokenConfig {
    /// Who holds the token (1–64 printable characters; not `schedulingservice`).
    pub label: String,
    /// SHA-256 of the token, 64 hex digits (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
}

impl AdminConfig {
    /// Every configured admin token as (label, SHA-256 hex).
    pub fn token_hashes(&self) -> Vec<(String, String)> {
        let unnamed = self.api_token_sha256.iter().map(|h| {
            let short: String = h.chars().take(8).collect();
            (format!("token-{}", short.to_ascii_lowercase()), h.clone())
        });
        let named = self
            .tokens
            .iter()
            .map(|t| (t.label.clone(), t.sha256.clone()));
        unnamed.chain(named).collect()
    }

    /// Checks the `[admin]` table; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let is_hash = |h: &str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
        for (i, hash) in self.api_token_sha256.iter().enumerate() {
            if !is_hash(hash) {
                return Err(ConfigError::key(
                    format!("admin.api_token_sha256[{i}]"),
                    "must be the SHA-256 of a token in 64 hex digits (sha256sum)",
                ));
            }
        }
        let mut labels = std::collections::BTreeSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            if !is_hash(&t.sha256) {
                return Err(ConfigError::key(
                    format!("admin.token[{i}].sha256"),
                    "must be the SHA-256 of a token in 64 hex digits (sha256sum)",
                ));
            }
            let label_ok = !t.label.trim().is_empty()
                && t.label.chars().count() <= 64
                && !t.label.chars().any(char::is_control);
            if !label_ok {
                return Err(ConfigError::key(
                    format!("admin.token[{i}].label"),
                    "must be 1 to 64 printable characters (the name the audit log shows)",
                ));
            }
            if t.label.eq_ignore_ascii_case("schedulingservice") {
                return Err(ConfigError::key(
                    format!("admin.token[{i}].label"),
                    "\"schedulingservice\" is the service's own name in the audit log",
                ));
            }
            if !labels.insert(t.label.clone()) {
                return Err(ConfigError::key(
                    format!("admin.token[{i}].label"),
                    format!("{:?} is used by another admin token", t.label),
                ));
            }
        }
        if !(5..=1440).contains(&self.session_minutes) {
            return Err(ConfigError::key(
                "admin.session_minutes",
                "must be between 5 and 1440",
            ));
        }
        if let Some(oidc) = &self.oidc {
            oidc.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod admin_config_tests {
    use super::{AdminConfig, AdminTokenConfig};

    const HASH: &str = "20357603bbd1490b9215bd7cfff9421bccf4d9131bd54e4ac53ce12caf5fbc32";

    fn named(label: &str, sha256: &str) -> AdminTokenConfig {
        AdminTokenConfig {
            label: label.into(),
            sha256: sha256.into(),
        }
    }

    fn problem(c: &AdminConfig) -> String {
        c.validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn defaults_are_valid() {
        let c = AdminConfig::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.session_minutes, 480);
        assert_eq!(c.readyz_max_mailbox_sync_age_secs, 1800);
    }

    #[test]
    fn tokens_parse_and_have_labels() {
        let c: AdminConfig = toml::from_str(&format!(
            "api_token_sha256 = [\"{HASH}\"]\n[[token]]\nlabel = \"alice\"\nsha256 = \"{HASH}\"\n"
        ))
        .unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(
            c.token_hashes(),
            vec![
                ("token-20357603".to_string(), HASH.to_string()),
                ("alice".to_string(), HASH.to_string())
            ]
        );
        assert!(toml::from_str::<AdminConfig>("[[token]]\nname = \"x\"\n").is_err());
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = AdminConfig {
            api_token_sha256: vec!["abc".into()],
            ..AdminConfig::default()
        };
        assert!(
            problem(&c).contains("admin.api_token_sha256[0]"),
            "{}",
            problem(&c)
        );
        c.api_token_sha256.clear();
        c.tokens = vec![named("alice", "zz")];
        assert!(problem(&c).contains("admin.token[0].sha256"));
        c.tokens = vec![named("", HASH)];
        assert!(problem(&c).contains("admin.token[0].label"));
        c.tokens = vec![named("SchedulingService", HASH)];
        assert!(problem(&c).contains("schedulingservice"));
        c.tokens = vec![named("a", HASH), named("a", HASH)];
        assert!(problem(&c).contains("admin.token[1].label"));
        c.tokens.clear();
        c.session_minutes = 2;
        assert!(problem(&c).contains("admin.session_minutes"));
    }
}

/// `[policy]`: the external policy server Pexip Infinity asks on every call
/// (`GET /policy/v1/service/configuration`, management and `all` roles).
/// Absent: not served. Present: served unless `enabled = false`, and only to
/// callers that pass HTTP basic auth and/or come from `allow_from` (at least
/// one of the two must be configured). The join window of each meeting is its
/// integration's `meeting_buffer_before` / `meeting_buffer_after` (minutes,
/// 0–180, Pexip's defaults 30/60) around the occurrence.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Serve the policy API (true once `[policy]` is written).
    #[serde(default = "policy_enabled_when_written")]
    pub enabled: bool,
    /// User name Infinity sends with HTTP basic auth (no `:`).
    pub basic_auth_user: Option<String>,
    /// Its password: inline, `basic_auth_password_env`,
    /// `basic_auth_password_file`, or only its SHA-256 in
    /// `basic_auth_password_sha256` (64 hex digits, `printf %s "$PW" | sha256sum`).
    pub basic_auth_password: Option<Secret>,
    /// Environment variable holding the password.
    pub basic_auth_password_env: Option<String>,
    /// File holding the password (trailing newlines trimmed).
    pub basic_auth_password_file: Option<PathBuf>,
    /// The password's SHA-256 (hex) instead of the password.
    pub basic_auth_password_sha256: Option<String>,
    /// Source addresses allowed to ask (`10.0.0.0/8`, `192.0.2.7`, `::1/128`).
    /// Empty: any address (basic auth must then be configured).
    pub allow_from: Vec<IpNetwork>,
    /// What to answer for an alias this service never issued: `continue`
    /// (Infinity's own configuration decides, the default) or `reject`.
    pub unknown_alias: UnknownAliasAction,
    /// Host PIN of every scheduled VMR (4–20 digits); absent: none.
    pub pin: Option<Secret>,
    /// Guest PIN (4–20 digits, differs from `pin`; needs `pin` and `allow_guests`).
    pub guest_pin: Option<Secret>,
    /// Whether the VMRs have guests (Infinity's default false: everyone is a host).
    pub allow_guests: Option<bool>,
    /// `[policy.integration.<id>]`: `pin`, `guest_pin`, `allow_guests` for one
    /// integration's VMRs, instead of the ones above.
    pub integration: BTreeMap<String, PolicyServiceConfig>,
}

fn policy_enabled_when_written() -> bool {
    true
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            enabled: false,
            basic_auth_user: None,
            basic_auth_password: None,
            basic_auth_password_env: None,
            basic_auth_password_file: None,
            basic_auth_password_sha256: None,
            allow_from: Vec::new(),
            unknown_alias: UnknownAliasAction::Continue,
            pin: None,
            guest_pin: None,
            allow_guests: None,
            integration: BTreeMap::new(),
        }
    }
}

/// `policy.unknown_alias`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnknownAliasAction {
    /// `{"action":"continue"}`: Infinity looks in its own configuration.
    #[default]
    Continue,
    /// `{"action":"reject"}`: the call is refused.
    Reject,
}

/// `[policy.integration.<id>]`: service settings of one integration's VMRs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyServiceConfig {
    /// Host PIN (4–20 digits).
    pub pin: Option<Secret>,
    /// Guest PIN (4–20 digits).
    pub guest_pin: Option<Secret>,
    /// Whether the VMRs have guests.
    pub allow_guests: Option<bool>,
}

/// An address block of `policy.allow_from`: an IP address and a prefix
/// length (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct IpNetwork {
    network: std::net::IpAddr,
    prefix: u8,
}

impl TryFrom<String> for IpNetwork {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl std::str::FromStr for IpNetwork {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{text:?} is not an address or CIDR block ({why})");
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: std::net::IpAddr = addr.trim().parse().map_err(|_| bad("bad address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(bad(&format!("the prefix length must be 0 to {max}"))),
            },
        };
        Ok(IpNetwork { network, prefix })
    }
}

impl IpNetwork {
    /// Whether `addr` lies in this block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, addr: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        let keep = |bits: u32, total: u32| -> u128 {
            if bits == 0 {
                0
            } else {
                (u128::MAX << (total - bits)) & (u128::MAX >> (128 - total))
            }
        };
        match (self.network, addr) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = keep(u32::from(self.prefix), 32);
                (u128::from(u32::from(n)) & mask) == (u128::from(u32::from(a)) & mask)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = keep(u32::from(self.prefix), 128);
                (u128::from(n) & mask) == (u128::from(a) & mask)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The service settings a scheduled VMR of one integration gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyServiceOptions {
    /// Host PIN.
    pub pin: Option<Secret>,
    /// Guest PIN.
    pub guest_pin: Option<Secret>,
    /// `allow_guests` as configured (absent: not sent).
    pub allow_guests: Option<bool>,
}

impl PolicyConfig {
    /// Reads `basic_auth_password_env` / `_file` into `basic_auth_password`
    /// (part of [`Config::load`]).
    pub fn resolve_secrets(&mut self, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        self.basic_auth_password = resolve_secret(
            "policy",
            "basic_auth_password",
            self.basic_auth_password.take(),
            self.basic_auth_password_env.take(),
            self.basic_auth_password_file.take(),
            env,
        )?;
        Ok(())
    }

    /// `pin`, `guest_pin` and `allow_guests` for the VMRs of `integration`:
    /// its `[policy.integration.<id>]` when written, else the `[policy]` ones.
    pub fn service_options(&self, integration: &str) -> PolicyServiceOptions {
        match self.integration.get(integration) {
            Some(s) => PolicyServiceOptions {
                pin: s.pin.clone(),
                guest_pin: s.guest_pin.clone(),
                allow_guests: s.allow_guests,
            },
            None => PolicyServiceOptions {
                pin: self.pin.clone(),
                guest_pin: self.guest_pin.clone(),
                allow_guests: self.allow_guests,
            },
        }
    }

    /// Whether basic auth is configured (user and a password or its hash).
    pub fn has_basic_auth(&self) -> bool {
        self.basic_auth_user.is_some()
            && (self.basic_auth_password.is_some() || self.basic_auth_password_sha256.is_some())
    }

    /// Checks `[policy]` against the configured integrations; errors name the key.
    pub fn validate(&self, integrations: &[IntegrationConfig]) -> Result<(), ConfigError> {
        let given_ways = [
            self.basic_auth_password.is_some(),
            self.basic_auth_password_env.is_some(),
            self.basic_auth_password_file.is_some(),
            self.basic_auth_password_sha256.is_some(),
        ]
        .into_iter()
        .filter(|given| *given)
        .count();
        if given_ways > 1 {
            return Err(ConfigError::key(
                "policy.basic_auth_password",
                "give the password in one way only (basic_auth_password, _env, _file or _sha256)",
            ));
        }
        let has_password = given_ways == 1;
        match &self.basic_auth_user {
            Some(user)
                if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) =>
            {
                return Err(ConfigError::key(
                    "policy.basic_auth_user",
                    "must be a non-empty name without `:` or control characters",
                ));
            }
            Some(_) if !has_password => {
                return Err(ConfigError::key(
                    "policy.basic_auth_password",
                    "basic_auth_user needs a password (basic_auth_password, _env, _file or _sha256)",
                ));
            }
            None if has_password => {
                return Err(ConfigError::key(
                    "policy.basic_auth_user",
                    "a basic auth password is configured without its user",
                ));
            }
            _ => {}
        }
        if let Some(hash) = &self.basic_auth_password_sha256 {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::key(
                    "policy.basic_auth_password_sha256",
                    "must be the password's SHA-256 in 64 hex digits (printf %s \"$PW\" | sha256sum)",
                ));
            }
        }
        if self
            .basic_auth_password
            .as_ref()
            .is_some_and(|p| p.expose().is_empty())
        {
            return Err(ConfigError::key(
                "policy.basic_auth_password",
                "must not be empty",
            ));
        }
        if self.enabled && self.basic_auth_user.is_none() && self.allow_from.is_empty() {
            return Err(ConfigError::key(
                "policy",
                "the policy server needs basic_auth_user + a password, allow_from, or both \
                 (Infinity's calls would otherwise be answered to anyone)",
            ));
        }
        let check_pins =
            |at: &str, pin: Option<&Secret>, guest: Option<&Secret>, guests: Option<bool>| {
                for (name, value) in [("pin", pin), ("guest_pin", guest)] {
                    if let Some(v) = value {
                        let v = v.expose();
                        if !(4..=20).contains(&v.len()) || !v.bytes().all(|b| b.is_ascii_digit()) {
                            return Err(ConfigError::key(
                                format!("{at}.{name}"),
                                "must be 4 to 20 digits",
                            ));
                        }
                    }
                }
                if let Some(g) = guest {
                    match pin {
                        None => {
                            return Err(ConfigError::key(
                                format!("{at}.guest_pin"),
                                "a guest PIN needs a host PIN (pin)",
                            ))
                        }
                        Some(p) if p.expose() == g.expose() => return Err(ConfigError::key(
                            format!("{at}.guest_pin"),
                            "must differ from pin (Infinity tells hosts and guests apart by PIN)",
                        )),
                        Some(_) => {}
                    }
                    if guests != Some(true) {
                        return Err(ConfigError::key(
                            format!("{at}.guest_pin"),
                            "a guest PIN needs allow_guests = true",
                        ));
                    }
                }
                Ok(())
            };
        check_pins(
            "policy",
            self.pin.as_ref(),
            self.guest_pin.as_ref(),
            self.allow_guests,
        )?;
        for (id, s) in &self.integration {
            let at = format!("policy.integration.{id}");
            if !integrations.iter().any(|i| &i.id == id) {
                return Err(ConfigError::key(
                    at,
                    format!("no [[integration]] has id {id:?}"),
                ));
            }
            check_pins(&at, s.pin.as_ref(), s.guest_pin.as_ref(), s.allow_guests)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod policy_config_tests {
    use super::{Config, ConfigError, IpNetwork, UnknownAliasAction};
    use std::collections::BTreeMap;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_table_with_env(toml.parse().expect("toml"), &env)
    }

    fn err(toml: &str) -> String {
        load(toml, &[]).expect_err("refused").to_string()
    }

    #[test]
    fn admin_oidc_is_checked_and_its_secret_resolved() {
        let base =
            "[admin.oidc]\nissuer = \"https://login.example.com/t/v2.0\"\nclient_id = \"app\"\n";
        let ok = load(
            &format!(
                "{base}client_secret_env = \"OIDC\"\nallowed_users = [\"Alice@Example.com\"]\n"
            ),
            &[("OIDC", "s3cret")],
        )
        .expect("valid");
        let oidc = ok.admin.oidc.expect("oidc");
        assert_eq!(
            oidc.client_secret.as_ref().map(|s| s.expose().to_owned()),
            Some("s3cret".to_owned())
        );
        assert!(oidc.allows("alice@example.com", &[]));
        assert!(!oidc.allows("bob@example.com", &["g1".into()]));
        for (text, key) in [
            (format!("{base}allowed_users = [\"a@b\"]\n"), "admin.oidc.client_secret"),
            (format!("{base}client_secret = \"x\"\n"), "admin.oidc.allowed_users"),
            (format!("{base}client_secret = \"x\"\nallowed_groups = [\"\"]\n"), "admin.oidc.allowed_groups[0]"),
            (format!("{base}client_secret = \"x\"\nclient_secret_env = \"X\"\nallowed_users = [\"a@b\"]\n"), "admin.oidc.client_secret"),
            ("[admin.oidc]\nissuer = \"http://login.example.com/t\"\nclient_id = \"app\"\nclient_secret = \"x\"\nallowed_users = [\"a@b\"]\n".to_owned(), "admin.oidc.issuer"),
            ("[admin.oidc]\nissuer = \"https://login.example.com/t\"\nclient_secret = \"x\"\nallowed_users = [\"a@b\"]\n".to_owned(), "admin.oidc.client_id"),
            (format!("{base}client_secret = \"x\"\nallowed_users = [\"a@b\"]\nsurprise = 1\n"), "surprise"),
        ] {
            let e = err(&text);
            assert!(e.contains(key), "{text:?} gave {e:?}, expected {key}");
            assert!(!e.contains("s3cret"));
        }
        let groups = load(
            &format!("{base}client_secret = \"x\"\nallowed_groups = [\"g1\"]\n"),
            &[],
        )
        .expect("groups alone are enough");
        assert!(groups
            .admin
            .oidc
            .expect("oidc")
            .allows("anyone@example.com", &["g1".into()]));
    }

    #[test]
    fn absent_means_off_and_written_means_on() {
        let c = load("", &[]).expect("empty config");
        assert!(!c.policy.enabled);
        let c = load("[policy]\nallow_from = [\"127.0.0.1\"]\n", &[]).expect("loads");
        assert!(c.policy.enabled);
        assert_eq!(c.policy.unknown_alias, UnknownAliasAction::Continue);
        let c = load("[policy]\nenabled = false\n", &[]).expect("off needs no auth");
        assert!(!c.policy.enabled);
    }

    #[test]
    fn the_password_comes_inline_from_env_file_or_as_a_hash() {
        let c = load(
            "[policy]\nbasic_auth_user = \"infinity\"\nbasic_auth_password_env = \"PW\"\n",
            &[("PW", "s3cret")],
        )
        .expect("env");
        assert_eq!(c.policy.basic_auth_password.expect("pw").expose(), "s3cret");
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").expect("write");
        let c = load(
            &format!(
                "[policy]\nbasic_auth_user = \"infinity\"\nbasic_auth_password_file = {:?}\n",
                file.display().to_string()
            ),
            &[],
        )
        .expect("file");
        assert_eq!(
            c.policy.basic_auth_password.expect("pw").expose(),
            "from-file"
        );
        let hash = "a".repeat(64);
        let c = load(
            &format!(
                "[policy]\nbasic_auth_user = \"i\"\nbasic_auth_password_sha256 = \"{hash}\"\n"
            ),
            &[],
        )
        .expect("hash");
        assert!(c.policy.has_basic_auth());
        let e = load(
            "[policy]\nbasic_auth_user = \"infinity\"\nbasic_auth_password_env = \"NOPE\"\n",
            &[],
        )
        .expect_err("unset variable")
        .to_string();
        assert!(e.contains("policy.basic_auth_password_env"), "{e}");
        let e = err(&format!(
            "[policy]\nbasic_auth_user = \"i\"\nbasic_auth_password = \"x\"\nbasic_auth_password_sha256 = \"{hash}\"\n"
        ));
        assert!(e.contains("policy.basic_auth_password"), "{e}");
        let e = err("[policy]\nbasic_auth_user = \"i\"\nbasic_auth_password_sha256 = \"abc\"\n");
        assert!(e.contains("policy.basic_auth_password_sha256"), "{e}");
    }

    #[test]
    fn refusals_name_their_key() {
        assert!(err("[policy]\n").contains("`policy`"));
        assert!(err("[policy]\nbasic_auth_user = \"infinity\"\n")
            .contains("policy.basic_auth_password"));
        assert!(
            err("[policy]\nbasic_auth_password = \"pw\"\nallow_from = [\"::1\"]\n")
                .contains("policy.basic_auth_user")
        );
        assert!(
            err("[policy]\nbasic_auth_user = \"a:b\"\nbasic_auth_password = \"pw\"\n")
                .contains("policy.basic_auth_user")
        );
        let e = err("[policy]\nallow_from = [\"10.0.0.0/33\"]\n");
        assert!(
            e.contains("policy.allow_from[0]") && e.contains("0 to 32"),
            "{e}"
        );
        assert!(err("[policy]\nallow_from = [\"nonsense\"]\n").contains("policy.allow_from[0]"));
        assert!(
            err("[policy]\nallow_from = [\"::1\"]\nunknown_alias = \"maybe\"\n")
                .contains("policy.unknown_alias")
        );
        assert!(err("[policy]\nallow_from = [\"::1\"]\nbuffer = 3\n").contains("policy"));
        let base = "[policy]\nallow_from = [\"::1\"]\n";
        assert!(err(&format!("{base}pin = \"12\"\n")).contains("policy.pin"));
        assert!(err(&format!("{base}pin = \"12ab\"\n")).contains("policy.pin"));
        assert!(err(&format!(
            "{base}guest_pin = \"1234\"\nallow_guests = true\n"
        ))
        .contains("policy.guest_pin"));
        assert!(err(&format!(
            "{base}pin = \"1234\"\nguest_pin = \"1234\"\nallow_guests = true\n"
        ))
        .contains("policy.guest_pin"));
        assert!(
            err(&format!("{base}pin = \"1234\"\nguest_pin = \"5678\"\n")).contains("allow_guests")
        );
        assert!(err(&format!(
            "{base}[policy.integration.nope]\npin = \"1234\"\n"
        ))
        .contains("policy.integration.nope"));
        assert!(err(&format!(
            "{base}[policy.integration.default]\npin = \"1\"\n"
        ))
        .contains("policy.integration.default.pin"));
    }

    #[test]
    fn service_options_per_integration_or_global() {
        let c = load(
            "[policy]\nallow_from = [\"::1\"]\npin = \"1234\"\nunknown_alias = \"reject\"\n\
             [[integration]]\nid = \"a\"\nresource_email = \"a@example.com\"\n\
             [[integration]]\nid = \"b\"\nresource_email = \"b@example.com\"\n\
             [policy.integration.b]\npin = \"4321\"\nguest_pin = \"9999\"\nallow_guests = true\n",
            &[],
        )
        .expect("loads");
        assert_eq!(c.policy.unknown_alias, UnknownAliasAction::Reject);
        let a = c.policy.service_options("a");
        assert_eq!(a.pin.expect("pin").expose(), "1234");
        assert_eq!(a.allow_guests, None);
        let b = c.policy.service_options("b");
        assert_eq!(b.pin.expect("pin").expose(), "4321");
        assert_eq!(b.guest_pin.expect("guest").expose(), "9999");
        assert_eq!(b.allow_guests, Some(true));
        assert!(!format!("{:?}", c.policy).contains("4321"));
    }

    #[test]
    fn environment_overrides_keep_pins_as_text() {
        let c = Config::load(
            None,
            [
                (
                    "VMR__POLICY__ALLOW_FROM".to_string(),
                    "[\"10.0.0.0/8\"]".to_string(),
                ),
                ("VMR__POLICY__PIN".to_string(), "0042".to_string()),
            ],
        )
        .expect("env config");
        assert!(c.policy.enabled);
        assert_eq!(c.policy.pin.expect("pin").expose(), "0042");
        assert_eq!(c.policy.allow_from.len(), 1);
    }

    #[test]
    fn networks_contain_their_addresses() {
        let net = |s: &str| s.parse::<IpNetwork>().expect(s);
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect(s);
        assert!(net("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("192.0.2.7").contains(ip("192.0.2.7")));
        assert!(!net("192.0.2.7").contains(ip("192.0.2.8")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(net("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:1::5")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::5")));
        assert!(!net("::1").contains(ip("127.0.0.1")));
        assert_eq!(net("10.1.0.0/16").to_string(), "10.1.0.0/16");
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
    /// Infinity theme of the VMRs (Pexip's `ivr_theme`, by name).
    pub ivr_theme: Option<String>,
    /// Identity provider group participants must authenticate with (by name); absent: none.
    pub host_identity_provider_group: Option<String>,
    /// With an IdP group: `disallow_all` (default) or `allow_if_trusted`.
    pub non_idp_participants: NonIdpParticipants,
    /// `[integration.exchange]`: the mailbox connection. Absent: this
    /// integration processes no mailbox (the pane still works). Filled in by
    /// [`Config::load`] from the TOML table (secrets resolved, files
    /// checked), hence not deserialised directly.
    #[serde(skip)]
    pub exchange: Option<ExchangeConfig>,
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
            ivr_theme: None,
            host_identity_provider_group: None,
            non_idp_participants: NonIdpParticipants::DisallowAll,
            exchange: None,
        }
    }
}

/// Pexip's `non_idp_participants`: who may join without the IdP when one is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonIdpParticipants {
    /// Devices other than Pexip's apps wait in the waiting room.
    #[default]
    DisallowAll,
    /// Locally registered devices may join.
    AllowIfTrusted,
}

impl NonIdpParticipants {
    /// The value Infinity uses.
    pub fn as_str(self) -> &'static str {
        match self {
            NonIdpParticipants::DisallowAll => "disallow_all",
            NonIdpParticipants::AllowIfTrusted => "allow_if_trusted",
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

// ---------------------------------------------------------------------------
// `[integration.exchange]`: the connection to the mailbox the integration
// processes. The TOML table is read into the private `ExchangeToml` /
// `ExchangeAuthToml` forms, whose secrets may come inline, from an
// environment variable or from a file; `resolve` turns them into the public
// [`ExchangeConfig`] with every secret read, so the server never sees where
// a secret came from.

/// Every `RequestServerVersion` value EWS accepts: the `ExchangeVersionType`
/// enumeration of the vendored `schemas/ews/types.xsd`, in the schema's order
/// (oldest first).
pub const EWS_SERVER_VERSIONS: [&str; 16] = [
    "Exchange2007",
    "Exchange2007_SP1",
    "Exchange2009",
    "Exchange2010",
    "Exchange2010_SP1",
    "Exchange2010_SP2",
    "Exchange2012",
    "Exchange2013",
    "Exchange2013_SP1",
    "Exchange2015",
    "Exchange2016",
    "V2015_10_05",
    "V2016_01_06",
    "V2016_04_13",
    "V2016_07_13",
    "V2016_10_10",
];

/// `RequestServerVersion` sent when the config names none: understood by
/// Exchange 2013 SP1 and later, 2016, 2019, SE and Exchange Online.
pub const DEFAULT_EWS_SERVER_VERSION: &str = "Exchange2013_SP1";

/// The oldest version with streaming notifications (`GetStreamingEvents`).
pub const MIN_STREAMING_SERVER_VERSION: &str = "Exchange2010_SP1";

/// The oldest version that accepts the `ExchangeImpersonation` header.
pub const MIN_IMPERSONATION_SERVER_VERSION: &str = "Exchange2007_SP1";

/// OAuth2 scope of app-only EWS tokens (Exchange Online's `.default`).
pub const DEFAULT_OAUTH_SCOPE: &str = "https://outlook.office365.com/.default";

/// Entra ID's v2.0 token endpoint of `tenant` (a tenant id or verified domain).
pub fn entra_token_url(tenant: &str) -> String {
    format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token")
}

/// `[integration.exchange]`: how the service reaches the mailbox it processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeConfig {
    /// The protocol (`backend`, only `"ews"` for now).
    pub backend: ExchangeBackend,
    /// EWS endpoint, usually `https://<server or load balancer>/EWS/Exchange.asmx`.
    /// https unless `allow_insecure_http`; no user info, query or fragment.
    pub ews_url: String,
    /// `RequestServerVersion` (one of [`EWS_SERVER_VERSIONS`]; default
    /// [`DEFAULT_EWS_SERVER_VERSION`]); at least
    /// [`MIN_STREAMING_SERVER_VERSION`] with streaming on.
    pub server_version: String,
    /// The SMTP address of the mailbox to watch; `None`: the integration's
    /// `resource_email` (see [`IntegrationConfig::watched_mailbox`]).
    pub mailbox: Option<String>,
    /// How the service account reaches that mailbox.
    pub access: MailboxAccess,
    /// `[integration.exchange.auth]`: the service account's credentials.
    pub auth: ExchangeAuth,
    /// Seconds between polls when streaming is off or failing (5–3600, default 60).
    pub poll_interval_secs: u64,
    /// Seconds between full re-syncs, the safety net behind notifications
    /// (60–86400, default 3600).
    pub resync_interval_secs: u64,
    /// Use streaming notifications (default true).
    pub streaming: bool,
    /// `GetStreamingEvents` `ConnectionTimeout` in minutes (1–30, default 30).
    pub streaming_timeout_minutes: u32,
    /// Concurrent EWS requests per mailbox (1–27, default 4; 27 is
    /// Exchange's default `EWSMaxConcurrency`).
    pub max_concurrency: u32,
    /// Seconds one EWS request may take (5–600, default 100).
    pub request_timeout_secs: u64,
    /// `SyncFolderItems` `MaxChangesReturned` (1–512, default 100).
    pub sync_batch_size: u32,
    /// Days ahead for which a series' occurrences are materialised
    /// (1–1080, default 400).
    pub horizon_days: u32,
    /// Allow `http://` for `ews_url` and `auth.token_url` (tests and demos only).
    pub allow_insecure_http: bool,
    /// Extra CA certificate(s), PEM, trusted for the EWS server and token
    /// endpoint; checked at load (exists, holds a certificate).
    pub ca_file: Option<PathBuf>,
    /// Accept any TLS certificate from the EWS server (the demo's simulator
    /// only); a warning is logged at load.
    pub danger_accept_invalid_certs: bool,
}

/// `backend`: the protocol spoken with the mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExchangeBackend {
    /// Exchange Web Services (SOAP): on-premises Exchange and, until its
    /// retirement, Exchange Online.
    #[default]
    Ews,
}

/// `access`: how the service account acts on the watched mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailboxAccess {
    /// `"impersonation"` (default): every request carries the
    /// `ExchangeImpersonation` header and `X-AnchorMailbox` with the mailbox
    /// (ApplicationImpersonation on-premises; required for app-only OAuth2).
    #[default]
    Impersonation,
    /// `"delegate"`: the service account has full access to the mailbox;
    /// every `DistinguishedFolderId` names the mailbox.
    Delegate,
}

/// `[integration.exchange.auth]`: how requests to Exchange authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeAuth {
    /// `method = "basic"`: `Authorization: Basic` (on-premises EWS virtual
    /// directories that allow it).
    Basic {
        /// The service account (`user@domain` or `DOMAIN\user`).
        username: String,
        /// From `password`, `password_env` or `password_file`.
        password: Secret,
    },
    /// `method = "ntlm"`: NTLMv2 on the connection, with channel binding to the
    /// server's TLS certificate (Extended Protection, on from Exchange 2019 CU14).
    Ntlm {
        /// `DOMAIN\user` or `user@domain` (a UPN).
        username: String,
        /// From `password`, `password_env` or `password_file`.
        password: Secret,
    },
    /// `method = "oauth2"`: app-only OAuth2, client-credentials grant.
    OAuth2 {
        /// Entra ID tenant (id or domain); sets the default `token_url`.
        tenant: Option<String>,
        /// Token endpoint (default [`entra_token_url`] of `tenant`).
        token_url: String,
        /// The app registration's (client) id.
        client_id: String,
        /// Requested scope (default [`DEFAULT_OAUTH_SCOPE`]).
        scope: String,
        /// Client secret or certificate.
        credential: OAuthCredential,
    },
}

impl ExchangeAuth {
    /// The `method` value this came from (`"basic"`, `"ntlm"`, `"oauth2"`).
    pub fn method(&self) -> &'static str {
        match self {
            ExchangeAuth::Basic { .. } => "basic",
            ExchangeAuth::Ntlm { .. } => "ntlm",
            ExchangeAuth::OAuth2 { .. } => "oauth2",
        }
    }
}

/// How an OAuth2 client proves its identity to the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuthCredential {
    /// From `client_secret`, `client_secret_env` or `client_secret_file`.
    Secret(Secret),
    /// A certificate registered with the app, and its RSA private key; the
    /// client signs a `client_assertion` (RS256) with the key.
    Certificate {
        /// PEM certificate (`-----BEGIN CERTIFICATE-----`).
        certificate: PathBuf,
        /// PEM private key, unencrypted: PKCS#8 (`BEGIN PRIVATE KEY`) or
        /// PKCS#1 (`BEGIN RSA PRIVATE KEY`).
        private_key: PathBuf,
    },
}

impl ExchangeConfig {
    /// A connection to `ews_url` with `auth` and every other key at its default.
    pub fn new(ews_url: impl Into<String>, auth: ExchangeAuth) -> Self {
        ExchangeConfig {
            backend: ExchangeBackend::Ews,
            ews_url: ews_url.into(),
            server_version: DEFAULT_EWS_SERVER_VERSION.into(),
            mailbox: None,
            access: MailboxAccess::Impersonation,
            auth,
            poll_interval_secs: 60,
            resync_interval_secs: 3600,
            streaming: true,
            streaming_timeout_minutes: 30,
            max_concurrency: 4,
            request_timeout_secs: 100,
            sync_batch_size: 100,
            horizon_days: 400,
            allow_insecure_http: false,
            ca_file: None,
            danger_accept_invalid_certs: false,
        }
    }

    /// `poll_interval_secs` as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_interval_secs)
    }

    /// `resync_interval_secs` as a duration.
    pub fn resync_interval(&self) -> Duration {
        Duration::from_secs(self.resync_interval_secs)
    }

    /// `request_timeout_secs` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// `streaming_timeout_minutes` as a duration.
    pub fn streaming_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.streaming_timeout_minutes) * 60)
    }

    /// Ranges and cross-field rules; `at` is `integration[i].exchange`.
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{at}.{k}");
        check_service_url(&key("ews_url"), &self.ews_url, self.allow_insecure_http)?;
        let Some(version) = EWS_SERVER_VERSIONS
            .iter()
            .position(|v| *v == self.server_version)
        else {
            return Err(ConfigError::key(
                key("server_version"),
                format!(
                    "must be one of EWS's ExchangeVersionType values ({}), found {:?}",
                    EWS_SERVER_VERSIONS.join(", "),
                    self.server_version
                ),
            ));
        };
        let position = |name: &str| EWS_SERVER_VERSIONS.iter().position(|v| *v == name);
        if self.streaming && Some(version) < position(MIN_STREAMING_SERVER_VERSION) {
            return Err(ConfigError::key(
                key("server_version"),
                format!(
                    "{} has no streaming notifications (GetStreamingEvents needs at least \
                     {MIN_STREAMING_SERVER_VERSION}): choose {MIN_STREAMING_SERVER_VERSION} or \
                     later, or set streaming = false to poll",
                    self.server_version
                ),
            ));
        }
        if self.access == MailboxAccess::Impersonation
            && Some(version) < position(MIN_IMPERSONATION_SERVER_VERSION)
        {
            return Err(ConfigError::key(
                key("server_version"),
                format!(
                    "{} has no ExchangeImpersonation header (it needs at least \
                     {MIN_IMPERSONATION_SERVER_VERSION}): choose a later version or \
                     access = \"delegate\"",
                    self.server_version
                ),
            ));
        }
        if let Some(mailbox) = &self.mailbox {
            check_smtp_address(&key("mailbox"), mailbox)?;
        }
        for (name, value, min, max, unit) in [
            (
                "poll_interval_secs",
                self.poll_interval_secs,
                5,
                3600,
                "seconds",
            ),
            (
                "resync_interval_secs",
                self.resync_interval_secs,
                60,
                86_400,
                "seconds",
            ),
            (
                "streaming_timeout_minutes",
                u64::from(self.streaming_timeout_minutes),
                1,
                30,
                "minutes (EWS's ConnectionTimeout range)",
            ),
            (
                "max_concurrency",
                u64::from(self.max_concurrency),
                1,
                27,
                "requests (27 is Exchange's default EWSMaxConcurrency)",
            ),
            (
                "request_timeout_secs",
                self.request_timeout_secs,
                5,
                600,
                "seconds",
            ),
            (
                "sync_batch_size",
                u64::from(self.sync_batch_size),
                1,
                512,
                "changes (SyncFolderItems' MaxChangesReturned range)",
            ),
            (
                "horizon_days",
                u64::from(self.horizon_days),
                1,
                1080,
                "days",
            ),
        ] {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::key(
                    key(name),
                    format!("must be {min} to {max} {unit}, found {value}"),
                ));
            }
        }
        self.validate_auth(at)
    }

    fn validate_auth(&self, at: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{at}.auth.{k}");
        match &self.auth {
            ExchangeAuth::Basic { username, password } => {
                if username.is_empty() || username.chars().any(|c| c.is_control() || c == ':') {
                    return Err(ConfigError::key(
                        key("username"),
                        format!(
                            "must be a non-empty user name without ':' or control characters \
                             (Basic authentication cannot carry them), found {username:?}"
                        ),
                    ));
                }
                if password.expose().is_empty() {
                    return Err(ConfigError::key(key("password"), "must not be empty"));
                }
            }
            ExchangeAuth::Ntlm { username, password } => {
                let (domain, user) = username.split_once('\\').unwrap_or(("", username));
                if user.is_empty()
                    || username.chars().any(|c| c.is_control())
                    || user.contains('\\')
                    || (username.contains('\\') && domain.is_empty())
                {
                    return Err(ConfigError::key(
                        key("username"),
                        format!(
                            "must be DOMAIN\\user or user@domain (no control characters), \
                             found {username:?}"
                        ),
                    ));
                }
                if password.expose().is_empty() {
                    return Err(ConfigError::key(key("password"), "must not be empty"));
                }
                if !self.ews_url.starts_with("https://") {
                    return Err(ConfigError::key(
                        format!("{at}.ews_url"),
                        format!(
                            "method = \"ntlm\" needs an https:// EWS URL (the channel binding \
                             is to the server's TLS certificate), found {:?}",
                            self.ews_url
                        ),
                    ));
                }
            }
            ExchangeAuth::OAuth2 {
                tenant,
                token_url,
                client_id,
                scope,
                credential,
            } => {
                if self.access == MailboxAccess::Delegate {
                    return Err(ConfigError::key(
                        format!("{at}.access"),
                        "app-only OAuth2 tokens (client credentials) must impersonate the mailbox \
                         (ExchangeImpersonation and X-AnchorMailbox); set access = \"impersonation\"",
                    ));
                }
                if let Some(tenant) = tenant {
                    if tenant.is_empty()
                        || !tenant
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                    {
                        return Err(ConfigError::key(
                            key("tenant"),
                            format!(
                                "must be a tenant id (GUID) or domain (letters, digits, '-', '.'), \
                                 found {tenant:?}"
                            ),
                        ));
                    }
                }
                check_service_url(&key("token_url"), token_url, self.allow_insecure_http)?;
                if client_id.is_empty()
                    || client_id
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(ConfigError::key(
                        key("client_id"),
                        format!("must be the app registration's client id, found {client_id:?}"),
                    ));
                }
                if scope.trim().is_empty() || scope.chars().any(char::is_control) {
                    return Err(ConfigError::key(
                        key("scope"),
                        format!("must be a non-empty scope, found {scope:?}"),
                    ));
                }
                if let OAuthCredential::Secret(secret) = credential {
                    if secret.expose().is_empty() {
                        return Err(ConfigError::key(key("client_secret"), "must not be empty"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The files the connection needs (CA, client certificate and key) exist
    /// and hold what they should.
    fn check_files(&self, at: &str) -> Result<(), ConfigError> {
        if let Some(path) = &self.ca_file {
            check_pem_certificates(&format!("{at}.ca_file"), path)?;
        }
        if let ExchangeAuth::OAuth2 {
            credential:
                OAuthCredential::Certificate {
                    certificate,
                    private_key,
                },
            ..
        } = &self.auth
        {
            check_pem_certificates(&format!("{at}.auth.certificate"), certificate)?;
            check_pem_private_key(&format!("{at}.auth.private_key"), private_key)?;
        }
        Ok(())
    }

    /// Logs the settings that weaken transport security.
    fn warn_about_risks(&self, at: &str) {
        if self.danger_accept_invalid_certs {
            tracing::warn!(
                key = %format!("{at}.danger_accept_invalid_certs"),
                ews_url = %self.ews_url,
                "TLS CERTIFICATE CHECKS ARE OFF for this mailbox connection: anyone between this \
                 server and Exchange can read the mailbox credentials and the meetings. Use this \
                 only with the demo's simulator; trust a private CA with ca_file instead"
            );
        }
        if self.allow_insecure_http && self.ews_url.starts_with("http://") {
            tracing::warn!(
                key = %format!("{at}.ews_url"),
                ews_url = %self.ews_url,
                "the mailbox connection uses plain http (allow_insecure_http = true): credentials \
                 and meetings cross the network unencrypted. Tests and demos only"
            );
        }
    }
}

impl IntegrationConfig {
    /// The mailbox this integration processes: `exchange.mailbox`, else
    /// `resource_email`; `None` without `[integration.exchange]`.
    pub fn watched_mailbox(&self) -> Option<&str> {
        let exchange = self.exchange.as_ref()?;
        Some(exchange.mailbox.as_deref().unwrap_or(&self.resource_email))
    }
}

/// `[infinity]`: push mode, for sites that keep their VMRs in Pexip Infinity's
/// own database instead of answering Infinity's policy requests. Management
/// (and `all`) then creates, updates and deletes each scheduled VMR with its
/// two generated aliases through the management API
/// (`<url>/api/admin/configuration/v1/conference/`), tagged
/// `VMR Scheduling for Exchange: <integration id>`. Absent: nothing is pushed.
/// Present: pushed unless `enabled = false`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfinityConfig {
    /// Push VMRs into Infinity (true once `[infinity]` is written).
    #[serde(default = "infinity_enabled_when_written")]
    pub enabled: bool,
    /// The management node, `https://host[:port]` (no path beyond `/`).
    pub url: Option<String>,
    /// The management API account (an administrator with configuration rights).
    pub username: Option<String>,
    /// Its password: inline, `password_env` or `password_file`; read at load.
    pub password: Option<Secret>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (trailing newlines trimmed).
    pub password_file: Option<PathBuf>,
    /// PEM certificate(s) to trust for the management node (a private CA or
    /// its self-signed certificate), beside the system roots.
    pub ca_file: Option<PathBuf>,
    /// Allow `http://` (tests only).
    pub allow_insecure_http: bool,
    /// Seconds one management API request may take (1–300).
    pub timeout_secs: u64,
    /// How often the queue is looked at, in milliseconds (50–60,000).
    pub poll_interval_ms: u64,
    /// First pause after Infinity could not be reached, in milliseconds
    /// (100–60,000); doubled after each further failure up to `retry_max_secs`.
    pub retry_initial_ms: u64,
    /// Longest pause between attempts while Infinity is unreachable, and the
    /// pause before a VMR Infinity refused (4xx) is tried again (1–3,600 s).
    pub retry_max_secs: u64,
    /// Minutes between reconcile passes (1–1,440); one also runs at start.
    pub reconcile_interval_minutes: u32,
    /// Ids of integrations this deployment had and removed from its config: each reconcile
    /// pass deletes the VMRs tagged with their origin (`VMR Scheduling for Exchange: <id>`),
    /// which nothing else would ever remove. Never a configured integration's id.
    pub retired_integrations: Vec<String>,
}

fn infinity_enabled_when_written() -> bool {
    true
}

impl Default for InfinityConfig {
    fn default() -> Self {
        InfinityConfig {
            enabled: false,
            url: None,
            username: None,
            password: None,
            password_env: None,
            password_file: None,
            ca_file: None,
            allow_insecure_http: false,
            timeout_secs: 10,
            poll_interval_ms: 1_000,
            retry_initial_ms: 1_000,
            retry_max_secs: 60,
            reconcile_interval_minutes: 15,
            retired_integrations: Vec::new(),
        }
    }
}

impl InfinityConfig {
    /// Reads `password_env` / `password_file` into `password` and checks
    /// `ca_file` (part of [`Config::load`]).
    pub fn resolve_files(&mut self, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        self.password = resolve_secret(
            "infinity",
            "password",
            self.password.take(),
            self.password_env.take(),
            self.password_file.take(),
            env,
        )?;
        if let Some(path) = &self.ca_file {
            check_pem_certificates("infinity.ca_file", path)?;
        }
        Ok(())
    }

    /// The VMR origin marker (`tag`, and the prefix Pexip shows as the VMR
    /// origin) of `integration`'s VMRs.
    pub fn origin_tag(integration: &str) -> String {
        format!("VMR Scheduling for Exchange: {integration}")
    }

    /// Range and presence checks when enabled; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let in_range = |key: &str, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::key(
                    format!("infinity.{key}"),
                    format!("must be between {min} and {max}, found {value}"),
                ))
            }
        };
        in_range("timeout_secs", self.timeout_secs, 1, 300)?;
        in_range("poll_interval_ms", self.poll_interval_ms, 50, 60_000)?;
        in_range("retry_initial_ms", self.retry_initial_ms, 100, 60_000)?;
        in_range("retry_max_secs", self.retry_max_secs, 1, 3_600)?;
        in_range(
            "reconcile_interval_minutes",
            u64::from(self.reconcile_interval_minutes),
            1,
            1_440,
        )?;
        if !self.enabled {
            return Ok(());
        }
        let Some(raw) = &self.url else {
            return Err(ConfigError::key(
                "infinity.url",
                "is required with [infinity]: the management node, e.g. https://infinity.example.com",
            ));
        };
        let shown = if raw.contains('@') {
            "a URL with '@' (not shown)".to_string()
        } else {
            format!("{raw:?}")
        };
        let url = url::Url::parse(raw)
            .map_err(|e| ConfigError::key("infinity.url", format!("{shown} is not a URL: {e}")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::key(
                "infinity.url",
                "must not carry user info; give infinity.username and infinity.password",
            ));
        }
        let scheme_ok =
            url.scheme() == "https" || (url.scheme() == "http" && self.allow_insecure_http);
        if !scheme_ok || url.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::key(
                "infinity.url",
                format!("must be an https URL (http only with allow_insecure_http = true), found {shown}"),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() || url.path() != "/" {
            return Err(ConfigError::key(
                "infinity.url",
                format!(
                    "must be the node's address without path, query or fragment, found {shown}"
                ),
            ));
        }
        match &self.username {
            Some(u) if !u.is_empty() && !u.contains(':') && !u.chars().any(char::is_control) => {}
            Some(_) => {
                return Err(ConfigError::key(
                    "infinity.username",
                    "must be a non-empty name without `:` or control characters",
                ))
            }
            None => {
                return Err(ConfigError::key(
                    "infinity.username",
                    "is required with [infinity]: the management API account",
                ))
            }
        }
        let given = [
            self.password.is_some(),
            self.password_env.is_some(),
            self.password_file.is_some(),
        ]
        .into_iter()
        .filter(|g| *g)
        .count();
        if given == 0 {
            return Err(ConfigError::key(
                "infinity.password",
                "is required with [infinity] (password, password_env or password_file)",
            ));
        }
        if self
            .password
            .as_ref()
            .is_some_and(|p| p.expose().is_empty())
        {
            return Err(ConfigError::key("infinity.password", "must not be empty"));
        }
        Ok(())
    }

    /// The management API's base URL without trailing slash (`url` validated).
    pub fn base_url(&self) -> String {
        self.url
            .as_deref()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned()
    }
}

/// `[lifetime]`: how long a scheduled VMR lives. It exists from acceptance
/// until its meeting's last window ends (end + the integration's
/// `meeting_buffer_after`), and is removed `grace_hours` later (Pexip's
/// scheduled-conference list keeps a day of past meetings); its alias is then
/// `deleted` and never issued again. Series without end never expire.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifetimeConfig {
    /// Hours a VMR is kept after its last window closed (0–720).
    pub grace_hours: u32,
    /// Seconds between sweeps for expired VMRs (10–86,400).
    pub sweep_interval_secs: u64,
}

impl Default for LifetimeConfig {
    fn default() -> Self {
        LifetimeConfig {
            grace_hours: 24,
            sweep_interval_secs: 300,
        }
    }
}

impl LifetimeConfig {
    /// The grace in milliseconds.
    pub fn grace_ms(&self) -> i64 {
        i64::from(self.grace_hours) * 3_600_000
    }

    /// Range checks; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.grace_hours > 720 {
            return Err(ConfigError::key(
                "lifetime.grace_hours",
                format!("must be between 0 and 720, found {}", self.grace_hours),
            ));
        }
        if !(10..=86_400).contains(&self.sweep_interval_secs) {
            return Err(ConfigError::key(
                "lifetime.sweep_interval_secs",
                format!(
                    "must be between 10 and 86400, found {}",
                    self.sweep_interval_secs
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod infinity_lifetime_config_tests {
    use super::{BTreeMap, Config, InfinityConfig};

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let tree: toml::Table = text.parse().map_err(|e| format!("{e}"))?;
        Config::from_table_with_env(tree, &env).map_err(|e| e.to_string())
    }

    const GOOD: &str = "[infinity]\nurl = \"https://infinity.example.com\"\nusername = \"admin\"\n";

    #[test]
    fn absent_means_no_push_and_a_day_of_grace() {
        let c = load("", &[]).expect("defaults");
        assert!(!c.infinity.enabled);
        assert_eq!(c.lifetime.grace_hours, 24);
        assert_eq!(c.lifetime.grace_ms(), 86_400_000);
        assert_eq!(c.lifetime.sweep_interval_secs, 300);
    }

    #[test]
    fn written_means_enabled_with_the_password_from_env_or_file() {
        let c = load(
            &format!("{GOOD}password_env = \"PX\"\n"),
            &[("PX", "s3cret")],
        )
        .expect("env");
        assert!(c.infinity.enabled);
        assert_eq!(
            c.infinity.password.as_ref().map(|p| p.expose()),
            Some("s3cret")
        );
        assert_eq!(c.infinity.base_url(), "https://infinity.example.com");
        assert_eq!(
            InfinityConfig::origin_tag("sales"),
            "VMR Scheduling for Exchange: sales"
        );
        let dir = std::env::temp_dir().join(format!("vmr-infinity-pw-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").expect("write");
        let c = load(
            &format!("{GOOD}password_file = {:?}\n", dir.display().to_string()),
            &[],
        )
        .expect("file");
        assert_eq!(
            c.infinity.password.as_ref().map(|p| p.expose()),
            Some("from-file")
        );
        let _ = std::fs::remove_file(&dir);
        let off = load("[infinity]\nenabled = false\n", &[]).expect("disabled needs nothing");
        assert!(!off.infinity.enabled);
    }

    #[test]
    fn every_problem_names_its_key() {
        let cases: &[(&str, &str)] = &[
            ("[infinity]\nusername = \"a\"\npassword = \"p\"\n", "infinity.url"),
            ("[infinity]\nurl = \"http://i.example.com\"\nusername = \"a\"\npassword = \"p\"\n", "infinity.url"),
            ("[infinity]\nurl = \"https://i.example.com/api\"\nusername = \"a\"\npassword = \"p\"\n", "infinity.url"),
            ("[infinity]\nurl = \"https://u:p@i.example.com\"\nusername = \"a\"\npassword = \"p\"\n", "infinity.url"),
            ("[infinity]\nurl = \"https://i.example.com\"\npassword = \"p\"\n", "infinity.username"),
            ("[infinity]\nurl = \"https://i.example.com\"\nusername = \"a:b\"\npassword = \"p\"\n", "infinity.username"),
            (GOOD, "infinity.password"),
            ("[infinity]\nurl = \"https://i.example.com\"\nusername = \"a\"\npassword = \"p\"\npassword_env = \"X\"\n", "infinity.password"),
            ("[infinity]\nurl = \"https://i.example.com\"\nusername = \"a\"\npassword_env = \"NOPE\"\n", "infinity.password_env"),
            ("[infinity]\nurl = \"https://i.example.com\"\nusername = \"a\"\npassword = \"p\"\nca_file = \"/nonexistent/ca.pem\"\n", "infinity.ca_file"),
            ("[infinity]\nenabled = false\ntimeout_secs = 0\n", "infinity.timeout_secs"),
            ("[infinity]\nenabled = false\nretry_max_secs = 0\n", "infinity.retry_max_secs"),
            ("[infinity]\nenabled = false\nreconcile_interval_minutes = 0\n", "infinity.reconcile_interval_minutes"),
            ("[infinity]\nenabled = false\nretired_integrations = [\"default\"]\n", "infinity.retired_integrations"),
            ("[infinity]\nenabled = false\nretired_integrations = [\" \"]\n", "infinity.retired_integrations"),
            ("[infinity]\nenabled = false\nretired_integrations = [\"old\", \"old\"]\n", "infinity.retired_integrations"),
            ("[infinity]\nenabled = false\nsurprise = 1\n", "surprise"),
            ("[lifetime]\ngrace_hours = 721\n", "lifetime.grace_hours"),
            ("[lifetime]\nsweep_interval_secs = 1\n", "lifetime.sweep_interval_secs"),
            ("[lifetime]\ngrace_days = 1\n", "grace_days"),
        ];
        for (text, key) in cases {
            let error = load(text, &[]).expect_err(text);
            assert!(
                error.contains(key),
                "{text:?} gave {error:?}, expected the key {key}"
            );
        }
        let http = load(
            "[infinity]\nurl = \"http://127.0.0.1:9\"\nallow_insecure_http = true\nusername = \"a\"\npassword = \"p\"\n",
            &[],
        )
        .expect("http allowed for tests");
        assert_eq!(http.infinity.base_url(), "http://127.0.0.1:9");
        let error = load(
            &format!("{GOOD}password = \"hunter2-secret\"\npassword_env = \"X\"\n"),
            &[],
        )
        .expect_err("two ways");
        assert!(
            !error.contains("hunter2"),
            "the secret is never shown: {error}"
        );
    }
}

/// Environment variables by name, for `*_env` secrets.
type EnvVars = BTreeMap<String, String>;

/// `[integration.exchange]` as written (every key optional, secrets by source).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ExchangeToml {
    backend: Option<String>,
    ews_url: Option<String>,
    server_version: Option<String>,
    mailbox: Option<String>,
    access: Option<MailboxAccess>,
    auth: Option<ExchangeAuthToml>,
    poll_interval_secs: Option<u64>,
    resync_interval_secs: Option<u64>,
    streaming: Option<bool>,
    streaming_timeout_minutes: Option<u32>,
    max_concurrency: Option<u32>,
    request_timeout_secs: Option<u64>,
    sync_batch_size: Option<u32>,
    horizon_days: Option<u32>,
    allow_insecure_http: Option<bool>,
    ca_file: Option<PathBuf>,
    danger_accept_invalid_certs: Option<bool>,
}

/// `method` as written, including the ones refused with an explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ExchangeAuthMethodToml {
    Basic,
    Oauth2,
    Ntlm,
    Kerberos,
}

/// `[integration.exchange.auth]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ExchangeAuthToml {
    method: Option<ExchangeAuthMethodToml>,
    username: Option<String>,
    password: Option<Secret>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    tenant: Option<String>,
    token_url: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    client_secret: Option<Secret>,
    client_secret_env: Option<String>,
    client_secret_file: Option<PathBuf>,
    certificate: Option<PathBuf>,
    private_key: Option<PathBuf>,
}

impl ExchangeToml {
    /// The connection with defaults filled in and secrets read; `at` is
    /// `integration[i].exchange`.
    fn resolve(self, at: &str, env: &EnvVars) -> Result<ExchangeConfig, ConfigError> {
        let key = |k: &str| format!("{at}.{k}");
        let backend = match self.backend.as_deref().unwrap_or("ews") {
            "ews" => ExchangeBackend::Ews,
            "graph" => {
                return Err(ConfigError::key(
                    key("backend"),
                    "\"graph\" (Microsoft Graph) is not supported yet; use \"ews\"",
                ))
            }
            other => {
                return Err(ConfigError::key(
                    key("backend"),
                    format!("must be \"ews\", found {other:?}"),
                ))
            }
        };
        let Some(ews_url) = self.ews_url else {
            return Err(ConfigError::key(
                key("ews_url"),
                "is required: the EWS endpoint, e.g. https://mail.example.com/EWS/Exchange.asmx",
            ));
        };
        let Some(auth) = self.auth else {
            return Err(ConfigError::key(
                key("auth"),
                "is required: an [integration.exchange.auth] table with method = \"ntlm\", \"basic\" or \"oauth2\"",
            ));
        };
        let auth = auth.resolve(&key("auth"), env)?;
        let d = ExchangeConfig::new(ews_url, auth);
        Ok(ExchangeConfig {
            backend,
            server_version: self.server_version.unwrap_or(d.server_version.clone()),
            mailbox: self.mailbox,
            access: self.access.unwrap_or(d.access),
            poll_interval_secs: self.poll_interval_secs.unwrap_or(d.poll_interval_secs),
            resync_interval_secs: self.resync_interval_secs.unwrap_or(d.resync_interval_secs),
            streaming: self.streaming.unwrap_or(d.streaming),
            streaming_timeout_minutes: self
                .streaming_timeout_minutes
                .unwrap_or(d.streaming_timeout_minutes),
            max_concurrency: self.max_concurrency.unwrap_or(d.max_concurrency),
            request_timeout_secs: self.request_timeout_secs.unwrap_or(d.request_timeout_secs),
            sync_batch_size: self.sync_batch_size.unwrap_or(d.sync_batch_size),
            horizon_days: self.horizon_days.unwrap_or(d.horizon_days),
            allow_insecure_http: self.allow_insecure_http.unwrap_or(d.allow_insecure_http),
            ca_file: self.ca_file,
            danger_accept_invalid_certs: self
                .danger_accept_invalid_certs
                .unwrap_or(d.danger_accept_invalid_certs),
            ..d
        })
    }
}

impl ExchangeAuthToml {
    /// The credentials of `method`, secrets read; `at` is `integration[i].exchange.auth`.
    fn resolve(self, at: &str, env: &EnvVars) -> Result<ExchangeAuth, ConfigError> {
        let key = |k: &str| format!("{at}.{k}");
        let Some(method) = self.method else {
            return Err(ConfigError::key(
                key("method"),
                "is required: \"ntlm\", \"basic\" or \"oauth2\"",
            ));
        };
        let basic_keys = [
            ("username", self.username.is_some()),
            ("password", self.password.is_some()),
            ("password_env", self.password_env.is_some()),
            ("password_file", self.password_file.is_some()),
        ];
        let oauth_keys = [
            ("tenant", self.tenant.is_some()),
            ("token_url", self.token_url.is_some()),
            ("client_id", self.client_id.is_some()),
            ("scope", self.scope.is_some()),
            ("client_secret", self.client_secret.is_some()),
            ("client_secret_env", self.client_secret_env.is_some()),
            ("client_secret_file", self.client_secret_file.is_some()),
            ("certificate", self.certificate.is_some()),
            ("private_key", self.private_key.is_some()),
        ];
        let refuse_others =
            |method: &str, others: &[(&str, bool)]| match others.iter().find(|(_, given)| *given) {
                Some((name, _)) => Err(ConfigError::key(
                    key(name),
                    format!("is not used with method = \"{method}\""),
                )),
                None => Ok(()),
            };
        match method {
            ExchangeAuthMethodToml::Kerberos => Err(ConfigError::key(
                key("method"),
                "\"kerberos\" is not supported yet; use \"ntlm\", \"basic\" or \"oauth2\"",
            )),
            ExchangeAuthMethodToml::Basic | ExchangeAuthMethodToml::Ntlm => {
                let name = if method == ExchangeAuthMethodToml::Ntlm {
                    "ntlm"
                } else {
                    "basic"
                };
                refuse_others(name, &oauth_keys)?;
                let Some(username) = self.username else {
                    return Err(ConfigError::key(
                        key("username"),
                        format!("method = \"{name}\" needs the service account's user name"),
                    ));
                };
                let password = resolve_secret(
                    at,
                    "password",
                    self.password,
                    self.password_env,
                    self.password_file,
                    env,
                )?
                .ok_or_else(|| {
                    ConfigError::key(
                        key("password"),
                        format!(
                            "method = \"{name}\" needs the password: give one of password, \
                             password_env (an environment variable) or password_file"
                        ),
                    )
                })?;
                Ok(if method == ExchangeAuthMethodToml::Ntlm {
                    ExchangeAuth::Ntlm { username, password }
                } else {
                    ExchangeAuth::Basic { username, password }
                })
            }
            ExchangeAuthMethodToml::Oauth2 => {
                refuse_others("oauth2", &basic_keys)?;
                let Some(client_id) = self.client_id else {
                    return Err(ConfigError::key(
                        key("client_id"),
                        "method = \"oauth2\" needs the app registration's client id",
                    ));
                };
                let token_url = match (self.token_url, &self.tenant) {
                    (Some(url), _) => url,
                    (None, Some(tenant)) => entra_token_url(tenant),
                    (None, None) => {
                        return Err(ConfigError::key(
                            key("token_url"),
                            "method = \"oauth2\" needs tenant (for Entra ID's token endpoint) \
                             or token_url",
                        ))
                    }
                };
                let secret = resolve_secret(
                    at,
                    "client_secret",
                    self.client_secret,
                    self.client_secret_env,
                    self.client_secret_file,
                    env,
                )?;
                let credential = match (secret, self.certificate, self.private_key) {
                    (Some(secret), None, None) => OAuthCredential::Secret(secret),
                    (None, Some(certificate), Some(private_key)) => OAuthCredential::Certificate {
                        certificate,
                        private_key,
                    },
                    (Some(_), _, _) => {
                        return Err(ConfigError::key(
                            key("certificate"),
                            "give either a client secret (client_secret, client_secret_env or \
                             client_secret_file) or certificate and private_key, not both",
                        ))
                    }
                    (None, Some(_), None) => {
                        return Err(ConfigError::key(
                            key("private_key"),
                            "certificate needs its private_key (PEM)",
                        ))
                    }
                    (None, None, Some(_)) => {
                        return Err(ConfigError::key(
                            key("certificate"),
                            "private_key needs its certificate (PEM)",
                        ))
                    }
                    (None, None, None) => {
                        return Err(ConfigError::key(
                            key("client_secret"),
                            "method = \"oauth2\" needs a credential: client_secret (or \
                             client_secret_env / client_secret_file), or certificate and private_key",
                        ))
                    }
                };
                Ok(ExchangeAuth::OAuth2 {
                    tenant: self.tenant,
                    token_url,
                    client_id,
                    scope: self.scope.unwrap_or_else(|| DEFAULT_OAUTH_SCOPE.into()),
                    credential,
                })
            }
        }
    }
}

/// A secret given in at most one of three ways: `<name>` inline,
/// `<name>_env` (an environment variable) or `<name>_file` (trailing newlines
/// trimmed). `None` when none is given; errors never contain the secret.
fn resolve_secret(
    at: &str,
    name: &str,
    inline: Option<Secret>,
    env_name: Option<String>,
    file: Option<PathBuf>,
    env: &EnvVars,
) -> Result<Option<Secret>, ConfigError> {
    let key = |suffix: &str| format!("{at}.{name}{suffix}");
    let given: Vec<String> = [
        (key(""), inline.is_some()),
        (key("_env"), env_name.is_some()),
        (key("_file"), file.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, present)| present.then_some(k))
    .collect();
    if given.len() > 1 {
        return Err(ConfigError::key(
            key(""),
            format!(
                "give the secret in one way only ({name}, {name}_env or {name}_file), found {}",
                given.join(" and ")
            ),
        ));
    }
    if let Some(secret) = inline {
        return Ok(Some(secret));
    }
    if let Some(var) = env_name {
        if var.is_empty() || var.contains(['=', '\0']) {
            return Err(ConfigError::key(
                key("_env"),
                format!("must be the name of an environment variable, found {var:?}"),
            ));
        }
        return match env.get(&var) {
            None => Err(ConfigError::key(
                key("_env"),
                format!("environment variable {var} is not set"),
            )),
            Some(value) if value.is_empty() => Err(ConfigError::key(
                key("_env"),
                format!("environment variable {var} is empty"),
            )),
            Some(value) => Ok(Some(Secret::new(value.clone()))),
        };
    }
    if let Some(path) = file {
        let k = key("_file");
        let shown = path.display();
        let bytes = std::fs::read(&path)
            .map_err(|e| ConfigError::key(&k, format!("cannot read {shown}: {}", io_reason(&e))))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ConfigError::key(&k, format!("{shown} is not UTF-8 text")))?;
        let value = text.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(ConfigError::key(&k, format!("{shown} is empty")));
        }
        return Ok(Some(Secret::new(value)));
    }
    Ok(None)
}

/// An I/O error's reason without the "(os error N)" suffix.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// `https://host/...` (or `http://` when allowed), without user info, query
/// or fragment. A URL containing '@' is never repeated in the error, since
/// it may carry a password.
fn check_service_url(key: &str, raw: &str, allow_http: bool) -> Result<(), ConfigError> {
    let shown = if raw.contains('@') {
        "a URL with '@' (not shown)".to_string()
    } else {
        format!("{raw:?}")
    };
    let url = url::Url::parse(raw)
        .map_err(|e| ConfigError::key(key, format!("{shown} is not a URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::key(
            key,
            "must not carry user info; credentials belong in [integration.exchange.auth]",
        ));
    }
    if url.fragment().is_some() || url.query().is_some() {
        return Err(ConfigError::key(
            key,
            format!("must not have a query or fragment, found {shown}"),
        ));
    }
    let scheme_ok = match url.scheme() {
        "https" => true,
        "http" => allow_http,
        _ => false,
    };
    if !scheme_ok || url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::key(
            key,
            format!(
                "must be an https URL (http only with allow_insecure_http = true, for tests), \
                 found {shown}"
            ),
        ));
    }
    Ok(())
}

/// `local@domain` with a plain ASCII local part and a DNS domain.
fn check_smtp_address(key: &str, address: &str) -> Result<(), ConfigError> {
    let plain_local = |local: &str| {
        !local.is_empty()
            && local.len() <= 64
            && local
                .chars()
                .all(|c| c.is_ascii_graphic() && !"@<>()[],;:\\\"".contains(c))
    };
    let dns_domain = |domain: &str| {
        !domain.is_empty()
            && domain.len() <= 253
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
    };
    match address.split_once('@') {
        Some((local, domain)) if plain_local(local) && dns_domain(domain) => Ok(()),
        _ => Err(ConfigError::key(
            key,
            format!("must be an SMTP address like room@example.com, found {address:?}"),
        )),
    }
}

/// One `-----BEGIN <label>-----` … `-----END <label>-----` block.
struct PemBlock {
    label: String,
    der: Vec<u8>,
    /// RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`): a legacy encrypted key.
    has_headers: bool,
}

/// The PEM blocks of `text` (text between blocks is ignored, RFC 7468).
/// Errors describe the structure only, never the content.
fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, String> {
    use base64::Engine as _;
    let mut blocks = Vec::new();
    let mut open: Option<(String, String, bool)> = None;
    for line in text.lines().map(str::trim) {
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if open.is_some() {
                return Err(format!("BEGIN {label} inside another block"));
            }
            open = Some((label.to_string(), String::new(), false));
        } else if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            let Some((begin, body, has_headers)) = open.take() else {
                return Err(format!("END {label} without BEGIN"));
            };
            if begin != label {
                return Err(format!("BEGIN {begin} ends with END {label}"));
            }
            let der = base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .map_err(|_| format!("the {label} block is not valid base64"))?;
            blocks.push(PemBlock {
                label: begin,
                der,
                has_headers,
            });
        } else if let Some((_, body, has_headers)) = open.as_mut() {
            if line.contains(':') {
                *has_headers = true;
            } else {
                body.push_str(line);
            }
        }
    }
    match open {
        Some((label, _, _)) => Err(format!("BEGIN {label} has no END")),
        None => Ok(blocks),
    }
}

/// Reads the PEM file at `path` for `key`.
fn read_pem_file(key: &str, path: &Path) -> Result<Vec<PemBlock>, ConfigError> {
    let shown = path.display();
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::key(key, format!("cannot read {shown}: {}", io_reason(&e))))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ConfigError::key(key, format!("{shown} is not PEM text (not UTF-8)")))?;
    pem_blocks(&text).map_err(|why| ConfigError::key(key, format!("{shown} is not PEM: {why}")))
}

/// A DER SEQUENCE (certificates and keys all are one).
fn is_der_sequence(der: &[u8]) -> bool {
    der.len() > 16 && der[0] == 0x30
}

/// `path` holds at least one PEM certificate, and nothing but DER in each.
fn check_pem_certificates(key: &str, path: &Path) -> Result<(), ConfigError> {
    let shown = path.display();
    let blocks = read_pem_file(key, path)?;
    let certificates: Vec<&PemBlock> = blocks.iter().filter(|b| b.label == "CERTIFICATE").collect();
    if certificates.is_empty() {
        return Err(ConfigError::key(
            key,
            format!("{shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        ));
    }
    if let Some(n) = certificates.iter().position(|c| !is_der_sequence(&c.der)) {
        return Err(ConfigError::key(
            key,
            format!("certificate {} in {shown} is not a DER certificate", n + 1),
        ));
    }
    Ok(())
}

/// DER of the rsaEncryption algorithm OID (1.2.840.113549.1.1.1).
const RSA_ENCRYPTION_OID: [u8; 11] = [
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];

/// `path` holds an unencrypted RSA private key, PKCS#8 or PKCS#1 (Entra ID
/// certificate credentials are RSA; the assertion is signed RS256).
fn check_pem_private_key(key: &str, path: &Path) -> Result<(), ConfigError> {
    let shown = path.display();
    let blocks = read_pem_file(key, path)?;
    let Some(block) = blocks.iter().find(|b| b.label.ends_with("PRIVATE KEY")) else {
        return Err(ConfigError::key(
            key,
            format!(
                "{shown} holds no PEM private key (-----BEGIN PRIVATE KEY----- for PKCS#8 or \
                 -----BEGIN RSA PRIVATE KEY----- for PKCS#1)"
            ),
        ));
    };
    if block.label == "ENCRYPTED PRIVATE KEY" || block.has_headers {
        return Err(ConfigError::key(
            key,
            format!(
                "the key in {shown} is encrypted; give it unencrypted (PKCS#8 or PKCS#1) and \
                 protect the file with its permissions"
            ),
        ));
    }
    let rsa = match block.label.as_str() {
        "RSA PRIVATE KEY" => is_der_sequence(&block.der),
        "PRIVATE KEY" => {
            is_der_sequence(&block.der)
                && block
                    .der
                    .windows(RSA_ENCRYPTION_OID.len())
                    .take(32)
                    .any(|w| w == RSA_ENCRYPTION_OID)
        }
        _ => false,
    };
    if !rsa {
        return Err(ConfigError::key(
            key,
            format!(
                "the key in {shown} ({}) is not an RSA key; Entra ID certificate credentials are RSA",
                block.label
            ),
        ));
    }
    Ok(())
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
                        message: syntax_error_message(&text, &e),
                    })?
            }
            None => toml::Table::new(),
        };
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut root = toml::Value::Table(tree);
        for (name, value) in &env {
            if let Some(rest) = name.strip_prefix("VMR__") {
                apply_override(&mut root, rest, value)?;
            }
        }
        match root {
            toml::Value::Table(tree) => Self::from_table_with_env(tree, &env.into_iter().collect()),
            _ => Err(ConfigError::key("(top level)", "must be a table")),
        }
    }

    /// Deserialises and validates an already-parsed tree; `*_env` secrets are
    /// read from the process environment.
    pub fn from_table(tree: toml::Table) -> Result<Config, ConfigError> {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Self::from_table_with_env(tree, &env)
    }

    /// Deserialises and validates an already-parsed tree; `*_env` secrets
    /// (`password_env`, `client_secret_env`) are looked up in `env`. Reads
    /// the files the mailbox connections name (secrets, CA, client
    /// certificate) and warns about weakened TLS.
    pub fn from_table_with_env(
        mut tree: toml::Table,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let exchange = take_exchange_tables(&mut tree, env)?;
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(tree))
            .map_err(|e| deserialize_error("", e))?;
        config.policy.resolve_secrets(env)?;
        config.infinity.resolve_files(env)?;
        if let Some(oidc) = config.admin.oidc.as_mut() {
            oidc.client_secret = resolve_secret(
                "admin.oidc",
                "client_secret",
                oidc.client_secret.take(),
                oidc.client_secret_env.take(),
                oidc.client_secret_file.take(),
                env,
            )?;
        }
        for (i, connection) in exchange {
            if let Some(integration) = config.integrations.get_mut(i) {
                integration.exchange = Some(connection);
            }
        }
        config.validate()?;
        config.check_exchange_files()?;
        for (i, integration) in config.integrations.iter().enumerate() {
            if let Some(exchange) = &integration.exchange {
                exchange.warn_about_risks(&format!("integration[{i}].exchange"));
            }
        }
        Ok(config)
    }

    /// The files of every mailbox connection exist and hold what they
    /// should: `ca_file` and, for OAuth2 certificate credentials,
    /// `auth.certificate` and `auth.private_key` (PEM). Part of
    /// [`Config::load`]; not of [`Config::validate`], which reads no files.
    pub fn check_exchange_files(&self) -> Result<(), ConfigError> {
        for (i, integration) in self.integrations.iter().enumerate() {
            if let Some(exchange) = &integration.exchange {
                exchange.check_files(&format!("integration[{i}].exchange"))?;
            }
        }
        Ok(())
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
        self.admin.validate()?;
        self.policy.validate(&self.integrations)?;
        self.infinity.validate()?;
        for (n, retired) in self.infinity.retired_integrations.iter().enumerate() {
            let key = "infinity.retired_integrations";
            if retired.trim().is_empty() {
                return Err(ConfigError::key(key, "holds an empty integration id"));
            }
            if self.integrations.iter().any(|i| i.id == *retired) {
                return Err(ConfigError::key(
                    key,
                    format!(
                        "{retired:?} is a configured integration: its VMRs would be deleted at \
                         every reconcile; remove it from one of the two"
                    ),
                ));
            }
            if self.infinity.retired_integrations[..n].contains(retired) {
                return Err(ConfigError::key(key, format!("names {retired:?} twice")));
            }
        }
        self.lifetime.validate()?;
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
        let mut watched = BTreeMap::new();
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
            if let Some(mailbox) = integration.watched_mailbox() {
                if let Some(first) = watched.insert(mailbox.to_ascii_lowercase(), i) {
                    let defaulted = integration
                        .exchange
                        .as_ref()
                        .is_some_and(|e| e.mailbox.is_none());
                    return Err(ConfigError::key(
                        format!("integration[{i}].exchange.mailbox"),
                        format!(
                            "{mailbox:?}{} is already watched by integration[{first}]; two \
                             integrations cannot process one mailbox",
                            if defaulted {
                                " (the default: this integration's resource_email)"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
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
        for (name, value) in [
            ("ivr_theme", &self.ivr_theme),
            (
                "host_identity_provider_group",
                &self.host_identity_provider_group,
            ),
        ] {
            if let Some(v) = value {
                let len = v.chars().count();
                if v.trim().is_empty() || len > 250 {
                    return Err(ConfigError::key(
                        key(name),
                        format!("must be the name of the Infinity object, 1 to 250 characters, found {len}"),
                    ));
                }
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
        if let Some(exchange) = &self.exchange {
            exchange.validate(&key("exchange"))?;
        }
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
    let value = match parts.last() {
        Some(leaf) if SECRET_KEYS.contains(&leaf.as_str()) => toml::Value::String(raw.to_string()),
        _ => parse_env_value(raw),
    };
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

/// Keys that hold secrets: their environment overrides stay strings (so
/// `123456` is not turned into a number), and a wrong type is reported
/// without the value.
const SECRET_KEYS: [&str; 9] = [
    "password",
    "client_secret",
    "shared_secret",
    "deferral_key",
    "tag_key",
    "key",
    "basic_auth_password",
    "pin",
    "guest_pin",
];

/// Moves every `integration[i].exchange` table out of `tree` and resolves it
/// (secrets read from `env` and files), by integration index.
fn take_exchange_tables(
    tree: &mut toml::Table,
    env: &EnvVars,
) -> Result<Vec<(usize, ExchangeConfig)>, ConfigError> {
    let Some(toml::Value::Array(integrations)) = tree.get_mut("integration") else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for (i, integration) in integrations.iter_mut().enumerate() {
        let Some(raw) = integration
            .as_table_mut()
            .and_then(|t| t.remove("exchange"))
        else {
            continue;
        };
        let at = format!("integration[{i}].exchange");
        let parsed: ExchangeToml =
            serde_path_to_error::deserialize(raw).map_err(|e| deserialize_error(&at, e))?;
        found.push((i, parsed.resolve(&at, env)?));
    }
    Ok(found)
}

/// A deserialisation error as a [`ConfigError`] naming the full key
/// (`prefix` + the path inside); the message of a secret key never repeats
/// its value.
fn deserialize_error(prefix: &str, e: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    let inner = e.path().to_string();
    let key = match (prefix.is_empty(), inner == ".") {
        (true, true) => "(top level)".to_string(),
        (true, false) => inner,
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{inner}"),
    };
    let secret = matches!(
        e.path().iter().next_back(),
        Some(serde_path_to_error::Segment::Map { key }) if SECRET_KEYS.contains(&key.as_str())
    );
    let message = if secret {
        "must be a string (the value is not shown: this key holds a secret)".to_string()
    } else {
        e.into_inner().message().to_string()
    };
    ConfigError::key(key, message)
}

/// A TOML syntax error as "line L, column C: what", without the source line
/// that the parser would quote (it could be a secret's).
fn syntax_error_message(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {}", e.message().trim())
        }
        None => e.message().trim().to_string(),
    }
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
    fn vmr_theme_and_identity_provider_group_are_read_and_checked() {
        let c = load(
            "[[integration]]\nivr_theme = \"Corporate\"\nhost_identity_provider_group = \"Staff\"\n\
             non_idp_participants = \"allow_if_trusted\"\n",
            &[],
        )
        .expect("valid");
        let i = &c.integrations[0];
        assert_eq!(i.ivr_theme.as_deref(), Some("Corporate"));
        assert_eq!(i.host_identity_provider_group.as_deref(), Some("Staff"));
        assert_eq!(i.non_idp_participants, NonIdpParticipants::AllowIfTrusted);
        let e = err("[[integration]]\nivr_theme = \"  \"\n", &[]);
        assert!(e.contains("integration[0].ivr_theme"), "{e}");
        let e = err(
            "[[integration]]\nnon_idp_participants = \"everyone\"\n",
            &[],
        );
        assert!(e.contains("non_idp_participants"), "{e}");
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

#[cfg(test)]
mod exchange_tests {
    use super::*;
    use base64::Engine as _;

    const PASSWORD: &str = "S3cret-Pa55word!";

    /// Integration `a` with a Basic-auth mailbox connection; `exchange` and
    /// `auth` are extra lines for the two tables.
    fn with(exchange: &str, auth: &str) -> String {
        format!(
            "[[integration]]\nid = \"a\"\nresource_email = \"room-a@example.com\"\n\
             [integration.exchange]\news_url = \"https://mail.example.com/EWS/Exchange.asmx\"\n\
             {exchange}\n[integration.exchange.auth]\n{auth}\n"
        )
    }

    fn basic(exchange: &str) -> String {
        with(
            exchange,
            &format!(
                "method = \"basic\"\nusername = \"svc-vmr@example.com\"\npassword = \"{PASSWORD}\""
            ),
        )
    }

    fn oauth(exchange: &str, auth: &str) -> String {
        with(
            exchange,
            &format!(
                "method = \"oauth2\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\n{auth}"
            ),
        )
    }

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).expect("write config");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load(Some(&path), env)
    }

    fn exchange(toml: &str, env: &[(&str, &str)]) -> ExchangeConfig {
        load(toml, env)
            .unwrap_or_else(|e| panic!("must load: {e}\n{toml}"))
            .integrations[0]
            .exchange
            .clone()
            .expect("an exchange table")
    }

    fn err(toml: &str, env: &[(&str, &str)]) -> String {
        match load(toml, env) {
            Ok(c) => panic!("must be rejected: {toml}\nloaded {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Asserts the error names `key` (as `config key `key``) and contains `text`.
    fn assert_refused(toml: &str, env: &[(&str, &str)], key: &str, text: &str) {
        let e = err(toml, env);
        assert!(
            e.contains(&format!("config key `{key}`")),
            "expected key {key}: {e}"
        );
        assert!(e.contains(text), "expected {text:?} in: {e}");
    }

    fn pem(label: &str, der: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    /// A DER SEQUENCE that starts like a PKCS#8 key of the algorithm `oid`
    /// (the loader checks the structure and the algorithm, not the key).
    fn pkcs8_der(oid: &[u8]) -> Vec<u8> {
        let mut der = vec![0x30, 0x40, 0x02, 0x01, 0x00, 0x30, 0x0d];
        der.extend_from_slice(oid);
        der.extend_from_slice(&[0x05, 0x00, 0x04, 0x20]);
        der.extend_from_slice(&[0x5a; 32]);
        der
    }

    fn certificate_der() -> Vec<u8> {
        let mut der = vec![0x30, 0x82, 0x01, 0x00, 0x30, 0x81, 0xf0];
        der.extend_from_slice(&[0x11; 40]);
        der
    }

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write file");
        path
    }

    fn toml_path(path: &Path) -> String {
        toml::Value::String(path.display().to_string()).to_string()
    }

    #[test]
    fn defaults_and_the_watched_mailbox() {
        let c = load(&basic(""), &[]).expect("valid");
        let e = c.integrations[0].exchange.clone().expect("exchange");
        let auth = ExchangeAuth::Basic {
            username: "svc-vmr@example.com".into(),
            password: Secret::new(PASSWORD),
        };
        assert_eq!(
            e,
            ExchangeConfig::new("https://mail.example.com/EWS/Exchange.asmx", auth),
            "a table with only ews_url and auth equals ExchangeConfig::new"
        );
        assert_eq!(e.backend, ExchangeBackend::Ews);
        assert_eq!(e.server_version, "Exchange2013_SP1");
        assert_eq!(e.mailbox, None);
        assert_eq!(e.access, MailboxAccess::Impersonation);
        assert_eq!(
            (
                e.poll_interval_secs,
                e.resync_interval_secs,
                e.request_timeout_secs
            ),
            (60, 3600, 100)
        );
        assert!(e.streaming);
        assert_eq!(
            (
                e.streaming_timeout_minutes,
                e.max_concurrency,
                e.sync_batch_size,
                e.horizon_days
            ),
            (30, 4, 100, 400)
        );
        assert!(!e.allow_insecure_http && !e.danger_accept_invalid_certs);
        assert_eq!(e.ca_file, None);
        assert_eq!(e.poll_interval(), Duration::from_secs(60));
        assert_eq!(e.streaming_timeout(), Duration::from_secs(1800));
        assert_eq!(
            c.integrations[0].watched_mailbox(),
            Some("room-a@example.com")
        );

        let plain = load("[[integration]]\nid = \"a\"\n", &[]).expect("valid");
        assert_eq!(
            plain.integrations[0].exchange, None,
            "absent table: no mailbox"
        );
        assert_eq!(plain.integrations[0].watched_mailbox(), None);
        assert_eq!(load("", &[]).expect("demo").integrations[0].exchange, None);
    }

    #[test]
    fn every_key_can_be_set() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = write(
            dir.path(),
            "ca.pem",
            &pem("CERTIFICATE", &certificate_der()),
        );
        let e = exchange(
            &oauth(
                &format!(
                    "backend = \"ews\"\nserver_version = \"V2016_10_10\"\n\
                     mailbox = \"VMR-Watch@Example.com\"\naccess = \"impersonation\"\n\
                     poll_interval_secs = 5\nresync_interval_secs = 86400\nstreaming = false\n\
                     streaming_timeout_minutes = 1\nmax_concurrency = 27\nrequest_timeout_secs = 600\n\
                     sync_batch_size = 512\nhorizon_days = 1080\nallow_insecure_http = true\n\
                     ca_file = {}\ndanger_accept_invalid_certs = true",
                    toml_path(&ca)
                ),
                "tenant = \"contoso.onmicrosoft.com\"\nclient_secret = \"app-secret-value\"\n\
                 scope = \"https://mail.example.com/.default\"",
            ),
            &[],
        );
        assert_eq!(e.server_version, "V2016_10_10");
        assert_eq!(e.mailbox.as_deref(), Some("VMR-Watch@Example.com"));
        assert_eq!(
            (
                e.poll_interval_secs,
                e.resync_interval_secs,
                e.streaming_timeout_minutes
            ),
            (5, 86_400, 1)
        );
        assert_eq!(
            (
                e.max_concurrency,
                e.request_timeout_secs,
                e.sync_batch_size,
                e.horizon_days
            ),
            (27, 600, 512, 1080)
        );
        assert!(!e.streaming && e.allow_insecure_http && e.danger_accept_invalid_certs);
        assert_eq!(e.ca_file.as_deref(), Some(ca.as_path()));
        assert_eq!(
            e.auth,
            ExchangeAuth::OAuth2 {
                tenant: Some("contoso.onmicrosoft.com".into()),
                token_url:
                    "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
                        .into(),
                client_id: "11111111-2222-3333-4444-555555555555".into(),
                scope: "https://mail.example.com/.default".into(),
                credential: OAuthCredential::Secret(Secret::new("app-secret-value")),
            }
        );
        assert_eq!(e.auth.method(), "oauth2");
    }

    #[test]
    fn oauth2_defaults_and_token_url() {
        let e = exchange(&oauth("", "tenant = \"tid-1\"\nclient_secret = \"x\""), &[]);
        let ExchangeAuth::OAuth2 {
            token_url, scope, ..
        } = &e.auth
        else {
            panic!("oauth2 expected: {:?}", e.auth);
        };
        assert_eq!(
            token_url,
            "https://login.microsoftonline.com/tid-1/oauth2/v2.0/token"
        );
        assert_eq!(scope, DEFAULT_OAUTH_SCOPE);
        let e = exchange(
            &oauth(
                "",
                "token_url = \"https://sts.example.com/token\"\nclient_secret = \"x\"",
            ),
            &[],
        );
        let ExchangeAuth::OAuth2 {
            token_url, tenant, ..
        } = &e.auth
        else {
            panic!("oauth2 expected");
        };
        assert_eq!(
            (token_url.as_str(), tenant),
            ("https://sts.example.com/token", &None)
        );
        assert_refused(
            &oauth("", "client_secret = \"x\""),
            &[],
            "integration[0].exchange.auth.token_url",
            "tenant",
        );
        assert_refused(
            &oauth(
                "",
                "token_url = \"http://sts.example.com/token\"\nclient_secret = \"x\"",
            ),
            &[],
            "integration[0].exchange.auth.token_url",
            "https",
        );
        exchange(
            &oauth(
                "allow_insecure_http = true",
                "token_url = \"http://127.0.0.1:9/token\"\nclient_secret = \"x\"",
            ),
            &[],
        );
        assert_refused(
            &oauth("", "tenant = \"evil/../x\"\nclient_secret = \"x\""),
            &[],
            "integration[0].exchange.auth.tenant",
            "tenant id",
        );
        assert_refused(
            &with(
                "",
                "method = \"oauth2\"\ntenant = \"t\"\nclient_secret = \"x\"",
            ),
            &[],
            "integration[0].exchange.auth.client_id",
            "client id",
        );
        assert_refused(
            &oauth("", "tenant = \"t\"\nclient_secret = \"x\"\nscope = \"\""),
            &[],
            "integration[0].exchange.auth.scope",
            "scope",
        );
        assert_refused(
            &oauth(
                "access = \"delegate\"",
                "tenant = \"t\"\nclient_secret = \"x\"",
            ),
            &[],
            "integration[0].exchange.access",
            "must impersonate",
        );
    }

    #[test]
    fn a_secret_comes_inline_from_the_environment_or_from_a_file() {
        let user = "method = \"basic\"\nusername = \"svc\"\n";
        let password = |e: &ExchangeConfig| match &e.auth {
            ExchangeAuth::Basic { password, .. } => password.expose().to_string(),
            other => panic!("basic expected: {other:?}"),
        };
        let e = exchange(&with("", &format!("{user}password = \"{PASSWORD}\"")), &[]);
        assert_eq!(password(&e), PASSWORD);
        let e = exchange(
            &with("", &format!("{user}password_env = \"VMR_EWS_PASSWORD\"")),
            &[("VMR_EWS_PASSWORD", PASSWORD)],
        );
        assert_eq!(password(&e), PASSWORD);
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, content) in [
            ("lf", format!("{PASSWORD}\n")),
            ("crlf", format!("{PASSWORD}\r\n")),
            ("none", PASSWORD.to_string()),
        ] {
            let file = write(dir.path(), name, &content);
            let e = exchange(
                &with("", &format!("{user}password_file = {}", toml_path(&file))),
                &[],
            );
            assert_eq!(password(&e), PASSWORD, "{name}: trailing newline trimmed");
        }
        let inner_space = write(dir.path(), "space", " a b \n");
        let e = exchange(
            &with(
                "",
                &format!("{user}password_file = {}", toml_path(&inner_space)),
            ),
            &[],
        );
        assert_eq!(password(&e), " a b ", "only line ends are trimmed");
    }

    #[test]
    fn a_secret_given_twice_or_not_at_all_is_refused() {
        let user = "method = \"basic\"\nusername = \"svc\"\n";
        let e = err(
            &with(
                "",
                &format!("{user}password = \"x\"\npassword_file = \"/run/secrets/ews\""),
            ),
            &[],
        );
        assert!(
            e.contains("config key `integration[0].exchange.auth.password`")
                && e.contains("integration[0].exchange.auth.password and integration[0].exchange.auth.password_file"),
            "{e}"
        );
        let e = err(
            &with(
                "",
                &format!("{user}password_env = \"V\"\npassword_file = \"/f\""),
            ),
            &[("V", "x")],
        );
        assert!(
            e.contains("auth.password_env and integration[0].exchange.auth.password_file"),
            "{e}"
        );
        assert_refused(
            &with("", user),
            &[],
            "integration[0].exchange.auth.password",
            "password_env",
        );
        assert_refused(
            &with("", &format!("{user}password = \"\"")),
            &[],
            "integration[0].exchange.auth.password",
            "must not be empty",
        );
        // client_secret follows the same rules.
        let e = err(
            &oauth(
                "",
                "tenant = \"t\"\nclient_secret = \"x\"\nclient_secret_env = \"V\"",
            ),
            &[("V", "y")],
        );
        assert!(
            e.contains("config key `integration[0].exchange.auth.client_secret`")
                && e.contains(
                    "auth.client_secret and integration[0].exchange.auth.client_secret_env"
                ),
            "{e}"
        );
        let e = exchange(
            &oauth("", "tenant = \"t\"\nclient_secret_env = \"VMR_APP_SECRET\""),
            &[("VMR_APP_SECRET", "from-env")],
        );
        assert!(
            matches!(&e.auth, ExchangeAuth::OAuth2 { credential: OAuthCredential::Secret(s), .. } if s.expose() == "from-env"),
            "{:?}",
            e.auth
        );
    }

    #[test]
    fn a_missing_environment_variable_or_file_names_the_key() {
        let user = "method = \"basic\"\nusername = \"svc\"\n";
        let e = err(
            &with("", &format!("{user}password_env = \"VMR_EWS_PASSWORD\"")),
            &[],
        );
        assert!(
            e.ends_with(
                "config key `integration[0].exchange.auth.password_env`: environment variable VMR_EWS_PASSWORD is not set"
            ),
            "{e}"
        );
        assert_refused(
            &with("", &format!("{user}password_env = \"VMR_EWS_PASSWORD\"")),
            &[("VMR_EWS_PASSWORD", "")],
            "integration[0].exchange.auth.password_env",
            "VMR_EWS_PASSWORD is empty",
        );
        assert_refused(
            &with("", &format!("{user}password_env = \"\"")),
            &[],
            "integration[0].exchange.auth.password_env",
            "name of an environment variable",
        );
        let e = err(&with("", &format!("{user}password_file = \"/x\"")), &[]);
        assert_eq!(
            e,
            "config key `integration[0].exchange.auth.password_file`: cannot read /x: No such file or directory"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = write(dir.path(), "empty", "\n");
        assert_refused(
            &with("", &format!("{user}password_file = {}", toml_path(&empty))),
            &[],
            "integration[0].exchange.auth.password_file",
            "is empty",
        );
        let binary = dir.path().join("binary");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).expect("write");
        assert_refused(
            &with("", &format!("{user}password_file = {}", toml_path(&binary))),
            &[],
            "integration[0].exchange.auth.password_file",
            "not UTF-8",
        );
        assert_refused(
            &oauth(
                "",
                "tenant = \"t\"\nclient_secret_file = \"/nonexistent/secret\"",
            ),
            &[],
            "integration[0].exchange.auth.client_secret_file",
            "cannot read /nonexistent/secret",
        );
    }

    #[test]
    fn oauth2_credential_is_a_secret_or_a_certificate_with_its_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = write(
            dir.path(),
            "cert.pem",
            &pem("CERTIFICATE", &certificate_der()),
        );
        let pkcs8 = write(
            dir.path(),
            "key8.pem",
            &pem("PRIVATE KEY", &pkcs8_der(&RSA_ENCRYPTION_OID)),
        );
        let pkcs1 = write(
            dir.path(),
            "key1.pem",
            &pem("RSA PRIVATE KEY", &certificate_der()),
        );
        for key in [&pkcs8, &pkcs1] {
            let e = exchange(
                &oauth(
                    "",
                    &format!(
                        "tenant = \"t\"\ncertificate = {}\nprivate_key = {}",
                        toml_path(&cert),
                        toml_path(key)
                    ),
                ),
                &[],
            );
            let ExchangeAuth::OAuth2 { credential, .. } = &e.auth else {
                panic!("oauth2 expected");
            };
            assert_eq!(
                credential,
                &OAuthCredential::Certificate {
                    certificate: cert.clone(),
                    private_key: key.clone()
                }
            );
        }
        let cert_line = format!("certificate = {}", toml_path(&cert));
        let key_line = format!("private_key = {}", toml_path(&pkcs8));
        let cases = [
            (
                format!("client_secret = \"x\"\n{cert_line}\n{key_line}"),
                "auth.certificate",
                "not both",
            ),
            (
                cert_line.clone(),
                "auth.private_key",
                "needs its private_key",
            ),
            (
                key_line.clone(),
                "auth.certificate",
                "needs its certificate",
            ),
            (String::new(), "auth.client_secret", "needs a credential"),
        ];
        for (lines, key, text) in cases {
            assert_refused(
                &oauth("", &format!("tenant = \"t\"\n{lines}")),
                &[],
                &format!("integration[0].exchange.{key}"),
                text,
            );
        }
        // The files are checked at load.
        let ec = write(
            dir.path(),
            "ec.pem",
            &pem(
                "PRIVATE KEY",
                &pkcs8_der(&[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
            ),
        );
        let encrypted = write(
            dir.path(),
            "enc.pem",
            &pem("ENCRYPTED PRIVATE KEY", &certificate_der()),
        );
        let legacy = write(
            dir.path(),
            "legacy.pem",
            &pem("RSA PRIVATE KEY", &certificate_der()).replacen(
                "-----\n",
                "-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n",
                1,
            ),
        );
        let no_key = write(
            dir.path(),
            "nokey.pem",
            &pem("CERTIFICATE", &certificate_der()),
        );
        let not_pem = write(dir.path(), "text.pem", "hello\n");
        let bad_b64 = write(
            dir.path(),
            "b64.pem",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        );
        let unterminated = write(
            dir.path(),
            "open.pem",
            "-----BEGIN CERTIFICATE-----\nMAAA\n",
        );
        let key_cases = [
            (&ec, "not an RSA key"),
            (&encrypted, "encrypted"),
            (&legacy, "encrypted"),
            (&no_key, "no PEM private key"),
        ];
        for (file, text) in key_cases {
            assert_refused(
                &oauth(
                    "",
                    &format!(
                        "tenant = \"t\"\n{cert_line}\nprivate_key = {}",
                        toml_path(file)
                    ),
                ),
                &[],
                "integration[0].exchange.auth.private_key",
                text,
            );
        }
        let cert_cases = [
            (&not_pem, "no PEM certificate"),
            (&bad_b64, "not valid base64"),
            (&unterminated, "has no END"),
            (&pkcs8, "no PEM certificate"),
        ];
        for (file, text) in cert_cases {
            assert_refused(
                &oauth(
                    "",
                    &format!(
                        "tenant = \"t\"\ncertificate = {}\n{key_line}",
                        toml_path(file)
                    ),
                ),
                &[],
                "integration[0].exchange.auth.certificate",
                text,
            );
        }
    }

    #[test]
    fn ca_file_must_exist_and_hold_a_certificate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let two = format!(
            "# internal CA bundle\n{}{}",
            pem("CERTIFICATE", &certificate_der()),
            pem("CERTIFICATE", &certificate_der())
        );
        let good = write(dir.path(), "ca.pem", &two);
        exchange(&basic(&format!("ca_file = {}", toml_path(&good))), &[]);
        let short = write(
            dir.path(),
            "short.pem",
            &pem("CERTIFICATE", &[0x30, 0x01, 0x00]),
        );
        let missing = dir.path().join("missing.pem");
        let not_pem = write(dir.path(), "x.pem", "not a certificate");
        for (file, text) in [
            (&missing, "cannot read"),
            (&not_pem, "no PEM certificate"),
            (&short, "certificate 1 in"),
        ] {
            assert_refused(
                &basic(&format!("ca_file = {}", toml_path(file))),
                &[],
                "integration[0].exchange.ca_file",
                text,
            );
        }
    }

    #[test]
    fn ntlm_reads_user_and_password_like_basic() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("pw");
        std::fs::write(&file, format!("{PASSWORD}\n")).expect("write");
        for (auth, env) in [
            (format!("password = \"{PASSWORD}\""), vec![]),
            (
                "password_env = \"VMR_NTLM_PW\"".to_owned(),
                vec![("VMR_NTLM_PW", PASSWORD)],
            ),
            (format!("password_file = {}", toml_path(&file)), vec![]),
        ] {
            for username in ["CONTOSO\\\\svc-vmr", "svc-vmr@contoso.com"] {
                let toml = with(
                    "",
                    &format!("method = \"ntlm\"\nusername = \"{username}\"\n{auth}"),
                );
                let config = exchange(&toml, &env);
                let want = username.replace("\\\\", "\\");
                assert_eq!(
                    config.auth,
                    ExchangeAuth::Ntlm {
                        username: want,
                        password: Secret::new(PASSWORD),
                    },
                    "{toml}"
                );
                assert_eq!(config.auth.method(), "ntlm");
            }
        }
    }

    #[test]
    fn ntlm_errors_name_the_key() {
        let ntlm = |extra: &str| with("", &format!("method = \"ntlm\"\n{extra}"));
        assert_refused(
            &ntlm(&format!("password = \"{PASSWORD}\"")),
            &[],
            "integration[0].exchange.auth.username",
            "method = \"ntlm\" needs the service account's user name",
        );
        assert_refused(
            &ntlm("username = \"CONTOSO\\\\svc\""),
            &[],
            "integration[0].exchange.auth.password",
            "method = \"ntlm\" needs the password",
        );
        for bad in ["\\\\svc", "CONTOSO\\\\", "A\\\\B\\\\c"] {
            assert_refused(
                &ntlm(&format!("username = \"{bad}\"\npassword = \"{PASSWORD}\"")),
                &[],
                "integration[0].exchange.auth.username",
                "must be DOMAIN\\user or user@domain",
            );
        }
        assert_refused(
            &ntlm(&format!(
                "username = \"svc@contoso.com\"\npassword = \"{PASSWORD}\"\nclient_id = \"c\""
            )),
            &[],
            "integration[0].exchange.auth.client_id",
            "not used with method = \"ntlm\"",
        );
        let http = format!(
            "[[integration]]\nid = \"a\"\nresource_email = \"room-a@example.com\"\n\
             [integration.exchange]\news_url = \"http://mail.example.com/EWS/Exchange.asmx\"\n\
             allow_insecure_http = true\n[integration.exchange.auth]\nmethod = \"ntlm\"\n\
             username = \"svc@contoso.com\"\npassword = \"{PASSWORD}\"\n"
        );
        assert_refused(
            &http,
            &[],
            "integration[0].exchange.ews_url",
            "method = \"ntlm\" needs an https:// EWS URL",
        );
    }

    #[test]
    fn kerberos_is_not_supported_yet() {
        assert_refused(
            &with("", "method = \"kerberos\""),
            &[],
            "integration[0].exchange.auth.method",
            "\"kerberos\" is not supported yet; use \"ntlm\"",
        );
        assert_refused(
            &with("", "username = \"u\""),
            &[],
            "integration[0].exchange.auth.method",
            "is required",
        );
        let e = err(&with("", "method = \"digest\""), &[]);
        assert!(
            e.contains("integration[0].exchange.auth.method") && e.contains("digest"),
            "{e}"
        );
        assert_refused(
            &with(
                "",
                "method = \"basic\"\nusername = \"u\"\npassword = \"p\"\nclient_id = \"c\"",
            ),
            &[],
            "integration[0].exchange.auth.client_id",
            "not used with method = \"basic\"",
        );
        assert_refused(
            &oauth(
                "",
                "tenant = \"t\"\nclient_secret = \"x\"\nusername = \"u\"",
            ),
            &[],
            "integration[0].exchange.auth.username",
            "not used with method = \"oauth2\"",
        );
        assert_refused(
            &with("", "method = \"basic\"\npassword = \"p\""),
            &[],
            "integration[0].exchange.auth.username",
            "user name",
        );
        assert_refused(
            &with(
                "",
                "method = \"basic\"\nusername = \"a:b\"\npassword = \"p\"",
            ),
            &[],
            "integration[0].exchange.auth.username",
            "':'",
        );
    }

    #[test]
    fn the_tables_and_their_keys_are_checked() {
        assert_refused(
            "[[integration]]\n[integration.exchange]\n[integration.exchange.auth]\nmethod = \"basic\"\n",
            &[],
            "integration[0].exchange.ews_url",
            "is required",
        );
        assert_refused(
            "[[integration]]\n[integration.exchange]\news_url = \"https://m.example.com/EWS/Exchange.asmx\"\n",
            &[],
            "integration[0].exchange.auth",
            "is required",
        );
        let e = err(&basic("pol_interval_secs = 3"), &[]);
        assert!(
            e.contains("integration[0].exchange") && e.contains("pol_interval_secs"),
            "{e}"
        );
        let e = err(
            &with("", "method = \"basic\"\nusername = \"u\"\npasword = \"p\""),
            &[],
        );
        assert!(
            e.contains("integration[0].exchange.auth") && e.contains("pasword"),
            "{e}"
        );
        assert_refused(
            &basic("backend = \"graph\""),
            &[],
            "integration[0].exchange.backend",
            "not supported yet",
        );
        assert_refused(
            &basic("backend = \"imap\""),
            &[],
            "integration[0].exchange.backend",
            "\"imap\"",
        );
        let e = err(&basic("access = \"owner\""), &[]);
        assert!(
            e.contains("integration[0].exchange.access") && e.contains("owner"),
            "{e}"
        );
        let e = err(&basic("streaming = \"yes\""), &[]);
        assert!(e.contains("integration[0].exchange.streaming"), "{e}");
        // The second integration's table is named by its index.
        let second = format!(
            "[[integration]]\nid = \"z\"\n{}",
            basic("poll_interval_secs = 1")
        );
        assert_refused(
            &second,
            &[],
            "integration[1].exchange.poll_interval_secs",
            "5 to 3600",
        );
    }

    #[test]
    fn ews_url_is_https_without_user_info_query_or_fragment() {
        let url = |u: &str, extra: &str| {
            with(
                extra,
                "method = \"basic\"\nusername = \"u\"\npassword = \"p\"",
            )
            .replace("https://mail.example.com/EWS/Exchange.asmx", u)
        };
        exchange(&url("https://lb.example.com/EWS/Exchange.asmx", ""), &[]);
        exchange(&url("https://10.0.0.5:8443/ews/exchange.asmx", ""), &[]);
        exchange(
            &url(
                "http://127.0.0.1:8080/EWS/Exchange.asmx",
                "allow_insecure_http = true",
            ),
            &[],
        );
        for (bad, text) in [
            (
                "http://mail.example.com/EWS/Exchange.asmx",
                "allow_insecure_http",
            ),
            (
                "https://user:pw@mail.example.com/EWS/Exchange.asmx",
                "user info",
            ),
            (
                "https://user@mail.example.com/EWS/Exchange.asmx",
                "user info",
            ),
            ("https://mail.example.com/EWS/Exchange.asmx#top", "fragment"),
            ("https://mail.example.com/EWS/Exchange.asmx?x=1", "query"),
            ("ftp://mail.example.com/EWS/Exchange.asmx", "https URL"),
            ("mail.example.com/EWS/Exchange.asmx", "not a URL"),
            ("", "not a URL"),
        ] {
            assert_refused(&url(bad, ""), &[], "integration[0].exchange.ews_url", text);
        }
        let e = err(
            &url(
                "https://svc:hunter2-pw@mail.example.com/EWS/Exchange.asmx",
                "",
            ),
            &[],
        );
        assert!(
            !e.contains("hunter2"),
            "the URL's password is not repeated: {e}"
        );
    }

    /// The values of `ExchangeVersionType` in the vendored `types.xsd`.
    fn schema_versions() -> Vec<String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/ews/types.xsd");
        let xsd = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("the vendored EWS schema {} is missing: {e}", path.display())
        });
        let start = xsd
            .find("<xs:simpleType name=\"ExchangeVersionType\">")
            .expect("ExchangeVersionType in types.xsd");
        let end = start
            + xsd[start..]
                .find("</xs:simpleType>")
                .expect("end of the type");
        xsd[start..end]
            .split("<xs:enumeration value=\"")
            .skip(1)
            .map(|s| s.split('"').next().expect("a quoted value").to_string())
            .collect()
    }

    #[test]
    fn server_version_is_exactly_one_of_the_schemas_values() {
        let schema = schema_versions();
        assert_eq!(
            schema, EWS_SERVER_VERSIONS,
            "EWS_SERVER_VERSIONS follows types.xsd"
        );
        assert!(schema.contains(&DEFAULT_EWS_SERVER_VERSION.to_string()));
        for version in &schema {
            let e = exchange(
                &basic(&format!(
                    "server_version = \"{version}\"\nstreaming = false\naccess = \"delegate\""
                )),
                &[],
            );
            assert_eq!(&e.server_version, version);
        }
        for bad in ["Exchange2019", "exchange2013_sp1", "V2018_01_08", ""] {
            assert_refused(
                &basic(&format!("server_version = \"{bad}\"")),
                &[],
                "integration[0].exchange.server_version",
                "Exchange2007, Exchange2007_SP1",
            );
        }
    }

    #[test]
    fn streaming_needs_exchange_2010_sp1_and_impersonation_2007_sp1() {
        for old in ["Exchange2007_SP1", "Exchange2009", "Exchange2010"] {
            assert_refused(
                &basic(&format!("server_version = \"{old}\"")),
                &[],
                "integration[0].exchange.server_version",
                "GetStreamingEvents needs at least Exchange2010_SP1",
            );
            exchange(
                &basic(&format!("server_version = \"{old}\"\nstreaming = false")),
                &[],
            );
        }
        for new in [
            "Exchange2010_SP1",
            "Exchange2010_SP2",
            "Exchange2016",
            "V2015_10_05",
        ] {
            exchange(&basic(&format!("server_version = \"{new}\"")), &[]);
        }
        assert_refused(
            &basic("server_version = \"Exchange2007\"\nstreaming = false"),
            &[],
            "integration[0].exchange.server_version",
            "ExchangeImpersonation",
        );
        exchange(
            &basic("server_version = \"Exchange2007\"\nstreaming = false\naccess = \"delegate\""),
            &[],
        );
    }

    #[test]
    fn numbers_stay_in_their_ranges() {
        let ranges: [(&str, u64, u64); 7] = [
            ("poll_interval_secs", 5, 3600),
            ("resync_interval_secs", 60, 86_400),
            ("streaming_timeout_minutes", 1, 30),
            ("max_concurrency", 1, 27),
            ("request_timeout_secs", 5, 600),
            ("sync_batch_size", 1, 512),
            ("horizon_days", 1, 1080),
        ];
        for (name, min, max) in ranges {
            exchange(&basic(&format!("{name} = {min}")), &[]);
            exchange(&basic(&format!("{name} = {max}")), &[]);
            for bad in [min - 1, max + 1] {
                let e = err(&basic(&format!("{name} = {bad}")), &[]);
                assert!(
                    e.contains(&format!("config key `integration[0].exchange.{name}`"))
                        && e.contains(&format!("must be {min} to {max}"))
                        && e.contains(&format!("found {bad}")),
                    "{name} = {bad}: {e}"
                );
            }
        }
        let e = err(&basic("poll_interval_secs = -1"), &[]);
        assert!(
            e.contains("integration[0].exchange.poll_interval_secs"),
            "{e}"
        );
    }

    #[test]
    fn mailbox_is_an_smtp_address_and_watched_by_one_integration() {
        let e = exchange(&basic("mailbox = \"vmr.room+1@sub.example.com\""), &[]);
        assert_eq!(e.mailbox.as_deref(), Some("vmr.room+1@sub.example.com"));
        for bad in [
            "room",
            "room@",
            "@example.com",
            "a@b@example.com",
            "room @example.com",
            "room@exa_mple.com",
            "room@-x.example.com",
            "<room@example.com>",
            "room@example..com",
        ] {
            assert_refused(
                &basic(&format!("mailbox = \"{bad}\"")),
                &[],
                "integration[0].exchange.mailbox",
                "SMTP address",
            );
        }
        let second = |mailbox_line: &str| {
            format!(
                "{}[[integration]]\nid = \"b\"\nresource_email = \"room-b@example.com\"\n\
                 [integration.exchange]\news_url = \"https://mail.example.com/EWS/Exchange.asmx\"\n\
                 {mailbox_line}\n[integration.exchange.auth]\nmethod = \"basic\"\nusername = \"u\"\npassword = \"p\"\n",
                basic("mailbox = \"shared@example.com\"")
            )
        };
        let c = load(&second(""), &[]).expect("distinct mailboxes");
        assert_eq!(
            c.integrations[0].watched_mailbox(),
            Some("shared@example.com")
        );
        assert_eq!(
            c.integrations[1].watched_mailbox(),
            Some("room-b@example.com")
        );
        let e = err(&second("mailbox = \"SHARED@example.com\""), &[]);
        assert!(
            e.contains("config key `integration[1].exchange.mailbox`")
                && e.contains("already watched by integration[0]"),
            "{e}"
        );
        // b watches its resource_email by default, which a already watches.
        let e = err(
            &second("").replace(
                "mailbox = \"shared@example.com\"",
                "mailbox = \"room-b@example.com\"",
            ),
            &[],
        );
        assert!(
            e.contains("config key `integration[1].exchange.mailbox`")
                && e.contains("the default: this integration's resource_email"),
            "{e}"
        );
        // An integration without a mailbox connection watches nothing.
        load(
            &format!(
                "{}[[integration]]\nid = \"b\"\nresource_email = \"room-b@example.com\"\n",
                basic("mailbox = \"room-b@example.com\"")
            ),
            &[],
        )
        .expect("b has no exchange table");
    }

    #[test]
    fn environment_overrides_reach_the_exchange_tables() {
        let e = exchange(
            &basic(""),
            &[
                ("VMR__INTEGRATION__0__EXCHANGE__POLL_INTERVAL_SECS", "30"),
                ("VMR__INTEGRATION__0__EXCHANGE__STREAMING", "false"),
                (
                    "VMR__INTEGRATION__0__EXCHANGE__MAILBOX",
                    "other@example.com",
                ),
                ("VMR__INTEGRATION__0__EXCHANGE__AUTH__PASSWORD", "123456"),
            ],
        );
        assert_eq!(e.poll_interval_secs, 30);
        assert!(!e.streaming);
        assert_eq!(e.mailbox.as_deref(), Some("other@example.com"));
        let ExchangeAuth::Basic { password, .. } = &e.auth else {
            panic!("basic expected");
        };
        assert_eq!(
            password.expose(),
            "123456",
            "a secret override stays a string"
        );

        // The whole connection from the environment, the password by reference.
        let c = load(
            "[[integration]]\nid = \"a\"\nresource_email = \"room-a@example.com\"\n",
            &[
                (
                    "VMR__INTEGRATION__0__EXCHANGE__EWS_URL",
                    "https://mail.example.com/EWS/Exchange.asmx",
                ),
                ("VMR__INTEGRATION__0__EXCHANGE__AUTH__METHOD", "basic"),
                ("VMR__INTEGRATION__0__EXCHANGE__AUTH__USERNAME", "svc"),
                (
                    "VMR__INTEGRATION__0__EXCHANGE__AUTH__PASSWORD_ENV",
                    "VMR_EWS_PASSWORD",
                ),
                ("VMR_EWS_PASSWORD", PASSWORD),
            ],
        )
        .expect("valid");
        let e = c.integrations[0]
            .exchange
            .as_ref()
            .expect("exchange from env");
        assert!(
            matches!(&e.auth, ExchangeAuth::Basic { password, .. } if password.expose() == PASSWORD)
        );

        assert_refused(
            &basic(""),
            &[("VMR__INTEGRATION__0__EXCHANGE__MAX_CONCURRENCY", "28")],
            "integration[0].exchange.max_concurrency",
            "found 28",
        );
        // An override adding a second source of the same secret is refused.
        assert_refused(
            &basic(""),
            &[(
                "VMR__INTEGRATION__0__EXCHANGE__AUTH__PASSWORD_FILE",
                "/run/secrets/ews",
            )],
            "integration[0].exchange.auth.password",
            "one way only",
        );
    }

    /// Records the level of every event logged while it is the default.
    struct WarningRecorder(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl tracing::Subscriber for WarningRecorder {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            struct Fields(String);
            impl tracing::field::Visit for Fields {
                fn record_debug(
                    &mut self,
                    field: &tracing::field::Field,
                    value: &dyn std::fmt::Debug,
                ) {
                    self.0.push_str(&format!("{}={value:?} ", field.name()));
                }
            }
            let mut fields = Fields(format!("{} ", event.metadata().level()));
            event.record(&mut fields);
            self.0.lock().expect("recorder lock").push(fields.0);
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    fn warnings_while_loading(toml: &str) -> Vec<String> {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorder = WarningRecorder(seen.clone());
        tracing::subscriber::with_default(recorder, || load(toml, &[]).expect("valid"));
        let seen = seen.lock().expect("recorder lock").clone();
        seen.into_iter().filter(|e| e.starts_with("WARN")).collect()
    }

    #[test]
    fn weakened_tls_is_warned_about_at_load() {
        assert!(warnings_while_loading(&basic("")).is_empty());
        let warned = warnings_while_loading(&basic("danger_accept_invalid_certs = true"));
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].contains("TLS CERTIFICATE CHECKS ARE OFF")
                && warned[0].contains("integration[0].exchange.danger_accept_invalid_certs"),
            "{warned:?}"
        );
        let http = basic("allow_insecure_http = true")
            .replace("https://mail.example.com", "http://127.0.0.1:8080");
        let warned = warnings_while_loading(&http);
        assert!(
            warned.len() == 1 && warned[0].contains("plain http"),
            "{warned:?}"
        );
        assert!(!warned[0].contains(PASSWORD), "{warned:?}");
    }

    #[test]
    fn secrets_appear_in_no_error_and_no_debug_output() {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret_file = write(dir.path(), "pw", &format!("{PASSWORD}\n"));
        let key_der = pkcs8_der(&RSA_ENCRYPTION_OID);
        let key_pem = pem("PRIVATE KEY", &key_der);
        let key_b64 = base64::engine::general_purpose::STANDARD.encode(&key_der);
        let ec_key = write(
            dir.path(),
            "ec.pem",
            &pem("PRIVATE KEY", &pkcs8_der(&[0x06, 0x03, 0x2b, 0x65, 0x70])),
        );
        let cert = write(
            dir.path(),
            "cert.pem",
            &pem("CERTIFICATE", &certificate_der()),
        );
        let key = write(dir.path(), "key.pem", &key_pem);
        let user = "method = \"basic\"\nusername = \"svc\"\n";
        let env = [("VMR_EWS_PASSWORD", PASSWORD)];

        // Loaded configurations, each holding the secret.
        let loaded = [
            basic(""),
            with("", &format!("{user}password_env = \"VMR_EWS_PASSWORD\"")),
            with(
                "",
                &format!("{user}password_file = {}", toml_path(&secret_file)),
            ),
            oauth(
                "",
                &format!("tenant = \"t\"\nclient_secret = \"{PASSWORD}\""),
            ),
            oauth(
                "",
                &format!(
                    "tenant = \"t\"\ncertificate = {}\nprivate_key = {}",
                    toml_path(&cert),
                    toml_path(&key)
                ),
            ),
        ];
        for toml in &loaded {
            let c = load(toml, &env).unwrap_or_else(|e| panic!("valid: {e}"));
            for shown in [format!("{c:?}"), format!("{c:#?}")] {
                assert!(!shown.contains(PASSWORD), "{shown}");
                assert!(!shown.contains(&key_b64[..40]), "{shown}");
            }
        }

        // Refused configurations that hold the secret somewhere.
        let refused: Vec<(String, Vec<(&str, &str)>)> = vec![
            (basic("poll_interval_secs = 1"), vec![]),
            (
                basic("").replace("https://mail.example.com", "http://mail.example.com"),
                vec![],
            ),
            (
                with(
                    "",
                    &format!(
                        "{user}password = \"{PASSWORD}\"\npassword_env = \"VMR_EWS_PASSWORD\""
                    ),
                ),
                env.to_vec(),
            ),
            (
                with(
                    "",
                    &format!(
                        "{user}password_file = {}\npassword = \"{PASSWORD}\"",
                        toml_path(&secret_file)
                    ),
                ),
                vec![],
            ),
            (
                with(
                    "",
                    &format!("{user}password_env = \"VMR_EWS_PASSWORD\"\ntenant = \"t\""),
                ),
                env.to_vec(),
            ),
            (
                with(
                    "",
                    "method = \"basic\"\nusername = \"svc\"\npassword = 123456789",
                ),
                vec![],
            ),
            (
                with(
                    "",
                    "method = \"basic\"\nusername = \"svc\"\npassword = [\"S3cret-Pa55word!\"]",
                ),
                vec![],
            ),
            (with("", &format!("{user}password = \"{PASSWORD}")), vec![]),
            (
                with(
                    "",
                    &format!("{user}password = \"{PASSWORD}\"\npassword = \"{PASSWORD}\""),
                ),
                vec![],
            ),
            (
                basic("").replace(
                    "https://mail.example.com",
                    &format!("https://svc:{PASSWORD}@mail.example.com"),
                ),
                vec![],
            ),
            (
                basic("").replace(
                    "https://mail.example.com/EWS/Exchange.asmx",
                    &format!("https://svc:{PASSWORD} @mail"),
                ),
                vec![],
            ),
            (
                oauth(
                    "access = \"delegate\"",
                    &format!("tenant = \"t\"\nclient_secret = \"{PASSWORD}\""),
                ),
                vec![],
            ),
            (
                oauth(
                    "",
                    &format!(
                        "tenant = \"t\"\ncertificate = {}\nprivate_key = {}",
                        toml_path(&key),
                        toml_path(&key)
                    ),
                ),
                vec![],
            ),
            (
                oauth(
                    "",
                    &format!(
                        "tenant = \"t\"\ncertificate = {}\nprivate_key = {}",
                        toml_path(&cert),
                        toml_path(&ec_key)
                    ),
                ),
                vec![],
            ),
            (
                basic(""),
                vec![
                    (
                        "VMR__INTEGRATION__0__EXCHANGE__AUTH__PASSWORD_ENV",
                        "VMR_EWS_PASSWORD",
                    ),
                    ("VMR_EWS_PASSWORD", PASSWORD),
                ],
            ),
            (
                "role = \"edge\"\n[management]\nshared_secret = 1234567890123456789\n".to_string(),
                vec![],
            ),
        ];
        for (toml, env) in &refused {
            let e = match load(toml, env) {
                Ok(c) => panic!("must be rejected: {toml}\n{c:?}"),
                Err(e) => e,
            };
            for shown in [e.to_string(), format!("{e:?}")] {
                assert!(!shown.contains(PASSWORD), "leaked in: {shown}");
                assert!(!shown.contains("123456789"), "leaked in: {shown}");
                assert!(!shown.contains(&key_b64[..40]), "leaked in: {shown}");
            }
        }
    }
}
