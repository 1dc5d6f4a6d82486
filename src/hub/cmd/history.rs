//! `history`: a page of a conversation as the requester should see it.

use super::Asked;
use crate::core::Outcome;

pub(super) async fn run(
    a: Asked<'_>,
    conversation: String,
    before: Option<u64>,
    limit: Option<u32>,
) {
    let me = &a.actor.user;
    a.on_conversation(&conversation, false, |c, ctx| {
        c.history(ctx, me, before, limit).map(Outcome::with_ack)
    })
    .await
}
