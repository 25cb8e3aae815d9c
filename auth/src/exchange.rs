//! Exchange identity tokens (`getUserIdentityTokenAsync`, Exchange Server on-prem).
//!
//! Shape (reference `stack.md` §5.4): header `{typ, alg: RS256, x5t}`; payload `aud`
//! (the pane URL), `iss`, `nbf`/`exp` (numbers or numeric strings) and `appctx` (an
//! object, or a JSON string holding one) with `msexchuid`, `version: "ExIdTok.V1"` and
//! `amurl`, the URL of the Exchange auth metadata document that publishes the signing
//! certificate.
//!
//! Order of checks: the token's `amurl` is matched against the integration's allow-list
//! ("Exchange Metadata Domains / URLs") and must be https **before** anything is
//! fetched; then the metadata is fetched (cached per URL by [`super::cache`]), the key
//! whose SHA-1 certificate thumbprint equals the header's `x5t` is taken from its
//! X.509 certificate, the RS256 signature is verified, and only then are `version`,
//! `aud`, `nbf`/`exp` and `msexchuid` checked. The user id is `<msexchuid>@<amurl>`.

use std::collections::HashMap;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use reqwest::Url;
use serde_json::{Map, Value};
use sha1::{Digest, Sha1};
use vmr_protocol::AuthMethod;
use x509_cert::der::Decode;

use super::claims;
use super::jwt::{Jwt, RsaKey};
use super::{Identity, TokenError, TokenSettings, TokenValidator};

/// The only `appctx.version` accepted.
pub const IDENTITY_TOKEN_VERSION: &str = "ExIdTok.V1";

const EXPECTED: &str = "an Exchange identity token";

/// SHA-1 certificate thumbprint, the decoded form of `x5t`.
pub type Thumbprint = [u8; 20];

/// OID of `rsaEncryption` (PKCS #1).
const RSA_ENCRYPTION: x509_cert::der::oid::ObjectIdentifier =
    x509_cert::der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// The application id of Exchange, the part before `@` of an identity token's `iss`.
pub const EXCHANGE_APP_ID: &str = "00000002-0000-0ff1-ce00-000000000000";

/// Path of the auth metadata document on every Exchange server; the only path
/// a bare-host allow-list entry admits.
pub const METADATA_PATH: &str = "/autodiscover/metadata/json/1";

/// Signing keys of one Exchange auth metadata document, by certificate thumbprint.
#[derive(Debug, Clone, Default)]
pub struct ExchangeKeys {
    /// RSA public keys by SHA-1 thumbprint of their certificate's DER.
    pub keys: HashMap<Thumbprint, RsaKey>,
    /// The document's `realm`, unless it is absent or `*` (any realm).
    pub realm: Option<String>,
}

/// `iss` must be `00000002-0000-0ff1-ce00-000000000000@<realm>`, with the
/// metadata's realm when it names one.
fn check_issuer(payload: &Map<String, Value>, realm: Option<&str>) -> Result<(), TokenError> {
    let iss = claims::required_str(payload, "iss")?;
    let expected = match realm {
        Some(r) => format!("{EXCHANGE_APP_ID}@{r}"),
        None => format!("{EXCHANGE_APP_ID}@<realm>"),
    };
    let ok = match iss.split_once('@') {
        Some((app, r)) => {
            app.eq_ignore_ascii_case(EXCHANGE_APP_ID)
                && !r.is_empty()
                && realm.is_none_or(|want| want.eq_ignore_ascii_case(r))
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(TokenError::WrongIssuer {
            expected,
            found: iss.to_owned(),
        })
    }
}

/// Validate an Exchange identity token (called by [`TokenValidator::validate`]).
pub(super) async fn validate(
    validator: &TokenValidator,
    settings: &TokenSettings,
    jwt: &Jwt,
    now: i64,
) -> Result<Identity, TokenError> {
    let Some(appctx_value) = jwt.payload.get("appctx") else {
        let naa_like = jwt.header.contains_key("kid")
            || jwt.payload.contains_key("tid")
            || jwt.payload.contains_key("scp");
        return Err(if naa_like {
            TokenError::WrongKind {
                expected: EXPECTED,
                found: "an Entra ID (NAA) access token",
            }
        } else {
            TokenError::MissingClaim { claim: "appctx" }
        });
    };
    let appctx = parse_appctx(appctx_value)?;
    let amurl = claims::required_str(&appctx, "amurl")?;

    // 1. Allow-list, then https: nothing is fetched for a URL the admin did not
    //    list, and what is fetched (and cached, and named in the user id) is the
    //    allowed URL in canonical form, never the token's own spelling of it.
    let parsed = Url::parse(amurl).map_err(|e| TokenError::InvalidClaim {
        claim: "amurl",
        detail: format!("{amurl:?} is not a URL: {e}"),
    })?;
    let canonical = canonical_amurl(&settings.exchange_metadata, &parsed)?;
    let url = validator.fetchable_url(canonical.as_str()).ok_or_else(|| {
        TokenError::MetadataUrlInsecure {
            url: canonical.to_string(),
        }
    })?;

    // 2. Key by x5t, from the (cached) metadata.
    let x5t = match jwt.header.get("x5t") {
        None => {
            return Err(TokenError::MissingClaim {
                claim: "x5t (header)",
            })
        }
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(TokenError::InvalidClaim {
                claim: "x5t (header)",
                detail: format!("expected a string, found {other}"),
            })
        }
    };
    let thumbprint = decode_thumbprint(x5t).ok_or_else(|| TokenError::InvalidClaim {
        claim: "x5t (header)",
        detail: format!("{x5t:?} is not a SHA-1 thumbprint"),
    })?;
    let (key, realm) = validator
        .cached_document(
            &validator.caches.exchange,
            &url,
            settings,
            |doc: &ExchangeKeys| {
                doc.keys
                    .get(&thumbprint)
                    .map(|key| (key.clone(), doc.realm.clone()))
            },
            parse_metadata,
        )
        .await?
        .ok_or_else(|| TokenError::UnknownSigningKey {
            kind: "x5t",
            id: x5t.to_owned(),
        })?;

    // 3. Signature, then the claims.
    jwt.verify_rs256(&key)?;
    check_issuer(&jwt.payload, realm.as_deref())?;
    let version = claims::required_str(&appctx, "version")?;
    if version != IDENTITY_TOKEN_VERSION {
        return Err(TokenError::WrongVersion {
            found: version.to_owned(),
        });
    }
    claims::check_audience(
        &jwt.payload,
        &[settings.audience.as_str()],
        &settings.audience,
    )?;
    let expires_at = claims::check_times(&jwt.payload, now)?;
    let msexchuid = claims::required_str(&appctx, "msexchuid")?;

    let email = ["smtp", "email", "emailaddress"].iter().find_map(|k| {
        claims::optional_str(&appctx, k).or_else(|| claims::optional_str(&jwt.payload, k))
    });
    let display_name = ["displayname", "display_name", "name"]
        .iter()
        .find_map(|k| {
            claims::optional_str(&appctx, k).or_else(|| claims::optional_str(&jwt.payload, k))
        });
    Ok(Identity {
        user_id: format!("{msexchuid}@{url}"),
        email,
        display_name,
        method: AuthMethod::ExchangeUserIdToken,
        expires_at,
    })
}

/// `appctx` as an object: either the object itself or a JSON string holding one.
fn parse_appctx(value: &Value) -> Result<Map<String, Value>, TokenError> {
    let invalid = |detail: String| TokenError::InvalidClaim {
        claim: "appctx",
        detail,
    };
    match value {
        Value::Object(map) => Ok(map.clone()),
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(invalid("the string does not hold a JSON object".to_owned())),
            Err(e) => Err(invalid(format!("the string is not JSON: {e}"))),
        },
        other => Err(invalid(format!(
            "expected an object or a JSON string, found {other}"
        ))),
    }
}

/// The allowed metadata URL that `amurl` stands for, in canonical form.
///
/// An `amurl` with a query, a fragment or user info is refused outright. Entries
/// with a scheme (`https://…`), or with a path, are full URLs and must equal
/// `amurl` after URL normalisation (case of scheme/host, default port); the
/// entry is what is returned. Other entries are a host name or `host:port`: they
/// admit [`METADATA_PATH`] (compared without regard to case, as IIS does) on
/// that host and on the default port, or on the port the entry names. The
/// scheme is checked separately.
pub fn canonical_amurl(allow_list: &[String], amurl: &Url) -> Result<Url, TokenError> {
    let refuse = |why: &str| TokenError::InvalidClaim {
        claim: "amurl",
        detail: format!("{why}: an Exchange metadata URL has none"),
    };
    if !amurl.username().is_empty() || amurl.password().is_some() {
        return Err(refuse("it carries user info"));
    }
    if amurl.query().is_some() {
        return Err(refuse("it carries a query"));
    }
    if amurl.fragment().is_some() {
        return Err(refuse("it carries a fragment"));
    }
    let not_allowed = || TokenError::MetadataUrlNotAllowed {
        amurl: amurl.to_string(),
    };
    let host = amurl.host_str().ok_or_else(not_allowed)?;
    for entry in allow_list
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
    {
        if entry.contains("://") || entry.contains('/') {
            let full = if entry.contains("://") {
                Url::parse(entry)
            } else {
                Url::parse(&format!("https://{entry}"))
            };
            if let Ok(allowed) = full {
                if &allowed == amurl {
                    return Ok(allowed);
                }
            }
            continue;
        }
        let Ok(allowed) = Url::parse(&format!("{}://{entry}/", amurl.scheme())) else {
            continue;
        };
        if allowed.host_str() != Some(host)
            || allowed.port_or_known_default() != amurl.port_or_known_default()
            || !amurl.path().eq_ignore_ascii_case(METADATA_PATH)
        {
            continue;
        }
        let mut canonical = allowed;
        canonical.set_path(METADATA_PATH);
        return Ok(canonical);
    }
    Err(not_allowed())
}

/// Decode an `x5t` (base64url as Exchange sends it; padded/standard base64 and hex
/// tolerated in metadata) to the 20-byte SHA-1 thumbprint.
pub fn decode_thumbprint(x5t: &str) -> Option<Thumbprint> {
    let x5t = x5t.trim();
    if x5t.len() == 40 && x5t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex::decode(x5t).ok()?.try_into().ok();
    }
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let alphabet = if x5t.contains(['+', '/']) {
        &alphabet::STANDARD
    } else {
        &alphabet::URL_SAFE
    };
    GeneralPurpose::new(alphabet, config)
        .decode(x5t)
        .ok()?
        .try_into()
        .ok()
}

/// Extract the signing keys from an Exchange auth metadata document
/// (`{"keys":[{"usage":"signing","keyinfo":{"x5t":…},"keyvalue":{"type":"x509Certificate","value":…}}]}`).
pub fn parse_metadata(url: &str, doc: &Value) -> Result<ExchangeKeys, TokenError> {
    let invalid = |detail: String| TokenError::MetadataInvalid {
        url: url.to_owned(),
        detail,
    };
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("no \"keys\" array".to_owned()))?;
    let mut keys = HashMap::new();
    let mut problems = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let usage = entry
            .get("usage")
            .and_then(Value::as_str)
            .unwrap_or("signing");
        if !usage.eq_ignore_ascii_case("signing") {
            continue;
        }
        match key_from_entry(entry) {
            Ok((thumbprint, key)) => {
                keys.insert(thumbprint, key);
            }
            Err(problem) => {
                tracing::warn!(url, key = i, problem, "unusable key in Exchange metadata");
                problems.push(format!("key {i}: {problem}"));
            }
        }
    }
    if keys.is_empty() {
        return Err(invalid(if problems.is_empty() {
            "no signing key".to_owned()
        } else {
            format!("no usable signing key ({})", problems.join("; "))
        }));
    }
    let realm = doc
        .get("realm")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|r| !r.is_empty() && *r != "*")
        .map(str::to_owned);
    Ok(ExchangeKeys { keys, realm })
}

/// One metadata key entry → (thumbprint of its certificate, RSA public key).
fn key_from_entry(entry: &Value) -> Result<(Thumbprint, RsaKey), String> {
    let keyvalue = entry.get("keyvalue").ok_or("no keyvalue")?;
    let kind = keyvalue.get("type").and_then(Value::as_str).unwrap_or("");
    if !kind.eq_ignore_ascii_case("x509Certificate") {
        return Err(format!("keyvalue type {kind:?} is not x509Certificate"));
    }
    let b64: String = keyvalue
        .get("value")
        .and_then(Value::as_str)
        .ok_or("no keyvalue.value")?
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let der = GeneralPurpose::new(&alphabet::STANDARD, config)
        .decode(&b64)
        .map_err(|e| format!("certificate is not base64: {e}"))?;
    let thumbprint: Thumbprint = Sha1::digest(&der).into();
    if let Some(declared) = entry
        .get("keyinfo")
        .and_then(|k| k.get("x5t"))
        .and_then(Value::as_str)
    {
        if decode_thumbprint(declared) != Some(thumbprint) {
            return Err(format!(
                "keyinfo.x5t {declared:?} is not the SHA-1 thumbprint of the certificate"
            ));
        }
    }
    let cert = x509_cert::Certificate::from_der(&der)
        .map_err(|e| format!("certificate is not X.509 DER: {e}"))?;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Err(format!(
            "certificate key is not RSA (algorithm {})",
            spki.algorithm.oid
        ));
    }
    let pkcs1 = spki
        .subject_public_key
        .as_bytes()
        .ok_or("certificate public key is not a whole number of bytes")?;
    let rsa = pkcs1::RsaPublicKey::from_der(pkcs1)
        .map_err(|e| format!("certificate key is not an RSA public key: {e}"))?;
    let key = RsaKey::from_components(rsa.modulus.as_bytes(), rsa.public_exponent.as_bytes())
        .ok_or("certificate key is shorter than 2048 bits")?;
    Ok((thumbprint, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn allow_list_matching() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = |l: &[&str], u: &str| canonical_amurl(&list(l), &url(u)).map(|u| u.to_string());
        let am = "https://mail.contoso.com:443/autodiscover/metadata/json/1";
        let canonical = "https://mail.contoso.com/autodiscover/metadata/json/1";
        assert_eq!(ok(&["mail.contoso.com"], am).unwrap(), canonical);
        assert_eq!(ok(&["MAIL.contoso.com:443"], am).unwrap(), canonical);
        assert_eq!(
            ok(
                &["mail.contoso.com"],
                "https://mail.contoso.com/AutoDiscover/Metadata/JSON/1"
            )
            .unwrap(),
            canonical
        );
        assert!(ok(&["mail.contoso.com:8443"], am).is_err());
        assert!(ok(
            &["https://mail.contoso.com/autodiscover/metadata/json/1"],
            am
        )
        .is_ok());
        assert!(ok(&["mail.contoso.com/autodiscover/metadata/json/1"], am).is_ok());
        assert!(ok(
            &["https://mail.contoso.com/autodiscover/metadata/json/2"],
            am
        )
        .is_err());
        assert!(ok(&["contoso.com"], am).is_err());
        assert!(ok(&[], am).is_err());
        // A bare host admits only the metadata path, on the default port.
        assert!(ok(&["mail.contoso.com"], "https://mail.contoso.com/other").is_err());
        assert!(ok(
            &["mail.contoso.com"],
            "https://mail.contoso.com:444/autodiscover/metadata/json/1"
        )
        .is_err());
        // Query, fragment and user info are refused whatever the list says.
        for bad in [
            "https://mail.contoso.com/autodiscover/metadata/json/1?r=1",
            "https://mail.contoso.com/autodiscover/metadata/json/1#1",
            "https://x@mail.contoso.com/autodiscover/metadata/json/1",
        ] {
            let e = ok(&["mail.contoso.com"], bad).unwrap_err();
            assert_eq!(e.code(), "token_invalid_claim", "{bad}");
        }
        assert!(ok(&["evil.com"], "https://mail.contoso.com@evil.com/").is_err());
        let lo = "http://127.0.0.1:8080/autodiscover/metadata/json/1";
        assert!(ok(&["127.0.0.1:8080"], lo).is_ok());
        assert!(ok(&["127.0.0.1:8081"], lo).is_err());
    }

    #[test]
    fn issuer_names_exchange_and_the_realm() {
        let payload = |iss: &str| {
            let mut m = Map::new();
            m.insert("iss".into(), Value::String(iss.into()));
            m
        };
        let good = format!("{EXCHANGE_APP_ID}@mail.contoso.com");
        assert!(check_issuer(&payload(&good), None).is_ok());
        assert!(check_issuer(&payload(&good), Some("mail.contoso.com")).is_ok());
        assert!(check_issuer(&payload(&good), Some("other.realm")).is_err());
        assert!(check_issuer(&payload("someone@mail.contoso.com"), None).is_err());
        assert!(check_issuer(&payload(&format!("{EXCHANGE_APP_ID}@")), None).is_err());
        assert!(check_issuer(&Map::new(), None).is_err());
    }

    #[test]
    fn thumbprints() {
        let raw = [7u8; 20];
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(decode_thumbprint(&b64url), Some(raw));
        assert_eq!(decode_thumbprint(&b64), Some(raw));
        assert_eq!(decode_thumbprint(&hex::encode(raw)), Some(raw));
        assert_eq!(decode_thumbprint("abc"), None);
    }

    #[test]
    fn appctx_forms() {
        let obj = serde_json::json!({"amurl": "x"});
        assert!(parse_appctx(&obj).is_ok());
        assert!(parse_appctx(&Value::String(obj.to_string())).is_ok());
        assert!(parse_appctx(&Value::String("[]".into())).is_err());
        assert!(parse_appctx(&Value::from(3)).is_err());
    }
}
