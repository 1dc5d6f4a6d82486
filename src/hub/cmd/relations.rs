//! Connections and blocks: `connect`, `accept`, `decline`, `disconnect`, `block`, `unblock`.

use super::Asked;
use crate::core::{Directory, Outcome, Refusal};
use parley_protocol::UserId;

/// Decide with `rule` about the asker and `user`, serialised with every other decision
/// about that pair.
async fn on_pair(
    a: Asked<'_>,
    user: UserId,
    rule: impl FnOnce(&Directory, &crate::core::Actor, &str) -> Result<Outcome, Refusal>,
) {
    let actor = a.actor;
    a.hub
        .on_directory(a.session, a.id, (&actor.user, &user), |d| {
            rule(d, actor, &user)
        })
        .await
}

pub(super) async fn connect(a: Asked<'_>, user: UserId) {
    on_pair(a, user, Directory::connect).await
}

pub(super) async fn accept(a: Asked<'_>, user: UserId) {
    on_pair(a, user, Directory::accept).await
}

pub(super) async fn decline(a: Asked<'_>, user: UserId) {
    on_pair(a, user, Directory::decline).await
}

pub(super) async fn disconnect(a: Asked<'_>, user: UserId) {
    on_pair(a, user, Directory::disconnect).await
}

pub(super) async fn block(a: Asked<'_>, user: UserId) {
    on_pair(a, user, Directory::block).await
}

pub(super) async fn unblock(a: Asked<'_>, user: UserId) {
    on_pair(a, user, Directory::unblock).await
}
