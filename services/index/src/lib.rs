//! One small vector index for face embeddings.
//!
//! Naming a face against the gallery, finding a face's neighbours for grouping and searching
//! by face all go through [`VectorIndex`]. Three implementations:
//!
//! - [`Exact`]: brute force over contiguous rows; exact, and the fastest while small.
//! - [`Hnsw`]: an HNSW graph (the `usearch` crate, chosen by measurement — see the README);
//!   sub-millisecond lookups at a million faces, incremental insert and delete.
//! - [`Auto`]: what the services use. Exact below a threshold, HNSW above it, and back to exact
//!   if it shrinks well below (hysteresis), migrating in place.
//!
//! The database stays the truth: an index is rebuilt from it at start with
//! [`VectorIndex::extend`] and then moved one entry per change with [`VectorIndex::upsert`]
//! and [`VectorIndex::remove`]. Every replica keeps its own copy. A large one can be saved
//! and loaded back instead of rebuilt ([`Auto::save`], [`Auto::restore`]); the loader
//! checks it against the database entry by entry ([`Auto::holds`]).
//!
//! Vectors are unit length (cosine similarity = dot product). Every vector and query is
//! normalised defensively on the way in, so a slightly off-norm embedding cannot skew scores.
//! All methods take `&self`: readers share, writers are exclusive (an internal `RwLock`), so
//! one index can be shared by many request handlers through an `Arc`.

mod auto;
mod exact;
mod hnsw;
pub mod join;
mod kernel;
mod snapshot;
pub mod synthetic;
mod topk;

pub use auto::{Auto, AutoConfig, SAME_VECTOR};
pub use exact::Exact;
pub use hnsw::{Hnsw, HnswConfig, Quantization};
/// The dot product the exact store searches with, for callers checking results by brute force.
pub use kernel::dot;

/// The embedding dimension of SFace, the model facewire uses.
pub const SFACE_DIMENSIONS: usize = 128;

/// One search result: a face id and its cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    /// The face id (the database's primary key).
    pub id: i64,
    /// Cosine similarity to the query, clamped to `[-1, 1]`; higher is more alike.
    pub similarity: f32,
}

/// What can go wrong at the index's boundary.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A vector or query had the wrong number of components.
    #[error("vector has {got} dimensions; this index holds {expected}-dimensional vectors")]
    Dimensions {
        /// The index's dimension.
        expected: usize,
        /// The length of the vector given.
        got: usize,
    },
    /// A vector had a NaN or infinite component, or was all zeros (it has no direction).
    #[error("vector must be finite and non-zero (it is normalised to unit length)")]
    NotNormalisable,
    /// Ids are database primary keys: non-negative.
    #[error("id {0} is negative; ids are database primary keys (>= 0)")]
    NegativeId(i64),
    /// The approximate index's native library reported an error.
    #[error("vector index backend failed: {0}")]
    Backend(String),
    /// A saved index could not be written, or cannot be loaded (unreadable, or saved
    /// with other settings); loading falls back to a rebuild.
    #[error("face index snapshot unusable: {0}")]
    Snapshot(String),
}

/// The one interface behind naming, grouping and search by face.
///
/// Results are best first (highest similarity; ties by lower id), similarities in `[-1, 1]`.
pub trait VectorIndex: Send + Sync {
    /// The dimension every vector must have.
    fn dimensions(&self) -> usize;

    /// How many faces the index holds.
    fn len(&self) -> usize;

    /// Whether the index holds no face.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` is in the index.
    fn contains(&self, id: i64) -> bool;

    /// Inserts `id`, or replaces its vector if it is already there.
    fn upsert(&self, id: i64, vector: &[f32]) -> Result<(), IndexError>;

    /// Removes `id`; `Ok(false)` if it was not there. A removed id is never returned again.
    fn remove(&self, id: i64) -> Result<bool, IndexError>;

    /// The `k` faces most similar to `query`, best first.
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<Neighbour>, IndexError>;

    /// The `k` faces most similar to `query` among those `keep` accepts, best first: one
    /// index serving a subset (the gallery's named faces among every face). An approximate
    /// index walks the graph through the faces it skips, so a search costs about the
    /// inverse of the share kept.
    fn search_where(
        &self,
        query: &[f32],
        k: usize,
        keep: &(dyn Fn(i64) -> bool + Sync),
    ) -> Result<Vec<Neighbour>, IndexError>;

    /// Every face at least `min_similarity` alike to `query`, best first, at most `limit`
    /// of them (the `limit` most similar when more qualify).
    fn within(
        &self,
        query: &[f32],
        min_similarity: f32,
        limit: usize,
    ) -> Result<Vec<Neighbour>, IndexError>;

    /// Upserts many entries at once — the start-up rebuild from the database. Parallel where
    /// the implementation can be. Returns how many entries were read.
    fn extend<I, V>(&self, entries: I) -> Result<usize, IndexError>
    where
        Self: Sized,
        I: IntoIterator<Item = (i64, V)>,
        V: AsRef<[f32]>;
}

/// Checks the dimension and returns a unit-length copy of `vector`.
pub(crate) fn unit(vector: &[f32], dimensions: usize) -> Result<Vec<f32>, IndexError> {
    if vector.len() != dimensions {
        return Err(IndexError::Dimensions {
            expected: dimensions,
            got: vector.len(),
        });
    }
    let norm = kernel::dot(vector, vector).sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return Err(IndexError::NotNormalisable);
    }
    Ok(vector.iter().map(|x| x / norm).collect())
}

pub(crate) fn check_id(id: i64) -> Result<(), IndexError> {
    if id < 0 {
        Err(IndexError::NegativeId(id))
    } else {
        Ok(())
    }
}

/// Best first: higher similarity, then lower id.
pub(crate) fn sort_best_first(neighbours: &mut [Neighbour]) {
    neighbours.sort_unstable_by(|a, b| b.similarity.total_cmp(&a.similarity).then(a.id.cmp(&b.id)));
}

pub(crate) fn clamp_similarity(similarity: f32) -> f32 {
    similarity.clamp(-1.0, 1.0)
}

/// Reads a lock, recovering from poisoning: every write leaves the stores consistent before
/// anything that could panic, so a panicked writer does not make the data unusable.
pub(crate) fn read<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes a lock, recovering from poisoning (see [`read`]).
pub(crate) fn write<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The number of threads a bulk build uses by default: every core.
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// `f(i, scratch)` for `i` in `0..n` on `threads` threads (each a contiguous share, with
/// its own scratch), results in order: the bulk work of the join and of grouping's
/// neighbour searches.
pub fn parallel_map<T: Send, S: Default>(
    n: usize,
    threads: usize,
    f: impl Fn(usize, &mut S) -> T + Sync,
) -> Vec<T> {
    parallel_ranges(n, threads, |range| {
        let mut scratch = S::default();
        range.map(|i| f(i, &mut scratch)).collect::<Vec<T>>()
    })
    .into_iter()
    .flatten()
    .collect()
}

/// `f(range)` for `0..n` split into one contiguous range per thread, results in range
/// order: for work that gathers one result per thread rather than one per item.
pub fn parallel_ranges<T: Send>(
    n: usize,
    threads: usize,
    f: impl Fn(std::ops::Range<usize>) -> T + Sync,
) -> Vec<T> {
    let chunk = n.div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|from| {
                let f = &f;
                scope.spawn(move || f(from..(from + chunk).min(n)))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a parallel worker panicked"))
            .collect()
    })
}

/// `f(i, slot, scratch)` for each `width`-wide slot `i` of `out` on `threads` threads:
/// results written in place, with no per-item allocation to gather.
pub fn parallel_fill<T: Send, S: Default>(
    out: &mut [T],
    width: usize,
    threads: usize,
    f: impl Fn(usize, &mut [T], &mut S) + Sync,
) {
    assert!(width > 0 && out.len().is_multiple_of(width));
    let n = out.len() / width;
    let chunk = n.div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        for (k, part) in out.chunks_mut(chunk * width).enumerate() {
            let f = &f;
            scope.spawn(move || {
                let mut scratch = S::default();
                for (j, slot) in part.chunks_exact_mut(width).enumerate() {
                    f(k * chunk + j, slot, &mut scratch);
                }
            });
        }
    });
}
