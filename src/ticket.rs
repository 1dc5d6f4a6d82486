//! One-time tickets for the WebSocket URL.
//!
//! Browsers cannot set headers on a WebSocket handshake, so a page puts its credential in
//! the URL, and URLs end up in proxy and access logs. A page trades its token (sent in an
//! `Authorization` header, which logs leave out) for a ticket that opens one session within
//! 30 seconds; a ticket read from a log afterwards opens nothing.
//!
//! A ticket is signed like a token but with a key of its own, so neither passes for the
//! other, and carries a random id that the server remembers until the ticket expires. Ids
//! are remembered per server: in a cluster a ticket is single-use on each node.

use crate::auth::{AuthError, Claims};
use jsonwebtoken::{
    decode, encode, errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a ticket opens a session.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Redeemed ids kept before the expired ones are swept out.
const SWEEP_AT_LEAST: usize = 1024;

#[derive(Serialize, Deserialize)]
struct TicketClaims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    admin: bool,
    /// The token's own expiry: the session ends no later than the token would have.
    token_exp: u64,
    jti: String,
}

#[derive(Default)]
struct Redeemed {
    /// Ticket id → when it expires (seconds since the epoch).
    ids: HashMap<String, u64>,
    sweep_at: usize,
}

/// Issues tickets and redeems each once.
pub struct Tickets {
    key: Vec<u8>,
    redeemed: Mutex<Redeemed>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Tickets {
    /// Tickets signed with a key derived from the token secret.
    pub fn new(secret: &[u8]) -> Tickets {
        Tickets {
            key: [secret, b"\0parley ws-ticket"].concat(),
            redeemed: Mutex::default(),
        }
    }

    /// A ticket for the holder of `claims`, and the seconds it stays valid.
    pub fn issue(&self, claims: &Claims) -> (String, u64) {
        let now = unix_now();
        let exp = (now + TICKET_TTL.as_secs()).min(claims.exp);
        let ticket = TicketClaims {
            sub: claims.sub.clone(),
            exp,
            admin: claims.admin,
            token_exp: claims.exp,
            jti: uuid::Uuid::new_v4().simple().to_string(),
        };
        let signed = encode(
            &Header::new(Algorithm::HS256),
            &ticket,
            &EncodingKey::from_secret(&self.key),
        )
        .expect("HS256 encoding cannot fail");
        (signed, exp.saturating_sub(now))
    }

    /// The claims a ticket stands for, the first time it is presented before it expires.
    pub fn redeem(&self, ticket: &str) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let ticket =
            decode::<TicketClaims>(ticket, &DecodingKey::from_secret(&self.key), &validation)
                .map_err(|e| match e.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    _ => AuthError::Invalid,
                })?
                .claims;
        let now = unix_now();
        let mut redeemed = self.redeemed.lock();
        if redeemed.ids.len() >= redeemed.sweep_at {
            redeemed.ids.retain(|_, exp| *exp >= now);
            redeemed.sweep_at = (redeemed.ids.len() * 2).max(SWEEP_AT_LEAST);
        }
        if redeemed.ids.insert(ticket.jti, ticket.exp).is_some() {
            return Err(AuthError::Used);
        }
        Ok(Claims {
            sub: ticket.sub,
            iat: now,
            exp: ticket.token_exp,
            admin: ticket.admin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "ann".into(),
            iat: unix_now(),
            exp,
            admin: false,
        }
    }

    #[test]
    fn a_ticket_opens_once_and_stands_for_its_token() {
        let tickets = Tickets::new(b"secret");
        let token_exp = unix_now() + 3600;
        let (ticket, ttl) = tickets.issue(&claims(token_exp));
        assert_eq!(ttl, TICKET_TTL.as_secs());
        let redeemed = tickets.redeem(&ticket).unwrap();
        assert_eq!((redeemed.sub.as_str(), redeemed.exp), ("ann", token_exp));
        assert_eq!(tickets.redeem(&ticket), Err(AuthError::Used));
    }

    #[test]
    fn tickets_and_tokens_never_pass_for_each_other() {
        let tickets = Tickets::new(b"secret");
        let (ticket, _) = tickets.issue(&claims(unix_now() + 3600));
        assert_eq!(
            crate::auth::verify(b"secret", Some(&ticket)),
            Err(AuthError::Invalid)
        );
        let token = crate::auth::mint(b"secret", "ann", false, Duration::from_secs(60));
        assert_eq!(tickets.redeem(&token), Err(AuthError::Invalid));
        assert_eq!(
            Tickets::new(b"other").redeem(&ticket),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn a_ticket_never_outlives_its_token_and_redeemed_ids_are_swept() {
        let tickets = Tickets::new(b"secret");
        let (_, ttl) = tickets.issue(&claims(unix_now() + 5));
        assert!(ttl <= 5);
        let (expired, _) = tickets.issue(&claims(unix_now().saturating_sub(1)));
        assert_eq!(tickets.redeem(&expired), Err(AuthError::Expired));
        for _ in 0..3 * SWEEP_AT_LEAST {
            let (t, _) = tickets.issue(&claims(unix_now() + 3600));
            tickets.redeem(&t).unwrap();
        }
        tickets
            .redeemed
            .lock()
            .ids
            .values_mut()
            .for_each(|exp| *exp = 0);
        let before = tickets.redeemed.lock().ids.len();
        for _ in 0..before {
            let (t, _) = tickets.issue(&claims(unix_now() + 3600));
            tickets.redeem(&t).unwrap();
        }
        let kept = tickets.redeemed.lock().ids.len();
        assert!(
            kept <= before,
            "expired ids were swept: {kept} kept of {}",
            2 * before
        );
    }
}
