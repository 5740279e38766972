//! Passwords (argon2) and session tokens (random, stored only as a SHA-256 hash).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Hashes a password for storage (argon2id, a random salt, PHC string form).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Whether `password` matches a stored hash (false for a malformed hash, never a panic).
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A new session token: 32 random bytes, base64url without padding (43 characters).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The SHA-256 of a token: what the database and the cache key hold, never the token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether a string has the shape of a token this service issues (checked before any lookup).
pub fn plausible_token(token: &str) -> bool {
    token_shaped(token.as_bytes())
}

/// 43 bytes of the base64url alphabet.
fn token_shaped(token: &[u8]) -> bool {
    token.len() == 43
        && token
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The bearer token of an `Authorization` header value, if it has that form: `Bearer` in any
/// case, a space, and a token of the issued shape (ASCII whitespace around it is ignored).
/// Works on the bytes: this runs on every request that carries a token.
pub fn bearer(value: &[u8]) -> Option<&str> {
    let (scheme, rest) = value.split_at_checked(b"bearer ".len())?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    // A token-shaped value is ASCII, so the conversion cannot fail.
    if token_shaped(token) {
        std::str::from_utf8(token).ok()
    } else {
        None
    }
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let ha = Sha256::digest(a);
    let hb = Sha256::digest(b);
    ha.iter()
        .zip(hb.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_round_trip_and_bad_hashes_do_not_panic() {
        let h = hash_password("correct horse").unwrap();
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn tokens_have_the_checked_shape() {
        let t = new_token();
        assert!(plausible_token(&t), "{t}");
        assert_ne!(t, new_token());
        assert_eq!(bearer(format!("Bearer {t}").as_bytes()), Some(t.as_str()));
        assert_eq!(bearer(format!("bearer  {t}").as_bytes()), Some(t.as_str()));
        assert_eq!(bearer(b"Bearer short"), None);
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(&[0xff, 0xfe, b' ', b'x']), None);
        assert_eq!(bearer(format!("BEARER\t{t}").as_bytes()), None);
        assert_eq!(
            bearer(format!("Bearer {t} \t").as_bytes()),
            Some(t.as_str())
        );
        assert_eq!(bearer(format!("Bearer{t}").as_bytes()), None);
        assert_eq!(bearer(format!("Bearer {t}x").as_bytes()), None);
        assert_eq!(bearer(b"Bearer"), None);
        // Only ASCII whitespace around the token is ignored; a no-break space is not.
        assert_eq!(bearer(format!("Bearer {t}\u{a0}").as_bytes()), None);
        let mut non_ascii = format!("Bearer {t}").into_bytes();
        non_ascii[10] = 0xc3;
        assert_eq!(bearer(&non_ascii), None);
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
