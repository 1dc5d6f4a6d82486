//! Tokens the runner presents: JWT HS256 with claims `{sub, iat, exp, admin?}`.

use crate::scenario::TokenKind;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Serialize;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    admin: bool,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn sign(secret: &[u8], claims: &Claims) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing does not fail")
}

/// The token of the given kind for `user`, or `None` for [`TokenKind::Missing`].
pub fn mint(secret: &[u8], user: &str, admin: bool, kind: TokenKind) -> Option<String> {
    let iat = now();
    let valid = Claims {
        sub: user,
        iat,
        exp: iat + 3600,
        admin,
    };
    Some(match kind {
        TokenKind::Missing => return None,
        TokenKind::Valid => sign(secret, &valid),
        // Well past any leeway a verifier may allow for clock skew.
        TokenKind::Expired => sign(
            secret,
            &Claims {
                iat: iat - 7200,
                exp: iat - 3600,
                ..valid
            },
        ),
        TokenKind::OtherSecret => {
            let mut other = secret.to_vec();
            other.extend_from_slice(b"-not-the-server-secret");
            sign(&other, &valid)
        }
        // A real token whose payload was swapped for an admin one, signature kept.
        TokenKind::Forged => {
            let genuine = sign(secret, &valid);
            let mut parts = genuine.split('.');
            let (header, _, signature) = (parts.next()?, parts.next()?, parts.next()?);
            let forged = Claims {
                admin: true,
                exp: iat + 365 * 86_400,
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
    use jsonwebtoken::{decode, errors::ErrorKind, DecodingKey, Validation};
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
