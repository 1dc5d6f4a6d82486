//! Reports of messages and users: filing (once per request id) and the operators' list.

use super::{Actor, Change, Outcome, Refusal};
use parley_protocol::{AckResult, MessageView, Millis, ReportTarget, ReportView};

/// Every report filed, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Reports {
    filed: Vec<ReportView>,
}

impl Reports {
    /// The answer to a retried report: the one its first attempt filed.
    pub fn already_filed(&self, report: &str) -> Option<Outcome> {
        self.filed.iter().any(|r| r.id == report).then(|| {
            Outcome::with_ack(AckResult::Reported {
                report: report.to_owned(),
            })
        })
    }

    /// File report `id`; a message report carries `snapshot`, the message as the reporter
    /// saw it, as evidence that outlives a recall or delete.
    pub fn file(
        id: String,
        actor: &Actor,
        target: ReportTarget,
        reason: String,
        snapshot: Option<MessageView>,
        now: Millis,
    ) -> Outcome {
        let mut out = Outcome::with_ack(AckResult::Reported { report: id.clone() });
        out.changes.push(Change::Reported {
            report: ReportView {
                id,
                reporter: actor.user.clone(),
                target,
                reason,
                at: now,
                snapshot,
            },
        });
        out
    }

    /// Every report, for an operator.
    pub fn list(&self, actor: &Actor) -> Result<Outcome, Refusal> {
        if !actor.admin {
            return Err(Refusal::Forbidden);
        }
        Ok(Outcome::with_ack(AckResult::Reports {
            reports: self.filed.clone(),
        }))
    }

    /// Apply a committed change (a report already held is not held twice).
    pub fn apply(&mut self, change: &Change) {
        if let Change::Reported { report } = change {
            if !self.filed.iter().any(|r| r.id == report.id) {
                self.filed.push(report.clone());
            }
        }
    }
}

/// A user may be reported by anyone but themselves, once they exist.
pub fn check_user_target(dir: &super::Directory, actor: &Actor, user: &str) -> Result<(), Refusal> {
    if dir.exists(user) && user != actor.user {
        Ok(())
    } else {
        Err(Refusal::NotFound("user"))
    }
}
