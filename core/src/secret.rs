//! [`Secret`]: a configured secret (shared secret, key, password) that never
//! shows up in logs or `Debug` output and is compared in constant time.

use serde::Deserialize;
use subtle::ConstantTimeEq;

/// A secret string from the configuration. `Debug` prints `Secret(<redacted>)`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where it is used (a header, a key derivation).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` equals the secret, compared in constant time (an empty
    /// secret equals nothing).
    pub fn matches(&self, given: &[u8]) -> bool {
        !self.0.is_empty() && bool::from(self.0.as_bytes().ct_eq(given))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted_and_compare_is_exact() {
        let s = Secret::new("hunter2-hunter2-hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
        assert!(s.matches(b"hunter2-hunter2-hunter2"));
        assert!(!s.matches(b"hunter2-hunter2-hunter3"));
        assert!(!s.matches(b"hunter2"));
        assert!(!Secret::default().matches(b""));
    }
}
