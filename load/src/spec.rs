//! What one client process is to play: its groups, the servers, the scenario and its
//! pace. The run hands it over as JSON to a worker process.

use crate::args::{Scenario, Target};
use crate::client;
use serde::{Deserialize, Serialize};

/// Everything a client process needs to play its part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardSpec {
    /// Which client process this is.
    pub shard: usize,
    /// Scenario.
    pub scenario: Scenario,
    /// Server kind.
    pub target: Target,
    /// WebSocket URL of each server (`ws://127.0.0.1:PORT/ws` for parley,
    /// `ws://127.0.0.1:PORT` for the baseline); sessions are dealt to them in turn.
    pub urls: Vec<String>,
    /// Token secret (parley).
    pub secret: String,
    /// Run tag, so user names never collide with an earlier run on the same server.
    pub tag: String,
    /// First group this process owns.
    pub first_group: usize,
    /// Groups this process owns.
    pub groups: usize,
    /// Users per group.
    pub members: usize,
    /// Sessions per user.
    pub sessions_per_user: usize,
    /// Sends per second per sender; 0: each sender keeps `window` messages in flight.
    pub rate_per_sender: f64,
    /// Messages a sender may have in flight (not yet delivered to every other session).
    pub window: u64,
    /// How long to send (or hold, for `connect`).
    pub duration_ms: u64,
    /// How long to wait for the last deliveries.
    pub drain_ms: u64,
    /// Body size in bytes.
    pub body: usize,
    /// Source addresses to spread sockets over.
    pub sources: usize,
    /// Handshakes in flight at once.
    pub connect_concurrency: usize,
    /// Leave notifications on (members otherwise mute their conversation at setup).
    pub unmuted: bool,
}

impl ShardSpec {
    /// Sessions in each group.
    pub fn sessions_per_group(&self) -> usize {
        self.members * self.sessions_per_user
    }

    /// The name of a group's member.
    pub fn user(&self, group: usize, member: usize) -> String {
        format!("{}-g{group}-u{member}", self.tag)
    }

    /// The server of a group's session: consecutive sessions of the run go to consecutive
    /// servers, so a group of two or more sessions spans as many nodes as it can.
    pub fn node(&self, group: usize, slot: usize) -> usize {
        (group * self.sessions_per_group() + slot) % self.urls.len().max(1)
    }

    /// The URL a group's session connects to: a token in it for parley, the room for
    /// the baseline.
    pub fn session_url(&self, group: usize, slot: usize) -> String {
        let url = &self.urls[self.node(group, slot)];
        let member = slot / self.sessions_per_user.max(1);
        match self.target {
            Target::Parley => format!(
                "{url}?token={}",
                client::token(&self.secret, &self.user(group, member))
            ),
            Target::Baseline => format!("{url}/room/{}-g{group}", self.tag),
        }
    }
}
