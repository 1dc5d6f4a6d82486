//! `send`: a message into a conversation, or a direct message to a user.

use super::Asked;
use crate::core::{Conversation, Ctx, Opening, Refusal};
use parley_protocol::{MessageId, MessageKind, UserId};

/// A new message id: time-ordered, so ids sort roughly by sending time.
pub(super) fn new_message_id() -> MessageId {
    format!("m-{}", uuid::Uuid::now_v7().simple())
}

pub(super) async fn run(
    a: Asked<'_>,
    conversation: Option<String>,
    to: Option<UserId>,
    body: String,
    reply_to: Option<MessageId>,
) {
    let Asked {
        hub,
        session,
        actor,
        id,
    } = a;
    let send = |c: &Conversation, ctx: &Ctx| {
        let kind = MessageKind::Message;
        c.send(
            ctx,
            actor,
            &id,
            // Cloned: a rule may be asked twice (see `Hub::decide_held`).
            body.clone(),
            reply_to.clone(),
            kind,
            vec![],
            new_message_id,
        )
    };
    match (conversation, to) {
        (Some(conversation), None) => {
            hub.on_conversation(session, actor, id.clone(), &conversation, true, send)
                .await
        }
        (None, Some(to)) => match Opening::direct(&actor.user, &to) {
            Ok(opening) => {
                hub.on_opening(session, actor, id.clone(), opening, send)
                    .await
            }
            Err(r) => hub.finish_unscoped(session, id.clone(), Err(r)).await,
        },
        _ => {
            let r = Refusal::BadRequest("give exactly one of `conversation` and `to`".into());
            hub.finish_unscoped(session, id.clone(), Err(r)).await
        }
    }
}
