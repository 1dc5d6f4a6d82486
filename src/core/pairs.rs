//! A set of ordered pairs of users, indexed from both ends, so "who is connected to me",
//! "who asked me" and "whom did I block" cost what that user has, not a scan of every
//! pair of every user.

use parley_protocol::UserId;
use std::collections::{BTreeSet, HashMap};

/// Ordered pairs `(a, b)`, found from `a`, and from `b` too when `FROM_BOTH_ENDS`: a
/// symmetric relation stored both ways needs only the first index, and half the memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pairs<const FROM_BOTH_ENDS: bool = true> {
    from: HashMap<UserId, BTreeSet<UserId>>,
    to: HashMap<UserId, BTreeSet<UserId>>,
}

/// A symmetric relation: each pair is stored both ways and found from its first user.
pub type Symmetric = Pairs<false>;

impl<const FROM_BOTH_ENDS: bool> Pairs<FROM_BOTH_ENDS> {
    /// Whether `(a, b)` is in the set.
    pub fn contains(&self, a: &str, b: &str) -> bool {
        self.from.get(a).is_some_and(|s| s.contains(b))
    }

    /// Add `(a, b)`.
    pub fn insert(&mut self, a: &str, b: &str) {
        self.from
            .entry(a.to_owned())
            .or_default()
            .insert(b.to_owned());
        if FROM_BOTH_ENDS {
            self.to
                .entry(b.to_owned())
                .or_default()
                .insert(a.to_owned());
        }
    }

    /// Remove `(a, b)`; an end left with nothing is forgotten.
    pub fn remove(&mut self, a: &str, b: &str) {
        fn drop_one(map: &mut HashMap<UserId, BTreeSet<UserId>>, key: &str, value: &str) {
            if let Some(set) = map.get_mut(key) {
                set.remove(value);
                if set.is_empty() {
                    map.remove(key);
                }
            }
        }
        drop_one(&mut self.from, a, b);
        drop_one(&mut self.to, b, a);
    }

    /// Every `b` with `(a, b)`, sorted.
    pub fn after(&self, a: &str) -> Vec<UserId> {
        self.from
            .get(a)
            .map_or_else(Vec::new, |s| s.iter().cloned().collect())
    }

    /// Every `a` with `(a, b)`, sorted.
    pub fn before(&self, b: &str) -> Vec<UserId> {
        self.to
            .get(b)
            .map_or_else(Vec::new, |s| s.iter().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_found_from_both_ends_and_forgotten_when_removed() {
        let mut p: Pairs = Pairs::default();
        p.insert("ann", "cid");
        p.insert("ann", "bob");
        p.insert("dan", "bob");
        assert!(p.contains("ann", "bob") && !p.contains("bob", "ann"));
        assert_eq!(p.after("ann"), ["bob", "cid"]);
        assert_eq!(p.before("bob"), ["ann", "dan"]);
        p.remove("ann", "bob");
        p.remove("ann", "nobody");
        assert_eq!(p.after("ann"), ["cid"]);
        assert_eq!(p.before("bob"), ["dan"]);
        p.remove("ann", "cid");
        assert!(p.after("ann").is_empty() && p.before("cid").is_empty());
        assert!(!p.from.contains_key("ann") && !p.to.contains_key("cid"));
    }

    #[test]
    fn a_symmetric_relation_keeps_one_index() {
        let mut s = Symmetric::default();
        s.insert("ann", "bob");
        s.insert("bob", "ann");
        assert_eq!(s.after("bob"), ["ann"]);
        assert!(s.to.is_empty());
        s.remove("bob", "ann");
        assert!(!s.contains("bob", "ann") && s.contains("ann", "bob"));
    }
}
