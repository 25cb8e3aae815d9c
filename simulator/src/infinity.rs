//! The simulated Pexip Infinity management API: the two configuration resources a scheduling
//! service writes when a site keeps its VMRs in Infinity, with the shapes, status codes and
//! paging of Infinity's REST API (a Django/tastypie service).
//!
//! - `/api/admin/configuration/v1/conference/`: the VMRs (`GET` list, `POST` create → 201 with
//!   `Location`; `GET`/`PATCH` (202)/`PUT` (204)/`DELETE` (204) on `…/conference/<id>/`).
//!   Aliases are embedded in each conference as `aliases`; a `POST` or `PATCH` that carries
//!   `aliases` sets the conference's aliases to that list.
//! - `/api/admin/configuration/v1/conference_alias/`: the same verbs on aliases; each alias
//!   names its conference by resource URI (`/api/admin/configuration/v1/conference/<id>/`).
//!   Deleting a conference deletes its aliases.
//! - `/api/admin/configuration/v1/ivr_theme/` and `…/identity_provider_group/`: `GET`
//!   (filter `name`), `POST`, `DELETE`; a conference's `ivr_theme`,
//!   `host_identity_provider_group` and `guest_identity_provider_group` must be the resource URI
//!   of an existing one (400 otherwise); deleting one clears it from the VMRs using it.
//!
//! Lists take `limit` (default 20; `0` means up to the maximum of 1000) and `offset` and answer
//! `{"meta": {"limit", "next", "offset", "previous", "total_count"}, "objects": […]}`, `next`
//! and `previous` being paths with the same filters. Filters: a field name (exact) or
//! `<field>__contains|icontains|startswith|istartswith|iexact`, on `name`, `tag`,
//! `description`, `service_type` (conferences) and `alias`, `description` (aliases), plus
//! `conference=<id>` on aliases; any other field is refused with 400 as tastypie does.
//! Validation errors are 400 `{"<resource>": {"<field>": ["…"]}}`; names and aliases are unique
//! (case-insensitive). Every request needs HTTP Basic credentials (401 otherwise).
//!
//! Tests steer it in-process through [`InfinityServer`] (inspection, adding a VMR "by hand",
//! deleting one behind the service's back, fault rules, going down) or over the JSON control
//! routes under `/sim/infinity/…` ([`router`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The configuration API's root.
pub const CONFIGURATION_PATH: &str = "/api/admin/configuration/v1/";
/// The VMR list.
pub const CONFERENCE_PATH: &str = "/api/admin/configuration/v1/conference/";
/// The alias list.
pub const CONFERENCE_ALIAS_PATH: &str = "/api/admin/configuration/v1/conference_alias/";
/// The IVR themes a VMR may use (`ivr_theme` holds one's URI).
pub const IVR_THEME_PATH: &str = "/api/admin/configuration/v1/ivr_theme/";
/// The identity provider groups (`host_identity_provider_group`, `guest_…` hold one's URI).
pub const IDENTITY_PROVIDER_GROUP_PATH: &str =
    "/api/admin/configuration/v1/identity_provider_group/";
/// The administrator of [`InfinityOptions::default`].
pub const DEFAULT_ADMIN: &str = "admin";
/// Its password.
pub const DEFAULT_ADMIN_PASSWORD: &str = "Infinity-Adm1n-Passw0rd";
/// Objects per page when a list request gives no `limit`.
pub const DEFAULT_LIMIT: usize = 20;
/// Most objects one page returns.
pub const MAX_LIMIT: usize = 1000;
/// Most characters of `name`, `description` and `tag`.
const MAX_TEXT: usize = 250;

/// How the simulated management node is set up.
#[derive(Debug, Clone)]
pub struct InfinityOptions {
    /// Basic-auth user name of the administrator.
    pub username: String,
    /// Its password.
    pub password: String,
}

impl Default for InfinityOptions {
    fn default() -> Self {
        InfinityOptions {
            username: DEFAULT_ADMIN.to_owned(),
            password: DEFAULT_ADMIN_PASSWORD.to_owned(),
        }
    }
}

/// A fault rule: requests it matches are delayed by `delay_ms` and, when `status` is set,
/// answered with that status (and `body`) instead of being served.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InfinityFault {
    /// Only this method (`GET`, `POST`, …); `None`: any.
    pub method: Option<String>,
    /// Only paths containing this text; `None`: any.
    pub path_contains: Option<String>,
    /// Only requests whose body contains this text (e.g. a VMR's name); `None`: any.
    pub body_contains: Option<String>,
    /// The answer's status (e.g. 400, 500, 503); `None`: served normally after the delay.
    pub status: Option<u16>,
    /// The answer's body (JSON or text) when `status` is set.
    pub body: Option<String>,
    /// Milliseconds to wait before answering (a slow node).
    pub delay_ms: u64,
    /// How many requests it applies to; `None`: until cleared.
    pub times: Option<u32>,
}

/// One request as the simulated node saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InfinityRequest {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub status: u16,
}

/// An alias as stored.
#[derive(Debug, Clone)]
struct AliasRow {
    alias: String,
    conference: u64,
    description: String,
    creation_time: String,
}

#[derive(Debug, Default)]
struct InfinityState {
    /// Each conference's writable fields plus `creation_time` (no `id`, `aliases`, URIs).
    conferences: BTreeMap<u64, Map<String, Value>>,
    aliases: BTreeMap<u64, AliasRow>,
    next_conference: u64,
    next_alias: u64,
    /// Themes and identity provider groups: id → (kind, name).
    named: BTreeMap<u64, (Resource, String)>,
    next_named: u64,
    faults: Vec<InfinityFault>,
    requests: Vec<InfinityRequest>,
    down: bool,
}

/// The simulated management node.
#[derive(Debug)]
pub struct InfinityServer {
    options: InfinityOptions,
    state: Mutex<InfinityState>,
}

/// A field of the conference resource: its default and what a write must give.
#[derive(Clone, Copy)]
enum Kind {
    /// A string, at most this many characters.
    Text(usize),
    /// A string or null.
    NullableText,
    Bool,
    /// An integer or null.
    NullableInt,
    /// One of these strings.
    Choice(&'static [&'static str]),
    /// A list.
    List,
}

/// Writable conference fields in Infinity's order, with their defaults.
fn conference_fields() -> Vec<(&'static str, Kind, Value)> {
    vec![
        ("allow_guests", Kind::Bool, json!(false)),
        ("automatic_participants", Kind::List, json!([])),
        ("breakout_rooms", Kind::Bool, json!(false)),
        (
            "call_type",
            Kind::Choice(&["video", "video-only", "audio"]),
            json!("video"),
        ),
        (
            "crypto_mode",
            Kind::Choice(&["", "besteffort", "on", "off"]),
            json!(""),
        ),
        ("description", Kind::Text(MAX_TEXT), json!("")),
        (
            "enable_chat",
            Kind::Choice(&["default", "yes", "no"]),
            json!("default"),
        ),
        ("enable_overlay_text", Kind::Bool, json!(false)),
        ("force_presenter_into_main", Kind::Bool, json!(false)),
        (
            "guest_identity_provider_group",
            Kind::NullableText,
            Value::Null,
        ),
        ("guest_pin", Kind::Text(20), json!("")),
        ("guest_view", Kind::NullableText, Value::Null),
        ("guests_can_present", Kind::Bool, json!(true)),
        (
            "host_identity_provider_group",
            Kind::NullableText,
            Value::Null,
        ),
        ("host_view", Kind::Text(100), json!("one_main_seven_pips")),
        ("ivr_theme", Kind::NullableText, Value::Null),
        (
            "live_captions_enabled",
            Kind::Choice(&["default", "yes", "no"]),
            json!("default"),
        ),
        ("match_string", Kind::Text(MAX_TEXT), json!("")),
        ("max_callrate_in", Kind::NullableInt, Value::Null),
        ("max_callrate_out", Kind::NullableInt, Value::Null),
        ("max_pixels_per_second", Kind::NullableText, Value::Null),
        ("mute_all_guests", Kind::Bool, json!(false)),
        ("name", Kind::Text(MAX_TEXT), json!("")),
        (
            "non_idp_participants",
            Kind::Choice(&["disallow_all", "allow_if_trusted"]),
            json!("disallow_all"),
        ),
        ("participant_limit", Kind::NullableInt, Value::Null),
        ("pin", Kind::Text(20), json!("")),
        ("post_match_string", Kind::Text(MAX_TEXT), json!("")),
        ("post_replace_string", Kind::Text(MAX_TEXT), json!("")),
        ("primary_owner_email_address", Kind::Text(100), json!("")),
        ("replace_string", Kind::Text(MAX_TEXT), json!("")),
        (
            "service_type",
            Kind::Choice(&[
                "conference",
                "lecture",
                "two_stage_dialing",
                "test_call",
                "media_playback",
            ]),
            json!("conference"),
        ),
        ("sync_tag", Kind::Text(MAX_TEXT), json!("")),
        ("system_location", Kind::NullableText, Value::Null),
        ("tag", Kind::Text(MAX_TEXT), json!("")),
        (
            "two_stage_dial_type",
            Kind::Choice(&["regular", "mstrm", "gmeet", "teams"]),
            json!("regular"),
        ),
    ]
}

/// Fields lists may filter on.
const CONFERENCE_FILTERS: &[&str] = &["name", "tag", "description", "service_type"];
const ALIAS_FILTERS: &[&str] = &["alias", "description"];
const NAMED_FILTERS: &[&str] = &["name"];

/// Which resource a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Conference,
    ConferenceAlias,
    IvrTheme,
    IdentityProviderGroup,
}

impl Resource {
    fn parse(segment: &str) -> Option<Resource> {
        match segment {
            "conference" => Some(Resource::Conference),
            "conference_alias" => Some(Resource::ConferenceAlias),
            "ivr_theme" => Some(Resource::IvrTheme),
            "identity_provider_group" => Some(Resource::IdentityProviderGroup),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Resource::Conference => "conference",
            Resource::ConferenceAlias => "conference_alias",
            Resource::IvrTheme => "ivr_theme",
            Resource::IdentityProviderGroup => "identity_provider_group",
        }
    }

    fn list_path(self) -> &'static str {
        match self {
            Resource::Conference => CONFERENCE_PATH,
            Resource::ConferenceAlias => CONFERENCE_ALIAS_PATH,
            Resource::IvrTheme => IVR_THEME_PATH,
            Resource::IdentityProviderGroup => IDENTITY_PROVIDER_GROUP_PATH,
        }
    }

    /// Themes and identity provider groups: objects a VMR refers to by name's URI.
    fn is_named(self) -> bool {
        matches!(self, Resource::IvrTheme | Resource::IdentityProviderGroup)
    }
}

/// The resource URI of conference `id`.
pub fn conference_uri(id: u64) -> String {
    format!("{CONFERENCE_PATH}{id}/")
}

/// The resource URI of alias `id`.
pub fn conference_alias_uri(id: u64) -> String {
    format!("{CONFERENCE_ALIAS_PATH}{id}/")
}

/// A refused write: 400 with tastypie's `{"<resource>": {"<field>": ["…"]}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    resource: &'static str,
    field: String,
    message: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}: {}", self.resource, self.field, self.message)
    }
}

impl std::error::Error for Invalid {}

impl Invalid {
    fn new(resource: Resource, field: &str, message: impl Into<String>) -> Invalid {
        Invalid {
            resource: resource.name(),
            field: field.to_owned(),
            message: message.into(),
        }
    }

    fn body(&self) -> Value {
        json!({ self.resource: { self.field.clone(): [self.message.clone()] } })
    }
}

fn now_text() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

/// A conference's fields from a write: `base` (defaults or the stored ones) overwritten by
/// the writable fields of `body`, each checked; unknown and read-only fields are ignored.
fn merge_conference(
    base: &Map<String, Value>,
    body: &Map<String, Value>,
) -> Result<Map<String, Value>, Invalid> {
    let mut out = base.clone();
    for (field, kind, _) in conference_fields() {
        let Some(value) = body.get(field) else {
            continue;
        };
        let bad = |what: &str| Invalid::new(Resource::Conference, field, what.to_owned());
        match kind {
            Kind::Text(max) => match value.as_str() {
                Some(s) if s.chars().count() > max => {
                    return Err(bad(&format!(
                        "Ensure this value has at most {max} characters (it has {}).",
                        s.chars().count()
                    )))
                }
                Some(_) => {}
                None => return Err(bad("This field must be a string.")),
            },
            Kind::NullableText => {
                if !(value.is_null() || value.is_string()) {
                    return Err(bad("This field must be a string or null."));
                }
            }
            Kind::Bool => {
                if !value.is_boolean() {
                    return Err(bad("'Must be a boolean.'"));
                }
            }
            Kind::NullableInt => {
                if !(value.is_null() || value.is_i64() || value.is_u64()) {
                    return Err(bad("Enter a whole number."));
                }
            }
            Kind::Choice(choices) => match value.as_str() {
                Some(s) if choices.contains(&s) => {}
                _ => return Err(bad(&format!("Value {value} is not a valid choice."))),
            },
            Kind::List => {
                if !value.is_array() {
                    return Err(bad("This field must be a list."));
                }
            }
        }
        out.insert(field.to_owned(), value.clone());
    }
    for pin in ["pin", "guest_pin"] {
        let text = out.get(pin).and_then(Value::as_str).unwrap_or_default();
        if !text.is_empty() && (text.len() < 4 || !text.bytes().all(|b| b.is_ascii_digit())) {
            return Err(Invalid::new(
                Resource::Conference,
                pin,
                "PIN must be between 4 and 20 digits.",
            ));
        }
    }
    let name = out.get("name").and_then(Value::as_str).unwrap_or_default();
    if name.trim().is_empty() {
        return Err(Invalid::new(
            Resource::Conference,
            "name",
            "This field is required.",
        ));
    }
    Ok(out)
}

fn default_conference() -> Map<String, Value> {
    conference_fields()
        .into_iter()
        .map(|(field, _, default)| (field.to_owned(), default))
        .collect()
}

/// `(alias, description)` pairs of an `aliases` list in a conference write.
fn aliases_of_body(list: &Value) -> Result<Vec<(String, String)>, Invalid> {
    let bad = |m: &str| Invalid::new(Resource::Conference, "aliases", m.to_owned());
    let Some(items) = list.as_array() else {
        return Err(bad("This field must be a list."));
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for item in items {
        let (alias, description) = match item {
            Value::Object(o) => (
                o.get("alias").and_then(Value::as_str),
                o.get("description").and_then(Value::as_str).unwrap_or(""),
            ),
            _ => (None, ""),
        };
        let Some(alias) = alias.filter(|a| !a.trim().is_empty()) else {
            return Err(bad("Each alias needs an \"alias\" string."));
        };
        if out.iter().any(|(a, _)| a.eq_ignore_ascii_case(alias)) {
            return Err(bad(&format!("Alias {alias} appears twice.")));
        }
        out.push((alias.to_owned(), description.to_owned()));
    }
    Ok(out)
}

fn text_matches(value: &str, op: &str, wanted: &str) -> bool {
    match op {
        "exact" => value == wanted,
        "iexact" => value.eq_ignore_ascii_case(wanted),
        "contains" => value.contains(wanted),
        "icontains" => value.to_lowercase().contains(&wanted.to_lowercase()),
        "startswith" => value.starts_with(wanted),
        "istartswith" => value.to_lowercase().starts_with(&wanted.to_lowercase()),
        _ => false,
    }
}

/// `%`-encoding for the query strings of `next`/`previous`.
fn encode_query_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (
                crate::ews::http::percent_decode(k),
                crate::ews::http::percent_decode(v),
            ),
            None => (crate::ews::http::percent_decode(pair), String::new()),
        })
        .collect()
}

/// What a list request asked for.
struct ListQuery {
    limit: usize,
    offset: usize,
    /// `(field, op, value)`.
    filters: Vec<(String, String, String)>,
    order_by: Option<String>,
    /// The parameters other than `limit`/`offset`, for `next`/`previous`.
    kept: Vec<(String, String)>,
}

fn list_query(resource: Resource, params: &[(String, String)]) -> Result<ListQuery, String> {
    let mut q = ListQuery {
        limit: DEFAULT_LIMIT,
        offset: 0,
        filters: Vec::new(),
        order_by: None,
        kept: Vec::new(),
    };
    let allowed = match resource {
        Resource::Conference => CONFERENCE_FILTERS,
        Resource::ConferenceAlias => ALIAS_FILTERS,
        Resource::IvrTheme | Resource::IdentityProviderGroup => NAMED_FILTERS,
    };
    for (key, value) in params {
        match key.as_str() {
            "limit" => {
                q.limit = value.parse::<usize>().map_err(|_| {
                    format!("Invalid limit '{value}' provided. Please provide a positive integer.")
                })?;
                if q.limit == 0 || q.limit > MAX_LIMIT {
                    q.limit = MAX_LIMIT;
                }
                continue;
            }
            "offset" => {
                q.offset = value
                    .parse::<usize>()
                    .map_err(|_| format!("Invalid offset '{value}' provided. Please provide a positive integer >= 0."))?;
                continue;
            }
            "format" => {}
            "order_by" => {
                let field = value.trim_start_matches('-');
                if field != "id" && !allowed.contains(&field) {
                    return Err(format!("No matching '{field}' field for ordering on."));
                }
                q.order_by = Some(value.clone());
            }
            "conference" if resource == Resource::ConferenceAlias => {
                q.filters
                    .push(("conference".into(), "exact".into(), value.clone()));
            }
            "id" => q.filters.push(("id".into(), "exact".into(), value.clone())),
            other => {
                let (field, op) = other.split_once("__").unwrap_or((other, "exact"));
                if !allowed.contains(&field) {
                    return Err(format!("The '{field}' field does not allow filtering."));
                }
                if ![
                    "exact",
                    "iexact",
                    "contains",
                    "icontains",
                    "startswith",
                    "istartswith",
                ]
                .contains(&op)
                {
                    return Err(format!("The '{op}' is not a valid filter on '{field}'."));
                }
                q.filters.push((field.into(), op.into(), value.clone()));
            }
        }
        q.kept.push((key.clone(), value.clone()));
    }
    Ok(q)
}

fn page_link(path: &str, kept: &[(String, String)], limit: usize, offset: usize) -> String {
    let mut parts = vec![format!("limit={limit}"), format!("offset={offset}")];
    parts.extend(
        kept.iter()
            .map(|(k, v)| format!("{}={}", encode_query_part(k), encode_query_part(v))),
    );
    format!("{path}?{}", parts.join("&"))
}

fn lock(state: &Mutex<InfinityState>) -> MutexGuard<'_, InfinityState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl InfinityState {
    fn render_alias(&self, id: u64) -> Option<Value> {
        let a = self.aliases.get(&id)?;
        Some(json!({
            "alias": a.alias,
            "conference": conference_uri(a.conference),
            "creation_time": a.creation_time,
            "description": a.description,
            "id": id,
            "resource_uri": conference_alias_uri(id),
        }))
    }

    fn render_conference(&self, id: u64) -> Option<Value> {
        let fields = self.conferences.get(&id)?;
        let mut out = fields.clone();
        let aliases: Vec<Value> = self
            .aliases
            .iter()
            .filter(|(_, a)| a.conference == id)
            .filter_map(|(alias_id, _)| self.render_alias(*alias_id))
            .collect();
        out.insert("aliases".into(), Value::Array(aliases));
        out.insert("id".into(), json!(id));
        out.insert("resource_uri".into(), json!(conference_uri(id)));
        out.insert("scheduled_conferences".into(), json!([]));
        out.insert("scheduled_conferences_count".into(), json!(0));
        Some(Value::Object(out))
    }

    fn render_named(&self, id: u64) -> Option<Value> {
        let (kind, name) = self.named.get(&id)?;
        let mut object = json!({
            "id": id,
            "name": name,
            "resource_uri": format!("{}{id}/", kind.list_path()),
        });
        if *kind == Resource::IdentityProviderGroup {
            object["description"] = json!("");
            object["identity_provider"] = json!([]);
        }
        Some(object)
    }

    fn create_named(&mut self, kind: Resource, body: &Map<String, Value>) -> Result<u64, Invalid> {
        let name = match body.get("name") {
            Some(Value::String(n)) if !n.trim().is_empty() && n.chars().count() <= MAX_TEXT => n,
            _ => return Err(Invalid::new(kind, "name", "This field is required.")),
        };
        if self
            .named
            .values()
            .any(|(k, n)| *k == kind && n.eq_ignore_ascii_case(name))
        {
            return Err(Invalid::new(
                kind,
                "name",
                "An object with this Name already exists.",
            ));
        }
        self.next_named += 1;
        self.named.insert(self.next_named, (kind, name.clone()));
        Ok(self.next_named)
    }

    /// Removes a theme or group; VMRs that used it fall back to none (Django's SET_NULL).
    fn delete_named(&mut self, kind: Resource, id: u64) -> bool {
        if self.named.get(&id).is_none_or(|(k, _)| *k != kind) {
            return false;
        }
        self.named.remove(&id);
        let uri = format!("{}{id}/", kind.list_path());
        for c in self.conferences.values_mut() {
            for field in [
                "ivr_theme",
                "host_identity_provider_group",
                "guest_identity_provider_group",
            ] {
                if c.get(field).and_then(Value::as_str) == Some(uri.as_str()) {
                    c.insert(field.into(), Value::Null);
                }
            }
        }
        true
    }

    /// The theme and group fields of a conference name existing objects of their kind.
    fn check_references(&self, fields: &Map<String, Value>) -> Result<(), Invalid> {
        for (field, kind) in [
            ("ivr_theme", Resource::IvrTheme),
            (
                "host_identity_provider_group",
                Resource::IdentityProviderGroup,
            ),
            (
                "guest_identity_provider_group",
                Resource::IdentityProviderGroup,
            ),
        ] {
            let Some(uri) = fields.get(field).and_then(Value::as_str) else {
                continue;
            };
            let found = uri
                .strip_prefix(kind.list_path())
                .and_then(|rest| rest.trim_end_matches('/').parse::<u64>().ok())
                .is_some_and(|id| self.named.get(&id).is_some_and(|(k, _)| *k == kind));
            if !found {
                return Err(Invalid::new(
                    Resource::Conference,
                    field,
                    format!("Could not find the provided object via resource URI '{uri}'."),
                ));
            }
        }
        Ok(())
    }

    fn name_taken(&self, name: &str, except: Option<u64>) -> bool {
        self.conferences.iter().any(|(id, c)| {
            Some(*id) != except
                && c.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
    }

    fn alias_taken(&self, alias: &str, except: Option<u64>) -> bool {
        self.aliases
            .iter()
            .any(|(id, a)| Some(*id) != except && a.alias.eq_ignore_ascii_case(alias))
    }

    /// Creates a conference (and the aliases in `body.aliases`); its id.
    fn create_conference(&mut self, body: &Map<String, Value>) -> Result<u64, Invalid> {
        let mut fields = merge_conference(&default_conference(), body)?;
        self.check_references(&fields)?;
        let name = fields["name"].as_str().unwrap_or_default().to_owned();
        if self.name_taken(&name, None) {
            return Err(Invalid::new(
                Resource::Conference,
                "name",
                "Service with this Name already exists.",
            ));
        }
        let aliases = match body.get("aliases") {
            Some(list) => aliases_of_body(list)?,
            None => Vec::new(),
        };
        for (alias, _) in &aliases {
            if self.alias_taken(alias, None) {
                return Err(Invalid::new(
                    Resource::Conference,
                    "aliases",
                    format!("Alias {alias} already exists."),
                ));
            }
        }
        let now = now_text();
        fields.insert("creation_time".into(), json!(now));
        self.next_conference += 1;
        let id = self.next_conference;
        self.conferences.insert(id, fields);
        for (alias, description) in aliases {
            self.next_alias += 1;
            self.aliases.insert(
                self.next_alias,
                AliasRow {
                    alias,
                    conference: id,
                    description,
                    creation_time: now.clone(),
                },
            );
        }
        Ok(id)
    }

    /// Updates conference `id` from `body` over `base` (`PATCH`: the stored fields; `PUT`:
    /// the defaults); an `aliases` list replaces its aliases.
    fn update_conference(
        &mut self,
        id: u64,
        body: &Map<String, Value>,
        put: bool,
    ) -> Result<(), Invalid> {
        let Some(stored) = self.conferences.get(&id) else {
            return Err(Invalid::new(Resource::Conference, "id", "not found"));
        };
        let creation_time = stored.get("creation_time").cloned().unwrap_or(Value::Null);
        let base = if put {
            default_conference()
        } else {
            stored.clone()
        };
        let mut fields = merge_conference(&base, body)?;
        self.check_references(&fields)?;
        let name = fields["name"].as_str().unwrap_or_default().to_owned();
        if self.name_taken(&name, Some(id)) {
            return Err(Invalid::new(
                Resource::Conference,
                "name",
                "Service with this Name already exists.",
            ));
        }
        let aliases = match body.get("aliases") {
            Some(list) => Some(aliases_of_body(list)?),
            None => None,
        };
        if let Some(aliases) = &aliases {
            for (alias, _) in aliases {
                let own = self
                    .aliases
                    .values()
                    .any(|a| a.conference == id && a.alias.eq_ignore_ascii_case(alias));
                if !own && self.alias_taken(alias, None) {
                    return Err(Invalid::new(
                        Resource::Conference,
                        "aliases",
                        format!("Alias {alias} already exists."),
                    ));
                }
            }
        }
        fields.insert("creation_time".into(), creation_time);
        self.conferences.insert(id, fields);
        if let Some(aliases) = aliases {
            self.aliases.retain(|_, a| {
                a.conference != id
                    || aliases
                        .iter()
                        .any(|(wanted, _)| wanted.eq_ignore_ascii_case(&a.alias))
            });
            let now = now_text();
            for (alias, description) in aliases {
                let existing = self
                    .aliases
                    .values_mut()
                    .find(|a| a.conference == id && a.alias.eq_ignore_ascii_case(&alias));
                match existing {
                    Some(a) => a.description = description,
                    None => {
                        self.next_alias += 1;
                        self.aliases.insert(
                            self.next_alias,
                            AliasRow {
                                alias,
                                conference: id,
                                description,
                                creation_time: now.clone(),
                            },
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn delete_conference(&mut self, id: u64) -> bool {
        let existed = self.conferences.remove(&id).is_some();
        if existed {
            self.aliases.retain(|_, a| a.conference != id);
        }
        existed
    }

    /// The conference id an alias write names (`conference`: resource URI or bare id).
    fn alias_conference(&self, body: &Map<String, Value>) -> Result<u64, Invalid> {
        let bad = |m: &str| Invalid::new(Resource::ConferenceAlias, "conference", m.to_owned());
        let text = match body.get("conference") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(bad("This field is required.")),
        };
        let id_text = text
            .strip_prefix(CONFERENCE_PATH)
            .map(|rest| rest.trim_end_matches('/'))
            .unwrap_or(&text);
        let id: u64 = id_text
            .parse()
            .map_err(|_| bad(&format!("Could not resolve URI {text:?}.")))?;
        if !self.conferences.contains_key(&id) {
            return Err(bad(&format!(
                "Could not find the provided object via resource URI '{text}'."
            )));
        }
        Ok(id)
    }

    fn write_alias(
        &mut self,
        id: Option<u64>,
        body: &Map<String, Value>,
        put: bool,
    ) -> Result<u64, Invalid> {
        let stored = id.and_then(|id| self.aliases.get(&id)).cloned();
        let conference = match (body.contains_key("conference"), &stored) {
            (false, Some(s)) if !put => s.conference,
            _ => self.alias_conference(body)?,
        };
        let alias = match (body.get("alias"), &stored) {
            (Some(Value::String(a)), _) => a.clone(),
            (Some(_), _) => {
                return Err(Invalid::new(
                    Resource::ConferenceAlias,
                    "alias",
                    "This field must be a string.",
                ))
            }
            (None, Some(s)) if !put => s.alias.clone(),
            (None, _) => {
                return Err(Invalid::new(
                    Resource::ConferenceAlias,
                    "alias",
                    "This field is required.",
                ))
            }
        };
        if alias.trim().is_empty() || alias.chars().count() > MAX_TEXT {
            return Err(Invalid::new(
                Resource::ConferenceAlias,
                "alias",
                "Enter an alias of 1 to 250 characters.",
            ));
        }
        if self.alias_taken(&alias, id) {
            return Err(Invalid::new(
                Resource::ConferenceAlias,
                "alias",
                "Conference alias with this Alias already exists.",
            ));
        }
        let description = match (body.get("description"), &stored) {
            (Some(Value::String(d)), _) => d.clone(),
            (Some(_), _) => {
                return Err(Invalid::new(
                    Resource::ConferenceAlias,
                    "description",
                    "This field must be a string.",
                ))
            }
            (None, Some(s)) if !put => s.description.clone(),
            (None, _) => String::new(),
        };
        let id = match id {
            Some(id) => id,
            None => {
                self.next_alias += 1;
                self.next_alias
            }
        };
        let creation_time = stored.map_or_else(now_text, |s| s.creation_time);
        self.aliases.insert(
            id,
            AliasRow {
                alias,
                conference,
                description,
                creation_time,
            },
        );
        Ok(id)
    }

    fn list(&self, resource: Resource, q: &ListQuery) -> Value {
        let mut objects: Vec<(u64, Value)> = match resource {
            Resource::Conference => self
                .conferences
                .keys()
                .filter_map(|id| Some((*id, self.render_conference(*id)?)))
                .collect(),
            Resource::ConferenceAlias => self
                .aliases
                .keys()
                .filter_map(|id| Some((*id, self.render_alias(*id)?)))
                .collect(),
            named => self
                .named
                .iter()
                .filter(|(_, (kind, _))| *kind == named)
                .filter_map(|(id, _)| Some((*id, self.render_named(*id)?)))
                .collect(),
        };
        objects.retain(|(id, object)| {
            q.filters
                .iter()
                .all(|(field, op, wanted)| match field.as_str() {
                    "id" => wanted.parse::<u64>().is_ok_and(|w| w == *id),
                    "conference" => {
                        let uri = object["conference"].as_str().unwrap_or_default();
                        uri == wanted.as_str()
                            || wanted
                                .parse::<u64>()
                                .is_ok_and(|w| uri == conference_uri(w))
                    }
                    _ => text_matches(
                        object[field.as_str()].as_str().unwrap_or_default(),
                        op,
                        wanted,
                    ),
                })
        });
        if let Some(order) = &q.order_by {
            let field = order.trim_start_matches('-');
            objects.sort_by(|(a_id, a), (b_id, b)| {
                if field == "id" {
                    a_id.cmp(b_id)
                } else {
                    a[field]
                        .as_str()
                        .unwrap_or_default()
                        .cmp(b[field].as_str().unwrap_or_default())
                        .then(a_id.cmp(b_id))
                }
            });
            if order.starts_with('-') {
                objects.reverse();
            }
        }
        let total = objects.len();
        let page: Vec<Value> = objects
            .into_iter()
            .skip(q.offset)
            .take(q.limit)
            .map(|(_, o)| o)
            .collect();
        let path = resource.list_path();
        let next = (q.offset + q.limit < total)
            .then(|| page_link(path, &q.kept, q.limit, q.offset + q.limit));
        let previous = (q.offset > 0)
            .then(|| page_link(path, &q.kept, q.limit, q.offset.saturating_sub(q.limit)));
        json!({
            "meta": {
                "limit": q.limit,
                "next": next,
                "offset": q.offset,
                "previous": previous,
                "total_count": total,
            },
            "objects": page,
        })
    }
}

impl InfinityServer {
    /// An empty management node.
    pub fn new(options: InfinityOptions) -> InfinityServer {
        InfinityServer {
            options,
            state: Mutex::new(InfinityState::default()),
        }
    }

    /// The administrator's user name and password.
    pub fn credentials(&self) -> (&str, &str) {
        (&self.options.username, &self.options.password)
    }

    /// Every conference, rendered as the API renders it, by id.
    pub fn conferences(&self) -> Vec<Value> {
        let state = lock(&self.state);
        state
            .conferences
            .keys()
            .filter_map(|id| state.render_conference(*id))
            .collect()
    }

    /// The conference named `name` (case-insensitive), rendered.
    pub fn conference_named(&self, name: &str) -> Option<Value> {
        let state = lock(&self.state);
        let id = state.conferences.iter().find_map(|(id, c)| {
            c.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
                .then_some(*id)
        })?;
        state.render_conference(id)
    }

    /// The conference that has alias `alias`, rendered.
    pub fn conference_with_alias(&self, alias: &str) -> Option<Value> {
        let state = lock(&self.state);
        let id = state
            .aliases
            .values()
            .find(|a| a.alias.eq_ignore_ascii_case(alias))?
            .conference;
        state.render_conference(id)
    }

    /// The alias texts of conference `name`, sorted; empty when there is no such conference.
    pub fn alias_names_of(&self, name: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .conference_named(name)
            .and_then(|c| c["aliases"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|a| a["alias"].as_str().map(str::to_owned))
            .collect();
        out.sort();
        out
    }

    /// Creates a conference as an administrator would in Infinity's own UI (`body` as in a
    /// `POST`, `aliases` included); its id.
    pub fn create_conference(&self, body: Value) -> Result<u64, Invalid> {
        let Value::Object(body) = body else {
            return Err(Invalid::new(
                Resource::Conference,
                "__all__",
                "not an object",
            ));
        };
        lock(&self.state).create_conference(&body)
    }

    /// Adds alias `alias` to conference `name` as an administrator would; false when there is
    /// no such conference or the alias is taken.
    pub fn add_alias(&self, name: &str, alias: &str) -> bool {
        let Some(id) = self.conference_named(name).and_then(|c| c["id"].as_u64()) else {
            return false;
        };
        let body = json!({"alias": alias, "conference": conference_uri(id)});
        let Value::Object(body) = body else {
            return false;
        };
        lock(&self.state).write_alias(None, &body, false).is_ok()
    }

    /// Deletes conference `name` (and its aliases) behind any client's back; whether it existed.
    pub fn delete_conference_named(&self, name: &str) -> bool {
        let Some(id) = self.conference_named(name).and_then(|c| c["id"].as_u64()) else {
            return false;
        };
        lock(&self.state).delete_conference(id)
    }

    /// Adds an IVR theme as an administrator uploads one; its resource URI.
    pub fn add_ivr_theme(&self, name: &str) -> Result<String, Invalid> {
        self.add_named(Resource::IvrTheme, name)
    }

    /// Adds an identity provider group; its resource URI.
    pub fn add_identity_provider_group(&self, name: &str) -> Result<String, Invalid> {
        self.add_named(Resource::IdentityProviderGroup, name)
    }

    fn add_named(&self, kind: Resource, name: &str) -> Result<String, Invalid> {
        let mut body = Map::new();
        body.insert("name".into(), json!(name));
        let id = lock(&self.state).create_named(kind, &body)?;
        Ok(format!("{}{id}/", kind.list_path()))
    }

    /// Adds a fault rule.
    pub fn inject(&self, fault: InfinityFault) {
        lock(&self.state).faults.push(fault);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        lock(&self.state).faults.clear();
    }

    /// Down: every API request is answered 503 (as the node's front end does while the
    /// management node is unreachable or restarting) until set up again.
    pub fn set_down(&self, down: bool) {
        lock(&self.state).down = down;
    }

    /// The requests seen so far, in order.
    pub fn requests(&self) -> Vec<InfinityRequest> {
        lock(&self.state).requests.clone()
    }

    fn authorised(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some(encoded) = value
            .strip_prefix("Basic ")
            .or_else(|| value.strip_prefix("basic "))
        else {
            return false;
        };
        let Ok(decoded) = B64.decode(encoded.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return false;
        };
        text.split_once(':').is_some_and(|(user, password)| {
            user == self.options.username && password == self.options.password
        })
    }

    /// The fault rule that applies to this request (its use counted), if any.
    fn fault_for(&self, method: &Method, uri: &str, body: &[u8]) -> Option<InfinityFault> {
        let mut state = lock(&self.state);
        let body = String::from_utf8_lossy(body);
        let index = state.faults.iter().position(|f| {
            f.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
                && f.path_contains.as_deref().is_none_or(|p| uri.contains(p))
                && f.body_contains.as_deref().is_none_or(|b| body.contains(b))
        })?;
        let fault = state.faults[index].clone();
        if let Some(times) = state.faults[index].times.as_mut() {
            *times = times.saturating_sub(1);
            if *times == 0 {
                state.faults.remove(index);
            }
        }
        Some(fault)
    }

    fn record(&self, method: &Method, uri: &str, status: StatusCode) {
        lock(&self.state).requests.push(InfinityRequest {
            method: method.to_string(),
            uri: uri.to_owned(),
            status: status.as_u16(),
        });
    }

    /// Serves one API request: faults, down, auth, then the resource.
    async fn serve(
        &self,
        method: Method,
        uri: &Uri,
        headers: &HeaderMap,
        resource: &str,
        id: Option<&str>,
        body: Bytes,
    ) -> Response {
        let shown = uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
        let fault = self.fault_for(&method, &shown, &body);
        if let Some(f) = &fault {
            if f.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(f.delay_ms)).await;
            }
        }
        let response = if let Some(status) = fault.as_ref().and_then(|f| f.status) {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = fault
                .and_then(|f| f.body)
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
            (status, body).into_response()
        } else if lock(&self.state).down {
            (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response()
        } else if !self.authorised(headers) {
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"Pexip Infinity\"")],
            )
                .into_response()
        } else {
            match Resource::parse(resource) {
                None => StatusCode::NOT_FOUND.into_response(),
                Some(resource) => self.resource(method.clone(), uri, headers, resource, id, &body),
            }
        };
        self.record(&method, &shown, response.status());
        response
    }

    fn resource(
        &self,
        method: Method,
        uri: &Uri,
        headers: &HeaderMap,
        resource: Resource,
        id: Option<&str>,
        body: &[u8],
    ) -> Response {
        let id = match id.map(str::parse::<u64>) {
            None => None,
            Some(Ok(id)) => Some(id),
            Some(Err(_)) => return StatusCode::NOT_FOUND.into_response(),
        };
        let parsed_body = || match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(o)) => Some(o),
            _ => None,
        };
        let not_an_object = || {
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "The request body is not a JSON object."})),
            )
                .into_response()
        };
        let invalid = |e: Invalid| (StatusCode::BAD_REQUEST, Json(e.body())).into_response();
        let mut state = lock(&self.state);
        match (method, id) {
            (Method::GET, None) => {
                let params = parse_query(uri.query());
                match list_query(resource, &params) {
                    Ok(q) => Json(state.list(resource, &q)).into_response(),
                    Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
                }
            }
            (Method::GET, Some(id)) => {
                let object = match resource {
                    Resource::Conference => state.render_conference(id),
                    Resource::ConferenceAlias => state.render_alias(id),
                    named => state.render_named(id).filter(|o| {
                        o["resource_uri"]
                            .as_str()
                            .is_some_and(|u| u.starts_with(named.list_path()))
                    }),
                };
                match object {
                    Some(o) => Json(o).into_response(),
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }
            (Method::POST, None) => {
                let Some(body) = parsed_body() else {
                    return not_an_object();
                };
                let created = match resource {
                    Resource::Conference => state.create_conference(&body),
                    Resource::ConferenceAlias => state.write_alias(None, &body, false),
                    named => state.create_named(named, &body),
                };
                match created {
                    Ok(new_id) => {
                        let host = headers
                            .get(header::HOST)
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("localhost");
                        let location = format!("https://{host}{}{new_id}/", resource.list_path());
                        (StatusCode::CREATED, [(header::LOCATION, location)]).into_response()
                    }
                    Err(e) => invalid(e),
                }
            }
            (Method::PATCH | Method::PUT, Some(_)) if resource.is_named() => {
                // Read-only here: themes and groups are uploaded through Infinity's own UI.
                StatusCode::METHOD_NOT_ALLOWED.into_response()
            }
            (m @ (Method::PATCH | Method::PUT), Some(id)) => {
                let put = m == Method::PUT;
                let exists = match resource {
                    Resource::Conference => state.conferences.contains_key(&id),
                    Resource::ConferenceAlias => state.aliases.contains_key(&id),
                    _ => false,
                };
                if !exists {
                    return StatusCode::NOT_FOUND.into_response();
                }
                let Some(body) = parsed_body() else {
                    return not_an_object();
                };
                let updated = match resource {
                    Resource::Conference => state.update_conference(id, &body, put),
                    Resource::ConferenceAlias => {
                        state.write_alias(Some(id), &body, put).map(|_| ())
                    }
                    named => Err(Invalid::new(named, "__all__", "read-only")),
                };
                match updated {
                    Ok(()) if put => StatusCode::NO_CONTENT.into_response(),
                    Ok(()) => StatusCode::ACCEPTED.into_response(),
                    Err(e) => invalid(e),
                }
            }
            (Method::DELETE, Some(id)) => {
                let existed = match resource {
                    Resource::Conference => state.delete_conference(id),
                    Resource::ConferenceAlias => state.aliases.remove(&id).is_some(),
                    named => state.delete_named(named, id),
                };
                if existed {
                    StatusCode::NO_CONTENT.into_response()
                } else {
                    StatusCode::NOT_FOUND.into_response()
                }
            }
            _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        }
    }
}

impl Default for InfinityServer {
    fn default() -> Self {
        InfinityServer::new(InfinityOptions::default())
    }
}

/// The management API routes and the control routes under `/sim/infinity/…`.
pub fn router(server: Arc<InfinityServer>) -> Router {
    Router::new()
        .route("/api/admin/configuration/v1/{resource}/", any(api_list))
        .route(
            "/api/admin/configuration/v1/{resource}/{id}/",
            any(api_detail),
        )
        .route("/sim/infinity/conferences", get(control_conferences))
        .route(
            "/sim/infinity/faults",
            post(control_inject).delete(control_clear),
        )
        .route("/sim/infinity/down", put(control_down))
        .route("/sim/infinity/requests", get(control_requests))
        .with_state(server)
}

async fn api_list(
    State(server): State<Arc<InfinityServer>>,
    Path(resource): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    server
        .serve(method, &uri, &headers, &resource, None, body)
        .await
}

async fn api_detail(
    State(server): State<Arc<InfinityServer>>,
    Path((resource, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    server
        .serve(method, &uri, &headers, &resource, Some(&id), body)
        .await
}

async fn control_conferences(State(server): State<Arc<InfinityServer>>) -> Response {
    Json(server.conferences()).into_response()
}

async fn control_inject(
    State(server): State<Arc<InfinityServer>>,
    Json(fault): Json<InfinityFault>,
) -> Response {
    server.inject(fault);
    StatusCode::NO_CONTENT.into_response()
}

async fn control_clear(State(server): State<Arc<InfinityServer>>) -> Response {
    server.clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

/// `PUT /sim/infinity/down` body.
#[derive(Debug, Deserialize)]
struct DownBody {
    down: bool,
}

async fn control_down(
    State(server): State<Arc<InfinityServer>>,
    Json(body): Json<DownBody>,
) -> Response {
    server.set_down(body.down);
    StatusCode::NO_CONTENT.into_response()
}

async fn control_requests(State(server): State<Arc<InfinityServer>>) -> Response {
    Json(server.requests()).into_response()
}
