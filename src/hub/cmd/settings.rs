//! `settings`: change some of one's own settings.

use super::Asked;
use crate::core::SettingsPatch;

pub(super) async fn run(a: Asked<'_>, patch: SettingsPatch) {
    let actor = a.actor;
    let me = actor.user.as_str();
    a.hub
        .on_directory(a.session, a.id, (me, me), |d| {
            Ok(d.update_settings(actor, patch))
        })
        .await
}
