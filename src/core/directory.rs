//! Users, their settings, connections and blocks.

use super::pairs::{Pairs, Symmetric};
use super::{Actor, Change, Outcome, Refusal, Target};
use parley_protocol::{AckResult, ConnectionState, ServerFrame, Settings, UserId, WhoCanMessage};
use std::collections::HashMap;

/// The settings a `settings` request changes; `None` keeps the current value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettingsPatch {
    /// New `who_can_message`.
    pub who_can_message: Option<WhoCanMessage>,
    /// New `read_receipts`.
    pub read_receipts: Option<parley_protocol::ReadReceipts>,
    /// New `notification_preview`.
    pub notification_preview: Option<parley_protocol::NotificationPreview>,
}

/// Who knows whom: users, settings, connections, pending requests and blocks.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    users: HashMap<UserId, Settings>,
    /// Both directions are stored so each side's lookups are one probe.
    connections: Symmetric,
    /// (from, to): `from` asked `to`.
    requests: Pairs,
    /// (blocker, blocked).
    blocks: Pairs,
}

impl Directory {
    /// A user seen for the first time is recorded: the change, or `None` when known.
    pub fn ensure_user(&self, user: &str) -> Option<Change> {
        (!self.users.contains_key(user)).then(|| Change::UserCreated {
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
        self.connections.contains(a, b)
    }

    /// Whether `blocker` blocked `blocked`.
    pub fn has_blocked(&self, blocker: &str, blocked: &str) -> bool {
        self.blocks.contains(blocker, blocked)
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
        } else if self.requests.contains(me, other) {
            ConnectionState::Requested
        } else if self.requests.contains(other, me) {
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

    fn link(a: &str, b: &str, out: &mut Outcome, actor: &Actor) {
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
    pub fn connect(&self, actor: &Actor, other: &str) -> Result<Outcome, Refusal> {
        let me = actor.user.as_str();
        self.reachable(me, other)?;
        match self.connection_state(me, other) {
            ConnectionState::Connected | ConnectionState::Requested => Ok(Self::connection_ack(
                other,
                self.connection_state(me, other),
            )),
            ConnectionState::Incoming => {
                let mut out = Self::connection_ack(other, ConnectionState::Connected);
                Self::link(me, other, &mut out, actor);
                Ok(out)
            }
            ConnectionState::None => {
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
    pub fn accept(&self, actor: &Actor, other: &str) -> Result<Outcome, Refusal> {
        let me = actor.user.as_str();
        if self.connection_state(me, other) != ConnectionState::Incoming {
            return Err(Refusal::NotFound("connection request"));
        }
        let mut out = Self::connection_ack(other, ConnectionState::Connected);
        Self::link(me, other, &mut out, actor);
        Ok(out)
    }

    /// Decline `other`'s pending request; `other` is not told.
    pub fn decline(&self, actor: &Actor, other: &str) -> Result<Outcome, Refusal> {
        let me = actor.user.as_str();
        if !self.requests.contains(other, me) {
            return Err(Refusal::NotFound("connection request"));
        }
        let mut out = Self::connection_ack(other, ConnectionState::None);
        out.changes
            .push(Self::relation(other, me, ConnectionState::None));
        Ok(out)
    }

    /// Remove the connection with `other`, or withdraw the request to `other`.
    pub fn disconnect(&self, actor: &Actor, other: &str) -> Result<Outcome, Refusal> {
        let me = actor.user.as_str();
        let was_connected = self.connected(me, other);
        let was_requested = self.requests.contains(me, other);
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
    pub fn block(&self, actor: &Actor, other: &str) -> Result<Outcome, Refusal> {
        let me = actor.user.as_str();
        if me == other || !self.exists(other) {
            return Err(Refusal::NotFound("user"));
        }
        let mut out = Outcome::ok();
        if self.connected(me, other) {
            out.changes
                .push(Self::relation(me, other, ConnectionState::None));
        }
        // The block itself also clears any pending request either way.
        if !self.has_blocked(me, other) {
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
    pub fn unblock(&self, actor: &Actor, other: &str) -> Result<Outcome, Refusal> {
        let me = actor.user.as_str();
        if !self.has_blocked(me, other) {
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

    /// Change the settings a request names, keeping the others; the user's other sessions
    /// are told.
    pub fn update_settings(&self, actor: &Actor, patch: SettingsPatch) -> Outcome {
        let old = self.settings(&actor.user);
        let settings = Settings {
            who_can_message: patch.who_can_message.unwrap_or(old.who_can_message),
            read_receipts: patch.read_receipts.unwrap_or(old.read_receipts),
            notification_preview: patch
                .notification_preview
                .unwrap_or(old.notification_preview),
        };
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

    /// Apply one committed change: the only code that mutates the directory, used alike by
    /// live requests, start-up and cluster replicas.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::UserCreated { user } => {
                self.users.entry(user.clone()).or_default();
            }
            Change::Settings { user, settings } => {
                self.users.insert(user.clone(), *settings);
            }
            Change::Relation { from, to, state } => {
                for (a, b) in [(from, to), (to, from)] {
                    self.connections.remove(a, b);
                    self.requests.remove(a, b);
                }
                match state {
                    ConnectionState::Connected => {
                        self.connections.insert(from, to);
                        self.connections.insert(to, from);
                    }
                    ConnectionState::Requested => {
                        self.requests.insert(from, to);
                    }
                    ConnectionState::Incoming => {
                        self.requests.insert(to, from);
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
                    self.connections.remove(a, b);
                    self.requests.remove(a, b);
                }
                self.blocks.insert(blocker, blocked);
            }
            Change::Block {
                blocker,
                blocked,
                on: false,
            } => {
                self.blocks.remove(blocker, blocked);
            }
            _ => {}
        }
    }

    /// Apply a rule's committed outcome (tests of the rules alone).
    #[cfg(test)]
    pub(crate) fn commit(&mut self, decided: Result<Outcome, Refusal>) -> Result<Outcome, Refusal> {
        if let Ok(out) = &decided {
            for change in &out.changes {
                self.apply(change);
            }
        }
        decided
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
        [
            self.connections.after(me),
            self.requests.before(me),
            self.requests.after(me),
            self.blocks.after(me),
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
            let created = d.ensure_user(u).expect("new user");
            d.apply(&created);
        }
        d
    }

    #[test]
    fn request_then_accept_connects_both_ways() {
        let mut d = dir(&["a", "b"]);
        let out = d.commit(d.connect(&actor("a"), "b")).unwrap();
        assert_eq!(d.connection_state("a", "b"), ConnectionState::Requested);
        assert!(matches!(
            out.emits[0].frame,
            ServerFrame::ConnectionRequest { .. }
        ));
        d.commit(d.accept(&actor("b"), "a")).unwrap();
        assert!(d.connected("a", "b") && d.connected("b", "a"));
        assert!(
            d.commit(d.accept(&actor("b"), "a")).is_err(),
            "nothing pending any more"
        );
    }

    #[test]
    fn crossing_requests_connect() {
        let mut d = dir(&["a", "b"]);
        d.commit(d.connect(&actor("a"), "b")).unwrap();
        let out = d.commit(d.connect(&actor("b"), "a")).unwrap();
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
        d.commit(d.connect(&actor("a"), "b")).unwrap();
        d.commit(d.accept(&actor("b"), "a")).unwrap();
        let out = d.commit(d.block(&actor("a"), "b")).unwrap();
        assert!(!d.connected("a", "b"));
        assert_eq!(out.emits.len(), 1, "only the blocker is told");
        assert_eq!(d.reachable("b", "a"), Err(Refusal::RecipientUnavailable));
        assert_eq!(d.reachable("a", "b"), Err(Refusal::RecipientUnavailable));
        assert_eq!(d.lookup("b", "a"), Err(Refusal::NotFound("user")));
        assert!(d.lookup("a", "b").is_ok());
        d.commit(d.unblock(&actor("a"), "b")).unwrap();
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
        let patch = SettingsPatch {
            who_can_message: Some(WhoCanMessage::Connections),
            ..SettingsPatch::default()
        };
        d.commit(Ok(d.update_settings(&actor("b"), patch))).unwrap();
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
