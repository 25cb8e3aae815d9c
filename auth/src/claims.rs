//! Claim helpers shared by the Exchange and Entra token paths: typed claim access
//! (numbers that may arrive as numeric strings, as Exchange sends them), the
//! `nbf`/`exp` window with [`CLOCK_SKEW_SECS`] of slack, the audience comparison,
//! and a dependency-free RFC 3339 formatter for error messages.

use serde_json::{Map, Value};

use super::{TokenError, CLOCK_SKEW_SECS};

/// A required string claim.
pub fn required_str<'a>(
    claims: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Err(TokenError::MissingClaim { claim: name }),
        Some(Value::String(s)) if s.is_empty() => Err(TokenError::InvalidClaim {
            claim: name,
            detail: "empty string".to_owned(),
        }),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(TokenError::InvalidClaim {
            claim: name,
            detail: format!("expected a string, found {other}"),
        }),
    }
}

/// An optional, non-empty string claim (anything else counts as absent).
pub fn optional_str(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
}

/// A time claim (Unix seconds) given as a JSON number or a numeric string.
pub fn time_claim(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, TokenError> {
    let invalid = |detail: String| TokenError::InvalidClaim {
        claim: name,
        detail,
    };
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else {
                n.as_f64()
                    .and_then(float_secs)
                    .map(Some)
                    .ok_or_else(|| invalid(format!("{n} is not a usable time")))
            }
        }
        Some(Value::String(s)) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                Ok(Some(i))
            } else {
                t.parse::<f64>()
                    .ok()
                    .and_then(float_secs)
                    .map(Some)
                    .ok_or_else(|| invalid(format!("{s:?} is not a number of seconds")))
            }
        }
        Some(other) => Err(invalid(format!("expected a number, found {other}"))),
    }
}

/// Whole seconds of a finite float within ±10^15 (anything else is nonsense).
fn float_secs(f: f64) -> Option<i64> {
    // Truncation is intended: fractional seconds do not matter at 5 min skew.
    #[allow(clippy::cast_possible_truncation)]
    (f.is_finite() && f.abs() < 1e15).then(|| f.trunc() as i64)
}

/// Check `nbf` (optional) and `exp` (required) against `now` with the clock skew;
/// returns `exp`.
pub fn check_times(claims: &Map<String, Value>, now: i64) -> Result<i64, TokenError> {
    let exp = time_claim(claims, "exp")?.ok_or(TokenError::MissingClaim { claim: "exp" })?;
    if let Some(nbf) = time_claim(claims, "nbf")? {
        if nbf > now.saturating_add(CLOCK_SKEW_SECS) {
            return Err(TokenError::NotYetValid { nbf, now });
        }
    }
    if exp <= now.saturating_sub(CLOCK_SKEW_SECS) {
        return Err(TokenError::Expired { exp, now });
    }
    Ok(exp)
}

/// The `aud` claim as a list (a JWT may carry one string or an array of strings).
pub fn audiences(claims: &Map<String, Value>) -> Result<Vec<String>, TokenError> {
    match claims.get("aud") {
        None | Some(Value::Null) => Err(TokenError::MissingClaim { claim: "aud" }),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or(TokenError::InvalidClaim {
                        claim: "aud",
                        detail: "array holds a non-string".to_owned(),
                    })
            })
            .collect(),
        Some(other) => Err(TokenError::InvalidClaim {
            claim: "aud",
            detail: format!("expected a string, found {other}"),
        }),
    }
}

/// Check that one of the token's audiences is in `accepted` (exact comparison);
/// `expected` is what the error message shows.
pub fn check_audience(
    claims: &Map<String, Value>,
    accepted: &[&str],
    expected: &str,
) -> Result<(), TokenError> {
    let found = audiences(claims)?;
    if found.iter().any(|a| accepted.contains(&a.as_str())) {
        Ok(())
    } else {
        Err(TokenError::WrongAudience {
            expected: expected.to_owned(),
            found: found.join(", "),
        })
    }
}

/// Format Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn fmt_unix(ts: i64) -> String {
    match jiff::Timestamp::from_second(ts) {
        Ok(t) => t.to_string(),
        Err(_) => format!("{ts} (Unix seconds)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn formats_times() {
        assert_eq!(fmt_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(fmt_unix(1_767_225_599), "2025-12-31T23:59:59Z");
        assert_eq!(fmt_unix(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn times_as_numbers_or_strings() {
        let c = obj(json!({"nbf": "100", "exp": 200.7}));
        assert_eq!(time_claim(&c, "nbf").unwrap(), Some(100));
        assert_eq!(time_claim(&c, "exp").unwrap(), Some(200));
        assert_eq!(check_times(&c, 150).unwrap(), 200);
        assert_eq!(check_times(&c, 499).unwrap(), 200);
        assert_eq!(check_times(&c, 500).unwrap_err().code(), "token_expired");
        let c = obj(json!({"nbf": 1000, "exp": 2000}));
        assert_eq!(check_times(&c, 700).unwrap(), 2000);
        assert_eq!(
            check_times(&c, 699).unwrap_err().code(),
            "token_not_yet_valid"
        );
        let c = obj(json!({"exp": "soon"}));
        assert_eq!(
            check_times(&c, 0).unwrap_err().code(),
            "token_invalid_claim"
        );
        let c = obj(json!({}));
        assert_eq!(
            check_times(&c, 0).unwrap_err().code(),
            "token_missing_claim"
        );
    }
}
