//! `inmail`: a message to someone you are not connected to, opening its own conversation.

use super::send::new_message_id;
use super::Asked;
use crate::core::Opening;
use parley_protocol::{MessageKind, UserId};

pub(super) async fn run(a: Asked<'_>, to: UserId, cc: Vec<UserId>, body: String) {
    let Asked {
        hub,
        session,
        actor,
        id,
    } = a;
    let opening = Opening::inmail(&actor.user, &id, &to, cc);
    let copied = opening.participants[2..].to_vec();
    hub.on_opening(session, actor, id.clone(), opening, |c, ctx| {
        let kind = MessageKind::Inmail;
        let (body, copied) = (body.clone(), copied.clone());
        c.send(ctx, actor, &id, body, None, kind, copied, new_message_id)
    })
    .await
}
