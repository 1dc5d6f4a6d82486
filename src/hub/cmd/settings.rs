//! `settings`: change some of one's own settings.

use crate::core::{Actor, SettingsPatch};
use crate::hub::sessions::SessionHandle;
use crate::hub::Hub;

pub(super) async fn run(
    hub: &Hub,
    session: &SessionHandle,
    actor: &Actor,
    id: String,
    patch: SettingsPatch,
) {
    let me = actor.user.as_str();
    hub.on_directory(session, id, (me, me), |d| {
        Ok(d.update_settings(actor, patch))
    })
    .await
}
