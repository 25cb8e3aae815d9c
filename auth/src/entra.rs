//! NAA tokens: Entra ID v2 access tokens for the add-in's Web API registration
//! (Microsoft 365, nested app authentication).
//!
//! The integration names an OIDC metadata document
//! (`https://login.microsoftonline.com/<tenant>/v2.0/.well-known/openid-configuration`);
//! its `issuer` and `jwks_uri` are fetched and cached ([`super::cache`]), and the JWKS
//! is refetched once (rate-limited) when a token names an unknown `kid`.
//!
//! Checks, in order: the token is not an Exchange token; the settings are complete;
//! `tid` is an allowed tenant (before any fetch); the RS256 signature verifies with the
//! JWKS key `kid`; `iss` equals the metadata issuer with `{tenantid}` replaced by the
//! token's `tid`; `aud` is the Web API app id (bare GUID or `api://<guid>`); `scp`
//! contains the required scope; `nbf`/`exp` with clock skew; `oid` is present. The user
//! id is `<tid>/<oid>`.

use std::collections::HashMap;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde_json::Value;
use vmr_protocol::AuthMethod;

use super::claims;
use super::jwt::{Jwt, RsaKey};
use super::{Identity, TokenError, TokenSettings, TokenValidator};

const EXPECTED: &str = "an Entra ID (NAA) access token";

/// Placeholder for the tenant id in multi-tenant OIDC metadata issuers.
pub const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// The parts of an OIDC metadata document used here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcMetadata {
    /// `issuer`, possibly containing `{tenantid}`.
    pub issuer: String,
    /// `jwks_uri`.
    pub jwks_uri: String,
}

/// RSA signing keys of a JWKS, by `kid`.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    /// Keys by `kid`.
    pub keys: HashMap<String, RsaKey>,
}

/// Validate an NAA access token (called by [`TokenValidator::validate`]).
pub(super) async fn validate(
    validator: &TokenValidator,
    settings: &TokenSettings,
    jwt: &Jwt,
    now: i64,
) -> Result<Identity, TokenError> {
    let exchange_like = jwt.payload.contains_key("appctx")
        || (jwt.header.contains_key("x5t")
            && !jwt.header.contains_key("kid")
            && !jwt.payload.contains_key("tid"));
    if exchange_like {
        return Err(TokenError::WrongKind {
            expected: EXPECTED,
            found: "an Exchange identity token",
        });
    }
    let not_configured = |detail: &str| TokenError::NotConfigured {
        detail: detail.to_owned(),
    };
    let app_id = settings
        .naa_api_application_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| not_configured("no NAA Web API application id"))?;
    if settings.naa_required_scope.trim().is_empty() {
        return Err(not_configured("no NAA required scope"));
    }
    let metadata_url = settings
        .naa_oidc_metadata_url
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| not_configured("no NAA OIDC metadata URL"))?;
    let metadata_url =
        validator
            .fetchable_url(metadata_url)
            .ok_or_else(|| TokenError::NotConfigured {
                detail: format!("NAA OIDC metadata URL {metadata_url} is not an https URL"),
            })?;

    let kid = match jwt.header.get("kid") {
        None => {
            return Err(TokenError::MissingClaim {
                claim: "kid (header)",
            })
        }
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        Some(other) => {
            return Err(TokenError::InvalidClaim {
                claim: "kid (header)",
                detail: format!("expected a non-empty string, found {other}"),
            })
        }
    };
    let tid = claims::required_str(&jwt.payload, "tid")?;
    if !settings.naa_allowed_tenants.is_empty()
        && !settings
            .naa_allowed_tenants
            .iter()
            .any(|t| t.trim().eq_ignore_ascii_case(tid))
    {
        return Err(TokenError::TenantNotAllowed {
            tid: tid.to_owned(),
        });
    }

    // OIDC metadata (cached; the lookup always "finds", so it is fetched once per TTL).
    let metadata = validator
        .cached_document(
            &validator.caches.oidc,
            &metadata_url,
            settings,
            |m: &OidcMetadata| Some(m.clone()),
            parse_oidc_metadata,
        )
        .await?
        .ok_or_else(|| TokenError::MetadataInvalid {
            url: metadata_url.to_string(),
            detail: "no metadata".to_owned(),
        })?;
    if settings.naa_allowed_tenants.is_empty() && metadata.issuer.contains(TENANT_PLACEHOLDER) {
        return Err(not_configured(
            "the OIDC metadata is multi-tenant ({tenantid} issuer) but no allowed tenants are configured",
        ));
    }
    let jwks_url =
        validator
            .fetchable_url(&metadata.jwks_uri)
            .ok_or_else(|| TokenError::MetadataInvalid {
                url: metadata_url.to_string(),
                detail: format!("jwks_uri {} is not an https URL", metadata.jwks_uri),
            })?;

    // Key by kid (refetch once, rate-limited, on an unknown kid).
    let key = validator
        .cached_document(
            &validator.caches.jwks,
            &jwks_url,
            settings,
            |jwks: &Jwks| jwks.keys.get(kid).cloned(),
            parse_jwks,
        )
        .await?
        .ok_or_else(|| TokenError::UnknownSigningKey {
            kind: "kid",
            id: kid.to_owned(),
        })?;
    jwt.verify_rs256(&key)?;

    let expected_issuer = metadata.issuer.replace(TENANT_PLACEHOLDER, tid);
    let iss = claims::required_str(&jwt.payload, "iss")?;
    if iss != expected_issuer {
        return Err(TokenError::WrongIssuer {
            expected: expected_issuer,
            found: iss.to_owned(),
        });
    }
    let bare_id = app_id.strip_prefix("api://").unwrap_or(app_id);
    let uri_id = format!("api://{bare_id}");
    claims::check_audience(
        &jwt.payload,
        &[bare_id, uri_id.as_str()],
        &format!("{bare_id} or {uri_id}"),
    )?;
    // A delegated token always carries `scp`; an app-only token (roles, no
    // scp) is not a user asking for a meeting room.
    let required = settings.naa_required_scope.trim();
    let scp = claims::required_str(&jwt.payload, "scp")?;
    if !scp.split_ascii_whitespace().any(|s| s == required) {
        return Err(TokenError::MissingScope {
            required: required.to_owned(),
            found: scp.to_owned(),
        });
    }
    if let Some(client_id) = settings
        .naa_client_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        // v2 tokens name the requesting client in `azp`, v1 tokens in `appid`.
        let azp = claims::optional_str(&jwt.payload, "azp")
            .or_else(|| claims::optional_str(&jwt.payload, "appid"))
            .ok_or(TokenError::MissingClaim { claim: "azp" })?;
        if !azp.eq_ignore_ascii_case(client_id) {
            return Err(TokenError::WrongClient {
                expected: client_id.to_owned(),
                found: azp,
            });
        }
    }
    let expires_at = claims::check_times(&jwt.payload, now)?;
    let oid = claims::required_str(&jwt.payload, "oid")?;

    let email = ["preferred_username", "email", "upn"]
        .iter()
        .find_map(|k| claims::optional_str(&jwt.payload, k));
    Ok(Identity {
        user_id: format!("{tid}/{oid}"),
        email,
        display_name: claims::optional_str(&jwt.payload, "name"),
        method: AuthMethod::NaaToken,
        expires_at,
    })
}

/// `issuer` and `jwks_uri` from an OIDC metadata document.
pub fn parse_oidc_metadata(url: &str, doc: &Value) -> Result<OidcMetadata, TokenError> {
    let field = |name: &str| {
        doc.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| TokenError::MetadataInvalid {
                url: url.to_owned(),
                detail: format!("no {name:?} string"),
            })
    };
    Ok(OidcMetadata {
        issuer: field("issuer")?,
        jwks_uri: field("jwks_uri")?,
    })
}

/// RSA signature keys (`kty: RSA`, `use` absent or `sig`) of a JWKS document, by `kid`.
pub fn parse_jwks(url: &str, doc: &Value) -> Result<Jwks, TokenError> {
    let invalid = |detail: String| TokenError::MetadataInvalid {
        url: url.to_owned(),
        detail,
    };
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("no \"keys\" array".to_owned()))?;
    let b64 = GeneralPurpose::new(
        &alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let mut keys = HashMap::new();
    for entry in entries {
        let s = |name: &str| entry.get(name).and_then(Value::as_str);
        if s("kty") != Some("RSA") || s("use").is_some_and(|u| u != "sig") {
            continue;
        }
        if s("alg").is_some_and(|a| a != "RS256") {
            continue;
        }
        let (Some(kid), Some(n), Some(e)) = (s("kid"), s("n"), s("e")) else {
            tracing::warn!(url, "JWKS RSA key without kid, n or e");
            continue;
        };
        let (Ok(n), Ok(e)) = (b64.decode(n), b64.decode(e)) else {
            tracing::warn!(url, kid, "JWKS key n/e is not base64url");
            continue;
        };
        match RsaKey::from_components(&n, &e) {
            Some(key) => {
                keys.insert(kid.to_owned(), key);
            }
            None => tracing::warn!(
                url,
                kid,
                "JWKS key is not a usable RSA key (2048 bits or more)"
            ),
        }
    }
    if keys.is_empty() {
        return Err(invalid("no usable RSA signing key".to_owned()));
    }
    Ok(Jwks { keys })
}
