//! Deferred-request statements: what goes into a meeting as `TOK:-…#` when
//! management cannot be reached.
//!
//! The edge validates the organizer's own token (which never leaves our
//! servers) and mints a compact statement instead: integration, verified
//! identity, the organizer Outlook named, issued-at, expiry (default 7 days)
//! and a random nonce, signed with HMAC-SHA-256 under the deferral key that
//! the edges and management share (separate from the forwarding secret; its
//! id travels in the statement, so keys can be rotated while older TOKs are
//! still in meetings). The statement is a compact JWS with `alg: HS256` and
//! `typ: vmr-tok`, so the tolerant tag parser in `vmr_protocol::tag` reads it
//! like any other three-part token; the pane API accepts only RS256 tokens,
//! so a TOK copied out of an invitation cannot be used to ask for aliases.
//!
//! Management later checks the MAC, the expiry and the integration
//! ([`DeferralKeys::verify`]); that it is used for one meeting only is the
//! mailbox side's job (`tag_resolution` and the `deferral_nonce` table).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::clock::CLOCK_SKEW_SECS;
use crate::config::ManagementConfig;
use crate::identity::Identity;

/// `typ` of a deferral statement's header.
pub const STATEMENT_TYPE: &str = "vmr-tok";

/// What a TOK says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// The integration the pane asked for.
    pub integration: String,
    /// The verified identity's stable id (as in `token::Identity::user_id`).
    pub user_id: String,
    /// The verified identity's e-mail address, when its token had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The verified identity's display name, when its token had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The organizer Outlook named (a delegate may schedule for someone else);
    /// informational: the meeting's real organizer is checked at the mailbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizer: Option<String>,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
    /// Random, unique per statement (hex).
    pub nonce: String,
}

/// Why a TOK is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeferralError {
    /// Not a statement of ours (shape, encoding, header).
    #[error("the TOK is not a deferral statement: {0}")]
    Malformed(String),
    /// Signed with a key id we do not have.
    #[error("the TOK was signed with deferral key {0:?}, which is not configured")]
    UnknownKey(String),
    /// The MAC does not verify: edited, or signed by another deployment.
    #[error("the TOK's signature does not verify (edited, or from another deployment)")]
    BadSignature,
    /// Past its expiry.
    #[error("the TOK expired at {exp} (now {now})")]
    Expired {
        /// The statement's expiry.
        exp: i64,
        /// Our clock.
        now: i64,
    },
    /// Issued in the future (beyond the clock skew).
    #[error("the TOK was issued in the future ({iat}, now {now})")]
    NotYetValid {
        /// The statement's issue time.
        iat: i64,
        /// Our clock.
        now: i64,
    },
}

/// The deferral keys of this deployment: the current one signs, all verify.
#[derive(Clone)]
pub struct DeferralKeys {
    current_id: String,
    /// MACs keyed with each configured key, by key id (cloned per use).
    keys: Vec<(String, HmacSha256)>,
    ttl_secs: i64,
}

impl std::fmt::Debug for DeferralKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferralKeys")
            .field("current_id", &self.current_id)
            .field(
                "key_ids",
                &self.keys.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

type HmacSha256 = Hmac<Sha256>;

impl DeferralKeys {
    /// The keys configured in `[management]`; `None` when no deferral key is set
    /// (role `all`, where management is never unreachable). The config has been
    /// validated, so the keys are 64 hex digits.
    pub fn from_config(m: &ManagementConfig) -> anyhow::Result<Option<DeferralKeys>> {
        let Some(current) = &m.deferral_key else {
            return Ok(None);
        };
        let mac = |name: &str, hex_key: &str| -> anyhow::Result<HmacSha256> {
            let bytes =
                hex::decode(hex_key).map_err(|e| anyhow::anyhow!("{name} is not hex: {e}"))?;
            <HmacSha256 as Mac>::new_from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{name} is not a usable HMAC key: {e}"))
        };
        let mut keys = vec![(
            m.deferral_key_id.clone(),
            mac("management.deferral_key", current.expose())?,
        )];
        for (i, old) in m.previous_deferral_keys.iter().enumerate() {
            keys.push((
                old.id.clone(),
                mac(
                    &format!("management.previous_deferral_keys[{i}].key"),
                    old.key.expose(),
                )?,
            ));
        }
        Ok(Some(DeferralKeys {
            current_id: m.deferral_key_id.clone(),
            keys,
            ttl_secs: i64::try_from(m.deferral_ttl_hours.saturating_mul(3600)).unwrap_or(i64::MAX),
        }))
    }

    /// A statement for `identity` asking for a room in `integration`, issued at `now`.
    pub fn statement(
        &self,
        integration: &str,
        identity: &Identity,
        organizer: Option<&str>,
        now: i64,
    ) -> Statement {
        let mut nonce = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        Statement {
            integration: integration.to_owned(),
            user_id: identity.user_id.clone(),
            email: identity.email.clone(),
            name: identity.display_name.clone(),
            organizer: organizer.map(str::to_owned),
            iat: now,
            exp: now.saturating_add(self.ttl_secs),
            nonce: hex::encode(nonce),
        }
    }

    /// The signed, compact form of `statement` (what goes between `TOK:-` and `#`).
    pub fn mint(&self, statement: &Statement) -> String {
        let header = serde_json::json!({
            "alg": "HS256",
            "typ": STATEMENT_TYPE,
            "kid": self.current_id,
        });
        let payload = serde_json::to_vec(statement).unwrap_or_default();
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let mac = match self.mac(&self.current_id) {
            Some(mut mac) => {
                mac.update(signing_input.as_bytes());
                URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
            }
            // `from_config` always puts the current key first.
            None => String::new(),
        };
        format!("{signing_input}.{mac}")
    }

    /// Checks `raw` (the TOK content, whitespace already removed) at `now`.
    pub fn verify(&self, raw: &str, now: i64) -> Result<Statement, DeferralError> {
        let malformed = |m: &str| DeferralError::Malformed(m.to_owned());
        let mut parts = raw.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("expected three dot-separated parts"));
        };
        let header: serde_json::Value = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| malformed("the header is not base64url JSON"))?;
        if header.get("typ").and_then(|v| v.as_str()) != Some(STATEMENT_TYPE)
            || header.get("alg").and_then(|v| v.as_str()) != Some("HS256")
        {
            return Err(malformed(
                "the header is not that of a deferral statement (a raw Outlook token is no longer accepted in a TOK)",
            ));
        }
        let kid = header
            .get("kid")
            .and_then(|v| v.as_str())
            .ok_or_else(|| malformed("the header has no key id"))?;
        let mut mac = self
            .mac(kid)
            .ok_or_else(|| DeferralError::UnknownKey(kid.to_owned()))?;
        let signature = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| malformed("the signature is not base64url"))?;
        let signing_input = &raw[..h.len() + 1 + p.len()];
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| DeferralError::BadSignature)?;
        let statement: Statement = URL_SAFE_NO_PAD
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| malformed("the payload is not a statement"))?;
        if now >= statement.exp {
            return Err(DeferralError::Expired {
                exp: statement.exp,
                now,
            });
        }
        if statement.iat > now.saturating_add(CLOCK_SKEW_SECS) {
            return Err(DeferralError::NotYetValid {
                iat: statement.iat,
                now,
            });
        }
        Ok(statement)
    }

    /// A fresh MAC under the key with this id.
    fn mac(&self, id: &str) -> Option<HmacSha256> {
        self.keys
            .iter()
            .find(|(kid, _)| kid == id)
            .map(|(_, mac)| mac.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeferralKeyConfig;
    use crate::secret::Secret;
    use vmr_protocol::AuthMethod;

    fn config(id: &str, key: &str) -> ManagementConfig {
        ManagementConfig {
            deferral_key_id: id.into(),
            deferral_key: Some(Secret::new(key)),
            ..ManagementConfig::default()
        }
    }

    fn identity() -> Identity {
        Identity {
            user_id: "uid-1@https://mail.example.test/autodiscover/metadata/json/1".into(),
            email: Some("alice@example.test".into()),
            display_name: Some("Alice".into()),
            method: AuthMethod::ExchangeUserIdToken,
            expires_at: 0,
        }
    }

    const K1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const K2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn mint_verify_roundtrip_expiry_and_tampering() {
        let keys = DeferralKeys::from_config(&config("a", K1))
            .unwrap()
            .unwrap();
        let st = keys.statement("default", &identity(), Some("boss@example.test"), 1_000);
        assert_eq!(st.exp, 1_000 + 7 * 24 * 3600);
        let tok = keys.mint(&st);
        assert_eq!(keys.verify(&tok, 2_000), Ok(st.clone()));
        assert!(matches!(
            keys.verify(&tok, st.exp),
            Err(DeferralError::Expired { .. })
        ));
        // Any edited character of the payload breaks the MAC.
        let mut parts: Vec<String> = tok.split('.').map(str::to_owned).collect();
        let edited = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Statement {
                user_id: "mallory".into(),
                ..st.clone()
            })
            .unwrap(),
        );
        parts[1] = edited;
        assert_eq!(
            keys.verify(&parts.join("."), 2_000),
            Err(DeferralError::BadSignature)
        );
        // Another deployment's key with the same id.
        let other = DeferralKeys::from_config(&config("a", K2))
            .unwrap()
            .unwrap();
        assert_eq!(other.verify(&tok, 2_000), Err(DeferralError::BadSignature));
        // Nonces differ between statements.
        assert_ne!(
            st.nonce,
            keys.statement("default", &identity(), None, 1_000).nonce
        );
        // Debug shows no key material.
        assert!(!format!("{keys:?}").contains("1111"));
    }

    #[test]
    fn rotation_keeps_old_statements_valid() {
        let old = DeferralKeys::from_config(&config("old", K1))
            .unwrap()
            .unwrap();
        let tok = old.mint(&old.statement("default", &identity(), None, 1_000));
        let mut rotated = config("new", K2);
        rotated.previous_deferral_keys = vec![DeferralKeyConfig {
            id: "old".into(),
            key: Secret::new(K1),
        }];
        let rotated = DeferralKeys::from_config(&rotated).unwrap().unwrap();
        assert!(rotated.verify(&tok, 2_000).is_ok());
        let dropped = DeferralKeys::from_config(&config("new", K2))
            .unwrap()
            .unwrap();
        assert_eq!(
            dropped.verify(&tok, 2_000),
            Err(DeferralError::UnknownKey("old".into()))
        );
    }

    #[test]
    fn raw_outlook_tokens_are_not_statements() {
        let keys = DeferralKeys::from_config(&config("a", K1))
            .unwrap()
            .unwrap();
        let rs256 = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT","x5t":"x"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"aud":"x"}"#),
            URL_SAFE_NO_PAD.encode([0u8; 256])
        );
        assert!(matches!(
            keys.verify(&rs256, 0),
            Err(DeferralError::Malformed(_))
        ));
        assert!(matches!(
            keys.verify("a.b", 0),
            Err(DeferralError::Malformed(_))
        ));
    }
}
