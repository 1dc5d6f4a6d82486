//! `typing`: a frame for the others that changes nothing and is not stored.

use super::Asked;

pub(super) async fn run(a: Asked<'_>, conversation: String) {
    let actor = a.actor;
    a.on_conversation(&conversation, false, |c, ctx| c.typing(ctx, actor))
        .await
}
