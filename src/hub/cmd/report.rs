//! `report` (a message, with a snapshot as evidence, or a user) and `list_reports`.

use super::Asked;
use crate::cluster::DIRECTORY;
use crate::core::{ids, reports, Reports};
use parley_protocol::ReportTarget;

pub(super) async fn file(a: Asked<'_>, target: ReportTarget, reason: String) {
    let Asked {
        hub,
        session,
        actor,
        id,
    } = a;
    // Keyed by reporter and request id: a retried report files nothing new.
    let report = ids::report(&actor.user, &id);
    let filed = hub.reports.lock().already_filed(&report);
    if let Some(out) = filed {
        return hub.finish_unscoped(session, id, Ok(out)).await;
    }
    match &target {
        ReportTarget::Message {
            conversation,
            message,
        } => {
            let conversation = conversation.clone();
            let message = message.clone();
            hub.on_conversation(session, actor, id, &conversation, true, |c, ctx| {
                let snapshot = c.snapshot(ctx, &actor.user, &message)?;
                Ok(Reports::file(
                    report.clone(),
                    actor,
                    target.clone(),
                    reason.clone(),
                    Some(snapshot),
                    ctx.now,
                ))
            })
            .await
        }
        ReportTarget::User { user } => {
            let Some(claimed) = hub.claim_or_refuse(session, &id, DIRECTORY).await else {
                return;
            };
            let checked = reports::check_user_target(&hub.directory.read(), actor, user);
            let decided = checked.map(|()| {
                Reports::file(report, actor, target.clone(), reason, None, hub.clock.now())
            });
            hub.finish(claimed, None, session, id, decided).await
        }
    }
}

pub(super) async fn list(a: Asked<'_>) {
    let decided = a.hub.reports.lock().list(a.actor);
    a.hub.finish_unscoped(a.session, a.id, decided).await
}
