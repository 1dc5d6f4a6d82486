//! Tokens the runner presents: the protocol's session token (see
//! [`parley_protocol::token`]) and the ways a bad one goes wrong.

use crate::scenario::TokenKind;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use parley_protocol::token::Claims;
use std::time::Duration;

/// The token of the given kind for `user`, or `None` for [`TokenKind::Missing`].
pub fn mint(secret: &[u8], user: &str, admin: bool, kind: TokenKind) -> Option<String> {
    let valid = Claims::new(user, admin, Duration::from_secs(3600));
    Some(match kind {
        TokenKind::Missing => return None,
        TokenKind::Valid => valid.sign(secret),
        // Well past any leeway a verifier may allow for clock skew.
        TokenKind::Expired => Claims {
            iat: valid.iat - 7200,
            exp: valid.iat - 3600,
            ..valid
        }
        .sign(secret),
        TokenKind::OtherSecret => {
            let mut other = secret.to_vec();
            other.extend_from_slice(b"-not-the-server-secret");
            valid.sign(&other)
        }
        // A real token whose payload was swapped for an admin one, signature kept.
        TokenKind::Forged => {
            let genuine = valid.sign(secret);
            let mut parts = genuine.split('.');
            let (header, _, signature) = (parts.next()?, parts.next()?, parts.next()?);
            let forged = Claims {
                admin: true,
                exp: valid.iat + 365 * 86_400,
                ..valid
            };
            let payload = serde_json::to_vec(&forged).expect("claims serialise");
            format!("{header}.{}.{signature}", URL_SAFE_NO_PAD.encode(payload))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, errors::ErrorKind, Algorithm, DecodingKey, Validation};
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Back {
        sub: String,
        #[serde(default)]
        admin: bool,
    }

    fn verify(secret: &[u8], token: &str) -> Result<Back, ErrorKind> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        decode::<Back>(token, &DecodingKey::from_secret(secret), &v)
            .map(|d| d.claims)
            .map_err(|e| e.into_kind())
    }

    #[test]
    fn each_kind_is_what_it_says() {
        let s = b"secret";
        let ok = verify(s, &mint(s, "alice", true, TokenKind::Valid).unwrap()).unwrap();
        assert_eq!((ok.sub.as_str(), ok.admin), ("alice", true));
        let plain = verify(s, &mint(s, "bob", false, TokenKind::Valid).unwrap()).unwrap();
        assert!(!plain.admin);
        assert!(mint(s, "a", false, TokenKind::Missing).is_none());
        let expired = mint(s, "a", false, TokenKind::Expired).unwrap();
        assert!(matches!(
            verify(s, &expired),
            Err(ErrorKind::ExpiredSignature)
        ));
        let other = mint(s, "a", false, TokenKind::OtherSecret).unwrap();
        assert!(matches!(
            verify(s, &other),
            Err(ErrorKind::InvalidSignature)
        ));
        let forged = mint(s, "a", false, TokenKind::Forged).unwrap();
        assert!(matches!(
            verify(s, &forged),
            Err(ErrorKind::InvalidSignature)
        ));
    }
}
