//! `inmail`: a message to someone you are not connected to, opening its own conversation.

use super::send::new_message_id;
use crate::core::{Actor, Opening};
use crate::hub::sessions::SessionHandle;
use crate::hub::Hub;
use parley_protocol::{MessageKind, UserId};

pub(super) async fn run(
    hub: &Hub,
    session: &SessionHandle,
    actor: &Actor,
    id: String,
    to: UserId,
    cc: Vec<UserId>,
    body: String,
) {
    let opening = Opening::inmail(&actor.user, &id, &to, cc);
    let copied = opening.participants[2..].to_vec();
    hub.on_opening(session, actor, id.clone(), opening, |c, ctx| {
        c.send(
            ctx,
            actor,
            &id,
            body,
            None,
            MessageKind::Inmail,
            copied,
            new_message_id,
        )
    })
    .await
}
