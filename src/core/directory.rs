//! Users, their settings, connections and blocks.

use super::{Actor, Change, Outcome, Refusal, Target};
use parley_protocol::{AckResult, ConnectionState, ServerFrame, Settings, UserId, WhoCanMessage};
use std::collections::{HashMap, HashSet};

/// Who knows whom: users, settings, connections, pending requests and blocks.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    users: HashMap<UserId, Settings>,
    /// Both directions are stored so each side's lookups are one probe.
    connections: HashSet<(UserId, UserId)>,
    /// (from, to): `from` asked `to`.
    requests: HashSet<(UserId, UserId)>,
    /// (blocker, blocked).
    blocks: HashSet<(UserId, UserId)>,
}

fn pair(a: &str, b: &str) -> (UserId, UserId) {
    (a.to_owned(), b.to_owned())
}

impl Directory {
    /// Register a user on first sight; returns the change when it is new.
    pub fn ensure_user(&mut self, user: &str) -> Option<Change> {
        if self.users.contains_key(user) {
            return None;
        }
        self.users.insert(user.to_owned(), Settings::default());
        Some(Change::UserCreated {
            user: user.to_owned(),
        })
    }

    /// Whether the user has ever connected.
    pub fn exists(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// A user's settings (defaults for unknown users).
    pub fn settings(&self, user: &str) -> Settings {
        self.users.get(user).copied().unwrap_or_default()
    }

    /// Whether the two are connected.
    pub fn connected(&self, a: &str, b: &str) -> bool {
        self.connections.contains(&pair(a, b))
    }

    /// Whether `blocker` blocked `blocked`.
    pub fn has_blocked(&self, blocker: &str, blocked: &str) -> bool {
        self.blocks.contains(&pair(blocker, blocked))
    }

    /// Whether either blocked the other.
    pub fn blocked_either(&self, a: &str, b: &str) -> bool {
        self.has_blocked(a, b) || self.has_blocked(b, a)
    }

    /// `from` may address `to` at all: `to` exists and no block stands between them.
    pub fn reachable(&self, from: &str, to: &str) -> Result<(), Refusal> {
        if from == to || !self.exists(to) || self.blocked_either(from, to) {
            return Err(Refusal::RecipientUnavailable);
        }
        Ok(())
    }

    /// `from` may start a direct conversation with or send a direct message to `to`.
    pub fn check_direct(&self, from: &str, to: &str) -> Result<(), Refusal> {
        self.reachable(from, to)?;
        if !self.connected(from, to) {
            return Err(Refusal::NotConnected(to.to_owned()));
        }
        Ok(())
    }

    /// `from` may send an InMail to `to` (as primary or copied recipient).
    pub fn check_inmail(&self, from: &str, to: &str) -> Result<(), Refusal> {
        self.reachable(from, to)?;
        if self.settings(to).who_can_message == WhoCanMessage::Connections
            && !self.connected(from, to)
        {
            return Err(Refusal::InmailNotAllowed(to.to_owned()));
        }
        Ok(())
    }

    /// The connection state between `me` and `other`, seen from `me`.
    pub fn connection_state(&self, me: &str, other: &str) -> ConnectionState {
        if self.connected(me, other) {
            ConnectionState::Connected
        } else if self.requests.contains(&pair(me, other)) {
            ConnectionState::Requested
        } else if self.requests.contains(&pair(other, me)) {
            ConnectionState::Incoming
        } else {
            ConnectionState::None
        }
    }

    fn relation(from: &str, to: &str, state: ConnectionState) -> Change {
        Change::Relation {
            from: from.to_owned(),
            to: to.to_owned(),
            state,
        }
    }

    fn connection_ack(user: &str, state: ConnectionState) -> Outcome {
        Outcome::with_ack(AckResult::Connection {
            user: user.to_owned(),
            state,
        })
    }

    fn link(&mut self, a: &str, b: &str, out: &mut Outcome, actor: &Actor) {
        self.requests.remove(&pair(a, b));
        self.requests.remove(&pair(b, a));
        self.connections.insert(pair(a, b));
        self.connections.insert(pair(b, a));
        out.changes
            .push(Self::relation(a, b, ConnectionState::Connected));
        out.emit(
            vec![Target::others_of(actor)],
            ServerFrame::Connected { user: b.to_owned() },
        );
        out.emit(
            vec![Target::all(b)],
            ServerFrame::Connected { user: a.to_owned() },
        );
    }

    /// Ask `other` to connect; a request crossing one from `other` connects at once.
    pub fn connect(&mut self, actor: &Actor, other: &str) -> Result<Outcome, Refusal> {
        let me = actor.user.as_str();
        self.reachable(me, other)?;
        match self.connection_state(me, other) {
            ConnectionState::Connected | ConnectionState::Requested => Ok(Self::connection_ack(
                other,
                self.connection_state(me, other),
            )),
            ConnectionState::Incoming => {
                let mut out = Self::connection_ack(other, ConnectionState::Connected);
                self.link(me, other, &mut out, actor);
                Ok(out)
            }
            ConnectionState::None => {
                self.requests.insert(pair(me, other));
                let mut out = Self::connection_ack(other, ConnectionState::Requested);
                out.changes
                    .push(Self::relation(me, other, ConnectionState::Requested));
                out.emit(
                    vec![Target::all(other)],
                    ServerFrame::ConnectionRequest {
                        from: me.to_owned(),
                    },
                );
                Ok(out)
            }
        }
    }

    /// Accept `other`'s pending request.
    pub fn accept(&mut self, actor: &Actor, other: &str) -> Result<Outcome, Refusal> {
        let me = actor.user.as_str();
        if self.connection_state(me, other) != ConnectionState::Incoming {
            return Err(Refusal::NotFound("connection request"));
        }
        let mut out = Self::connection_ack(other, ConnectionState::Connected);
        self.link(me, other, &mut out, actor);
        Ok(out)
    }

    /// Decline `other`'s pending request; `other` is not told.
    pub fn decline(&mut self, actor: &Actor, other: &str) -> Result<Outcome, Refusal> {
        let me = actor.user.as_str();
        if !self.requests.remove(&pair(other, me)) {
            return Err(Refusal::NotFound("connection request"));
        }
        let mut out = Self::connection_ack(other, ConnectionState::None);
        out.changes
            .push(Self::relation(other, me, ConnectionState::None));
        Ok(out)
    }

    /// Remove the connection with `other`, or withdraw the request to `other`.
    pub fn disconnect(&mut self, actor: &Actor, other: &str) -> Result<Outcome, Refusal> {
        let me = actor.user.as_str();
        let was_connected = self.connections.remove(&pair(me, other));
        self.connections.remove(&pair(other, me));
        let was_requested = self.requests.remove(&pair(me, other));
        if !was_connected && !was_requested {
            return Err(Refusal::NotFound("connection"));
        }
        let mut out = Self::connection_ack(other, ConnectionState::None);
        out.changes
            .push(Self::relation(me, other, ConnectionState::None));
        out.emit(
            vec![Target::others_of(actor)],
            ServerFrame::Disconnected {
                user: other.to_owned(),
            },
        );
        out.emit(
            vec![Target::all(other)],
            ServerFrame::Disconnected {
                user: me.to_owned(),
            },
        );
        Ok(out)
    }

    /// Block `other`: the connection and requests go, the blocker's sessions are told, `other` is not.
    pub fn block(&mut self, actor: &Actor, other: &str) -> Result<Outcome, Refusal> {
        let me = actor.user.as_str();
        if me == other || !self.exists(other) {
            return Err(Refusal::NotFound("user"));
        }
        let mut out = Outcome::ok();
        if self.connections.remove(&pair(me, other)) {
            self.connections.remove(&pair(other, me));
            out.changes
                .push(Self::relation(me, other, ConnectionState::None));
        }
        self.requests.remove(&pair(me, other));
        self.requests.remove(&pair(other, me));
        if self.blocks.insert(pair(me, other)) {
            out.changes.push(Change::Block {
                blocker: me.to_owned(),
                blocked: other.to_owned(),
                on: true,
            });
        }
        out.emit(
            vec![Target::others_of(actor)],
            ServerFrame::Blocked {
                user: other.to_owned(),
            },
        );
        Ok(out)
    }

    /// Lift a block; the connection is not restored.
    pub fn unblock(&mut self, actor: &Actor, other: &str) -> Result<Outcome, Refusal> {
        let me = actor.user.as_str();
        if !self.blocks.remove(&pair(me, other)) {
            return Err(Refusal::NotFound("block"));
        }
        let mut out = Outcome::ok();
        out.changes.push(Change::Block {
            blocker: me.to_owned(),
            blocked: other.to_owned(),
            on: false,
        });
        out.emit(
            vec![Target::others_of(actor)],
            ServerFrame::Unblocked {
                user: other.to_owned(),
            },
        );
        Ok(out)
    }

    /// Change some settings; the user's other sessions are told.
    pub fn update_settings(&mut self, actor: &Actor, apply: impl FnOnce(&mut Settings)) -> Outcome {
        let settings = self.users.entry(actor.user.clone()).or_default();
        apply(settings);
        let settings = *settings;
        let mut out = Outcome::with_ack(AckResult::Settings { settings });
        out.changes.push(Change::Settings {
            user: actor.user.clone(),
            settings,
        });
        out.emit(
            vec![Target::others_of(actor)],
            ServerFrame::Settings { settings },
        );
        out
    }

    /// Re-apply a committed change at start.
    pub fn replay(&mut self, change: &Change) {
        match change {
            Change::UserCreated { user } => {
                self.ensure_user(user);
            }
            Change::Settings { user, settings } => {
                self.users.insert(user.clone(), *settings);
            }
            Change::Relation { from, to, state } => {
                for (a, b) in [(from, to), (to, from)] {
                    self.connections.remove(&pair(a, b));
                    self.requests.remove(&pair(a, b));
                }
                match state {
                    ConnectionState::Connected => {
                        self.connections.insert(pair(from, to));
                        self.connections.insert(pair(to, from));
                    }
                    ConnectionState::Requested => {
                        self.requests.insert(pair(from, to));
                    }
                    ConnectionState::Incoming => {
                        self.requests.insert(pair(to, from));
                    }
                    ConnectionState::None => {}
                }
            }
            Change::Block {
                blocker,
                blocked,
                on: true,
            } => {
                for (a, b) in [(blocker, blocked), (blocked, blocker)] {
                    self.connections.remove(&pair(a, b));
                    self.requests.remove(&pair(a, b));
                }
                self.blocks.insert(pair(blocker, blocked));
            }
            Change::Block {
                blocker,
                blocked,
                on: false,
            } => {
                self.blocks.remove(&pair(blocker, blocked));
            }
            _ => {}
        }
    }

    /// What `me` may learn about `other`; a user who blocked `me` looks nonexistent.
    pub fn lookup(&self, me: &str, other: &str) -> Result<AckResult, Refusal> {
        if !self.exists(other) || self.has_blocked(other, me) {
            return Err(Refusal::NotFound("user"));
        }
        Ok(AckResult::Profile {
            user: other.to_owned(),
            connection: self.connection_state(me, other),
            inmail_allowed: me != other && self.check_inmail(me, other).is_ok(),
        })
    }

    /// `me`'s connections, incoming and outgoing requests and blocks, each sorted.
    pub fn relations(&self, me: &str) -> [Vec<UserId>; 4] {
        let mine = |set: &HashSet<(UserId, UserId)>, first_is_me: bool| {
            let mut v: Vec<UserId> = set
                .iter()
                .filter_map(|(a, b)| match first_is_me {
                    true if a == me => Some(b.clone()),
                    false if b == me => Some(a.clone()),
                    _ => None,
                })
                .collect();
            v.sort();
            v
        };
        [
            mine(&self.connections, true),
            mine(&self.requests, false),
            mine(&self.requests, true),
            mine(&self.blocks, true),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(user: &str) -> Actor {
        Actor {
            user: user.into(),
            session: 1,
            admin: false,
        }
    }

    fn dir(users: &[&str]) -> Directory {
        let mut d = Directory::default();
        for u in users {
            d.ensure_user(u);
        }
        d
    }

    #[test]
    fn request_then_accept_connects_both_ways() {
        let mut d = dir(&["a", "b"]);
        let out = d.connect(&actor("a"), "b").unwrap();
        assert_eq!(d.connection_state("a", "b"), ConnectionState::Requested);
        assert!(matches!(
            out.emits[0].frame,
            ServerFrame::ConnectionRequest { .. }
        ));
        d.accept(&actor("b"), "a").unwrap();
        assert!(d.connected("a", "b") && d.connected("b", "a"));
        assert!(
            d.accept(&actor("b"), "a").is_err(),
            "nothing pending any more"
        );
    }

    #[test]
    fn crossing_requests_connect() {
        let mut d = dir(&["a", "b"]);
        d.connect(&actor("a"), "b").unwrap();
        let out = d.connect(&actor("b"), "a").unwrap();
        assert_eq!(
            out.ack,
            AckResult::Connection {
                user: "a".into(),
                state: ConnectionState::Connected
            }
        );
    }

    #[test]
    fn block_removes_connection_and_hides_blocker() {
        let mut d = dir(&["a", "b"]);
        d.connect(&actor("a"), "b").unwrap();
        d.accept(&actor("b"), "a").unwrap();
        let out = d.block(&actor("a"), "b").unwrap();
        assert!(!d.connected("a", "b"));
        assert_eq!(out.emits.len(), 1, "only the blocker is told");
        assert_eq!(d.reachable("b", "a"), Err(Refusal::RecipientUnavailable));
        assert_eq!(d.reachable("a", "b"), Err(Refusal::RecipientUnavailable));
        assert_eq!(d.lookup("b", "a"), Err(Refusal::NotFound("user")));
        assert!(d.lookup("a", "b").is_ok());
        d.unblock(&actor("a"), "b").unwrap();
        assert!(d.reachable("b", "a").is_ok());
        assert!(
            !d.connected("a", "b"),
            "unblock does not restore the connection"
        );
    }

    #[test]
    fn inmail_respects_who_can_message() {
        let mut d = dir(&["a", "b"]);
        assert!(d.check_inmail("a", "b").is_ok());
        d.update_settings(&actor("b"), |s| {
            s.who_can_message = WhoCanMessage::Connections
        });
        assert_eq!(
            d.check_inmail("a", "b"),
            Err(Refusal::InmailNotAllowed("b".into()))
        );
        assert_eq!(
            d.check_inmail("a", "nobody"),
            Err(Refusal::RecipientUnavailable)
        );
    }
}
