//! Opening a conversation: what a direct message, an InMail or a new group makes, and who
//! may make it.

use super::{ids, Conversation, Directory, Refusal};
use parley_protocol::{ConversationKind, Millis, UserId};

/// A conversation a request would open, before anything is decided about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    /// The derived id: a retry finds the conversation its first attempt opened.
    pub id: String,
    /// Direct, InMail or group.
    pub kind: ConversationKind,
    /// Creator first; for an InMail the primary recipient second, then the copied ones.
    pub participants: Vec<UserId>,
    /// A group's title.
    pub title: Option<String>,
}

/// `first` followed by `rest`, without repeats.
fn participants(first: &[&str], rest: Vec<UserId>) -> Vec<UserId> {
    let mut all: Vec<UserId> = Vec::with_capacity(first.len() + rest.len());
    for user in first.iter().map(|u| u.to_string()).chain(rest) {
        if !all.contains(&user) {
            all.push(user);
        }
    }
    all
}

impl Opening {
    /// The direct conversation of `me` and `to`. Writing to oneself is refused like any
    /// unavailable recipient; connection and block checks belong to the send rule, after
    /// its request-id lookup, so a retried send gets its original answer.
    pub fn direct(me: &str, to: &str) -> Result<Opening, Refusal> {
        if me == to {
            return Err(Refusal::RecipientUnavailable);
        }
        Ok(Opening {
            id: ids::direct(me, to),
            kind: ConversationKind::Direct,
            participants: vec![me.to_owned(), to.to_owned()],
            title: None,
        })
    }

    /// The InMail conversation request `request` of `me` opens.
    pub fn inmail(me: &str, request: &str, to: &str, cc: Vec<UserId>) -> Opening {
        Opening {
            id: ids::inmail(me, request),
            kind: ConversationKind::Inmail,
            participants: participants(&[me, to], cc),
            title: None,
        }
    }

    /// The group request `request` of `me` opens.
    pub fn group(me: &str, request: &str, members: Vec<UserId>, title: Option<String>) -> Opening {
        Opening {
            id: ids::group(me, request),
            kind: ConversationKind::Group,
            participants: participants(&[me], members),
            title,
        }
    }

    /// Whether the creator may open it now: InMail follows each recipient's
    /// `who_can_message`; a group needs two other members, a connection with each and no
    /// block between any two of them.
    pub fn check(&self, dir: &Directory) -> Result<(), Refusal> {
        let (me, others) = (&self.participants[0], &self.participants[1..]);
        match self.kind {
            ConversationKind::Direct => Ok(()),
            ConversationKind::Inmail => others.iter().try_for_each(|p| dir.check_inmail(me, p)),
            ConversationKind::Group => {
                if others.len() < 2 {
                    return Err(Refusal::BadRequest(
                        "a group needs at least two other members".into(),
                    ));
                }
                others.iter().try_for_each(|p| dir.check_direct(me, p))?;
                let blocked = others
                    .iter()
                    .enumerate()
                    .any(|(i, a)| others[i + 1..].iter().any(|b| dir.blocked_either(a, b)));
                if blocked {
                    return Err(Refusal::RecipientUnavailable);
                }
                Ok(())
            }
        }
    }

    /// The new, empty conversation.
    pub fn conversation(&self, now: Millis) -> Conversation {
        Conversation::new(
            self.id.clone(),
            self.kind,
            self.participants.clone(),
            self.title.clone(),
            now,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writing_to_oneself_is_refused_neutrally() {
        assert_eq!(
            Opening::direct("ann", "ann"),
            Err(Refusal::RecipientUnavailable)
        );
    }

    #[test]
    fn a_group_needs_two_others_counted_without_repeats() {
        let dir = Directory::default();
        let g = Opening::group("ann", "r1", vec!["ben".into(), "ben".into()], None);
        assert_eq!(g.participants, vec!["ann".to_string(), "ben".into()]);
        assert!(matches!(g.check(&dir), Err(Refusal::BadRequest(_))));
    }
}
