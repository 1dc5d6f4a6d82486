//! `lookup`: what one may learn about another user.

use crate::cluster::DIRECTORY;
use crate::core::{Actor, Outcome};
use crate::hub::sessions::SessionHandle;
use crate::hub::Hub;
use parley_protocol::UserId;

pub(super) async fn run(
    hub: &Hub,
    session: &SessionHandle,
    actor: &Actor,
    id: String,
    user: UserId,
) {
    if let Err(e) = hub.catch_up(DIRECTORY, None).await {
        tracing::warn!(error = %e, "cannot catch up; answering from this node's copy");
    }
    let decided = hub
        .directory
        .read()
        .lookup(&actor.user, &user)
        .map(Outcome::with_ack);
    hub.finish_unscoped(session, id, decided).await
}
