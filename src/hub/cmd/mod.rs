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
use crate::core::Actor;
use parley_protocol::{Op, Request};

impl Hub {
    /// Handle one parsed request: exactly one `ack` or `error` answers it.
    pub async fn handle(&self, session: &SessionHandle, actor: &Actor, request: Request) {
        let Request { id, op } = request;
        let s = session;
        match op {
            Op::Send {
                conversation,
                to,
                body,
                reply_to,
            } => send::run(self, s, actor, id, conversation, to, body, reply_to).await,
            Op::Inmail { to, cc, body } => inmail::run(self, s, actor, id, to, cc, body).await,
            Op::CreateGroup { members, title } => {
                group::run(self, s, actor, id, members, title).await
            }
            Op::Read {
                conversation,
                message,
            } => read::run(self, s, actor, id, conversation, message).await,
            Op::Recall {
                conversation,
                message,
            } => recall::run(self, s, actor, id, conversation, message).await,
            Op::DeleteInmail {
                conversation,
                message,
            } => delete::inmail(self, s, actor, id, conversation, message).await,
            Op::DeleteForMe {
                conversation,
                message,
            } => delete::for_me(self, s, actor, id, conversation, message).await,
            Op::Mute {
                conversation,
                muted,
            } => conversation_flags::run(self, s, actor, id, conversation, Some(muted), None).await,
            Op::Hide {
                conversation,
                hidden,
            } => {
                conversation_flags::run(self, s, actor, id, conversation, None, Some(hidden)).await
            }
            Op::Typing { conversation } => typing::run(self, s, actor, id, conversation).await,
            Op::History {
                conversation,
                before,
                limit,
            } => history::run(self, s, actor, id, conversation, before, limit).await,
            Op::Report { target, reason } => report::file(self, s, actor, id, target, reason).await,
            Op::ListReports {} => report::list(self, s, actor, id).await,
            Op::Connect { user } => relations::connect(self, s, actor, id, user).await,
            Op::Accept { user } => relations::accept(self, s, actor, id, user).await,
            Op::Decline { user } => relations::decline(self, s, actor, id, user).await,
            Op::Disconnect { user } => relations::disconnect(self, s, actor, id, user).await,
            Op::Block { user } => relations::block(self, s, actor, id, user).await,
            Op::Unblock { user } => relations::unblock(self, s, actor, id, user).await,
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
                settings::run(self, s, actor, id, patch).await
            }
            Op::Lookup { user } => lookup::run(self, s, actor, id, user).await,
            Op::Sync { positions } => sync::run(self, s, actor, id, positions).await,
        }
    }
}
