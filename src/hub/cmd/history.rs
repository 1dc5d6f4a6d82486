//! `history`: a page of a conversation as the requester should see it.

use crate::core::{Actor, Outcome};
use crate::hub::sessions::SessionHandle;
use crate::hub::Hub;

pub(super) async fn run(
    hub: &Hub,
    session: &SessionHandle,
    actor: &Actor,
    id: String,
    conversation: String,
    before: Option<u64>,
    limit: Option<u32>,
) {
    hub.on_conversation(session, actor, id, &conversation, false, |c, ctx| {
        c.history(ctx, &actor.user, before, limit)
            .map(Outcome::with_ack)
    })
    .await
}
