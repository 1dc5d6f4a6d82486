//! Correctness under load: every session keeps, per stream (a parley conversation, or a
//! baseline sender), the positions it has seen; duplicates and positions that go
//! backwards are counted as they arrive, losses once the run has drained.

/// A growable set of small positions.
#[derive(Debug, Default, Clone)]
pub struct BitSet(Vec<u64>);

impl BitSet {
    /// Add `p`; false when it was already there.
    pub fn insert(&mut self, p: u64) -> bool {
        let (word, bit) = ((p / 64) as usize, p % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let had = self.0[word] & (1 << bit) != 0;
        self.0[word] |= 1 << bit;
        !had
    }

    /// Whether `p` is in the set.
    pub fn contains(&self, p: u64) -> bool {
        let (word, bit) = ((p / 64) as usize, p % 64);
        self.0.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }
}

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First time, in order.
    New,
    /// Seen before.
    Duplicate,
    /// First time, but behind a position already seen.
    Reordered,
}

#[derive(Debug, Default)]
struct Stream {
    key: String,
    last: u64,
    seen: BitSet,
}

/// The order and exactly-once record of one session.
#[derive(Debug, Default)]
pub struct SessionCheck {
    streams: Vec<Stream>,
    /// Frames that arrived twice.
    pub duplicated: u64,
    /// Frames that arrived behind a later one of their stream.
    pub reordered: u64,
}

impl SessionCheck {
    /// Record position `pos` of stream `key`.
    pub fn observe(&mut self, key: &str, pos: u64) -> Arrival {
        let stream = match self.streams.iter().position(|s| s.key == key) {
            Some(i) => &mut self.streams[i],
            None => {
                self.streams.push(Stream {
                    key: key.to_owned(),
                    ..Stream::default()
                });
                self.streams.last_mut().expect("just pushed")
            }
        };
        let fresh = stream.seen.insert(pos);
        if !fresh {
            self.duplicated += 1;
            Arrival::Duplicate
        } else if pos <= stream.last {
            self.reordered += 1;
            Arrival::Reordered
        } else {
            stream.last = pos;
            Arrival::New
        }
    }

    /// Whether position `pos` of stream `key` arrived.
    pub fn saw(&self, key: &str, pos: u64) -> bool {
        self.streams
            .iter()
            .find(|s| s.key == key)
            .is_some_and(|s| s.seen.contains(pos))
    }
}

/// What the checks of some sessions found once the run drained.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Deliveries that never arrived.
    pub lost: u64,
    /// Deliveries that arrived twice.
    pub duplicated: u64,
    /// Deliveries behind a later one of their stream.
    pub reordered: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_is_new() {
        let mut c = SessionCheck::default();
        assert_eq!(c.observe("a", 3), Arrival::New);
        assert_eq!(c.observe("a", 5), Arrival::New);
        assert_eq!(c.observe("b", 1), Arrival::New);
        assert!(c.saw("a", 5) && !c.saw("a", 4) && !c.saw("c", 1));
    }

    #[test]
    fn repeats_and_regressions_are_counted() {
        let mut c = SessionCheck::default();
        c.observe("a", 2);
        c.observe("a", 9);
        assert_eq!(c.observe("a", 9), Arrival::Duplicate);
        assert_eq!(c.observe("a", 4), Arrival::Reordered);
        assert_eq!(c.observe("a", 4), Arrival::Duplicate);
        assert_eq!((c.duplicated, c.reordered), (2, 1));
        assert!(c.saw("a", 4));
    }

    #[test]
    fn bitset_grows() {
        let mut s = BitSet::default();
        assert!(s.insert(1000));
        assert!(!s.insert(1000));
        assert!(s.contains(1000) && !s.contains(999) && !s.contains(100_000));
    }
}
