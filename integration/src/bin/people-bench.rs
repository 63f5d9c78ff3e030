//! People benchmarks, on fresh SQLite and PostgreSQL databases:
//! - writing face rows through the processor's own write path (`Store::finish`);
//! - "every photo of a person" (`ListImages` with one person, and with two: AND) at
//!   `--images` images and three faces each, p50 / p99;
//! - re-matching after enrolling one person, over `--unassigned` stored unassigned
//!   faces (embeddings only: no image is decoded), in seconds and faces/s.
//!
//! `cargo build --release -p facewire-integration --bin people-bench && target/release/people-bench`
//!
//! Needs the models (scripts/setup) for the recognizer the re-match runs on. Prints
//! numbers; asserts nothing about time.

use std::{sync::Arc, time::Instant};

use clap::Parser;
use facewire_integration::workspace_root;
use facewire_recognition::{load_recognizer, People, RecognizerArgs, Roster};
use facewire_storage::{
    gallery::NewFace, testing::TestDatabase, DetectedFace, ImageFilter, NewImage, Outcome, Store,
    StoreOptions,
};

#[derive(Parser)]
struct Args {
    /// Images in the query benchmark (three faces each).
    #[arg(long, default_value_t = 100_000)]
    images: usize,
    /// People the query benchmark's faces belong to.
    #[arg(long, default_value_t = 1_000)]
    people: usize,
    /// Stored unassigned faces in the re-match benchmark.
    #[arg(long, default_value_t = 100_000)]
    unassigned: usize,
    /// Queries timed per measurement.
    #[arg(long, default_value_t = 300)]
    queries: usize,
    /// Only this backend: sqlite or postgres.
    #[arg(long)]
    only: Option<String>,
}

/// A small deterministic generator (xorshift), so every run builds the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
    fn vector(&mut self) -> Vec<f32> {
        let mut v: Vec<f32> = (0..128).map(|_| self.unit()).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Records `n` images and writes `faces(i)` for each through the processor's path, in
/// batches as the processor would. Returns the ids and the faces/s written.
async fn fill(
    store: &Store,
    n: usize,
    mut faces: impl FnMut(usize) -> Vec<DetectedFace>,
) -> anyhow::Result<(Vec<i64>, f64)> {
    let mut ids = Vec::with_capacity(n);
    let mut written = 0usize;
    let mut writing = std::time::Duration::ZERO;
    for start in (0..n).step_by(500) {
        let end = (start + 500).min(n);
        let new = (start..end)
            .map(|i| NewImage {
                path: format!("p/{i}.jpg"),
                content_hash: format!("{i:064x}"),
            })
            .collect();
        let batch: Vec<i64> = store
            .insert_batch(new)
            .await?
            .iter()
            .map(|r| r.id)
            .collect();
        let claims = store.claim(batch.clone()).await?;
        let outcomes: Vec<_> = claims
            .into_iter()
            .enumerate()
            .map(|(k, c)| {
                let f = faces(start + k);
                written += f.len();
                (c, Outcome::Done(f))
            })
            .collect();
        let t = Instant::now();
        // The processor finishes at most its batch (8) per transaction.
        for chunk in outcomes.chunks(8) {
            store.finish(chunk.to_vec()).await?;
        }
        writing += t.elapsed();
        ids.extend(batch);
    }
    Ok((ids, written as f64 / writing.as_secs_f64()))
}

/// Times `queries` queries, each for the people `pick` chooses.
async fn time_queries(
    store: &Store,
    queries: usize,
    mut pick: impl FnMut() -> Vec<i64>,
) -> anyhow::Result<(f64, f64, usize)> {
    let mut times = Vec::with_capacity(queries);
    let mut found = 0;
    for _ in 0..queries {
        let person_ids = pick();
        let t = Instant::now();
        let page = store
            .list_filtered(
                ImageFilter {
                    person_ids,
                    ..ImageFilter::default()
                },
                None,
                50,
            )
            .await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        found += page.len();
    }
    times.sort_by(f64::total_cmp);
    Ok((
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        found / queries,
    ))
}

async fn query_bench(name: &str, store: Store, args: &Args) -> anyhow::Result<()> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut people = Vec::with_capacity(args.people);
    for i in 0..args.people {
        people.push(store.person_for_name(&format!("person {i}")).await?.0);
    }
    let started = Instant::now();
    // People seen together, for the AND query.
    let mut pairs: Vec<Vec<i64>> = Vec::new();
    let (_, faces_per_s) = fill(&store, args.images, |i| {
        let faces: Vec<DetectedFace> = (0..3)
            .map(|k| DetectedFace {
                bbox: [k as f32 * 100.0, 10.0, 80.0, 90.0],
                landmarks: vec![[0.0, 0.0]; 5],
                score: 0.9,
                embedding: Vec::new(),
                crop: None,
                // Most faces named, one in ten unknown.
                matched: (rng.below(10) != 0)
                    .then(|| (people[(i * 7 + k * 13 + rng.below(50)) % people.len()], 0.6)),
            })
            .collect();
        if let (Some(a), Some(b)) = (faces[0].matched, faces[1].matched) {
            if a.0 != b.0 && pairs.len() < 10_000 {
                pairs.push(vec![a.0, b.0]);
            }
        }
        faces
    })
    .await?;
    println!(
        "{name}: {} images, {} faces written in {:.1} s ({faces_per_s:.0} faces/s through Store::finish, 8 images per transaction)",
        args.images,
        args.images * 3,
        started.elapsed().as_secs_f64()
    );
    let mut pick_rng = Rng(7);
    let (p50, p99, n) = time_queries(&store, args.queries, || {
        vec![people[pick_rng.below(people.len())]]
    })
    .await?;
    println!("{name}: images of one person (page of 50, newest first): p50 {p50:.2} ms, p99 {p99:.2} ms, {n} images per page");
    let (p50, p99, n) = time_queries(&store, args.queries, || {
        pairs[pick_rng.below(pairs.len())].clone()
    })
    .await?;
    println!(
        "{name}: images of two people (AND): p50 {p50:.2} ms, p99 {p99:.2} ms, {n} images per page"
    );
    Ok(())
}

async fn rematch_bench(name: &str, store: Store, args: &Args) -> anyhow::Result<()> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    // One identity among the stored faces: 1 % of them are noisy copies of it.
    let identity = rng.vector();
    let mut near = 0;
    fill(&store, args.unassigned, |_| {
        let embedding = if rng.below(100) == 0 {
            near += 1;
            let noise = rng.vector();
            let mut v: Vec<f32> = identity
                .iter()
                .zip(&noise)
                .map(|(a, b)| a + 0.5 * b)
                .collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= n);
            v
        } else {
            rng.vector()
        };
        vec![DetectedFace {
            bbox: [10.0, 10.0, 80.0, 90.0],
            landmarks: vec![[0.0, 0.0]; 5],
            score: 0.9,
            embedding,
            crop: None,
            matched: None,
        }]
    })
    .await?;
    let mut args: RecognizerArgs = facewire_config::declared_defaults();
    args.engine.model_dir = Some(workspace_root().join("models"));
    let recognizer = load_recognizer(args.options()).await?;
    let roster = Arc::new(Roster::open(recognizer.into(), store.clone()).await?);
    // Enrol the identity (the storage call enrolment makes), then re-check.
    store
        .enroll_face(NewFace {
            person: "Enrolled Person".into(),
            content_hash: "bench".into(),
            embedding: identity,
            bbox: [0.0, 0.0, 100.0, 100.0],
            crop: None,
        })
        .await?;
    let people = People::new(roster, None);
    let t = Instant::now();
    let report = people.rematch(false, |_, _| async { true }).await?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{name}: re-match after enrolling one person over {} unassigned faces: {secs:.2} s, {:.0} faces/s, {} named ({near} planted)",
        report.checked,
        report.checked as f64 / secs,
        report.changed
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for backend in ["sqlite", "postgres"] {
        if args.only.as_deref().is_some_and(|o| o != backend) {
            continue;
        }
        for part in ["query", "rematch"] {
            let dir = tempfile::tempdir()?;
            let pg = (backend == "postgres").then(TestDatabase::create);
            let url = match &pg {
                Some(db) => db.url.clone(),
                None => format!("sqlite://{}/bench.db", dir.path().display()),
            };
            let store = Store::open(&url, StoreOptions::default()).await?;
            match part {
                "query" => query_bench(backend, store, &args).await?,
                _ => rematch_bench(backend, store, &args).await?,
            }
        }
    }
    Ok(())
}
