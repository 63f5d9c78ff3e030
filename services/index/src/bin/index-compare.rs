//! Measures vector-index candidates on the same SFace-like data and prints a table.
//!
//! ```text
//! index-compare --faces 100000 [--candidates exact,usearch-f32,usearch-f16,usearch-i8]
//!               [--threads 1,2] [--queries 1000] [--ef 64] [--m 16] [--ef-add 128]
//! ```
//!
//! Each candidate runs in its own child process (this binary with `--candidate`), so the
//! resident memory reported is that candidate's alone. The exact child runs first and writes
//! the true top 10 of every query to a file; the others score their recall against it.
//! Faces are streamed from the generator (never all held at once), so the data set does not
//! count towards a candidate's memory and generating it does not count towards build time.
//! Build with `--release`; add `--features compare-hnsw-rs` for the `hnsw_rs` candidate.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use facewire_index::synthetic::{FaceGenerator, Params};
use facewire_index::{Exact, Hnsw, HnswConfig, Quantization, VectorIndex};

const SEED: u64 = 2024;
const K: usize = 10;
/// Single inserts and deletes timed after the build.
const CHANGES: usize = 1000;
/// Faces generated (untimed) and handed to the index per timed bulk call.
const BATCH: usize = 16_384;

#[derive(Clone)]
struct Args {
    faces: usize,
    queries: usize,
    candidates: Vec<String>,
    threads: Vec<usize>,
    ef: usize,
    m: usize,
    ef_add: usize,
    candidate: Option<String>,
    truth: Option<String>,
    /// Further `ef` values to query the same build with.
    ef_sweep: Vec<usize>,
}

fn parse_args() -> Args {
    let mut args = Args {
        faces: 100_000,
        queries: 1000,
        candidates: ["exact", "usearch-f32", "usearch-f16", "usearch-i8"]
            .map(String::from)
            .to_vec(),
        threads: vec![1, 2],
        ef: 64,
        m: 16,
        ef_add: 128,
        candidate: None,
        truth: None,
        ef_sweep: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--faces" => args.faces = value().parse().expect("--faces: a number"),
            "--queries" => args.queries = value().parse().expect("--queries: a number"),
            "--candidates" => args.candidates = value().split(',').map(String::from).collect(),
            "--threads" => {
                args.threads = value()
                    .split(',')
                    .map(|t| t.parse().expect("--threads: numbers"))
                    .collect()
            }
            "--ef" => args.ef = value().parse().expect("--ef: a number"),
            "--m" => args.m = value().parse().expect("--m: a number"),
            "--ef-add" => args.ef_add = value().parse().expect("--ef-add: a number"),
            "--candidate" => args.candidate = Some(value()),
            "--truth" => args.truth = Some(value()),
            "--ef-sweep" => {
                args.ef_sweep = value()
                    .split(',')
                    .map(|t| t.parse().expect("--ef-sweep: numbers"))
                    .collect()
            }
            other => panic!("unknown flag {other}; see the doc comment of index-compare.rs"),
        }
    }
    args
}

fn main() {
    let args = parse_args();
    match args.candidate.clone() {
        Some(name) => run_one(&args, &name, args.threads[0]),
        None => drive(&args),
    }
}

/// Runs every candidate in a child process and prints the table.
fn drive(args: &Args) {
    let generator = generator(args.faces);
    let (same, different) = similarity_stats(&generator);
    println!(
        "{} faces ({} people x 10), 128-d; same person {:.3} ± {:.3}, different {:.3} ± {:.3}; \
         {} queries (new photos of known people), k = {K}; HNSW M = {}, ef_add = {}, ef = {}",
        args.faces,
        args.faces / 10,
        same.0,
        same.1,
        different.0,
        different.1,
        args.queries,
        args.m,
        args.ef_add,
        args.ef
    );
    println!();
    println!(
        "| candidate | build threads | build s | insert p50 µs | insert+search p50 µs | delete p50 µs \
         | query p50 µs | query p99 µs | recall@1 | recall@10 | RSS MiB | index MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let truth = std::env::temp_dir().join(format!("index-compare-truth-{}.bin", args.faces));
    let truth = truth.to_str().expect("temp path is UTF-8").to_owned();
    let exe = std::env::current_exe().expect("own path");
    let mut runs: Vec<(String, usize)> = vec![("exact".into(), 1)];
    for name in args.candidates.iter().filter(|c| *c != "exact") {
        for &t in &args.threads {
            runs.push((name.clone(), t));
        }
    }
    for (name, threads) in runs {
        let output = Command::new(&exe)
            .args(["--faces", &args.faces.to_string()])
            .args(["--queries", &args.queries.to_string()])
            .args(["--ef", &args.ef.to_string()])
            .args(["--m", &args.m.to_string()])
            .args(["--ef-add", &args.ef_add.to_string()])
            .args(["--threads", &threads.to_string()])
            .args(["--candidate", &name])
            .args(["--truth", &truth])
            .args(if args.ef_sweep.is_empty() {
                vec![]
            } else {
                let list: Vec<String> = args.ef_sweep.iter().map(|e| e.to_string()).collect();
                vec!["--ef-sweep".to_owned(), list.join(",")]
            })
            .output()
            .expect("run a candidate");
        if output.status.success() {
            print!("{}", String::from_utf8_lossy(&output.stdout));
        } else {
            println!(
                "| {name} | {threads} | failed: {} |",
                String::from_utf8_lossy(&output.stderr)
                    .trim()
                    .replace('\n', " ")
            );
        }
        std::io::stdout().flush().ok();
    }
}

fn generator(faces: usize) -> FaceGenerator {
    FaceGenerator::new(Params::sface_like((faces / 10).max(1), SEED))
}

fn similarity_stats(generator: &FaceGenerator) -> ((f64, f64), (f64, f64)) {
    let people = generator.params().identities;
    let (mut same, mut different) = (Vec::new(), Vec::new());
    for p in 0..people.min(2000) {
        let a = generator.face(p);
        let b = generator.face(p + people);
        let c = generator.face((p + 1) % people);
        same.push(dot(&a, &b));
        different.push(dot(&a, &c));
    }
    (mean_sd(&same), mean_sd(&different))
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    (
        mean,
        (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt(),
    )
}

/// What the measurement needs from a candidate.
trait Candidate {
    /// Adds a batch (parallel where the candidate can).
    fn add_batch(&mut self, batch: Vec<(i64, Vec<f32>)>);
    fn insert(&mut self, id: i64, vector: &[f32]);
    /// `None` when the candidate cannot delete.
    fn remove(&mut self, id: i64) -> Option<bool>;
    fn search(&self, query: &[f32], k: usize) -> Vec<i64>;
    /// Changes the search breadth; false when the candidate has none.
    fn set_ef(&mut self, _ef: usize) -> bool {
        false
    }
}

struct Ours<T: VectorIndex>(T);

/// The methods both of our indexes share through `VectorIndex`.
macro_rules! ours_common {
    () => {
        fn add_batch(&mut self, batch: Vec<(i64, Vec<f32>)>) {
            self.0.extend(batch).expect("extend");
        }
        fn insert(&mut self, id: i64, vector: &[f32]) {
            self.0.upsert(id, vector).expect("upsert");
        }
        fn remove(&mut self, id: i64) -> Option<bool> {
            Some(self.0.remove(id).expect("remove"))
        }
        fn search(&self, query: &[f32], k: usize) -> Vec<i64> {
            self.0
                .search(query, k)
                .expect("search")
                .iter()
                .map(|n| n.id)
                .collect()
        }
    };
}

impl Candidate for Ours<Exact> {
    ours_common!();
}

impl Candidate for Ours<Hnsw> {
    ours_common!();
    fn set_ef(&mut self, ef: usize) -> bool {
        self.0.set_expansion_search(ef);
        true
    }
}

#[cfg(feature = "compare-hnsw-rs")]
mod hnsw_rs_candidate {
    use hnsw_rs::prelude::{DistDot, Hnsw};

    /// hnsw_rs has no delete: a removal would be a tombstone plus filtered search.
    /// Its `DistDot` asserts `1 - dot >= 0`, which rounding breaks for a vector and itself,
    /// so vectors are shrunk by a hair (the order of dot products is unchanged).
    const SHRINK: f32 = 1.0 - 1e-5;

    fn shrunk(v: &[f32]) -> Vec<f32> {
        v.iter().map(|x| x * SHRINK).collect()
    }
    pub struct HnswRs {
        pub graph: Hnsw<'static, f32, DistDot>,
        pub threads: usize,
        pub ef: usize,
    }

    impl HnswRs {
        pub fn new(capacity: usize, m: usize, ef_add: usize, ef: usize, threads: usize) -> Self {
            HnswRs {
                graph: Hnsw::new(m, capacity, 16, ef_add, DistDot {}),
                threads,
                ef,
            }
        }
    }

    impl super::Candidate for HnswRs {
        fn add_batch(&mut self, batch: Vec<(i64, Vec<f32>)>) {
            let chunk = batch.len().div_ceil(self.threads).max(1);
            let graph = &self.graph;
            std::thread::scope(|scope| {
                for part in batch.chunks(chunk) {
                    scope.spawn(move || {
                        for (id, v) in part {
                            graph.insert_slice((&shrunk(v), *id as usize));
                        }
                    });
                }
            });
        }
        fn insert(&mut self, id: i64, vector: &[f32]) {
            self.graph.insert_slice((&shrunk(vector), id as usize));
        }
        fn remove(&mut self, _id: i64) -> Option<bool> {
            None
        }
        fn set_ef(&mut self, ef: usize) -> bool {
            self.ef = ef;
            true
        }
        fn search(&self, query: &[f32], k: usize) -> Vec<i64> {
            self.graph
                .search(&shrunk(query), k, self.ef.max(k))
                .iter()
                .map(|n| n.d_id as i64)
                .collect()
        }
    }
}

fn make(args: &Args, name: &str, threads: usize) -> Box<dyn Candidate> {
    let usearch = |quantization| {
        let config = HnswConfig {
            connectivity: args.m,
            expansion_add: args.ef_add,
            expansion_search: args.ef,
            quantization,
            threads,
        };
        Box::new(Ours(Hnsw::new(128, config).expect("usearch index"))) as Box<dyn Candidate>
    };
    match name {
        "exact" => Box::new(Ours(Exact::new(128))),
        "usearch-f32" => usearch(Quantization::F32),
        "usearch-f16" => usearch(Quantization::F16),
        "usearch-i8" => usearch(Quantization::I8),
        #[cfg(feature = "compare-hnsw-rs")]
        "hnsw_rs" => Box::new(hnsw_rs_candidate::HnswRs::new(
            args.faces + CHANGES,
            args.m,
            args.ef_add,
            args.ef,
            threads,
        )),
        other => panic!("unknown candidate {other} (hnsw_rs needs --features compare-hnsw-rs)"),
    }
}

/// Builds one candidate, measures it, prints one table row.
fn run_one(args: &Args, name: &str, threads: usize) {
    let generator = generator(args.faces);
    let queries: Vec<Vec<f32>> = (0..args.queries).map(|j| generator.query(j)).collect();
    let rss_before = rss_kib("VmRSS");
    let mut index = make(args, name, threads);

    // Build: generation untimed, insertion timed.
    let mut build = Duration::ZERO;
    let mut next = 0;
    while next < args.faces {
        let end = (next + BATCH).min(args.faces);
        let batch: Vec<(i64, Vec<f32>)> =
            (next..end).map(|i| (i as i64, generator.face(i))).collect();
        let started = Instant::now();
        index.add_batch(batch);
        build += started.elapsed();
        next = end;
    }

    // One change at a time, as the services make them: insert, insert + neighbours, delete.
    let fresh: Vec<(i64, Vec<f32>)> = (0..CHANGES)
        .map(|i| ((args.faces + i) as i64, generator.face(args.faces + i)))
        .collect();
    let (mut insert, mut insert_search, mut delete) = (Vec::new(), Vec::new(), Vec::new());
    for (id, v) in &fresh {
        let started = Instant::now();
        index.insert(*id, v);
        let inserted = started.elapsed();
        std::hint::black_box(index.search(v, K));
        insert.push(inserted);
        insert_search.push(started.elapsed());
    }
    let mut can_delete = true;
    for (id, _) in &fresh {
        let started = Instant::now();
        match index.remove(*id) {
            Some(removed) => assert!(removed, "{id} was inserted"),
            None => can_delete = false,
        }
        delete.push(started.elapsed());
    }

    // Queries, single-threaded, and recall against the exact answers.
    let mut found = Vec::with_capacity(queries.len());
    let mut query_times = Vec::with_capacity(queries.len());
    for q in &queries {
        let started = Instant::now();
        let ids = index.search(q, K);
        query_times.push(started.elapsed());
        found.push(ids);
    }
    let truth_path = args.truth.as_deref().expect("--truth");
    let (recall1, recall10) = if name == "exact" {
        write_truth(truth_path, &found);
        (1.0, 1.0)
    } else {
        let truth = read_truth(truth_path, queries.len());
        let mut ids = found.clone();
        if !can_delete {
            // Without deletes the fresh faces are still in the graph: ignore them.
            for f in &mut ids {
                f.retain(|id| (*id as usize) < args.faces);
            }
        }
        recall(&truth, &ids)
    };
    let rss = rss_kib("VmRSS");
    let micros = |d: &mut Vec<Duration>, p: f64| {
        d.sort();
        d[((d.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6
    };
    let delete = if can_delete {
        format!("{:.0}", micros(&mut delete, 0.5))
    } else {
        "no delete".into()
    };
    println!(
        "| {name} | {threads} | {:.1} | {:.0} | {:.0} | {delete} | {:.0} | {:.0} | {recall1:.4} | {recall10:.4} | {:.0} | {:.0} |",
        build.as_secs_f64(),
        micros(&mut insert, 0.5),
        micros(&mut insert_search, 0.5),
        micros(&mut query_times, 0.5),
        micros(&mut query_times, 0.99),
        rss as f64 / 1024.0,
        (rss - rss_before) as f64 / 1024.0,
    );

    // The same build searched more broadly or narrowly.
    if name == "exact" {
        return;
    }
    let truth = read_truth(truth_path, queries.len());
    for &ef in &args.ef_sweep {
        if !index.set_ef(ef) {
            break;
        }
        let mut times = Vec::with_capacity(queries.len());
        let mut found = Vec::with_capacity(queries.len());
        for q in &queries {
            let started = Instant::now();
            let mut ids = index.search(q, K);
            times.push(started.elapsed());
            ids.retain(|id| can_delete || (*id as usize) < args.faces);
            found.push(ids);
        }
        let (recall1, recall10) = recall(&truth, &found);
        println!(
            "| {name}, ef = {ef} | same build | | | | | {:.0} | {:.0} | {recall1:.4} | {recall10:.4} | | |",
            micros(&mut times, 0.5),
            micros(&mut times, 0.99),
        );
    }
}

fn recall(truth: &[Vec<i64>], found: &[Vec<i64>]) -> (f64, f64) {
    let (mut at1, mut at10, mut total10) = (0usize, 0usize, 0usize);
    for (t, f) in truth.iter().zip(found) {
        at1 += usize::from(f.first() == t.first());
        at10 += t.iter().filter(|id| f.contains(id)).count();
        total10 += t.len();
    }
    (
        at1 as f64 / truth.len() as f64,
        at10 as f64 / total10 as f64,
    )
}

fn write_truth(path: &str, found: &[Vec<i64>]) {
    let mut bytes = Vec::new();
    for ids in found {
        for slot in 0..K {
            bytes.extend_from_slice(&ids.get(slot).copied().unwrap_or(-1).to_le_bytes());
        }
    }
    std::fs::write(path, bytes).expect("write the truth file");
}

fn read_truth(path: &str, queries: usize) -> Vec<Vec<i64>> {
    let bytes = std::fs::read(path).expect("the truth file (the exact candidate runs first)");
    assert_eq!(
        bytes.len(),
        queries * K * 8,
        "truth file is for another run"
    );
    bytes
        .chunks_exact(K * 8)
        .map(|row| {
            row.chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .filter(|id| *id >= 0)
                .collect()
        })
        .collect()
}

/// A field of /proc/self/status in KiB.
fn rss_kib(field: &str) -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
