//! Hand-written compact-JWT (JWS) parsing and RS256 verification.
//!
//! Used by both token paths ([`super::exchange`], [`super::entra`]). Parsing is
//! strict: exactly three dot-separated parts of unpadded base64url, header and
//! payload JSON objects, and `alg` must be `RS256` — anything else (`none`,
//! `HS256`, `RS512`, …) is refused here, before the caller looks up a key or
//! touches the network, which closes the usual algorithm-confusion holes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use super::{TokenError, MAX_TOKEN_BYTES};

/// The only signature algorithm accepted.
pub const ALG_RS256: &str = "RS256";

/// A parsed, not yet verified, compact JWT whose `alg` is `RS256`.
#[derive(Debug, Clone)]
pub struct Jwt {
    /// Decoded header object.
    pub header: Map<String, Value>,
    /// Decoded payload (claims) object.
    pub payload: Map<String, Value>,
    /// `base64url(header) "." base64url(payload)`, the bytes the signature covers.
    pub signing_input: String,
    /// Decoded signature bytes.
    pub signature: Vec<u8>,
}

impl Jwt {
    /// Parse a compact JWT; refuses anything that is not a well-formed RS256 JWS.
    pub fn parse(raw: &str) -> Result<Jwt, TokenError> {
        if raw.trim().is_empty() {
            return Err(TokenError::Missing);
        }
        if raw.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge {
                len: raw.len(),
                max: MAX_TOKEN_BYTES,
            });
        }
        let parts: Vec<&str> = raw.split('.').collect();
        let [header_b64, payload_b64, signature_b64] = parts.as_slice() else {
            return Err(TokenError::NotAJwt { parts: parts.len() });
        };

        let header = decode_object("header", header_b64)?;
        match header.get("alg") {
            Some(Value::String(alg)) if alg == ALG_RS256 => {}
            Some(Value::String(alg)) => {
                return Err(TokenError::UnsupportedAlgorithm { alg: alg.clone() })
            }
            Some(other) => {
                return Err(TokenError::UnsupportedAlgorithm {
                    alg: other.to_string(),
                })
            }
            None => {
                return Err(TokenError::UnsupportedAlgorithm {
                    alg: "<missing>".to_owned(),
                })
            }
        }
        if header.contains_key("crit") {
            return Err(TokenError::InvalidClaim {
                claim: "crit (header)",
                detail: "critical header extensions are not supported".to_owned(),
            });
        }
        let payload = decode_object("payload", payload_b64)?;
        if signature_b64.is_empty() {
            return Err(TokenError::BadBase64 {
                part: "signature",
                detail: "signature is empty".to_owned(),
            });
        }
        let signature = decode_b64("signature", signature_b64)?;
        Ok(Jwt {
            header,
            payload,
            signing_input: format!("{header_b64}.{payload_b64}"),
            signature,
        })
    }

    /// A header field as a string, if present and a string.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    /// Check the RS256 signature against `key`.
    pub fn verify_rs256(&self, key: &RsaKey) -> Result<(), TokenError> {
        // ring refuses moduli under 2048 bits (and over 8192).
        ring::signature::RsaPublicKeyComponents {
            n: key.n.as_slice(),
            e: key.e.as_slice(),
        }
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            self.signing_input.as_bytes(),
            &self.signature,
        )
        .map_err(|_| TokenError::BadSignature)
    }
}

/// An RSA public key as its big-endian modulus and exponent, verified with ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaKey {
    /// Modulus, big-endian, without leading zero bytes.
    pub n: Vec<u8>,
    /// Public exponent, big-endian, without leading zero bytes.
    pub e: Vec<u8>,
}

impl RsaKey {
    /// A key from big-endian modulus and exponent bytes; `None` when either is
    /// zero or the modulus is shorter than 2048 bits.
    pub fn from_components(n: &[u8], e: &[u8]) -> Option<RsaKey> {
        let strip = |b: &[u8]| {
            let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
            b[first..].to_vec()
        };
        let (n, e) = (strip(n), strip(e));
        (n.len() >= 256 && !e.is_empty()).then_some(RsaKey { n, e })
    }
}

/// Decode one unpadded base64url part.
fn decode_b64(part: &'static str, text: &str) -> Result<Vec<u8>, TokenError> {
    if text.contains('=') {
        return Err(TokenError::BadBase64 {
            part,
            detail: "padding '=' is not allowed in a JWT".to_owned(),
        });
    }
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| TokenError::BadBase64 {
            part,
            detail: e.to_string(),
        })
}

/// Decode one base64url part holding a JSON object.
fn decode_object(part: &'static str, text: &str) -> Result<Map<String, Value>, TokenError> {
    let bytes = decode_b64(part, text)?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(TokenError::BadJson {
            part,
            detail: "not a JSON object".to_owned(),
        }),
        Err(e) => Err(TokenError::BadJson {
            part,
            detail: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Jwt::parse("").unwrap_err().code(), "token_missing");
        assert_eq!(Jwt::parse("a.b").unwrap_err().code(), "token_not_jwt");
        assert_eq!(Jwt::parse("a.b.c.d").unwrap_err().code(), "token_not_jwt");
        assert_eq!(Jwt::parse("!!.b.c").unwrap_err().code(), "token_bad_base64");
        let padded = format!("{}=.{}.c", b64("{\"alg\":\"RS256\"}"), b64("{}"));
        assert_eq!(Jwt::parse(&padded).unwrap_err().code(), "token_bad_base64");
        let not_json = format!("{}.{}.c", b64("nope"), b64("{}"));
        assert_eq!(Jwt::parse(&not_json).unwrap_err().code(), "token_bad_json");
        let array = format!("{}.{}.c", b64("[1]"), b64("{}"));
        assert_eq!(Jwt::parse(&array).unwrap_err().code(), "token_bad_json");
    }

    #[test]
    fn rejects_other_algorithms() {
        for alg in ["none", "HS256", "RS512", "ES256", "rs256"] {
            let t = format!("{}.{}.", b64(&format!("{{\"alg\":\"{alg}\"}}")), b64("{}"));
            let e = Jwt::parse(&t).unwrap_err();
            assert_eq!(e.code(), "token_unsupported_algorithm", "{alg}");
        }
        let t = format!("{}.{}.c2ln", b64("{}"), b64("{}"));
        assert_eq!(
            Jwt::parse(&t).unwrap_err().code(),
            "token_unsupported_algorithm"
        );
    }

    #[test]
    fn parses_rs256_shape() {
        let t = format!(
            "{}.{}.c2ln",
            b64("{\"alg\":\"RS256\",\"x5t\":\"abc\"}"),
            b64("{\"aud\":\"x\"}")
        );
        let jwt = Jwt::parse(&t).unwrap();
        assert_eq!(jwt.header_str("x5t"), Some("abc"));
        assert_eq!(jwt.signature, b"sig");
    }
}
