//! Signed session tokens (JWT, HMAC-SHA256) and the server secret.

use jsonwebtoken::{decode, errors::ErrorKind, Algorithm, DecodingKey, Validation};
use rand::RngCore;
use std::path::Path;

pub use parley_protocol::token::{mint, Claims};

/// Why a token was refused; the text is sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error("missing token")]
    Missing,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The signature does not match or the token is malformed.
    #[error("invalid token")]
    Invalid,
    /// A one-time ticket presented a second time.
    #[error("ticket already used")]
    Used,
}

impl AuthError {
    /// A stable short name of the reason, for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Expired => "expired",
            AuthError::Invalid => "invalid",
            AuthError::Used => "ticket_used",
        }
    }
}

/// Check a token's signature and expiry.
pub fn verify(secret: &[u8], token: Option<&str>) -> Result<Claims, AuthError> {
    let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "sub"]);
    decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid,
        })
        .and_then(|c| {
            if c.sub.is_empty() {
                Err(AuthError::Invalid)
            } else {
                Ok(c)
            }
        })
}

/// The secret from the flag or environment, else the one kept in `data/secret`, made once.
pub fn load_or_create_secret(given: Option<&str>, data: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = given.filter(|s| !s.is_empty()) {
        return Ok(s.as_bytes().to_vec());
    }
    let path = secret_path(data);
    if let Ok(Some(existing)) = stored_secret(data) {
        return Ok(existing.into_bytes());
    }
    std::fs::create_dir_all(data)
        .map_err(|e| anyhow::anyhow!("cannot create data directory {}: {e}", data.display()))?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    write_private(&path, &secret)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(secret.into_bytes())
}

/// Longest user id a token is minted for, in characters.
pub const MAX_USER_CHARS: usize = 256;

/// Whether `user` can be a user id: not empty, at most [`MAX_USER_CHARS`] characters, no
/// control characters and no surrounding spaces (which would make two ids look alike).
pub fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("a user id is not empty".into());
    }
    if user.chars().count() > MAX_USER_CHARS {
        return Err(format!("a user id has at most {MAX_USER_CHARS} characters"));
    }
    if user.chars().any(char::is_control) {
        return Err("a user id has no control characters".into());
    }
    if user.trim() != user {
        return Err("a user id does not begin or end with spaces".into());
    }
    Ok(())
}

/// The secret file a data directory keeps when no secret is given.
fn secret_path(data: &Path) -> std::path::PathBuf {
    data.join("secret")
}

/// The secret kept in the data directory `data`, if there is one.
pub fn stored_secret(data: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(secret_path(data)) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Make `secret` the one kept in the data directory `data` (a restore does), written beside
/// the old file and renamed over it, readable by its owner only.
pub fn replace_secret(data: &Path, secret: &str) -> std::io::Result<()> {
    let path = secret_path(data);
    let partial = data.join("secret.partial");
    let _ = std::fs::remove_file(&partial);
    write_private(&partial, secret)?;
    std::fs::rename(&partial, path)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn round_trip_and_refusals() {
        let t = mint(b"s1", "alice", true, Duration::from_secs(60));
        let c = verify(b"s1", Some(&t)).unwrap();
        assert_eq!((c.sub.as_str(), c.admin), ("alice", true));
        assert_eq!(verify(b"other", Some(&t)), Err(AuthError::Invalid));
        assert_eq!(verify(b"s1", None), Err(AuthError::Missing));
        assert_eq!(verify(b"s1", Some("garbage")), Err(AuthError::Invalid));
        let expired = Claims {
            sub: "a".into(),
            iat: 1,
            exp: 2,
            admin: false,
        }
        .sign(b"s1");
        assert_eq!(verify(b"s1", Some(&expired)), Err(AuthError::Expired));
    }

    #[test]
    fn generated_secret_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_secret(None, dir.path()).unwrap();
        let b = load_or_create_secret(None, dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(load_or_create_secret(Some("x"), dir.path()).unwrap(), b"x");
    }
}
