//! `mute` and `hide`: one participant's flags on a conversation.

use super::Asked;

pub(super) async fn run(
    a: Asked<'_>,
    conversation: String,
    muted: Option<bool>,
    hidden: Option<bool>,
) {
    let actor = a.actor;
    a.on_conversation(&conversation, true, |c, _| {
        c.set_flags(actor, muted, hidden)
    })
    .await
}
