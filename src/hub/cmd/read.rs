//! `read`: move the reader's position forward, which also ends recall of what it covers.

use super::Asked;

pub(super) async fn run(a: Asked<'_>, conversation: String, message: String) {
    let actor = a.actor;
    a.on_conversation(&conversation, true, |c, ctx| c.read(ctx, actor, &message))
        .await
}
