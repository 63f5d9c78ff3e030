//! Every face's neighbours at once: a similarity self-join for grouping a large backlog.
//!
//! Grouping asks each face for its neighbours at `min_similarity` or closer. For a few faces
//! an index search each is right; for a whole library grouped from scratch, a million graph
//! searches cost more than the graph itself (README: grouping). [`neighbours_within`] finds
//! the close pairs of a whole set in one pass instead, in the manner of an inverted-file
//! index:
//!
//! 1. **Cells.** `cells` pivots are taken from the set itself (evenly spaced rows); each
//!    vector goes into the cells of its `probes` most similar pivots.
//! 2. **Pairs.** Inside each cell every pair is compared exactly, rows copied side by side
//!    so a cell's work stays in cache; a pair is kept when it reaches `min_similarity`, and
//!    counted once, in the first cell its two vectors share.
//!
//! 3. **Refinement.** The more cells, the likelier two close faces fall near different
//!    boundaries (recall drops as the set grows at a fixed cell size). But faces of one
//!    person are close to one another, so a pair the cells missed is nearly always two
//!    hops apart in the pairs they found: a round of NN-descent's local join compares
//!    each face with its neighbours' neighbours it does not have yet (at most `fanout`
//!    × `fanout` of them, so a person with thousands of photos costs no more).
//!
//! Two faces of one person are close to each other, hence to the same pivots: they share a
//! cell unless both fall near a boundary, which `probes` makes rare (the measured recall
//! is in the README). Small sets are compared pair by pair, exactly. Every pair kept was
//! compared exactly, so the join never invents a neighbour; it can only miss one.
//!
//! Rows are read a row at a time through [`Rows`]: from one slice ([`Dense`]) or from the
//! index itself ([`Stored`]), so a service grouping a million faces holds no second copy
//! of their vectors while it does.

use crate::{kernel, Neighbour};

/// How the join divides the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinConfig {
    /// Vectors per cell wanted on average, before `probes` copies (sets the pivot count).
    pub cell_size: usize,
    /// Cells each vector goes into (its most similar pivots).
    pub probes: usize,
    /// Threads (every core by default).
    pub threads: usize,
    /// Below this many vectors every pair is compared.
    pub exact_below: usize,
    /// Independent sets of cells (pivots taken at other rows), each finding pairs the
    /// others missed; each costs as much again.
    pub pivot_sets: usize,
    /// Rounds of neighbourhood refinement after the cells (see [`neighbours_within`]).
    pub refine_rounds: usize,
    /// Neighbours (and their neighbours) a refinement round looks through per vector.
    pub refine_fanout: usize,
}

impl Default for JoinConfig {
    /// Measured on the synthetic SFace-like faces (README: grouping): cells of ~250 faces
    /// with each face in its 8 nearest, two sets of cells and one round of refinement —
    /// at a million faces BCubed recall 0.968 (0.916 with one set, 0.881 without the
    /// refinement too), as high as searching each face's neighbours one by one.
    fn default() -> Self {
        JoinConfig {
            cell_size: 250,
            probes: 8,
            threads: crate::default_threads(),
            exact_below: 4_096,
            pivot_sets: 2,
            refine_rounds: 1,
            refine_fanout: 16,
        }
    }
}

/// Where the join reads its rows. Every row is read several times (once per cell it falls
/// in, once per comparison while refining), so reading one must be cheap; it need not be
/// a copy of the whole set ([`Stored`] reads the index's own vectors).
pub trait Rows: Sync {
    /// Rows held.
    fn len(&self) -> usize;
    /// Whether no row is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Values per row.
    fn dimensions(&self) -> usize;
    /// Writes row `i` (unit length) into `out`, or zeros when it is gone (a face deleted
    /// meanwhile is nobody's neighbour).
    fn read(&self, i: usize, out: &mut [f32]);
}

/// Rows side by side in one slice (row `i` at `i * dimensions`).
#[derive(Debug, Clone, Copy)]
pub struct Dense<'a> {
    vectors: &'a [f32],
    dimensions: usize,
}

impl<'a> Dense<'a> {
    pub fn new(vectors: &'a [f32], dimensions: usize) -> Self {
        assert!(dimensions > 0 && vectors.len().is_multiple_of(dimensions));
        Dense {
            vectors,
            dimensions,
        }
    }
}

impl Rows for Dense<'_> {
    fn len(&self) -> usize {
        self.vectors.len() / self.dimensions
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn read(&self, i: usize, out: &mut [f32]) {
        out.copy_from_slice(&self.vectors[i * self.dimensions..(i + 1) * self.dimensions]);
    }
}

/// The faces `ids` as an index stores them, read in place: a join over a million faces
/// needs no copy of their vectors (512 MiB as f32) beside the index.
#[derive(Clone, Copy)]
pub struct Stored<'a> {
    index: &'a crate::Auto,
    ids: &'a [i64],
}

impl<'a> Stored<'a> {
    /// Row `i` is `ids[i]`.
    pub fn new(index: &'a crate::Auto, ids: &'a [i64]) -> Self {
        Stored { index, ids }
    }
}

impl Rows for Stored<'_> {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn dimensions(&self) -> usize {
        crate::VectorIndex::dimensions(self.index)
    }

    fn read(&self, i: usize, out: &mut [f32]) {
        if !self.index.read_vector(self.ids[i], out) {
            out.fill(0.0);
        }
    }
}

/// Every row's neighbours as (row, similarity), best first (ties by lower row), in one
/// flat list: row `i`'s are `entries[offsets[i]..offsets[i + 1]]`. Eight bytes a neighbour
/// and eight a row, where a list per row cost its header, its spare capacity and the
/// allocator's words besides (a million faces' lists: ~85 MB against ~250 MB).
#[derive(Debug, Clone, PartialEq)]
pub struct Lists {
    offsets: Vec<usize>,
    entries: Vec<(u32, f32)>,
}

impl Lists {
    /// `n` rows, no neighbours yet.
    fn empty(n: usize) -> Self {
        Lists {
            offsets: vec![0; n + 1],
            entries: Vec::new(),
        }
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Neighbours held in all (a pair counts once in each of its rows).
    #[cfg(test)]
    fn pairs_held(&self) -> usize {
        self.entries.len()
    }

    /// Row `i`'s neighbours as (row, similarity), best first.
    pub fn row(&self, i: usize) -> &[(u32, f32)] {
        &self.entries[self.offsets[i]..self.offsets[i + 1]]
    }

    /// Row `i`'s neighbours as faces (row `j` is `ids[j]`), best first, ties by lower id.
    pub fn neighbours(&self, i: usize, ids: &[i64]) -> Vec<Neighbour> {
        let mut list: Vec<Neighbour> = self
            .row(i)
            .iter()
            .map(|&(j, s)| Neighbour {
                id: ids[j as usize],
                similarity: crate::clamp_similarity(s),
            })
            .collect();
        crate::sort_best_first(&mut list);
        list
    }

    fn holds(&self, i: u32, j: u32) -> bool {
        self.row(i as usize).iter().any(|e| e.0 == j)
    }

    /// Adds `pairs` (each `(i, j, similarity)` to both rows), then keeps each row's
    /// `limit` best, a pair found twice once. Grows in place: the rows move towards the
    /// end, last row first, to open a gap after each for its new neighbours, so the lists
    /// are never held twice; each batch of pairs is let go once it is in.
    fn add(&mut self, pairs: Vec<Vec<(u32, u32, f32)>>, limit: usize) {
        let n = self.len();
        let mut extra = vec![0u32; n];
        for &(i, j, _) in pairs.iter().flatten() {
            extra[i as usize] += 1;
            extra[j as usize] += 1;
        }
        let added: usize = extra.iter().map(|&e| e as usize).sum();
        if added == 0 {
            return;
        }
        let mut starts = vec![0usize; n + 1];
        for i in 0..n {
            starts[i + 1] = starts[i] + (self.offsets[i + 1] - self.offsets[i]) + extra[i] as usize;
        }
        drop(extra);
        self.entries.resize(starts[n], (0, 0.0));
        for i in (0..n).rev() {
            // Row i's new place starts at or after its old one and ends before row i + 1's.
            self.entries
                .copy_within(self.offsets[i]..self.offsets[i + 1], starts[i]);
        }
        // `offsets` becomes each row's next free slot.
        for (i, &start) in starts[..n].iter().enumerate() {
            self.offsets[i] = start + (self.offsets[i + 1] - self.offsets[i]);
        }
        for (i, j, s) in pairs.into_iter().flatten() {
            for (row, other) in [(i, j), (j, i)] {
                let slot = &mut self.offsets[row as usize];
                self.entries[*slot] = (other, s);
                *slot += 1;
            }
        }
        // Each row sorted, deduplicated, cut to `limit` and moved down to close the gaps.
        let mut written = 0;
        for i in 0..n {
            let (start, end) = (starts[i], starts[i + 1]);
            let row = &mut self.entries[start..end];
            row.sort_unstable_by_key(|e| e.0);
            let mut unique = 0;
            for k in 0..row.len() {
                if unique == 0 || row[unique - 1].0 != row[k].0 {
                    row[unique] = row[k];
                    unique += 1;
                }
            }
            let row = &mut row[..unique];
            row.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let kept = unique.min(limit);
            self.entries.copy_within(start..start + kept, written);
            self.offsets[i] = written;
            written += kept;
        }
        self.offsets[n] = written;
        self.entries.truncate(written);
        self.entries.shrink_to_fit();
    }
}

/// For each unit vector in `rows`, the others at `min_similarity` or more, best first, at
/// most `limit`; [`Lists::neighbours`] names them by id.
pub fn neighbours_within<R: Rows + ?Sized>(
    rows: &R,
    min_similarity: f32,
    limit: usize,
    config: &JoinConfig,
) -> Lists {
    let n = rows.len();
    let sets = if n < config.exact_below {
        1
    } else {
        config.pivot_sets.max(1)
    };
    let threads = config.threads.max(1);
    // Set by set, each set's pairs added before the next set's cells are made: a later
    // set passes over the pairs already held, so the pairs are never all held at once.
    let mut lists = Lists::empty(n);
    for set in 0..sets {
        let found = cell_pairs(rows, n, min_similarity, config, set, sets, &lists);
        lists.add(found, limit);
    }
    for _ in 0..config.refine_rounds {
        let more = two_hop_pairs(&lists, rows, min_similarity, config.refine_fanout, threads);
        if more.iter().all(Vec::is_empty) {
            break;
        }
        lists.add(more, limit);
    }
    lists
}

/// The close pairs one set of cells finds (set `set` of `sets`; see the module docs) that
/// `known` does not hold yet, as each worker found them.
fn cell_pairs<R: Rows + ?Sized>(
    rows: &R,
    n: usize,
    min_similarity: f32,
    config: &JoinConfig,
    set: usize,
    sets: usize,
    known: &Lists,
) -> Vec<Vec<(u32, u32, f32)>> {
    let dimensions = rows.dimensions();
    let threads = config.threads.max(1);

    // Cells: every vector in the cells of its `probes` most similar pivots (`probes` a
    // row, side by side), each cell's members in row order; small sets are one cell.
    // Cells are numbered in 16 bits (2 bytes a probe; 16 MB at a million faces): from
    // 16 million vectors on, cells grow past `cell_size` rather than outnumber 65 536.
    let (cells, probes, cells_of) = if n < config.exact_below {
        (1, 1, Vec::new())
    } else {
        let cells = (n / config.cell_size.max(1))
            .max(config.probes.max(1))
            .min(MAX_CELLS);
        let probes = config.probes.clamp(1, cells);
        // Evenly spaced rows; each further set starts a fraction of a step later.
        let step = n as f64 / cells as f64;
        let offset = step * set as f64 / sets as f64;
        let mut pivots = vec![0.0; cells * dimensions];
        for (c, pivot) in pivots.chunks_exact_mut(dimensions).enumerate() {
            rows.read(((c as f64 * step + offset) as usize).min(n - 1), pivot);
        }
        let mut cells_of = vec![0u16; n * probes];
        crate::parallel_fill(
            &mut cells_of,
            probes,
            threads,
            |i, nearest, (scores, row, order): &mut CellScratch| {
                scores.resize(cells, 0.0);
                row.resize(dimensions, 0.0);
                rows.read(i, row);
                kernel::dots(&pivots, dimensions, row, scores);
                nearest_cells(scores, nearest, order);
            },
        );
        (cells, probes, cells_of)
    };
    let cells_of_row = |i: u32| &cells_of[i as usize * probes..(i as usize + 1) * probes];
    let mut starts = vec![0usize; cells + 1];
    let members: Vec<u32> = if cells_of.is_empty() {
        starts[1] = n;
        (0..n as u32).collect()
    } else {
        for &c in &cells_of {
            starts[c as usize + 1] += 1;
        }
        for c in 0..cells {
            starts[c + 1] += starts[c];
        }
        let mut next = starts.clone();
        let mut members = vec![0u32; cells_of.len()];
        for (i, cs) in cells_of.chunks_exact(probes).enumerate() {
            for &c in cs {
                members[next[c as usize]] = i as u32;
                next[c as usize] += 1;
            }
        }
        members
    };

    // Pairs, cell by cell, biggest cells first so the threads finish together.
    let mut order: Vec<usize> = (0..cells).collect();
    order.sort_unstable_by_key(|&c| std::cmp::Reverse(starts[c + 1] - starts[c]));
    let next = std::sync::atomic::AtomicUsize::new(0);
    crate::parallel_ranges(threads, threads, |_| {
        let mut pairs = Vec::new();
        let mut block = Vec::new();
        let mut scores = Vec::new();
        loop {
            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(&cell) = order.get(k) else {
                break pairs;
            };
            let items = &members[starts[cell]..starts[cell + 1]];
            block.resize(items.len() * dimensions, 0.0);
            for (&i, out) in items.iter().zip(block.chunks_exact_mut(dimensions)) {
                rows.read(i as usize, out);
            }
            for (a, &i) in items.iter().enumerate() {
                let (head, rest) = block.split_at((a + 1) * dimensions);
                let query = &head[a * dimensions..];
                scores.resize(items.len() - a - 1, 0.0);
                kernel::dots(rest, dimensions, query, &mut scores);
                for (b, &s) in scores.iter().enumerate() {
                    if s < min_similarity {
                        continue;
                    }
                    let j = items[a + 1 + b];
                    // Counted once: in the first cell both are in, and only if no
                    // earlier set of cells found it.
                    let first = if cells_of.is_empty() {
                        Some(cell as u16)
                    } else {
                        first_shared(cells_of_row(i), cells_of_row(j))
                    };
                    if first == Some(cell as u16) && !known.holds(i, j) {
                        pairs.push((i, j, s));
                    }
                }
            }
        }
    })
}

/// The close pairs a row's neighbours' neighbours add (one round of neighbourhood
/// refinement, as in NN-descent): for each row `i`, every row `k > i` among the `fanout`
/// best neighbours of its `fanout` best neighbours that is not yet its neighbour,
/// compared exactly. Faces of one person are close to one another, so a pair the cells
/// missed is usually two hops apart; each pair is found once, from its lower row.
fn two_hop_pairs<R: Rows + ?Sized>(
    lists: &Lists,
    rows: &R,
    min_similarity: f32,
    fanout: usize,
    threads: usize,
) -> Vec<Vec<(u32, u32, f32)>> {
    let dimensions = rows.dimensions();
    crate::parallel_ranges(lists.len(), threads, |range| {
        let (mut known, mut candidates, mut block, mut scores): Scratch = Default::default();
        let mut pairs = Vec::new();
        for i in range {
            known.clear();
            known.extend(lists.row(i).iter().map(|&(j, _)| j));
            known.sort_unstable();
            candidates.clear();
            for &(j, _) in lists.row(i).iter().take(fanout) {
                for &(k, _) in lists.row(j as usize).iter().take(fanout) {
                    if k as usize > i && known.binary_search(&k).is_err() {
                        candidates.push(k);
                    }
                }
            }
            candidates.sort_unstable();
            candidates.dedup();
            // Row i first, then the candidates', compared in one pass.
            block.resize((candidates.len() + 1) * dimensions, 0.0);
            let (query, rest) = block.split_at_mut(dimensions);
            rows.read(i, query);
            for (&k, out) in candidates.iter().zip(rest.chunks_exact_mut(dimensions)) {
                rows.read(k as usize, out);
            }
            scores.resize(candidates.len(), 0.0);
            kernel::dots(rest, dimensions, query, &mut scores);
            pairs.extend(
                candidates
                    .iter()
                    .zip(scores.iter())
                    .filter(|&(_, &s)| s >= min_similarity)
                    .map(|(&k, &s)| (i as u32, k, s)),
            );
        }
        pairs
    })
}

/// Writes the `nearest.len()` cells of the highest `scores` into `nearest`, in cell order:
/// a fixed slot per face in one table for the whole join. `order` (every cell's rank) is
/// scratch; keeping the ranking per face instead once held 16 GiB at a million faces.
fn nearest_cells(scores: &[f32], nearest: &mut [u16], order: &mut Vec<u16>) {
    debug_assert!(scores.len() <= MAX_CELLS);
    let probes = nearest.len();
    order.clear();
    order.extend((0..scores.len()).map(|c| c as u16));
    order.select_nth_unstable_by(probes - 1, |a, b| {
        scores[*b as usize].total_cmp(&scores[*a as usize])
    });
    nearest.copy_from_slice(&order[..probes]);
    nearest.sort_unstable();
}

/// Most cells one set makes: their numbers are 16-bit.
const MAX_CELLS: usize = u16::MAX as usize + 1;

/// A cell-assigning worker's buffers: a row's similarity to every pivot, the row, and the
/// pivots' ranking.
type CellScratch = (Vec<f32>, Vec<f32>, Vec<u16>);

/// A refinement worker's buffers: a row's known neighbours, its candidates, their rows
/// and their similarities.
type Scratch = (Vec<u32>, Vec<u32>, Vec<f32>, Vec<f32>);

/// The smallest cell in both sorted lists.
fn first_shared(a: &[u16], b: &[u16]) -> Option<u16> {
    let (mut x, mut y) = (0, 0);
    while x < a.len() && y < b.len() {
        match a[x].cmp(&b[y]) {
            std::cmp::Ordering::Equal => return Some(a[x]),
            std::cmp::Ordering::Less => x += 1,
            std::cmp::Ordering::Greater => y += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{FaceGenerator, Params};

    fn exact(vectors: &[f32], d: usize, min: f32) -> Vec<Vec<i64>> {
        let n = vectors.len() / d;
        (0..n)
            .map(|i| {
                let mut list: Vec<Neighbour> = (0..n)
                    .filter(|&j| j != i)
                    .map(|j| Neighbour {
                        id: j as i64,
                        similarity: kernel::dot(&vectors[i * d..][..d], &vectors[j * d..][..d]),
                    })
                    .filter(|nb| nb.similarity >= min)
                    .collect();
                crate::sort_best_first(&mut list);
                list.into_iter().map(|nb| nb.id).collect()
            })
            .collect()
    }

    /// Every row's list as faces.
    fn as_faces(lists: &Lists, ids: &[i64]) -> Vec<Vec<Neighbour>> {
        (0..lists.len()).map(|i| lists.neighbours(i, ids)).collect()
    }

    fn faces(n: usize) -> Vec<f32> {
        let generator = FaceGenerator::new(Params::sface_like(n / 10, 3));
        (0..n).flat_map(|i| generator.face(i)).collect()
    }

    #[test]
    fn small_sets_are_exact() {
        let d = 128;
        let vectors = faces(600);
        let ids: Vec<i64> = (0..600).collect();
        let got = neighbours_within(&Dense::new(&vectors, d), 0.5, 64, &JoinConfig::default());
        let got: Vec<Vec<i64>> = as_faces(&got, &ids)
            .into_iter()
            .map(|l| l.into_iter().map(|nb| nb.id).collect())
            .collect();
        assert_eq!(got, exact(&vectors, d, 0.5));
    }

    /// A face's cells are its `probes` nearest in a fixed slot, not the ranking of every
    /// cell (a million faces among 4 000 cells once held 16 GiB of rankings).
    #[test]
    fn a_face_keeps_only_its_nearest_cells() {
        let scores: Vec<f32> = (0..4_000).map(|c| ((c * 7919) % 4_001) as f32).collect();
        let mut order = Vec::new();
        let mut nearest = [0u16; 8];
        nearest_cells(&scores, &mut nearest, &mut order);
        let mut want: Vec<u16> = (0..4_000u16).collect();
        want.sort_by(|a, b| scores[*b as usize].total_cmp(&scores[*a as usize]));
        want.truncate(8);
        want.sort_unstable();
        assert_eq!(nearest.as_slice(), want.as_slice());
        assert!(
            order.capacity() >= 4_000,
            "the ranking stays in the scratch buffer"
        );
    }

    /// Lists grown in place batch by batch hold what all the pairs added at once give:
    /// each pair once in both its rows, best first, cut to the limit, no room to spare.
    #[test]
    fn lists_grown_batch_by_batch_hold_what_one_batch_gives() {
        let (n, limit) = (300u32, 12);
        let mut pairs = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        while pairs.len() < 5_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (a, b) = ((x % n as u64) as u32, ((x >> 32) % n as u64) as u32);
            if a != b {
                let (i, j) = (a.min(b), a.max(b));
                // A pair's similarity is the pair's own, however often it is found.
                pairs.push((i, j, ((i * 31 + j * 17) % 1_000) as f32 / 1_000.0));
            }
        }
        let mut once = Lists::empty(n as usize);
        once.add(vec![pairs.clone()], limit);
        let mut batched = Lists::empty(n as usize);
        for batch in pairs.chunks(700) {
            batched.add(vec![batch.to_vec()], limit);
        }
        assert_eq!(once, batched);
        assert_eq!(batched.entries.capacity(), batched.entries.len());
        for i in 0..n {
            let mut want: Vec<(u32, f32)> = pairs
                .iter()
                .filter_map(|&(a, b, s)| match (a == i, b == i) {
                    (true, _) => Some((b, s)),
                    (_, true) => Some((a, s)),
                    _ => None,
                })
                .collect();
            want.sort_by_key(|e| e.0);
            want.dedup_by_key(|e| e.0);
            want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            want.truncate(limit);
            assert_eq!(once.row(i as usize), want.as_slice(), "row {i}");
        }
        assert!(once.pairs_held() > 0 && (0..n as usize).any(|i| once.row(i).len() == limit));
    }

    /// Cells of ~50 faces, so a few thousand faces make many of them.
    fn small_cells() -> JoinConfig {
        JoinConfig {
            exact_below: 0,
            cell_size: 50,
            ..JoinConfig::default()
        }
    }

    #[test]
    fn cells_find_nearly_every_close_pair_once() {
        let d = 128;
        let n = 2_500;
        let vectors = faces(n);
        let ids: Vec<i64> = (0..n as i64).map(|i| i * 3 + 1).collect();
        let config = small_cells();
        let got = neighbours_within(&Dense::new(&vectors, d), 0.5, 64, &config);
        let got = as_faces(&got, &ids);
        let truth = exact(&vectors, d, 0.5);
        let (mut found, mut wanted) = (0usize, 0usize);
        for (i, list) in got.iter().enumerate() {
            let ids_found: Vec<i64> = list.iter().map(|nb| (nb.id - 1) / 3).collect();
            let mut unique = ids_found.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), ids_found.len(), "a pair counted twice");
            assert!(list.windows(2).all(|w| w[0].similarity >= w[1].similarity));
            assert!(list.iter().all(|nb| nb.similarity >= 0.5));
            wanted += truth[i].len();
            found += truth[i].iter().filter(|j| ids_found.contains(j)).count();
            assert!(
                ids_found.iter().all(|j| truth[i].contains(j)),
                "only true pairs"
            );
        }
        let recall = found as f64 / wanted as f64;
        assert!(wanted > n, "the data has close pairs: {wanted}");
        assert!(recall >= 0.95, "pair recall {recall:.3}");
    }

    /// Pair recall of `config` against exact search, checking that every pair found is
    /// true and counted once.
    fn pair_recall(vectors: &[f32], truth: &[Vec<i64>], config: &JoinConfig) -> f64 {
        let n = truth.len();
        let ids: Vec<i64> = (0..n as i64).collect();
        let got = neighbours_within(&Dense::new(vectors, 128), 0.5, 64, config);
        let got = as_faces(&got, &ids);
        let (mut found, mut wanted) = (0usize, 0usize);
        for (i, list) in got.iter().enumerate() {
            let mut ids_found: Vec<i64> = list.iter().map(|nb| nb.id).collect();
            assert!(
                ids_found.iter().all(|j| truth[i].contains(j)),
                "only true pairs"
            );
            ids_found.sort_unstable();
            ids_found.dedup();
            assert_eq!(ids_found.len(), list.len(), "a pair counted twice");
            wanted += truth[i].len();
            found += ids_found.len();
        }
        found as f64 / wanted as f64
    }

    #[test]
    fn refinement_and_a_second_set_of_cells_find_the_pairs_one_set_missed() {
        let n = 2_500;
        let vectors = faces(n);
        let truth = exact(&vectors, 128, 0.5);
        // Each face in its 2 nearest cells only: one set of cells misses many pairs.
        let coarse = JoinConfig {
            probes: 2,
            pivot_sets: 1,
            refine_rounds: 0,
            ..small_cells()
        };
        let recall = |pivot_sets, refine_rounds| {
            pair_recall(
                &vectors,
                &truth,
                &JoinConfig {
                    pivot_sets,
                    refine_rounds,
                    ..coarse
                },
            )
        };
        let (alone, refined, both) = (recall(1, 0), recall(1, 1), recall(2, 1));
        println!(
            "pair recall: one set {alone:.3}, refined {refined:.3}, two sets refined {both:.3}"
        );
        // Measured 0.540, 0.742, 0.971.
        assert!(alone < 0.7, "the test needs one set to miss: {alone:.3}");
        assert!(
            refined >= alone + 0.15,
            "refined {refined:.3}, one set {alone:.3}"
        );
        assert!(both >= 0.95, "two sets refined {both:.3}");
    }

    /// Reading the index in place gives the very lists a copy of its vectors gives, exact
    /// or approximate (f16) storage alike; a face deleted meanwhile is nobody's neighbour.
    #[test]
    fn rows_read_from_the_index_join_as_a_copy_of_them_does() {
        use crate::{Auto, AutoConfig, VectorIndex};
        let n = 1_500;
        let vectors = faces(n);
        let ids: Vec<i64> = (0..n as i64).map(|i| i * 7 + 2).collect();
        let config = small_cells();
        for threshold in [usize::MAX, 100] {
            let index = Auto::with_config(
                128,
                AutoConfig {
                    threshold,
                    ..AutoConfig::default()
                },
            );
            index
                .extend(
                    ids.iter()
                        .zip(vectors.chunks_exact(128))
                        .map(|(&id, v)| (id, v)),
                )
                .unwrap();
            assert_eq!(index.is_approximate(), threshold == 100);
            let gone = ids[10];
            index.remove(gone).unwrap();
            let copy: Vec<f32> = ids
                .iter()
                .flat_map(|&id| index.vector(id).unwrap_or_else(|| vec![0.0; 128]))
                .collect();
            let stored = neighbours_within(&Stored::new(&index, &ids), 0.5, 64, &config);
            let copied = neighbours_within(&Dense::new(&copy, 128), 0.5, 64, &config);
            assert_eq!(stored, copied, "threshold {threshold}");
            let stored = as_faces(&stored, &ids);
            assert!(stored[10].is_empty());
            assert!(stored.iter().all(|l| l.iter().all(|nb| nb.id != gone)));
            assert!(stored.iter().filter(|l| !l.is_empty()).count() > n / 2);
        }
    }
}
