//! Connections and blocks: `connect`, `accept`, `decline`, `disconnect`, `block`, `unblock`.

use crate::core::Actor;
use crate::hub::sessions::SessionHandle;
use crate::hub::Hub;
use parley_protocol::UserId;

pub(super) async fn connect(hub: &Hub, s: &SessionHandle, actor: &Actor, id: String, user: UserId) {
    hub.on_directory(s, id, (&actor.user, &user), |d| d.connect(actor, &user))
        .await
}

pub(super) async fn accept(hub: &Hub, s: &SessionHandle, actor: &Actor, id: String, user: UserId) {
    hub.on_directory(s, id, (&actor.user, &user), |d| d.accept(actor, &user))
        .await
}

pub(super) async fn decline(hub: &Hub, s: &SessionHandle, actor: &Actor, id: String, user: UserId) {
    hub.on_directory(s, id, (&actor.user, &user), |d| d.decline(actor, &user))
        .await
}

pub(super) async fn disconnect(
    hub: &Hub,
    s: &SessionHandle,
    actor: &Actor,
    id: String,
    user: UserId,
) {
    hub.on_directory(s, id, (&actor.user, &user), |d| d.disconnect(actor, &user))
        .await
}

pub(super) async fn block(hub: &Hub, s: &SessionHandle, actor: &Actor, id: String, user: UserId) {
    hub.on_directory(s, id, (&actor.user, &user), |d| d.block(actor, &user))
        .await
}

pub(super) async fn unblock(hub: &Hub, s: &SessionHandle, actor: &Actor, id: String, user: UserId) {
    hub.on_directory(s, id, (&actor.user, &user), |d| d.unblock(actor, &user))
        .await
}
