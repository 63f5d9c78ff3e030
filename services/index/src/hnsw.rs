//! The approximate index: an HNSW graph from the `usearch` crate.
//!
//! usearch was chosen by measurement (README: recall, query time, memory, build time, and it
//! deletes in place, reusing the removed node for the next insert). It keeps the vectors
//! itself, by default as f16: half the memory of f32 and twice the build speed, recall@1 still
//! ≥ 0.99, similarities within ~1e-3 of the exact ones. A second f32 copy for re-ranking would
//! not fit the 1 GiB budget at a million faces and is not needed for that recall.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Condvar, Mutex, RwLock};

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::{IndexError, Neighbour, VectorIndex};

/// How the graph stores vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    /// 4 bytes a component; similarities are exact.
    F32,
    /// 2 bytes a component; similarities within ~1e-3 of exact. The default.
    F16,
    /// 1 byte a component; similarities within 0.03 of exact (tested), too coarse to rank a query's
    /// closest faces (recall@1 ~0.95, README), kept for measuring.
    I8,
}

/// Tuning of the HNSW graph.
#[derive(Debug, Clone)]
pub struct HnswConfig {
    /// Links per node (HNSW's `M`); level 0 keeps twice as many.
    pub connectivity: usize,
    /// Candidates considered while inserting (`ef_construction`).
    pub expansion_add: usize,
    /// Candidates considered while searching (`ef`); at least `k` is used.
    pub expansion_search: usize,
    /// How vectors are stored.
    pub quantization: Quantization,
    /// How many operations may run inside the graph at once (concurrent searches; bulk
    /// inserts use this many threads). Further searches wait for a turn.
    pub threads: usize,
}

impl Default for HnswConfig {
    /// Chosen by measurement on SFace-like data at a million faces (README): M = 32 with
    /// `ef` = 128 keeps recall@1 ≥ 0.99 within 1 ms a lookup through the gallery; M = 16
    /// needed `ef` = 256 for about that recall and took 1.3–1.5 ms.
    fn default() -> Self {
        HnswConfig {
            connectivity: 32,
            expansion_add: 128,
            expansion_search: 128,
            quantization: Quantization::F16,
            threads: crate::default_threads(),
        }
    }
}

/// A counting semaphore: usearch serves at most `threads` operations at once (each needs a
/// reserved scratch context) and fails the rest, so callers queue here instead.
struct Gate {
    free: Mutex<usize>,
    turn: Condvar,
}

struct Pass<'a>(&'a Gate);

impl Gate {
    fn new(permits: usize) -> Self {
        Gate {
            free: Mutex::new(permits),
            turn: Condvar::new(),
        }
    }

    fn enter(&self) -> Pass<'_> {
        let mut free = self
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *free == 0 {
            free = self
                .turn
                .wait(free)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *free -= 1;
        Pass(self)
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        *self
            .0
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        self.0.turn.notify_one();
    }
}

fn backend(error: impl std::fmt::Display) -> IndexError {
    IndexError::Backend(error.to_string())
}

/// Ids are non-negative (checked at the boundary), so they map to keys one to one and never
/// to `u64::MAX`, which usearch reserves for free slots.
fn key(id: i64) -> u64 {
    debug_assert!(id >= 0);
    id as u64
}

fn scalar_kind(quantization: Quantization) -> ScalarKind {
    match quantization {
        Quantization::F32 => ScalarKind::F32,
        Quantization::F16 => ScalarKind::F16,
        Quantization::I8 => ScalarKind::I8,
    }
}

/// The HNSW store without the outer lock; [`Hnsw`] and [`crate::Auto`] wrap it.
pub(crate) struct HnswStore {
    dimensions: usize,
    threads: usize,
    index: Index,
    /// The ids present: usearch cannot list its keys, and migrating back to exact needs them.
    ids: HashSet<i64>,
    gate: Gate,
}

impl HnswStore {
    pub fn new(dimensions: usize, config: &HnswConfig) -> Result<Self, IndexError> {
        let options = IndexOptions {
            dimensions,
            // Inner product on unit vectors: distance = 1 - cosine similarity. usearch's
            // inner product on i8 multiplies the raw integers (±127 for ±1), so i8 needs
            // cosine, which normalises them back.
            metric: match config.quantization {
                Quantization::F32 | Quantization::F16 => MetricKind::IP,
                Quantization::I8 => MetricKind::Cos,
            },
            quantization: scalar_kind(config.quantization),
            connectivity: config.connectivity,
            expansion_add: config.expansion_add,
            expansion_search: config.expansion_search,
            multi: false,
        };
        let threads = config.threads.max(1);
        let index = Index::new(&options).map_err(backend)?;
        index
            .reserve_capacity_and_threads(1024, threads)
            .map_err(backend)?;
        Ok(HnswStore {
            dimensions,
            threads,
            index,
            ids: HashSet::new(),
            gate: Gate::new(threads),
        })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn set_expansion_search(&mut self, expansion: usize) {
        self.index.change_expansion_search(expansion);
    }

    /// Bytes the native graph (vectors and links) holds, as usearch counts them.
    pub fn memory_bytes(&self) -> usize {
        self.index.memory_usage()
    }

    pub fn contains(&self, id: i64) -> bool {
        self.ids.contains(&id)
    }

    /// Makes room for `additional` more entries, growing geometrically.
    fn reserve(&mut self, additional: usize) -> Result<(), IndexError> {
        let needed = self.index.size() + additional;
        let capacity = self.index.capacity();
        if needed > capacity {
            let grown = needed.max(capacity + capacity / 2);
            self.index
                .reserve_capacity_and_threads(grown, self.threads)
                .map_err(backend)?;
        }
        Ok(())
    }

    pub fn upsert_unit(&mut self, id: i64, unit: &[f32]) -> Result<(), IndexError> {
        self.remove(id)?;
        self.reserve(1)?;
        self.index.add(key(id), unit).map_err(backend)?;
        self.ids.insert(id);
        Ok(())
    }

    pub fn remove(&mut self, id: i64) -> Result<bool, IndexError> {
        if !self.ids.contains(&id) {
            return Ok(false);
        }
        // usearch marks the node deleted (searches skip it, the next insert reuses it).
        self.index.remove(key(id)).map_err(backend)?;
        self.ids.remove(&id);
        Ok(true)
    }

    /// Upserts a batch, inserting on `threads` threads at once.
    pub fn upsert_units(&mut self, batch: Vec<(i64, Vec<f32>)>) -> Result<(), IndexError> {
        // Last write wins within the batch, as if upserted one by one; replacements are
        // removed first so that the parallel inserts only ever add new keys.
        let mut latest = std::collections::HashMap::with_capacity(batch.len());
        for (position, (id, _)) in batch.iter().enumerate() {
            latest.insert(*id, position);
        }
        let batch: Vec<(i64, Vec<f32>)> = batch
            .into_iter()
            .enumerate()
            .filter(|(position, (id, _))| latest[id] == *position)
            .map(|(_, entry)| entry)
            .collect();
        for (id, _) in &batch {
            self.remove(*id)?;
        }
        self.reserve(batch.len())?;
        let workers = self.threads.min(batch.len()).max(1);
        let chunk = batch.len().div_ceil(workers).max(1);
        let index = &self.index;
        let gate = &self.gate;
        let results: Vec<Result<(), IndexError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        let _pass = gate.enter();
                        for (id, unit) in part {
                            index.add(key(*id), unit).map_err(backend)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        // Record what the graph holds even if a part failed, so ids and graph agree.
        for (id, _) in &batch {
            if self.index.contains(key(*id)) {
                self.ids.insert(*id);
            }
        }
        results.into_iter().collect()
    }

    pub fn search_unit(&self, unit_query: &[f32], k: usize) -> Result<Vec<Neighbour>, IndexError> {
        self.search_unit_filtered(unit_query, k, None)
    }

    /// [`Self::search_unit`] among the faces `keep` accepts: the graph is walked through
    /// the others, so a search costs about the inverse of the share kept.
    pub fn search_unit_where(
        &self,
        unit_query: &[f32],
        k: usize,
        keep: &(dyn Fn(i64) -> bool + Sync),
    ) -> Result<Vec<Neighbour>, IndexError> {
        self.search_unit_filtered(unit_query, k, Some(keep))
    }

    fn search_unit_filtered(
        &self,
        unit_query: &[f32],
        k: usize,
        keep: Option<&(dyn Fn(i64) -> bool + Sync)>,
    ) -> Result<Vec<Neighbour>, IndexError> {
        let k = k.min(self.len());
        if k == 0 {
            return Ok(Vec::new());
        }
        let matches = {
            let _pass = self.gate.enter();
            match keep {
                None => self.index.search(unit_query, k),
                Some(keep) => self
                    .index
                    .filtered_search(unit_query, k, |key| keep(key as i64)),
            }
            .map_err(backend)?
        };
        let mut out: Vec<Neighbour> = matches
            .keys
            .iter()
            .zip(&matches.distances)
            .map(|(&key, &distance)| Neighbour {
                id: key as i64,
                similarity: crate::clamp_similarity(1.0 - distance),
            })
            .collect();
        crate::sort_best_first(&mut out);
        Ok(out)
    }

    pub fn within_unit(
        &self,
        unit_query: &[f32],
        min_similarity: f32,
        limit: usize,
    ) -> Result<Vec<Neighbour>, IndexError> {
        // Ask for a few, and for twice as many while every answer still qualifies: the usual
        // answer (a handful of same-person faces) costs one ordinary search.
        let mut k = limit.min(32);
        loop {
            let mut found = self.search_unit(unit_query, k)?;
            let exhausted = found.len() < k || k >= limit;
            let all_qualify = found.last().is_none_or(|n| n.similarity >= min_similarity);
            if exhausted || !all_qualify {
                found.retain(|n| n.similarity >= min_similarity);
                found.truncate(limit);
                return Ok(found);
            }
            k = (k * 2).min(limit);
        }
    }

    /// The stored vector of `id` (as the index keeps it: quantised when it is).
    pub fn vector(&self, id: i64) -> Option<Vec<f32>> {
        let mut vector = vec![0.0f32; self.dimensions];
        self.read_vector(id, &mut vector).then_some(vector)
    }

    /// [`Self::vector`] into `out`; false when `id` is not held.
    pub fn read_vector(&self, id: i64, out: &mut [f32]) -> bool {
        self.ids.contains(&id) && matches!(self.index.get(key(id), out), Ok(found) if found > 0)
    }

    /// Writes the graph to `path` and its ids to [`crate::snapshot::ids_path`], each
    /// through a temporary file renamed into place. Searches go on meanwhile (the caller
    /// holds a read lock); writes wait.
    pub fn save(&self, path: &Path) -> Result<(), IndexError> {
        let graph_tmp = crate::snapshot::temporary(path);
        let ids_path = crate::snapshot::ids_path(path);
        let ids_tmp = crate::snapshot::temporary(&ids_path);
        self.index
            .save(crate::snapshot::utf8(&graph_tmp)?)
            .map_err(crate::snapshot::failed)?;
        let graph_bytes = crate::snapshot::sync_len(&graph_tmp)?;
        crate::snapshot::write_ids(&ids_tmp, graph_bytes, &self.ids)?;
        crate::snapshot::rename(&graph_tmp, path)?;
        crate::snapshot::rename(&ids_tmp, &ids_path)?;
        Ok(())
    }

    /// Loads a graph [`HnswStore::save`] wrote, refusing one that does not fit `config`
    /// or whose ids file belongs to another save.
    pub fn restore(
        path: &Path,
        dimensions: usize,
        config: &HnswConfig,
    ) -> Result<Self, IndexError> {
        let graph = crate::snapshot::utf8(path)?;
        let (ids, graph_bytes) = crate::snapshot::read_ids(&crate::snapshot::ids_path(path))?;
        let on_disk = std::fs::metadata(path)
            .map_err(crate::snapshot::failed)?
            .len();
        if on_disk != graph_bytes {
            return Err(crate::snapshot::mismatch(
                "the graph and its ids are from different saves",
            ));
        }
        let meta = Index::metadata(graph).map_err(crate::snapshot::failed)?;
        if meta.dimensions as usize != dimensions
            || meta.metric != MetricKind::IP
            || meta.quantization != scalar_kind(config.quantization)
            || meta.multi
        {
            return Err(crate::snapshot::mismatch(
                "it was saved with another dimension or quantisation",
            ));
        }
        let mut store = HnswStore::new(dimensions, config)?;
        store.index.load(graph).map_err(crate::snapshot::failed)?;
        if store.index.connectivity() != config.connectivity {
            return Err(crate::snapshot::mismatch(
                "it was built with another number of links per node",
            ));
        }
        store.index.change_expansion_add(config.expansion_add);
        store.index.change_expansion_search(config.expansion_search);
        if store.index.size() != ids.len() || !ids.iter().all(|&id| store.index.contains(key(id))) {
            return Err(crate::snapshot::mismatch(
                "the graph does not hold the ids saved with it",
            ));
        }
        store
            .index
            .reserve_capacity_and_threads(store.index.size().max(1024), store.threads)
            .map_err(backend)?;
        store.ids = ids.into_iter().collect();
        Ok(store)
    }

    /// The ids held.
    pub fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.ids.iter().copied()
    }

    /// Every (id, vector) pair, for migrating back to the exact store.
    pub fn entries(&self) -> Result<Vec<(i64, Vec<f32>)>, IndexError> {
        let mut out = Vec::with_capacity(self.ids.len());
        for &id in &self.ids {
            let mut vector = vec![0.0f32; self.dimensions];
            self.index.get(key(id), &mut vector).map_err(backend)?;
            out.push((id, vector));
        }
        Ok(out)
    }
}

/// Approximate (HNSW) vector index, backed by usearch.
///
/// Inserts and deletes are incremental (a delete frees the node for the next insert). Searches
/// run in parallel up to [`HnswConfig::threads`] at a time.
pub struct Hnsw {
    dimensions: usize,
    store: RwLock<HnswStore>,
}

impl Hnsw {
    /// An empty index of `dimensions`-long vectors.
    pub fn new(dimensions: usize, config: HnswConfig) -> Result<Self, IndexError> {
        Ok(Hnsw {
            dimensions,
            store: RwLock::new(HnswStore::new(dimensions, &config)?),
        })
    }
}

impl Hnsw {
    /// Changes how many candidates a search considers (`ef`): recall against query time.
    pub fn set_expansion_search(&self, expansion: usize) {
        crate::write(&self.store).set_expansion_search(expansion);
    }
}

/// Entries read and normalised per parallel insertion round during a bulk build.
pub(crate) const BUILD_BATCH: usize = 16_384;

/// Reads `entries` into normalised batches and hands each to `sink`.
pub(crate) fn for_each_batch<I, V>(
    entries: I,
    dimensions: usize,
    mut sink: impl FnMut(Vec<(i64, Vec<f32>)>) -> Result<(), IndexError>,
) -> Result<usize, IndexError>
where
    I: IntoIterator<Item = (i64, V)>,
    V: AsRef<[f32]>,
{
    let mut read = 0;
    let mut batch = Vec::with_capacity(BUILD_BATCH);
    for (id, vector) in entries {
        crate::check_id(id)?;
        batch.push((id, crate::unit(vector.as_ref(), dimensions)?));
        read += 1;
        if batch.len() == BUILD_BATCH {
            sink(std::mem::replace(
                &mut batch,
                Vec::with_capacity(BUILD_BATCH),
            ))?;
        }
    }
    if !batch.is_empty() {
        sink(batch)?;
    }
    Ok(read)
}

impl VectorIndex for Hnsw {
    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn len(&self) -> usize {
        crate::read(&self.store).len()
    }

    fn contains(&self, id: i64) -> bool {
        crate::read(&self.store).contains(id)
    }

    fn upsert(&self, id: i64, vector: &[f32]) -> Result<(), IndexError> {
        crate::check_id(id)?;
        let unit = crate::unit(vector, self.dimensions)?;
        crate::write(&self.store).upsert_unit(id, &unit)
    }

    fn remove(&self, id: i64) -> Result<bool, IndexError> {
        crate::write(&self.store).remove(id)
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<Neighbour>, IndexError> {
        let unit = crate::unit(query, self.dimensions)?;
        crate::read(&self.store).search_unit(&unit, k)
    }

    fn search_where(
        &self,
        query: &[f32],
        k: usize,
        keep: &(dyn Fn(i64) -> bool + Sync),
    ) -> Result<Vec<Neighbour>, IndexError> {
        let unit = crate::unit(query, self.dimensions)?;
        crate::read(&self.store).search_unit_where(&unit, k, keep)
    }

    fn within(
        &self,
        query: &[f32],
        min_similarity: f32,
        limit: usize,
    ) -> Result<Vec<Neighbour>, IndexError> {
        let unit = crate::unit(query, self.dimensions)?;
        crate::read(&self.store).within_unit(&unit, min_similarity, limit)
    }

    fn extend<I, V>(&self, entries: I) -> Result<usize, IndexError>
    where
        I: IntoIterator<Item = (i64, V)>,
        V: AsRef<[f32]>,
    {
        let mut store = crate::write(&self.store);
        for_each_batch(entries, self.dimensions, |batch| store.upsert_units(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{FaceGenerator, Params};
    use crate::Exact;

    /// A clustered set of 10 000 faces (1 000 people), both indexes built from it.
    fn built(config: HnswConfig) -> (FaceGenerator, Hnsw, Exact) {
        let generator = FaceGenerator::new(Params::sface_like(1_000, 11));
        let faces = || (0..10_000).map(|i| (i as i64, generator.face(i)));
        let hnsw = Hnsw::new(128, config).unwrap();
        let exact = Exact::new(128);
        assert_eq!(hnsw.extend(faces()).unwrap(), 10_000);
        exact.extend(faces()).unwrap();
        (generator, hnsw, exact)
    }

    #[test]
    fn a_search_where_returns_only_kept_faces_and_finds_their_best() {
        let (generator, hnsw, exact) = built(HnswConfig::default());
        // A third of the faces kept: the gallery's named faces among every face.
        let keep = |id: i64| id % 3 == 0;
        let queries = 200;
        let mut at1 = 0;
        for q in 0..queries {
            let query = generator.query(q);
            let want = exact.search_where(&query, 5, &keep).unwrap();
            let got = hnsw.search_where(&query, 5, &keep).unwrap();
            assert_eq!(got.len(), 5);
            assert!(got.iter().all(|n| keep(n.id)), "{got:?}");
            assert!(want.iter().all(|n| keep(n.id)));
            at1 += usize::from(got[0].id == want[0].id);
        }
        assert!(at1 >= queries * 97 / 100, "recall@1 {at1}/{queries}");
        // Keeping nothing finds nothing.
        assert!(hnsw
            .search_where(&generator.query(0), 5, &|_| false)
            .unwrap()
            .is_empty());
    }

    /// Recall@1 and recall@10 of `queries` searches against exact search, each similarity
    /// reported checked within `tolerance` of the exact cosine.
    fn against_exact(
        generator: &FaceGenerator,
        hnsw: &Hnsw,
        exact: &Exact,
        queries: usize,
        tolerance: f32,
    ) -> (f64, f64) {
        let (mut at1, mut at10) = (0, 0);
        for q in 0..queries {
            let query = generator.query(q);
            let want = exact.search(&query, 10).unwrap();
            let got = hnsw.search(&query, 10).unwrap();
            at1 += usize::from(got[0].id == want[0].id);
            at10 += got
                .iter()
                .filter(|g| want.iter().any(|w| w.id == g.id))
                .count();
            for g in &got {
                let truth = crate::kernel::dot(&query, &generator.face(g.id as usize));
                assert!((truth - g.similarity).abs() < tolerance, "{truth} vs {g:?}");
            }
        }
        (
            at1 as f64 / queries as f64,
            at10 as f64 / (queries * 10) as f64,
        )
    }

    #[test]
    fn recall_against_exact_search_on_clustered_faces() {
        let (generator, hnsw, exact) = built(HnswConfig::default());
        assert_eq!(hnsw.len(), 10_000);
        // F16 storage: the similarities reported are within a rounding of the exact ones.
        let (recall1, recall10) = against_exact(&generator, &hnsw, &exact, 300, 2e-3);
        // Measured 1.000 and 0.99+ here; the floors leave room for other seeds, not for bugs.
        assert!(recall1 >= 0.99, "recall@1 {recall1}");
        assert!(recall10 >= 0.95, "recall@10 {recall10}");
    }

    #[test]
    fn i8_storage_reports_cosine_similarities() {
        let (generator, hnsw, exact) = built(HnswConfig {
            quantization: Quantization::I8,
            ..HnswConfig::default()
        });
        // Cosines of the quantised vectors: a few hundredths off at most. Recall@1 is
        // not asserted: i8 reorders a query's closest faces (README).
        let (_, recall10) = against_exact(&generator, &hnsw, &exact, 100, 0.03);
        assert!(recall10 >= 0.95, "recall@10 {recall10}");
    }

    #[test]
    fn within_matches_exact_and_removed_ids_stay_gone() {
        let (generator, hnsw, exact) = built(HnswConfig::default());
        for id in (0..10_000).step_by(2) {
            assert!(hnsw.remove(id).unwrap());
            exact.remove(id).unwrap();
        }
        assert_eq!(hnsw.len(), 5_000);
        assert!(!hnsw.contains(0) && hnsw.contains(1));
        let (mut wanted, mut found) = (0, 0);
        for q in 0..100 {
            let query = generator.query(q);
            let want = exact.within(&query, 0.4, 100).unwrap();
            let got = hnsw.within(&query, 0.4, 100).unwrap();
            assert!(got.iter().all(|n| n.similarity >= 0.4 && n.id % 2 == 1));
            assert!(got.windows(2).all(|w| w[0].similarity >= w[1].similarity));
            wanted += want.len();
            found += got
                .iter()
                .filter(|g| want.iter().any(|w| w.id == g.id))
                .count();
            let limited = hnsw.within(&query, 0.4, 1).unwrap();
            assert!(limited.len() <= 1);
        }
        assert!(wanted > 100, "the threshold admits same-person faces");
        assert!(found as f64 >= 0.97 * wanted as f64, "{found}/{wanted}");
        // Re-inserting removed ids reuses their nodes and finds them again.
        for id in (0..2_000).step_by(2) {
            hnsw.upsert(id, &generator.face(id as usize)).unwrap();
        }
        for id in (0..2_000).step_by(50) {
            assert_eq!(
                hnsw.search(&generator.face(id as usize), 1).unwrap()[0].id,
                id
            );
        }
    }

    #[test]
    fn many_readers_at_once_wait_for_a_turn_instead_of_failing() {
        let generator = FaceGenerator::new(Params::sface_like(100, 12));
        let hnsw = Hnsw::new(
            128,
            HnswConfig {
                threads: 1,
                ..HnswConfig::default()
            },
        )
        .unwrap();
        hnsw.extend((0..1_000).map(|i| (i as i64, generator.face(i))))
            .unwrap();
        std::thread::scope(|scope| {
            for t in 0..8 {
                let (hnsw, generator) = (&hnsw, &generator);
                scope.spawn(move || {
                    for i in 0..50 {
                        let face = t * 100 + i;
                        assert_eq!(
                            hnsw.search(&generator.face(face), 1).unwrap()[0].id,
                            face as i64
                        );
                    }
                });
            }
        });
    }
}
