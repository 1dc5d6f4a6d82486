//! `create_group`: a conversation of three or more connected users.

use crate::core::{Actor, Opening, Outcome};
use crate::hub::sessions::SessionHandle;
use crate::hub::Hub;
use parley_protocol::{AckResult, UserId};

pub(super) async fn run(
    hub: &Hub,
    session: &SessionHandle,
    actor: &Actor,
    id: String,
    members: Vec<UserId>,
    title: Option<String>,
) {
    let opening = Opening::group(&actor.user, &id, members, title);
    hub.on_opening(session, actor, id, opening, |c, _| {
        Ok(Outcome::with_ack(AckResult::Conversation {
            conversation: c.view(),
        }))
    })
    .await
}
