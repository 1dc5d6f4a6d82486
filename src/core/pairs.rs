//! A set of ordered pairs of users, indexed from both ends, so "who is connected to me",
//! "who asked me" and "whom did I block" cost what that user has, not a scan of every
//! pair of every user.

use parley_protocol::UserId;
use std::collections::{BTreeSet, HashMap};

/// Ordered pairs `(a, b)`, found from `a` and from `b`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pairs {
    from: HashMap<UserId, BTreeSet<UserId>>,
    to: HashMap<UserId, BTreeSet<UserId>>,
}

impl Pairs {
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
        self.to
            .entry(b.to_owned())
            .or_default()
            .insert(a.to_owned());
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
        let mut p = Pairs::default();
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
        assert!(p.from.is_empty() || !p.from.contains_key("ann"));
    }
}
