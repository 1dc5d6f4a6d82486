//! `lookup`: what one may learn about another user.

use super::Asked;
use crate::cluster::DIRECTORY;
use crate::core::Outcome;
use parley_protocol::UserId;

pub(super) async fn run(a: Asked<'_>, user: UserId) {
    if let Err(e) = a.hub.catch_up(DIRECTORY, None).await {
        tracing::warn!(error = %e, "cannot catch up; answering from this node's copy");
    }
    let decided = a
        .hub
        .directory
        .read()
        .lookup(&a.actor.user, &user)
        .map(Outcome::with_ack);
    a.hub.finish_unscoped(a.session, a.id, decided).await
}
