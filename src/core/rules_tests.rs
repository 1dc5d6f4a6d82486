//! The rules without sockets or tasks: plain state, a time, an input, and the decision.

use super::*;
use crate::config::default_limits;
use parley_protocol::{
    ConversationKind, Limits, MessageKind, MessageState, MessageView, ReadReceipts, RemovalMode,
    ServerFrame,
};

fn actor(user: &str, session: SessionId) -> Actor {
    Actor {
        user: user.into(),
        session,
        admin: false,
    }
}

struct World {
    dir: Directory,
    limits: Limits,
    conv: Conversation,
    ids: u32,
}

impl World {
    fn new(kind: ConversationKind, users: &[&str]) -> World {
        let mut dir = Directory::default();
        for u in users {
            let created = dir.ensure_user(u).expect("new user");
            dir.apply(&created);
        }
        for (i, a) in users.iter().enumerate() {
            for b in &users[i + 1..] {
                dir.commit(dir.connect(&actor(a, 0), b)).unwrap();
                dir.commit(dir.accept(&actor(b, 0), a)).unwrap();
            }
        }
        let participants = users.iter().map(|u| u.to_string()).collect();
        World {
            dir,
            limits: default_limits(),
            conv: Conversation::new("c".into(), kind, participants, None, 0),
            ids: 0,
        }
    }

    fn ctx(&self, now: Millis) -> Ctx<'_> {
        Ctx {
            now,
            limits: &self.limits,
            directory: &self.dir,
        }
    }

    /// Decide with `rule`, then apply what it decided, as the hub does after committing.
    fn decide<T>(
        &mut self,
        now: Millis,
        rule: impl FnOnce(&Conversation, &Ctx) -> Result<Outcome, T>,
    ) -> Result<Outcome, T> {
        let ctx = Ctx {
            now,
            limits: &self.limits,
            directory: &self.dir,
        };
        let decided = rule(&self.conv, &ctx);
        if let Ok(out) = &decided {
            for change in &out.changes {
                self.conv.apply(change, &self.limits, &Online::Everyone);
            }
        }
        decided
    }

    fn send_as(
        &mut self,
        now: Millis,
        from: &Actor,
        kind: MessageKind,
        cc: Vec<String>,
    ) -> Outcome {
        self.ids += 1;
        let n = self.ids;
        self.decide(now, |c, ctx| {
            c.send(
                ctx,
                from,
                &format!("req{n}"),
                format!("body {n}"),
                None,
                kind,
                cc,
                || format!("m{n}"),
            )
        })
        .unwrap()
    }

    fn send(&mut self, now: Millis, from: &str) -> String {
        let out = self.send_as(now, &actor(from, 1), MessageKind::Message, vec![]);
        match out.ack {
            AckResult::Sent { message } => message.id,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn recall(
        &mut self,
        now: Millis,
        who: &str,
        id: &str,
        sent_recently: u32,
    ) -> Result<Outcome, Refusal> {
        self.decide(now, |c, ctx| {
            c.recall(ctx, &actor(who, 1), id, sent_recently)
        })
    }

    fn read(&mut self, now: Millis, who: &str, id: &str) -> Result<Outcome, Refusal> {
        self.decide(now, |c, ctx| c.read(ctx, &actor(who, 1), id))
    }

    fn history(&self, viewer: &str) -> Vec<parley_protocol::MessageView> {
        match self.conv.history(&self.ctx(0), viewer, None, None).unwrap() {
            AckResult::History { messages, .. } => messages,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn frames_for<'a>(out: &'a Outcome, user: &str) -> Vec<&'a ServerFrame> {
    out.emits
        .iter()
        .filter(|e| e.to.iter().any(|t| t.user == user))
        .map(|e| &e.frame)
        .collect()
}

#[test]
fn send_fans_out_to_everyone_but_the_requesting_session_and_arms_the_timer() {
    let mut w = World::new(ConversationKind::Group, &["a", "b", "c"]);
    let out = w.send_as(1_000, &actor("a", 7), MessageKind::Message, vec![]);
    let message = &out.emits[0];
    assert!(matches!(message.frame, ServerFrame::Message { .. }));
    assert_eq!(message.to.len(), 3);
    assert_eq!(
        message.to[0].except,
        Some(7),
        "the sender's own session has the ack"
    );
    assert!(message.to[1..].iter().all(|t| t.except.is_none()));
    assert_eq!(frames_for(&out, "b").len(), 2, "message and notification");
    assert_eq!(out.timer.as_ref().map(|t| t.at), Some(121_000));
}

#[test]
fn resend_with_the_same_request_id_stores_nothing_new() {
    let mut w = World::new(ConversationKind::Direct, &["a", "b"]);
    let send = |session, new_id: &'static str| {
        move |c: &Conversation, ctx: &Ctx| {
            c.send(
                ctx,
                &actor("a", session),
                "same",
                "hi".into(),
                None,
                MessageKind::Message,
                vec![],
                || new_id.into(),
            )
        }
    };
    let first = w.decide(5, send(1, "m1")).unwrap();
    let again = w.decide(5, send(2, "m2")).unwrap();
    assert_eq!(again.ack, first.ack);
    assert!(again.emits.is_empty() && again.changes.is_empty());
}

#[test]
fn a_message_whose_request_id_was_forgotten_answers_no_request() {
    let mut w = World::new(ConversationKind::Direct, &["a", "b"]);
    let old = MessageView {
        id: "m-old".into(),
        conversation: "c".into(),
        seq: 1,
        sender: "a".into(),
        sent_at: 0,
        kind: MessageKind::Message,
        state: MessageState::Visible,
        body: Some("old".into()),
        reply_to: None,
        to: None,
        cc: vec![],
        recall_until: None,
        delete_until: None,
    };
    let forgotten = Change::MessageStored {
        message: old,
        client_id: String::new(),
        offline: None,
    };
    w.conv.apply(&forgotten, &w.limits, &Online::Everyone);
    let out = w
        .decide(1, |c, ctx| {
            let a = actor("a", 1);
            c.send(
                ctx,
                &a,
                "",
                "new".into(),
                None,
                MessageKind::Message,
                vec![],
                || "m-new".into(),
            )
        })
        .unwrap();
    assert_eq!(
        out.changes.len(),
        1,
        "a new message, not the old one's answer"
    );
}

#[test]
fn a_decision_changes_nothing_until_it_is_applied() {
    let mut w = World::new(ConversationKind::Direct, &["a", "b"]);
    let ctx = w.ctx(0);
    let undecided = w
        .conv
        .send(
            &ctx,
            &actor("a", 1),
            "r",
            "hi".into(),
            None,
            MessageKind::Message,
            vec![],
            || "m0".into(),
        )
        .unwrap();
    assert_eq!(undecided.changes.len(), 1);
    assert!(
        w.history("b").is_empty(),
        "a message not applied is not there"
    );

    let m = w.send(0, "a");
    let ctx = w.ctx(1);
    w.conv.recall(&ctx, &actor("a", 1), &m, 0).unwrap();
    w.conv.read(&ctx, &actor("b", 2), &m).unwrap();
    assert_eq!(w.history("b")[0].state, MessageState::Visible);
    assert!(
        w.recall(2, "a", &m, 0).is_ok(),
        "neither the unapplied recall nor the unapplied read took effect"
    );
}

#[test]
fn recall_refusals_come_in_spec_order() {
    let mut w = World::new(ConversationKind::Direct, &["a", "b"]);
    let m = w.send(0, "a");
    assert_eq!(w.recall(1, "b", &m, 0).unwrap_err(), Refusal::NotSender);
    assert_eq!(
        w.recall(120_000, "a", &m, 0).unwrap_err(),
        Refusal::RecallWindowClosed
    );
    assert_eq!(
        w.recall(1, "a", &m, 31).unwrap_err(),
        Refusal::RecallThrottled
    );
    assert!(
        w.recall(1, "a", &m, 30).is_ok(),
        "30 sends is not more than 30"
    );
    let m2 = w.send(2, "a");
    assert_eq!(
        w.recall(3, "a", &m2, 0).unwrap_err(),
        Refusal::RecallLimitReached
    );
    assert_eq!(
        w.recall(3, "a", &m, 0).unwrap_err(),
        Refusal::NotFound("message")
    );
    let next_day = w.send(86_400_000, "a");
    assert!(w.recall(86_400_001, "a", &next_day, 0).is_ok());
}

#[test]
fn read_and_recall_exclude_each_other() {
    let mut w = World::new(ConversationKind::Direct, &["a", "b"]);
    let m = w.send(0, "a");
    w.read(1, "b", &m).unwrap();
    assert_eq!(w.recall(2, "a", &m, 0).unwrap_err(), Refusal::AlreadyRead);

    let mut w = World::new(ConversationKind::Direct, &["a", "b"]);
    let m = w.send(0, "a");
    let out = w.recall(1, "a", &m, 0).unwrap();
    assert!(frames_for(&out, "b").iter().any(|f| matches!(
        f,
        ServerFrame::Recalled {
            mode: RemovalMode::Marker,
            ..
        }
    )));
    assert_eq!(
        w.read(2, "b", &m).unwrap_err(),
        Refusal::NotFound("message")
    );
    let h = w.history("b");
    assert_eq!(
        (h[0].state, h[0].body.clone()),
        (MessageState::Recalled, None)
    );
}

#[test]
fn a_private_read_sends_no_receipt_but_still_closes_recall() {
    let mut w = World::new(ConversationKind::Direct, &["a", "b"]);
    let patch = SettingsPatch {
        read_receipts: Some(ReadReceipts::Off),
        ..SettingsPatch::default()
    };
    w.dir
        .commit(Ok(w.dir.update_settings(&actor("b", 0), patch)))
        .unwrap();
    let m = w.send(0, "a");
    let out = w.read(1, "b", &m).unwrap();
    let to_a = frames_for(&out, "a");
    assert!(
        to_a.iter().all(|f| !matches!(f, ServerFrame::Read { .. })),
        "{to_a:?}"
    );
    assert!(to_a
        .iter()
        .any(|f| matches!(f, ServerFrame::RecallClosed { .. })));
    assert!(frames_for(&out, "b")
        .iter()
        .any(|f| matches!(f, ServerFrame::Read { .. })));
    assert_eq!(w.recall(2, "a", &m, 0).unwrap_err(), Refusal::AlreadyRead);
    assert!(
        w.read(3, "b", &m).unwrap().emits.is_empty(),
        "receipts only move forward"
    );
}

#[test]
fn inmail_delete_is_silent_for_sender_and_primary_and_spares_copies() {
    let mut w = World::new(ConversationKind::Inmail, &["a", "b", "c"]);
    let out = w.send_as(0, &actor("a", 1), MessageKind::Inmail, vec!["c".into()]);
    let AckResult::Sent { message } = out.ack else {
        panic!()
    };
    w.read(5, "b", &message.id).unwrap();
    let deleted = w
        .decide(599_999, |c, ctx| {
            c.delete_inmail(ctx, &actor("a", 1), &message.id)
        })
        .unwrap();
    assert!(
        frames_for(&deleted, "c").is_empty(),
        "copied recipients are not told"
    );
    assert!(frames_for(&deleted, "b").iter().any(|f| matches!(
        f,
        ServerFrame::Recalled {
            mode: RemovalMode::Silent,
            ..
        }
    )));
    assert!(w.history("a").is_empty() && w.history("b").is_empty());
    assert_eq!(w.history("c")[0].body.as_deref(), Some("body 1"));

    let out = w.send_as(600_000, &actor("a", 1), MessageKind::Inmail, vec![]);
    let AckResult::Sent { message } = out.ack else {
        panic!()
    };
    assert_eq!(
        w.decide(1_200_000, |c, ctx| c.delete_inmail(
            ctx,
            &actor("a", 1),
            &message.id
        ))
        .unwrap_err(),
        Refusal::InmailDeleteWindowClosed
    );
    assert_eq!(
        w.recall(600_001, "a", &message.id, 0).unwrap_err(),
        Refusal::WrongMessageKind("an InMail is deleted with delete_inmail, not recalled")
    );
}

#[test]
fn delete_for_me_leaves_a_tombstone_for_the_deleter_only() {
    let mut w = World::new(ConversationKind::Direct, &["a", "b"]);
    let m = w.send(0, "a");
    let out = w
        .decide(1, |c, _| c.delete_for_me(&actor("b", 3), &m))
        .unwrap();
    assert_eq!(out.emits.len(), 1);
    assert_eq!(
        out.emits[0].to,
        vec![Target {
            user: "b".into(),
            except: Some(3)
        }]
    );
    assert_eq!(w.history("b")[0].state, MessageState::Deleted);
    assert_eq!(w.history("b")[0].body, None);
    assert_eq!(w.history("a")[0].state, MessageState::Visible);
}

#[test]
fn history_pages_backwards() {
    let mut w = World::new(ConversationKind::Direct, &["a", "b"]);
    for t in 0..5 {
        w.send(t, "a");
    }
    let page = |before, limit| match w.conv.history(&w.ctx(9), "b", before, Some(limit)).unwrap() {
        AckResult::History { messages, more, .. } => {
            (messages.iter().map(|m| m.seq).collect::<Vec<_>>(), more)
        }
        _ => unreachable!(),
    };
    assert_eq!(page(None, 2), (vec![4, 5], true));
    assert_eq!(page(Some(4), 2), (vec![2, 3], true));
    assert_eq!(page(Some(2), 2), (vec![1], false));
}

#[test]
fn blocked_pair_cannot_post_in_a_direct_conversation() {
    let mut w = World::new(ConversationKind::Direct, &["a", "b"]);
    w.dir.commit(w.dir.block(&actor("b", 0), "a")).unwrap();
    for from in ["a", "b"] {
        let err = w
            .decide(0, |c, ctx| {
                c.send(
                    ctx,
                    &actor(from, 1),
                    "x",
                    "hi".into(),
                    None,
                    MessageKind::Message,
                    vec![],
                    || "m".into(),
                )
            })
            .unwrap_err();
        assert_eq!(err, Refusal::RecipientUnavailable);
    }
}

/// What each participant's client is shown of `w`'s conversation: its inbox row, its
/// newest history page and what changed after position `since`.
fn shown(w: &World, now: Millis, since: u64) -> Vec<String> {
    let ctx = w.ctx(now);
    let c = &w.conv;
    c.participants()
        .iter()
        .map(|u| {
            let row = c.inbox_entry(&ctx, u).unwrap();
            let page = c.history(&ctx, u, None, Some(50)).unwrap();
            let recent = c.updates_since(&ctx, u, since, 200).unwrap();
            format!("{u}: {row:?} {page:?} {recent:?}")
        })
        .collect()
}

#[test]
fn a_trimmed_conversation_shows_everyone_what_it_showed_and_refers_the_rest_to_the_store() {
    let mut w = World::new(ConversationKind::Group, &["ann", "ben", "cat"]);
    let mut ids = Vec::new();
    for i in 0..600i64 {
        let t = i * 1_000;
        ids.push(w.send(t, if i % 2 == 0 { "ann" } else { "ben" }));
        match i {
            100 => drop(w.read(t, "cat", &ids[99]).unwrap()),
            120 => drop(
                w.decide(t, |c, _| c.delete_for_me(&actor("ben", 1), &ids[110]))
                    .unwrap(),
            ),
            598 => drop(w.recall(t + 500, "ann", &ids[598], 0).unwrap()),
            _ => {}
        }
    }
    let now = 600_000;
    let before = shown(&w, now, 500);
    let weight = w.conv.weight();
    let keep = conversation::Keep {
        sent_since: 450_000,
        newest: conversation::HELD_TAIL,
        requests_since: 0,
    };
    let cut = w.conv.trim(keep);
    assert_eq!(cut, 600 - conversation::HELD_TAIL, "the newest are kept");
    assert_eq!(
        shown(&w, now, 500),
        before,
        "every participant sees the same"
    );
    assert!(w.conv.weight() < weight / 2, "it holds less");
    assert_eq!(w.conv.trim(keep), 0, "nothing more to let go");

    let ctx = w.ctx(now);
    let retry = |c: &Conversation, n: usize| {
        let sender = if (n - 1).is_multiple_of(2) {
            "ann"
        } else {
            "ben"
        };
        c.send(
            &ctx,
            &actor(sender, 1),
            &format!("req{n}"),
            "again".into(),
            None,
            MessageKind::Message,
            vec![],
            || "m-new".into(),
        )
    };
    let held = retry(&w.conv, 500).unwrap();
    assert!(
        held.changes.is_empty(),
        "a held message's retry stores nothing"
    );
    assert_eq!(
        retry(&w.conv, 10).unwrap_err(),
        Refusal::NotHeld,
        "a retry of a message let go is sent to the store, not stored again"
    );
    let older = w.conv.history(&ctx, "cat", Some(300), Some(50));
    assert_eq!(older.unwrap_err(), Refusal::NotHeld);
    let forgotten = w.conv.read(&ctx, &actor("ben", 1), &ids[5]);
    assert_eq!(forgotten.unwrap_err(), Refusal::NotHeld);
}

#[test]
fn a_state_change_about_an_older_message_keeps_that_message_held() {
    let mut w = World::new(ConversationKind::Group, &["ann", "ben"]);
    let mut ids = Vec::new();
    for i in 0..600i64 {
        ids.push(w.send(i * 1_000, "ann"));
    }
    w.decide(600_000, |c, _| c.delete_for_me(&actor("ben", 1), &ids[300]))
        .unwrap();
    let keep = conversation::Keep {
        sent_since: 590_000,
        newest: conversation::HELD_TAIL,
        requests_since: 0,
    };
    assert_eq!(w.conv.trim(keep), 300, "held from the message it refers to");
    let ctx = w.ctx(600_000);
    let update = w.conv.updates_since(&ctx, "ben", 600, 10).unwrap().unwrap();
    assert!(matches!(
        &update.frames[..],
        [ServerFrame::DeletedView { message, .. }] if *message == ids[300]
    ));
}
