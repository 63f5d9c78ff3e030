//! Keeping the best `k` of a stream of scored ids.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::Neighbour;

/// A heap entry ordered so that the heap's top is the worst candidate kept.
struct Worst(Neighbour);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        // Greater = worse: lower similarity, then higher id.
        other
            .0
            .similarity
            .total_cmp(&self.0.similarity)
            .then(self.0.id.cmp(&other.0.id))
    }
}

/// The best `k` neighbours offered so far.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(4096) + 1),
        }
    }

    /// The similarity a candidate must beat to enter, once full.
    #[inline]
    pub fn floor(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap.peek().map_or(f32::INFINITY, |w| w.0.similarity)
        }
    }

    #[inline]
    pub fn offer(&mut self, id: i64, similarity: f32) {
        if self.k == 0 {
            return;
        }
        let candidate = Worst(Neighbour { id, similarity });
        if self.heap.len() < self.k {
            self.heap.push(candidate);
        } else if let Some(mut top) = self.heap.peek_mut() {
            if candidate < *top {
                *top = candidate;
            }
        }
    }

    /// The kept neighbours, best first.
    pub fn into_sorted(self) -> Vec<Neighbour> {
        let mut out: Vec<Neighbour> = self.heap.into_iter().map(|w| w.0).collect();
        crate::sort_best_first(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_k_best_first_ties_by_id() {
        let mut top = TopK::new(3);
        for (id, s) in [(5, 0.1), (4, 0.9), (3, 0.5), (2, 0.9), (1, 0.2), (0, 0.5)] {
            top.offer(id, s);
        }
        let ids: Vec<i64> = top.into_sorted().iter().map(|n| n.id).collect();
        assert_eq!(ids, vec![2, 4, 0]);
    }

    #[test]
    fn zero_keeps_nothing() {
        let mut top = TopK::new(0);
        top.offer(1, 1.0);
        assert!(top.into_sorted().is_empty());
    }
}
