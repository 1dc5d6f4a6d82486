//! `create_group`: a conversation of three or more connected users.

use super::Asked;
use crate::core::{Opening, Outcome};
use parley_protocol::{AckResult, UserId};

pub(super) async fn run(a: Asked<'_>, members: Vec<UserId>, title: Option<String>) {
    let opening = Opening::group(&a.actor.user, &a.id, members, title);
    a.hub
        .on_opening(a.session, a.actor, a.id, opening, |c, _| {
            Ok(Outcome::with_ack(AckResult::Conversation {
                conversation: c.view(),
            }))
        })
        .await
}
