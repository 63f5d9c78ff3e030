//! Brute force over contiguous rows: exact, and fastest while the index is small.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::topk::TopK;
use crate::{IndexError, Neighbour, VectorIndex};

/// Rows scored per block: small enough to stay in L1 alongside the query.
const BLOCK_ROWS: usize = 256;

/// The exact store without locking; [`Exact`] and [`crate::Auto`] wrap it.
pub(crate) struct ExactStore {
    dimensions: usize,
    /// Row `s` is `rows[s * dimensions..(s + 1) * dimensions]`.
    rows: Vec<f32>,
    /// The id stored in each row.
    ids: Vec<i64>,
    /// Where each id's row is.
    slots: HashMap<i64, usize>,
}

impl ExactStore {
    pub fn new(dimensions: usize) -> Self {
        ExactStore {
            dimensions,
            rows: Vec::new(),
            ids: Vec::new(),
            slots: HashMap::new(),
        }
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn contains(&self, id: i64) -> bool {
        self.slots.contains_key(&id)
    }

    /// Bytes held by the rows (the vectors), by capacity.
    pub fn memory_bytes(&self) -> usize {
        self.rows.capacity() * std::mem::size_of::<f32>()
            + self.ids.capacity() * std::mem::size_of::<i64>()
    }

    pub fn reserve(&mut self, additional: usize) {
        self.rows.reserve(additional * self.dimensions);
        self.ids.reserve(additional);
        self.slots.reserve(additional);
    }

    /// The stored (unit) vector of `id`.
    pub fn vector(&self, id: i64) -> Option<Vec<f32>> {
        let d = self.dimensions;
        let slot = *self.slots.get(&id)?;
        Some(self.rows[slot * d..(slot + 1) * d].to_vec())
    }

    /// [`Self::vector`] into `out`; false when `id` is not held.
    pub fn read_vector(&self, id: i64, out: &mut [f32]) -> bool {
        let d = self.dimensions;
        match self.slots.get(&id) {
            Some(&slot) => {
                out.copy_from_slice(&self.rows[slot * d..(slot + 1) * d]);
                true
            }
            None => false,
        }
    }

    /// Stores an already unit-length vector.
    pub fn upsert_unit(&mut self, id: i64, unit: &[f32]) {
        debug_assert_eq!(unit.len(), self.dimensions);
        let d = self.dimensions;
        match self.slots.get(&id) {
            Some(&slot) => self.rows[slot * d..(slot + 1) * d].copy_from_slice(unit),
            None => {
                self.slots.insert(id, self.ids.len());
                self.ids.push(id);
                self.rows.extend_from_slice(unit);
            }
        }
    }

    /// Removes `id` by moving the last row into its place.
    pub fn remove(&mut self, id: i64) -> bool {
        let Some(slot) = self.slots.remove(&id) else {
            return false;
        };
        let d = self.dimensions;
        let last = self.ids.len() - 1;
        if slot != last {
            self.rows.copy_within(last * d..(last + 1) * d, slot * d);
            let moved = self.ids[last];
            self.ids[slot] = moved;
            self.slots.insert(moved, slot);
        }
        self.ids.pop();
        self.rows.truncate(last * d);
        true
    }

    /// Calls `visit(id, similarity)` for every stored row.
    fn scan(&self, unit_query: &[f32], mut visit: impl FnMut(i64, f32)) {
        let d = self.dimensions;
        let mut sims = [0.0f32; BLOCK_ROWS];
        for (block, ids) in self
            .rows
            .chunks(BLOCK_ROWS * d)
            .zip(self.ids.chunks(BLOCK_ROWS))
        {
            let sims = &mut sims[..ids.len()];
            crate::kernel::dots(block, d, unit_query, sims);
            for (&id, &s) in ids.iter().zip(sims.iter()) {
                visit(id, s);
            }
        }
    }

    pub fn search_unit(&self, unit_query: &[f32], k: usize) -> Vec<Neighbour> {
        self.search_unit_where(unit_query, k, |_| true)
    }

    /// [`Self::search_unit`] among the rows `keep` accepts (asked only of rows that would
    /// make the top `k`).
    pub fn search_unit_where(
        &self,
        unit_query: &[f32],
        k: usize,
        keep: impl Fn(i64) -> bool,
    ) -> Vec<Neighbour> {
        let mut top = TopK::new(k.min(self.len()));
        let mut floor = top.floor();
        self.scan(unit_query, |id, s| {
            // Most rows lose against the floor; skip the heap for them.
            if s >= floor && keep(id) {
                top.offer(id, crate::clamp_similarity(s));
                floor = top.floor();
            }
        });
        top.into_sorted()
    }

    pub fn within_unit(
        &self,
        unit_query: &[f32],
        min_similarity: f32,
        limit: usize,
    ) -> Vec<Neighbour> {
        let mut top = TopK::new(limit.min(self.len()));
        let mut floor = top.floor().max(min_similarity);
        self.scan(unit_query, |id, s| {
            let s = crate::clamp_similarity(s);
            if s >= floor {
                top.offer(id, s);
                floor = top.floor().max(min_similarity);
            }
        });
        top.into_sorted()
    }

    /// Every (id, unit vector) pair, for migrating to another store.
    pub fn entries(&self) -> impl Iterator<Item = (i64, &[f32])> {
        self.ids
            .iter()
            .copied()
            .zip(self.rows.chunks_exact(self.dimensions))
    }
}

/// Exact (brute-force) vector index.
///
/// Rows are kept contiguous (a delete moves the last row into the hole), so a search is one
/// linear pass of vectorised dot products. Single-threaded per query; readers run in parallel.
pub struct Exact {
    store: RwLock<ExactStore>,
}

impl Exact {
    /// An empty index of `dimensions`-long vectors.
    pub fn new(dimensions: usize) -> Self {
        Exact {
            store: RwLock::new(ExactStore::new(dimensions)),
        }
    }
}

impl VectorIndex for Exact {
    fn dimensions(&self) -> usize {
        crate::read(&self.store).dimensions()
    }

    fn len(&self) -> usize {
        crate::read(&self.store).len()
    }

    fn contains(&self, id: i64) -> bool {
        crate::read(&self.store).contains(id)
    }

    fn upsert(&self, id: i64, vector: &[f32]) -> Result<(), IndexError> {
        crate::check_id(id)?;
        let unit = crate::unit(vector, self.dimensions())?;
        crate::write(&self.store).upsert_unit(id, &unit);
        Ok(())
    }

    fn remove(&self, id: i64) -> Result<bool, IndexError> {
        Ok(crate::write(&self.store).remove(id))
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<Neighbour>, IndexError> {
        let store = crate::read(&self.store);
        let unit = crate::unit(query, store.dimensions())?;
        Ok(store.search_unit(&unit, k))
    }

    fn search_where(
        &self,
        query: &[f32],
        k: usize,
        keep: &(dyn Fn(i64) -> bool + Sync),
    ) -> Result<Vec<Neighbour>, IndexError> {
        let store = crate::read(&self.store);
        let unit = crate::unit(query, store.dimensions())?;
        Ok(store.search_unit_where(&unit, k, keep))
    }

    fn within(
        &self,
        query: &[f32],
        min_similarity: f32,
        limit: usize,
    ) -> Result<Vec<Neighbour>, IndexError> {
        let store = crate::read(&self.store);
        let unit = crate::unit(query, store.dimensions())?;
        Ok(store.within_unit(&unit, min_similarity, limit))
    }

    fn extend<I, V>(&self, entries: I) -> Result<usize, IndexError>
    where
        I: IntoIterator<Item = (i64, V)>,
        V: AsRef<[f32]>,
    {
        // Copying rows is memory-bound: one thread is as fast as two, so no parallelism here.
        let entries = entries.into_iter();
        let mut store = crate::write(&self.store);
        store.reserve(entries.size_hint().0);
        let dimensions = store.dimensions();
        let mut read = 0;
        for (id, vector) in entries {
            crate::check_id(id)?;
            let unit = crate::unit(vector.as_ref(), dimensions)?;
            store.upsert_unit(id, &unit);
            read += 1;
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{FaceGenerator, Params};

    /// The reference: every similarity in f64, fully sorted.
    fn naive(entries: &[(i64, Vec<f32>)], query: &[f32]) -> Vec<(i64, f64)> {
        let q = crate::unit(query, query.len()).unwrap();
        let mut all: Vec<(i64, f64)> = entries
            .iter()
            .map(|(id, v)| {
                let v = crate::unit(v, v.len()).unwrap();
                (
                    *id,
                    v.iter().zip(&q).map(|(a, b)| *a as f64 * *b as f64).sum(),
                )
            })
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all
    }

    fn faces(n: usize) -> Vec<(i64, Vec<f32>)> {
        let generator = FaceGenerator::new(Params::sface_like(n / 10 + 1, 7));
        (0..n)
            .map(|i| (i as i64 * 3 + 1, generator.face(i)))
            .collect()
    }

    #[test]
    fn search_matches_the_naive_reference() {
        let entries = faces(1000);
        let index = Exact::new(128);
        assert_eq!(index.extend(entries.iter().cloned()).unwrap(), 1000);
        let generator = FaceGenerator::new(Params::sface_like(101, 7));
        for q in 0..20 {
            let query = generator.query(q);
            let want = naive(&entries, &query);
            let got = index.search(&query, 10).unwrap();
            assert_eq!(got.len(), 10);
            for (g, w) in got.iter().zip(&want) {
                // Near-ties may swap order; the similarity at each rank must agree.
                assert!((g.similarity as f64 - w.1).abs() < 1e-5, "{g:?} vs {w:?}");
            }
            let got_ids: Vec<i64> = got.iter().map(|n| n.id).collect();
            assert!(got_ids.contains(&want[0].0), "the best face is found");
        }
    }

    #[test]
    fn k_larger_than_the_index_returns_everything_best_first() {
        let entries = faces(5);
        let index = Exact::new(128);
        index.extend(entries.iter().cloned()).unwrap();
        let got = index.search(&entries[2].1, 50).unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].id, entries[2].0);
        assert!(got.windows(2).all(|w| w[0].similarity >= w[1].similarity));
        assert!(index.search(&entries[2].1, 0).unwrap().is_empty());
    }

    #[test]
    fn upsert_replaces_and_remove_forgets() {
        let entries = faces(300);
        let index = Exact::new(128);
        index.extend(entries.iter().cloned()).unwrap();
        let (id, _) = entries[10];
        let elsewhere = entries[200].1.clone();
        index.upsert(id, &elsewhere).unwrap();
        assert_eq!(index.len(), 300, "a replacement is not an insertion");
        let top = index.search(&elsewhere, 2).unwrap();
        let ids: Vec<i64> = top.iter().map(|n| n.id).collect();
        assert!(ids.contains(&id) && ids.contains(&entries[200].0));

        // Remove a mix, including the last row and the replaced one; never returned again.
        for (victim, _) in entries
            .iter()
            .step_by(7)
            .chain([&entries[299], &entries[10]])
        {
            index.remove(*victim).unwrap();
        }
        assert!(
            !index.remove(entries[10].0).unwrap(),
            "second remove finds nothing"
        );
        assert!(!index.contains(entries[10].0));
        let removed: std::collections::HashSet<i64> = entries
            .iter()
            .step_by(7)
            .chain([&entries[299], &entries[10]])
            .map(|e| e.0)
            .collect();
        assert_eq!(index.len(), 300 - removed.len());
        for (_, v) in &entries {
            for n in index.search(v, 300).unwrap() {
                assert!(!removed.contains(&n.id), "removed id {} returned", n.id);
            }
        }
        // The survivors still find themselves: the swap-remove kept ids and rows together.
        for (id, v) in entries.iter().filter(|e| !removed.contains(&e.0)) {
            assert_eq!(index.search(v, 1).unwrap()[0].id, *id);
        }
    }

    #[test]
    fn within_is_every_face_at_least_that_similar_up_to_limit() {
        let entries = faces(2000);
        let index = Exact::new(128);
        index.extend(entries.iter().cloned()).unwrap();
        let query = &entries[42].1;
        let want = naive(&entries, query);
        let threshold = 0.5;
        let qualifying: Vec<i64> = want
            .iter()
            .filter(|w| w.1 as f32 >= threshold)
            .map(|w| w.0)
            .collect();
        assert!(qualifying.len() > 3, "the data has same-person neighbours");
        let got = index.within(query, threshold, 1000).unwrap();
        assert_eq!(got.iter().map(|n| n.id).collect::<Vec<_>>(), qualifying);
        assert!(got.iter().all(|n| n.similarity >= threshold));
        let limited = index.within(query, threshold, 2).unwrap();
        assert_eq!(
            limited.iter().map(|n| n.id).collect::<Vec<_>>(),
            qualifying[..2]
        );
        // A threshold above every similarity yields nothing; exactly 1.0 finds the face itself.
        assert!(index.within(query, 1.01, 10).unwrap().is_empty());
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let index = Exact::new(128);
        assert!(matches!(
            index.upsert(1, &[1.0; 3]),
            Err(IndexError::Dimensions {
                expected: 128,
                got: 3
            })
        ));
        assert!(matches!(
            index.upsert(1, &[0.0; 128]),
            Err(IndexError::NotNormalisable)
        ));
        let mut nan = vec![1.0; 128];
        nan[5] = f32::NAN;
        assert!(matches!(
            index.upsert(1, &nan),
            Err(IndexError::NotNormalisable)
        ));
        assert!(matches!(
            index.upsert(-4, &[1.0; 128]),
            Err(IndexError::NegativeId(-4))
        ));
        assert!(matches!(
            index.search(&[1.0; 4], 1),
            Err(IndexError::Dimensions { .. })
        ));
        assert!(index.is_empty());
    }

    #[test]
    fn vectors_are_normalised_on_the_way_in() {
        let index = Exact::new(4);
        index.upsert(1, &[3.0, 0.0, 0.0, 0.0]).unwrap();
        index.upsert(2, &[0.0, 5.0, 0.0, 0.0]).unwrap();
        let got = index.search(&[10.0, 10.0, 0.0, 0.0], 2).unwrap();
        assert!((got[0].similarity - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        let exact = index.search(&[2.0, 0.0, 0.0, 0.0], 1).unwrap();
        assert_eq!(exact[0].id, 1);
        assert!(exact[0].similarity <= 1.0);
    }
}
