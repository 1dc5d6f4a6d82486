//! One file per request family, as a reader looks for it: where is recall handled? In
//! `recall.rs`. Each handler names the scope, picks the core rule and hands both to the
//! pipeline; none of them decides anything itself.

mod conversation_flags;
mod delete;
mod group;
mod history;
mod inmail;
mod lookup;
mod read;
mod recall;
mod relations;
mod report;
mod send;
mod settings;
mod sync;
mod typing;

use super::sessions::SessionHandle;
use super::Hub;
use crate::core::{Actor, Conversation, Ctx, Outcome, Refusal};
use parley_protocol::{Op, Request};

/// Who asked, on which session, under which request id: what every handler needs besides
/// the request's own fields.
pub(super) struct Asked<'a> {
    hub: &'a Hub,
    session: &'a SessionHandle,
    actor: &'a Actor,
    id: String,
}

impl Asked<'_> {
    /// Run `rule` on a conversation the asker takes part in (see [`Hub::on_conversation`]).
    async fn on_conversation(
        self,
        conversation: &str,
        decides: bool,
        rule: impl Fn(&Conversation, &Ctx) -> Result<Outcome, Refusal>,
    ) {
        let Asked {
            hub,
            session,
            actor,
            id,
        } = self;
        hub.on_conversation(session, actor, id, conversation, decides, rule)
            .await
    }
}

impl Hub {
    /// Handle one parsed request: exactly one `ack` or `error` answers it.
    pub async fn handle(&self, session: &SessionHandle, actor: &Actor, request: Request) {
        let Request { id, op } = request;
        let a = Asked {
            hub: self,
            session,
            actor,
            id,
        };
        match op {
            Op::Send {
                conversation,
                to,
                body,
                reply_to,
            } => send::run(a, conversation, to, body, reply_to).await,
            Op::Inmail { to, cc, body } => inmail::run(a, to, cc, body).await,
            Op::CreateGroup { members, title } => group::run(a, members, title).await,
            Op::Read {
                conversation,
                message,
            } => read::run(a, conversation, message).await,
            Op::Recall {
                conversation,
                message,
            } => recall::run(a, conversation, message).await,
            Op::DeleteInmail {
                conversation,
                message,
            } => delete::inmail(a, conversation, message).await,
            Op::DeleteForMe {
                conversation,
                message,
            } => delete::for_me(a, conversation, message).await,
            Op::Mute {
                conversation,
                muted,
            } => conversation_flags::run(a, conversation, Some(muted), None).await,
            Op::Hide {
                conversation,
                hidden,
            } => conversation_flags::run(a, conversation, None, Some(hidden)).await,
            Op::Typing { conversation } => typing::run(a, conversation).await,
            Op::History {
                conversation,
                before,
                limit,
            } => history::run(a, conversation, before, limit).await,
            Op::Report { target, reason } => report::file(a, target, reason).await,
            Op::ListReports {} => report::list(a).await,
            Op::Connect { user } => relations::connect(a, user).await,
            Op::Accept { user } => relations::accept(a, user).await,
            Op::Decline { user } => relations::decline(a, user).await,
            Op::Disconnect { user } => relations::disconnect(a, user).await,
            Op::Block { user } => relations::block(a, user).await,
            Op::Unblock { user } => relations::unblock(a, user).await,
            Op::Settings {
                who_can_message,
                read_receipts,
                notification_preview,
            } => {
                let patch = crate::core::SettingsPatch {
                    who_can_message,
                    read_receipts,
                    notification_preview,
                };
                settings::run(a, patch).await
            }
            Op::Lookup { user } => lookup::run(a, user).await,
            Op::Sync { positions } => sync::run(a, positions).await,
        }
    }
}
