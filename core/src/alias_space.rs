//! An integration's alias space: its prefix followed by N random digits.
//!
//! Drawing is pure; whether a drawn alias is free is the database's call
//! (`UNIQUE (integration, numeric_alias)`), made by the alias service.

use rand::Rng;

/// How many aliases an integration with `digits` random digits can issue.
pub fn space_size(digits: u32) -> u64 {
    10u64.saturating_pow(digits)
}

/// `prefix` plus `digits` uniform random digits. `ThreadRng` is a CSPRNG
/// (ChaCha12, seeded and periodically reseeded from the operating system).
pub fn draw(prefix: &str, digits: u32) -> String {
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(prefix.len() + digits as usize);
    s.push_str(prefix);
    for _ in 0..digits {
        s.push(char::from(b'0' + rng.gen_range(0..10u8)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_have_prefix_and_digit_count() {
        for digits in [5, 9, 15] {
            let a = draw("88", digits);
            assert_eq!(a.len(), 2 + digits as usize);
            assert!(a.starts_with("88"));
            assert!(a[2..].bytes().all(|b| b.is_ascii_digit()));
        }
        assert_ne!(draw("1", 15), draw("1", 15));
        assert_eq!(space_size(6), 1_000_000);
    }
}
