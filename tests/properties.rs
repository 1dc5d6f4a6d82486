//! Property tests on the sans-I/O core: random sequences of operations by random users
//! never panic and keep the SPEC's invariants.

use parley::config::default_limits;
use parley::core::{Actor, Conversation, Ctx, Directory, Online, Outcome, Refusal};
use parley_protocol::{
    AckResult, ConversationKind, Limits, MessageKind, MessageState, MessageView, Millis,
    ServerFrame,
};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

const USERS: [&str; 3] = ["ann", "ben", "cat"];

#[derive(Debug, Clone)]
enum Step {
    Send { from: usize },
    Read { who: usize, pick: usize },
    Recall { who: usize, pick: usize },
    DeleteForMe { who: usize, pick: usize },
    Block { who: usize, whom: usize },
    Unblock { who: usize, whom: usize },
    Wait { ms: u32 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..3usize).prop_map(|from| Step::Send { from }),
        2 => (0..3usize, any::<usize>()).prop_map(|(who, pick)| Step::Read { who, pick }),
        2 => (0..3usize, any::<usize>()).prop_map(|(who, pick)| Step::Recall { who, pick }),
        1 => (0..3usize, any::<usize>()).prop_map(|(who, pick)| Step::DeleteForMe { who, pick }),
        1 => (0..3usize, 0..3usize).prop_map(|(who, whom)| Step::Block { who, whom }),
        1 => (0..3usize, 0..3usize).prop_map(|(who, whom)| Step::Unblock { who, whom }),
        1 => (0..200_000u32).prop_map(|ms| Step::Wait { ms }),
    ]
}

fn actor(i: usize) -> Actor {
    Actor {
        user: USERS[i].into(),
        session: i as u64,
        admin: false,
    }
}

struct Model {
    dir: Directory,
    limits: Limits,
    group: Conversation,
    direct: Conversation,
    now: Millis,
    ids: usize,
    sent: Vec<(bool, String)>,
    recalled: HashSet<String>,
    deleted: HashSet<(String, String)>,
    sent_counts: HashMap<String, u32>,
}

impl Model {
    fn new() -> Model {
        let mut dir = Directory::default();
        for u in USERS {
            let created = dir.ensure_user(u).expect("new user");
            dir.apply(&created);
        }
        for (i, j) in [(0, 1), (0, 2), (1, 2)] {
            let asked = dir.connect(&actor(i), USERS[j]);
            settle_directory(&mut dir, &asked);
            let accepted = dir.accept(&actor(j), USERS[i]);
            settle_directory(&mut dir, &accepted);
        }
        let all = USERS.iter().map(|u| u.to_string()).collect();
        Model {
            dir,
            limits: Limits {
                recall_per_conversation: 3,
                ..default_limits()
            },
            group: Conversation::new("g".into(), ConversationKind::Group, all, None, 0),
            direct: Conversation::new(
                "d".into(),
                ConversationKind::Direct,
                vec!["ann".into(), "ben".into()],
                None,
                0,
            ),
            now: 1_000,
            ids: 0,
            sent: Vec::new(),
            recalled: HashSet::new(),
            deleted: HashSet::new(),
            sent_counts: HashMap::new(),
        }
    }

    fn conv(&mut self, in_group: bool) -> (&mut Conversation, Ctx<'_>) {
        let ctx = Ctx {
            now: self.now,
            limits: &self.limits,
            directory: &self.dir,
        };
        (
            if in_group {
                &mut self.group
            } else {
                &mut self.direct
            },
            ctx,
        )
    }

    fn apply(&mut self, step: &Step) {
        self.now += 1;
        match *step {
            Step::Send { from } => {
                let in_group = self.ids.is_multiple_of(2) || from == 2;
                self.ids += 1;
                let id = format!("m{}", self.ids);
                let req = id.clone();
                let blocked = self.dir.blocked_either("ann", "ben");
                let limits = self.limits;
                let (conv, ctx) = self.conv(in_group);
                let result = conv.send(
                    &ctx,
                    &actor(from),
                    &req,
                    "body".into(),
                    None,
                    MessageKind::Message,
                    vec![],
                    || id.clone(),
                );
                settle(conv, &limits, &result);
                if !in_group && blocked {
                    assert_eq!(
                        result.unwrap_err(),
                        Refusal::RecipientUnavailable,
                        "a blocked pair exchanges nothing"
                    );
                } else if let Ok(out) = result {
                    *self.sent_counts.entry(USERS[from].into()).or_default() += 1;
                    self.sent.push((in_group, id));
                    assert!(out
                        .emits
                        .iter()
                        .any(|e| matches!(e.frame, ServerFrame::Message { .. })));
                }
            }
            Step::Read { who, pick }
            | Step::Recall { who, pick }
            | Step::DeleteForMe { who, pick } => {
                let Some((in_group, id)) =
                    (!self.sent.is_empty()).then(|| self.sent[pick % self.sent.len()].clone())
                else {
                    return;
                };
                let sent_recently = self.sent_counts.get(USERS[who]).copied().unwrap_or(0);
                let recalled_before = self.recalled.contains(&id);
                let limits = self.limits;
                let (conv, ctx) = self.conv(in_group);
                let result: Result<Outcome, Refusal> = match step {
                    Step::Read { .. } => conv.read(&ctx, &actor(who), &id),
                    Step::Recall { .. } => conv.recall(&ctx, &actor(who), &id, sent_recently),
                    _ => conv.delete_for_me(&actor(who), &id),
                };
                settle(conv, &limits, &result);
                match (step, result) {
                    (Step::Recall { .. }, Ok(_)) => {
                        assert!(!recalled_before, "a message is recalled once");
                        self.recalled.insert(id);
                    }
                    (Step::Read { .. }, Ok(_)) => {
                        assert!(!recalled_before, "a recalled message cannot be read")
                    }
                    (Step::DeleteForMe { .. }, Ok(_)) => {
                        self.deleted.insert((USERS[who].into(), id));
                    }
                    _ => {}
                }
            }
            Step::Block { who, whom } if who != whom => {
                let decided = self.dir.block(&actor(who), USERS[whom]);
                settle_directory(&mut self.dir, &decided);
            }
            Step::Unblock { who, whom } => {
                let decided = self.dir.unblock(&actor(who), USERS[whom]);
                settle_directory(&mut self.dir, &decided);
            }
            Step::Wait { ms } => self.now += ms as i64,
            Step::Block { .. } => {}
        }
    }

    fn history(&self, conv: &Conversation, viewer: &str) -> Vec<MessageView> {
        let ctx = Ctx {
            now: self.now,
            limits: &self.limits,
            directory: &self.dir,
        };
        match conv.history(&ctx, viewer, None, Some(100)).unwrap() {
            AckResult::History { messages, .. } => messages,
            _ => unreachable!(),
        }
    }

    fn check(&self) {
        for (conv, members) in [(&self.group, &USERS[..]), (&self.direct, &USERS[..2])] {
            let mut orders = Vec::new();
            for viewer in members {
                let h = self.history(conv, viewer);
                for m in &h {
                    if self.recalled.contains(&m.id) {
                        assert_eq!(
                            m.state,
                            MessageState::Recalled,
                            "a recalled message is visible to no one"
                        );
                        assert!(m.body.is_none());
                    } else if self.deleted.contains(&(viewer.to_string(), m.id.clone())) {
                        assert_eq!(m.state, MessageState::Deleted);
                        assert!(m.body.is_none());
                    } else {
                        assert_eq!(
                            m.state,
                            MessageState::Visible,
                            "a tombstone is only its deleter's"
                        );
                        assert!(m.body.is_some());
                    }
                }
                assert!(h.windows(2).all(|w| w[0].seq < w[1].seq));
                orders.push(h.into_iter().map(|m| m.id).collect::<Vec<_>>());
            }
            assert!(
                orders.windows(2).all(|w| w[0] == w[1]),
                "every participant sees the same order"
            );
        }
    }
}

/// Apply what a rule decided, as the hub does once it is committed.
fn settle(conv: &mut Conversation, limits: &Limits, decided: &Result<Outcome, Refusal>) {
    for change in decided.iter().flat_map(|out| &out.changes) {
        conv.apply(change, limits, &Online::Everyone);
    }
}

fn settle_directory(dir: &mut Directory, decided: &Result<Outcome, Refusal>) {
    for change in decided.iter().flat_map(|out| &out.changes) {
        dir.apply(change);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_the_invariants(steps in proptest::collection::vec(step(), 1..60)) {
        let mut model = Model::new();
        for step in &steps {
            model.apply(step);
            model.check();
        }
    }
}
