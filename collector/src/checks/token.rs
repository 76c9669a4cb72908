//! The secret in a check's ping URL: 128 bits from the operating system's
//! random source, written as a UUID (`8-4-4-4-12` hex) so that clients
//! made for Healthchecks accept it. Only its SHA-256 is stored: the token
//! is shown once, when it is made, and a database copy cannot ping.
//! Tenants' ping keys (`/ping/<key>/<slug>`) are the same 128 bits in
//! URL-safe base64 (22 characters), hashed the same way.

use std::fmt::Write as _;

use rand::TryRngCore as _;

/// A fresh token (UUID form).
pub fn new_token() -> String {
    let b = random();
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{byte:02x}");
    }
    s
}

/// A fresh ping key (22 URL-safe characters).
pub fn new_ping_key() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = u128::from_be_bytes(random());
    (0..22)
        .map(|i| char::from(ALPHABET[usize::try_from((bits >> (i * 6)) & 63).unwrap_or(0)]))
        .collect()
}

fn random() -> [u8; 16] {
    let mut b = [0u8; 16];
    // The OS source; failing to read it is not something to carry on from.
    rand::rngs::OsRng
        .try_fill_bytes(&mut b)
        .expect("the operating system's random source is readable");
    b
}

/// Whether `s` has the form of a token (a UUID, either case).
pub fn is_token(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Whether `s` has the form of a ping key.
pub fn is_ping_key(s: &str) -> bool {
    s.len() == 22
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What is stored of a token or key: its SHA-256 (of the lowercase form:
/// a UUID is the same in either case).
pub fn hash(secret: &str) -> Vec<u8> {
    let canonical = if is_token(secret) {
        secret.to_ascii_lowercase()
    } else {
        secret.to_owned()
    };
    ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes())
        .as_ref()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_uuids_of_fresh_randomness_and_only_their_hash_is_kept() {
        let a = new_token();
        let b = new_token();
        assert!(is_token(&a), "{a}");
        assert_ne!(a, b);
        assert_eq!(hash(&a), hash(&a.to_uppercase()));
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a).len(), 32);
        // Every one of the 128 bits varies: over 64 tokens each hex digit
        // position takes more than one value.
        let many: Vec<String> = (0..64).map(|_| new_token().replace('-', "")).collect();
        for pos in 0..32 {
            let first = &many[0][pos..=pos];
            assert!(many.iter().any(|t| &t[pos..=pos] != first), "digit {pos}");
        }
        for bad in ["", "0123", &a[..35], &format!("{a}0"), &a.replace('-', "x")] {
            assert!(!is_token(bad), "{bad}");
        }
    }

    #[test]
    fn ping_keys_are_22_url_safe_characters() {
        let k = new_ping_key();
        assert!(is_ping_key(&k), "{k}");
        assert!(!is_token(&k));
        assert_ne!(k, new_ping_key());
        assert!(!is_ping_key("abc"));
        assert!(!is_ping_key("abcdefghijklmnopqrstu/"));
    }
}
