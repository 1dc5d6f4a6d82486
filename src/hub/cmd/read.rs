//! `read`: move the reader's position forward, which also ends recall of what it covers.

use crate::core::Actor;
use crate::hub::sessions::SessionHandle;
use crate::hub::Hub;

pub(super) async fn run(
    hub: &Hub,
    session: &SessionHandle,
    actor: &Actor,
    id: String,
    conversation: String,
    message: String,
) {
    hub.on_conversation(session, actor, id, &conversation, true, |c, ctx| {
        c.read(ctx, actor, &message)
    })
    .await
}
