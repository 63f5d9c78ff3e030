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

/// For each of the `n = vectors.len() / dimensions` unit vectors (row `i` is `ids[i]`), the
/// others at `min_similarity` or more, best first (ties by lower id), at most `limit`.
/// Rows must be unit length (as the index stores them).
pub fn neighbours_within(
    ids: &[i64],
    vectors: &[f32],
    dimensions: usize,
    min_similarity: f32,
    limit: usize,
    config: &JoinConfig,
) -> Vec<Vec<Neighbour>> {
    let n = ids.len();
    assert_eq!(vectors.len(), n * dimensions, "one row per id");
    let sets = if n < config.exact_below {
        1
    } else {
        config.pivot_sets.max(1)
    };
    let found: Vec<(u32, u32, f32)> = (0..sets)
        .flat_map(|set| cell_pairs(vectors, dimensions, min_similarity, config, set, sets))
        .collect();
    let threads = config.threads.max(1);

    // Rows' neighbours as (row, similarity), best first, at most `limit`.
    let mut local: Vec<Vec<(u32, f32)>> = vec![Vec::new(); n];
    let add = |local: &mut Vec<Vec<(u32, f32)>>, pairs: Vec<(u32, u32, f32)>| {
        for (i, j, s) in pairs {
            local[i as usize].push((j, s));
            local[j as usize].push((i, s));
        }
        for list in local.iter_mut() {
            // Several pivot sets find a pair once each.
            list.sort_unstable_by_key(|e| e.0);
            list.dedup_by_key(|e| e.0);
            list.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            list.truncate(limit);
        }
    };
    add(&mut local, found);
    for _ in 0..config.refine_rounds {
        let more = two_hop_pairs(
            &local,
            vectors,
            dimensions,
            min_similarity,
            config.refine_fanout,
            threads,
        );
        if more.is_empty() {
            break;
        }
        add(&mut local, more);
    }
    local
        .into_iter()
        .map(|list| {
            let mut list: Vec<Neighbour> = list
                .into_iter()
                .map(|(j, s)| Neighbour {
                    id: ids[j as usize],
                    similarity: crate::clamp_similarity(s),
                })
                .collect();
            crate::sort_best_first(&mut list);
            list
        })
        .collect()
}

/// The close pairs one set of cells finds (set `set` of `sets`; see the module docs).
fn cell_pairs(
    vectors: &[f32],
    dimensions: usize,
    min_similarity: f32,
    config: &JoinConfig,
    set: usize,
    sets: usize,
) -> Vec<(u32, u32, f32)> {
    let n = vectors.len() / dimensions;
    let row = |i: usize| &vectors[i * dimensions..(i + 1) * dimensions];
    let threads = config.threads.max(1);

    // Cells: every vector in the cells of its `probes` most similar pivots; small sets are
    // one cell.
    let (members, cells_of) = if n < config.exact_below {
        (vec![(0..n as u32).collect::<Vec<u32>>()], None)
    } else {
        let cells = (n / config.cell_size.max(1)).max(config.probes.max(1));
        let probes = config.probes.clamp(1, cells);
        // Evenly spaced rows; each further set starts a fraction of a step later.
        let step = n as f64 / cells as f64;
        let offset = step * set as f64 / sets as f64;
        let mut pivots = Vec::with_capacity(cells * dimensions);
        for c in 0..cells {
            pivots.extend_from_slice(row(((c as f64 * step + offset) as usize).min(n - 1)));
        }
        let cells_of: Vec<Vec<u32>> =
            crate::parallel_map(n, threads, |i, scores: &mut Vec<f32>| {
                scores.resize(cells, 0.0);
                kernel::dots(&pivots, dimensions, row(i), scores);
                let mut order: Vec<u32> = (0..cells as u32).collect();
                order.select_nth_unstable_by(probes - 1, |a, b| {
                    scores[*b as usize].total_cmp(&scores[*a as usize])
                });
                order.truncate(probes);
                order.sort_unstable();
                order
            });
        let mut members = vec![Vec::new(); cells];
        for (i, cs) in cells_of.iter().enumerate() {
            for &c in cs {
                members[c as usize].push(i as u32);
            }
        }
        (members, Some(cells_of))
    };

    // Pairs, cell by cell, biggest cells first so the threads finish together.
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_unstable_by_key(|&c| std::cmp::Reverse(members[c].len()));
    let found: Vec<Vec<(u32, u32, f32)>> = {
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut pairs = Vec::new();
                        let mut block = Vec::new();
                        let mut scores = Vec::new();
                        loop {
                            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(&cell) = order.get(k) else {
                                break pairs;
                            };
                            let items = &members[cell];
                            block.clear();
                            for &i in items {
                                block.extend_from_slice(row(i as usize));
                            }
                            for (a, &i) in items.iter().enumerate() {
                                let rest = &block[(a + 1) * dimensions..];
                                scores.resize(items.len() - a - 1, 0.0);
                                kernel::dots(rest, dimensions, row(i as usize), &mut scores);
                                for (b, &s) in scores.iter().enumerate() {
                                    if s < min_similarity {
                                        continue;
                                    }
                                    let j = items[a + 1 + b];
                                    // Counted once: in the first cell both are in.
                                    let first = match &cells_of {
                                        Some(cells_of) => first_shared(
                                            &cells_of[i as usize],
                                            &cells_of[j as usize],
                                        ),
                                        None => Some(cell as u32),
                                    };
                                    if first == Some(cell as u32) {
                                        pairs.push((i, j, s));
                                    }
                                }
                            }
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a join worker panicked"))
                .collect()
        })
    };
    found.into_iter().flatten().collect()
}

/// The close pairs a row's neighbours' neighbours add (one round of neighbourhood
/// refinement, as in NN-descent): for each row `i`, every row `k > i` among the `fanout`
/// best neighbours of its `fanout` best neighbours that is not yet its neighbour,
/// compared exactly. Faces of one person are close to one another, so a pair the cells
/// missed is usually two hops apart; each pair is found once, from its lower row.
fn two_hop_pairs(
    local: &[Vec<(u32, f32)>],
    vectors: &[f32],
    dimensions: usize,
    min_similarity: f32,
    fanout: usize,
    threads: usize,
) -> Vec<(u32, u32, f32)> {
    let row = |i: usize| &vectors[i * dimensions..(i + 1) * dimensions];
    let found = crate::parallel_map(
        local.len(),
        threads,
        |i, (known, candidates): &mut (Vec<u32>, Vec<u32>)| {
            known.clear();
            known.extend(local[i].iter().map(|&(j, _)| j));
            known.sort_unstable();
            candidates.clear();
            for &(j, _) in local[i].iter().take(fanout) {
                for &(k, _) in local[j as usize].iter().take(fanout) {
                    if k as usize > i && known.binary_search(&k).is_err() {
                        candidates.push(k);
                    }
                }
            }
            candidates.sort_unstable();
            candidates.dedup();
            candidates
                .iter()
                .filter_map(|&k| {
                    let s = kernel::dot(row(i), row(k as usize));
                    (s >= min_similarity).then_some((i as u32, k, s))
                })
                .collect::<Vec<_>>()
        },
    );
    found.into_iter().flatten().collect()
}

/// The smallest cell in both sorted lists.
fn first_shared(a: &[u32], b: &[u32]) -> Option<u32> {
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

    fn faces(n: usize) -> Vec<f32> {
        let generator = FaceGenerator::new(Params::sface_like(n / 10, 3));
        (0..n).flat_map(|i| generator.face(i)).collect()
    }

    #[test]
    fn small_sets_are_exact() {
        let d = 128;
        let vectors = faces(600);
        let ids: Vec<i64> = (0..600).collect();
        let got = neighbours_within(&ids, &vectors, d, 0.5, 64, &JoinConfig::default());
        let got: Vec<Vec<i64>> = got
            .into_iter()
            .map(|l| l.into_iter().map(|nb| nb.id).collect())
            .collect();
        assert_eq!(got, exact(&vectors, d, 0.5));
    }

    #[test]
    fn cells_find_nearly_every_close_pair_once() {
        let d = 128;
        let n = 2_500;
        let vectors = faces(n);
        let ids: Vec<i64> = (0..n as i64).map(|i| i * 3 + 1).collect();
        let config = JoinConfig {
            exact_below: 0,
            cell_size: 50,
            ..JoinConfig::default()
        };
        let got = neighbours_within(&ids, &vectors, d, 0.5, 64, &config);
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
        let got = neighbours_within(&ids, vectors, 128, 0.5, 64, config);
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
            exact_below: 0,
            cell_size: 50,
            probes: 2,
            pivot_sets: 1,
            refine_rounds: 0,
            ..JoinConfig::default()
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
}
