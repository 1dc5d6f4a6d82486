//! One-time tickets for the WebSocket URL.
//!
//! Browsers cannot set headers on a WebSocket handshake, so a page puts its credential in
//! the URL, and URLs end up in proxy and access logs. A page trades its token (sent in an
//! `Authorization` header, which logs leave out) for a ticket that opens one session within
//! 30 seconds; a ticket read from a log afterwards opens nothing.
//!
//! A ticket is signed like a token but with a key of its own, so neither passes for the
//! other, and carries a random id that is remembered until the ticket expires: in memory
//! on a single server (one process owns a data directory), in the ledger in a cluster, so
//! a ticket opens one session across all the nodes, not one on each.

use crate::auth::{AuthError, Claims};
use crate::cluster::Ledger;
use crate::store::StoreError;
use jsonwebtoken::{
    decode, encode, errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use parking_lot::Mutex;
use parley_protocol::token::unix_now;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

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

/// Where redeemed ticket ids are remembered.
enum Record {
    /// This process's memory: a single server.
    Local(Mutex<Redeemed>),
    /// The cluster's database, shared by every node.
    Shared(Ledger),
}

/// Why a ticket opened no session.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// The ticket is not one, has expired or was used.
    #[error(transparent)]
    Refused(#[from] AuthError),
    /// The record of redeemed tickets could not be asked: try again.
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

/// Issues tickets and redeems each once.
pub struct Tickets {
    key: Vec<u8>,
    redeemed: Record,
}

impl Redeemed {
    /// Remember `jti` (expiring at `exp`): whether this is its first redemption. Expired
    /// ids are swept whenever the map has doubled since the last sweep, so it holds about
    /// the tickets of one lifetime.
    fn first(&mut self, jti: String, exp: u64, now: u64) -> bool {
        if self.ids.len() >= self.sweep_at {
            self.ids.retain(|_, exp| *exp >= now);
            self.sweep_at = (self.ids.len() * 2).max(SWEEP_AT_LEAST);
        }
        self.ids.insert(jti, exp).is_none()
    }
}

impl Tickets {
    /// Tickets signed with a key derived from the token secret, their redemptions kept
    /// in `ledger` when there is one (a cluster node), else in memory.
    pub fn new(secret: &[u8], ledger: Option<Ledger>) -> Tickets {
        Tickets {
            key: [secret, b"\0parley ws-ticket"].concat(),
            redeemed: match ledger {
                Some(ledger) => Record::Shared(ledger),
                None => Record::Local(Mutex::default()),
            },
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
    pub async fn redeem(&self, ticket: &str) -> Result<Claims, TicketError> {
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
        let first = match &self.redeemed {
            Record::Local(redeemed) => redeemed.lock().first(ticket.jti, ticket.exp, now),
            Record::Shared(ledger) => ledger.redeem_ticket(&ticket.jti, ticket.exp).await?,
        };
        if !first {
            return Err(AuthError::Used.into());
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

    /// Why `tickets` refuses `ticket` (panics if it opens).
    async fn refusal(tickets: &Tickets, ticket: &str) -> AuthError {
        match tickets.redeem(ticket).await {
            Err(TicketError::Refused(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_ticket_opens_once_and_stands_for_its_token() {
        let tickets = Tickets::new(b"secret", None);
        let token_exp = unix_now() + 3600;
        let (ticket, ttl) = tickets.issue(&claims(token_exp));
        assert_eq!(ttl, TICKET_TTL.as_secs());
        let redeemed = tickets.redeem(&ticket).await.unwrap();
        assert_eq!((redeemed.sub.as_str(), redeemed.exp), ("ann", token_exp));
        assert_eq!(refusal(&tickets, &ticket).await, AuthError::Used);
    }

    #[tokio::test]
    async fn tickets_and_tokens_never_pass_for_each_other() {
        let tickets = Tickets::new(b"secret", None);
        let (ticket, _) = tickets.issue(&claims(unix_now() + 3600));
        assert_eq!(
            crate::auth::verify(b"secret", Some(&ticket)),
            Err(AuthError::Invalid)
        );
        let token = crate::auth::mint(b"secret", "ann", false, Duration::from_secs(60));
        assert_eq!(refusal(&tickets, &token).await, AuthError::Invalid);
        let other = Tickets::new(b"other", None);
        assert_eq!(refusal(&other, &ticket).await, AuthError::Invalid);
    }

    #[tokio::test]
    async fn a_ticket_never_outlives_its_token() {
        let tickets = Tickets::new(b"secret", None);
        let (_, ttl) = tickets.issue(&claims(unix_now() + 5));
        assert!(ttl <= 5);
        let (expired, _) = tickets.issue(&claims(unix_now().saturating_sub(1)));
        assert_eq!(refusal(&tickets, &expired).await, AuthError::Expired);
    }

    #[test]
    fn redeemed_ids_are_remembered_until_they_expire_then_swept() {
        let mut redeemed = Redeemed::default();
        let now = 1_000;
        for n in 0..3 * SWEEP_AT_LEAST {
            assert!(redeemed.first(format!("t{n}"), now + 30, now));
        }
        assert!(!redeemed.first("t0".into(), now + 30, now), "a second use");
        let before = redeemed.ids.len();
        // Later than every expiry: the next sweep drops them all, and the map stays
        // about the size of one lifetime's tickets.
        let later = now + 31;
        let mut n = 0;
        while redeemed.ids.len() >= before && n < 2 * before {
            assert!(redeemed.first(format!("u{n}"), later + 30, later));
            n += 1;
        }
        let kept = redeemed.ids.len();
        assert!(kept < before, "expired ids were swept: {kept} kept");
        assert!(redeemed.ids.keys().all(|id| id.starts_with('u')));
    }
}
