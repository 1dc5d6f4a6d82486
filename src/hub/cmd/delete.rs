//! `delete_inmail` (for everyone, within its window) and `delete_for_me` (one's own view).

use super::Asked;

pub(super) async fn inmail(a: Asked<'_>, conversation: String, message: String) {
    let actor = a.actor;
    a.on_conversation(&conversation, true, |c, ctx| {
        c.delete_inmail(ctx, actor, &message)
    })
    .await
}

pub(super) async fn for_me(a: Asked<'_>, conversation: String, message: String) {
    let actor = a.actor;
    a.on_conversation(&conversation, true, |c, _| c.delete_for_me(actor, &message))
        .await
}
