//! A set of small dense indices, one bit each: the live values along a block in
//! `opt::remove_dead_writes` (and the bit walk of `liveness`'s rows).

/// Holds indices below the size it was made with.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    pub fn new(n: usize) -> BitSet {
        BitSet {
            words: vec![0; n.div_ceil(64)],
        }
    }

    pub fn insert(&mut self, i: usize) {
        insert_bit(&mut self.words, i);
    }

    pub fn remove(&mut self, i: usize) {
        remove_bit(&mut self.words, i);
    }

    /// False past the set's size (an unreachable block's empty default set, in `liveness`).
    pub fn contains(&self, i: usize) -> bool {
        self.words.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    pub fn union_with(&mut self, other: &BitSet) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= *b;
        }
    }

    pub fn intersect_with(&mut self, other: &BitSet) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= *b;
        }
    }

    pub fn subtract(&mut self, other: &BitSet) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= !*b;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        bits(&self.words)
    }
}

// The row forms below serve sets kept as rows of one buffer, a row per block
// (`available_copies`' states), where a `BitSet` per block would be an allocation each.

pub fn insert_bit(words: &mut [u64], i: usize) {
    words[i / 64] |= 1 << (i % 64);
}

pub fn remove_bit(words: &mut [u64], i: usize) {
    words[i / 64] &= !(1 << (i % 64));
}

pub fn has_bit(words: &[u64], i: usize) -> bool {
    words[i / 64] & (1 << (i % 64)) != 0
}

/// The indices of the bits set in `words`, ascending (also `liveness`'s rows of words).
pub fn bits(words: &[u64]) -> impl Iterator<Item = usize> + '_ {
    words.iter().enumerate().flat_map(|(i, &w)| {
        let mut w = w;
        std::iter::from_fn(move || {
            if w == 0 {
                return None;
            }
            let b = w.trailing_zeros() as usize;
            w &= w - 1;
            Some(i * 64 + b)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_come_and_go_across_words() {
        let mut s = BitSet::new(200);
        for i in [3, 64, 199] {
            s.insert(i);
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![3, 64, 199]);
        s.remove(64);
        s.remove(5);
        assert!(s.contains(3) && !s.contains(64) && s.contains(199) && !s.contains(500));
        let mut t = BitSet::new(200);
        t.insert(3);
        s.subtract(&t);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![199]);
        s.clear();
        assert_eq!(s.iter().count(), 0);
    }
}
