//! `delete_inmail` (for everyone, within its window) and `delete_for_me` (one's own view).

use crate::core::Actor;
use crate::hub::sessions::SessionHandle;
use crate::hub::Hub;

pub(super) async fn inmail(
    hub: &Hub,
    session: &SessionHandle,
    actor: &Actor,
    id: String,
    conversation: String,
    message: String,
) {
    hub.on_conversation(session, actor, id, &conversation, true, |c, ctx| {
        c.delete_inmail(ctx, actor, &message)
    })
    .await
}

pub(super) async fn for_me(
    hub: &Hub,
    session: &SessionHandle,
    actor: &Actor,
    id: String,
    conversation: String,
    message: String,
) {
    hub.on_conversation(session, actor, id, &conversation, true, |c, _| {
        c.delete_for_me(actor, &message)
    })
    .await
}
