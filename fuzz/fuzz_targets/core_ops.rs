//! Arbitrary operation sequences on the sans-I/O core never panic and keep the
//! invariants: recalled content is gone for everyone, and blocked pairs exchange nothing.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use parley::config::default_limits;
use parley::core::{Actor, Conversation, Ctx, Directory, Online, Outcome, Refusal};
use parley_protocol::{AckResult, ConversationKind, MessageKind, MessageState};

#[derive(Arbitrary, Debug)]
enum Op {
    Send { from: u8, reply: Option<u8> },
    Read { who: u8, pick: u8 },
    Recall { who: u8, pick: u8, sent: u8 },
    DeleteInmail { who: u8, pick: u8 },
    DeleteForMe { who: u8, pick: u8 },
    Flags { who: u8, muted: bool, hidden: bool },
    Block { who: u8, whom: u8 },
    Unblock { who: u8, whom: u8 },
    Wait { ms: u32 },
}

const USERS: [&str; 3] = ["a", "b", "c"];

fn actor(i: u8) -> Actor {
    Actor { user: USERS[i as usize % 3].into(), session: i as u64, admin: false }
}

/// Which state a decision is applied to once "committed".
enum Decided {
    Conversation(Result<Outcome, Refusal>),
    Directory(Result<Outcome, Refusal>),
}

fuzz_target!(|input: (bool, Vec<Op>)| {
    let (inmail, ops) = input;
    let mut dir = Directory::default();
    for u in USERS {
        let created = dir.ensure_user(u).expect("new user");
        dir.apply(&created);
    }
    for decided in [dir.connect(&actor(0), "b")] {
        decided.iter().flat_map(|o| &o.changes).for_each(|c| dir.apply(c));
    }
    for decided in [dir.accept(&actor(1), "a")] {
        decided.iter().flat_map(|o| &o.changes).for_each(|c| dir.apply(c));
    }
    let kind = if inmail { ConversationKind::Inmail } else { ConversationKind::Group };
    let mut conv = Conversation::new("c".into(), kind, USERS.iter().map(|u| u.to_string()).collect(), None, 0);
    let limits = default_limits();
    let mut now = 1_000i64;
    let mut ids: Vec<String> = Vec::new();
    let mut recalled: Vec<String> = Vec::new();
    for (n, op) in ops.into_iter().take(200).enumerate() {
        now += 1;
        let pick = |p: u8| (!ids.is_empty()).then(|| ids[p as usize % ids.len()].clone());
        let ctx = Ctx { now, limits: &limits, directory: &dir };
        let decided = match op {
            Op::Send { from, reply } => {
                let id = format!("m{n}");
                let kind = if inmail && from % 3 == 0 { MessageKind::Inmail } else { MessageKind::Message };
                let reply_to = reply.and_then(pick);
                let r = conv.send(&ctx, &actor(from), &id, "text".into(), reply_to, kind, vec![], || id.clone());
                if let Ok(out) = &r {
                    if matches!(out.ack, AckResult::Sent { .. }) && !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                Decided::Conversation(r)
            }
            Op::Read { who, pick: p } => {
                let Some(m) = pick(p) else { continue };
                let r = conv.read(&ctx, &actor(who), &m);
                assert!(!(recalled.contains(&m) && r.is_ok()), "a recalled message cannot be read");
                Decided::Conversation(r)
            }
            Op::Recall { who, pick: p, sent } => {
                let Some(m) = pick(p) else { continue };
                let r = conv.recall(&ctx, &actor(who), &m, sent as u32);
                if r.is_ok() {
                    assert!(!recalled.contains(&m));
                    recalled.push(m);
                }
                Decided::Conversation(r)
            }
            Op::DeleteInmail { who, pick: p } => {
                let Some(m) = pick(p) else { continue };
                Decided::Conversation(conv.delete_inmail(&ctx, &actor(who), &m))
            }
            Op::DeleteForMe { who, pick: p } => {
                let Some(m) = pick(p) else { continue };
                Decided::Conversation(conv.delete_for_me(&actor(who), &m))
            }
            Op::Flags { who, muted, hidden } => {
                Decided::Conversation(conv.set_flags(&actor(who), Some(muted), Some(hidden)))
            }
            Op::Block { who, whom } => Decided::Directory(dir.block(&actor(who), USERS[whom as usize % 3])),
            Op::Unblock { who, whom } => Decided::Directory(dir.unblock(&actor(who), USERS[whom as usize % 3])),
            Op::Wait { ms } => {
                now += ms as i64;
                continue;
            }
        };
        match decided {
            Decided::Conversation(r) => {
                r.iter().flat_map(|o| &o.changes).for_each(|c| conv.apply(c, &limits, &Online::Everyone))
            }
            Decided::Directory(r) => r.iter().flat_map(|o| &o.changes).for_each(|c| dir.apply(c)),
        }
        let ctx = Ctx { now, limits: &limits, directory: &dir };
        for viewer in USERS {
            if let Ok(AckResult::History { messages, .. }) = conv.history(&ctx, viewer, None, None) {
                for m in messages {
                    if recalled.contains(&m.id) {
                        assert_eq!(m.state, MessageState::Recalled);
                        assert!(m.body.is_none(), "recalled content is gone");
                    }
                }
            }
        }
    }
});
