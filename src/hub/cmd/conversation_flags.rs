//! `mute` and `hide`: one participant's flags on a conversation.

use crate::core::Actor;
use crate::hub::sessions::SessionHandle;
use crate::hub::Hub;

pub(super) async fn run(
    hub: &Hub,
    session: &SessionHandle,
    actor: &Actor,
    id: String,
    conversation: String,
    muted: Option<bool>,
    hidden: Option<bool>,
) {
    hub.on_conversation(session, actor, id, &conversation, true, |c, _| {
        c.set_flags(actor, muted, hidden)
    })
    .await
}
