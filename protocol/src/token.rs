//! The session token every parley server accepts: a JWT signed with HMAC-SHA256 under the
//! server's secret, with the claims below. Defined here, beside the wire types, because
//! it is part of the protocol: an application's backend mints tokens for its users with
//! [`mint`], and the server, the load harness and the conformance runner use the same.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a token asserts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expires at (seconds since the epoch).
    pub exp: u64,
    /// Operator rights.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// Seconds since the epoch now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Claims {
    /// Claims for `user` issued now and valid for `ttl`.
    pub fn new(user: &str, admin: bool, ttl: Duration) -> Claims {
        let iat = unix_now();
        Claims {
            sub: user.to_owned(),
            iat,
            exp: iat + ttl.as_secs(),
            admin,
        }
    }

    /// These claims signed with `secret`: the token.
    pub fn sign(&self, secret: &[u8]) -> String {
        use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
        encode(
            &Header::new(Algorithm::HS256),
            self,
            &EncodingKey::from_secret(secret),
        )
        .expect("HS256 signing cannot fail")
    }
}

/// A token for `user`, valid for `ttl`, signed with the server's `secret`.
pub fn mint(secret: &[u8], user: &str, admin: bool, ttl: Duration) -> String {
    Claims::new(user, admin, ttl).sign(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};

    #[test]
    fn a_minted_token_carries_its_claims_under_hs256() {
        let token = mint(b"secret", "ann", true, Duration::from_secs(60));
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        let back = decode::<Claims>(&token, &DecodingKey::from_secret(b"secret"), &validation)
            .unwrap()
            .claims;
        assert_eq!((back.sub.as_str(), back.admin), ("ann", true));
        assert_eq!(back.exp - back.iat, 60);
        let plain = Claims::new("bob", false, Duration::from_secs(1));
        let json = serde_json::to_value(&plain).unwrap();
        assert!(
            json.get("admin").is_none(),
            "no admin claim unless granted: {json}"
        );
    }
}
