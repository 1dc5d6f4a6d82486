//! `typing`: a frame for the others that changes nothing and is not stored.

use crate::core::Actor;
use crate::hub::sessions::SessionHandle;
use crate::hub::Hub;

pub(super) async fn run(
    hub: &Hub,
    session: &SessionHandle,
    actor: &Actor,
    id: String,
    conversation: String,
) {
    hub.on_conversation(session, actor, id, &conversation, false, |c, ctx| {
        c.typing(ctx, actor)
    })
    .await
}
