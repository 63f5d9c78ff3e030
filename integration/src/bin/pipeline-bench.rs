//! End-to-end benchmark: images/s from `SubmitImages` to `done`, through the real
//! receiver, RabbitMQ, processor(s), recognition and PostgreSQL, beside the recognition
//! service's own capacity measured in the same run (`RecognizeBatch` straight at it, the
//! processor's batch size and concurrency, no queue, no database). Then the submit-to-done
//! latency at half of that capacity, from the rows' own timestamps.
//!
//! `cargo run --release -p facewire-integration --bin pipeline-bench`
//!
//! Needs the models (scripts/setup) and the photos (scripts/fetch-testdata). Prints
//! numbers; asserts nothing about time.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use clap::Parser;
use facewire_integration::{workspace_root, Backends, Service};
use facewire_proto::v1::{
    recognition_service_client::RecognitionServiceClient, submit_result::Outcome, BatchImage,
    RecognizeBatchRequest,
};
use facewire_storage::{ImageStatus, Store, StoreOptions};

#[derive(Parser)]
struct Args {
    /// Images per throughput measurement.
    #[arg(long, default_value_t = 400)]
    images: usize,
    /// Images per recognition call (the processor's FACEWIRE_BATCH).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Recognition calls in flight per processor (the processor's FACEWIRE_WORKERS).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Seconds of steady submissions in the half-load latency run.
    #[arg(long, default_value_t = 20)]
    half_load_seconds: u64,
}

/// The labeled photos of dlib's johns set, every file under `testdata/dlib/johns`.
fn photos() -> Vec<PathBuf> {
    let root = workspace_root().join("testdata/dlib/johns");
    let mut all = Vec::new();
    for person in std::fs::read_dir(&root).expect("run scripts/fetch-testdata") {
        let dir = person.expect("read johns").path();
        for photo in std::fs::read_dir(&dir).expect("read person") {
            let path = photo.expect("read photo").path();
            if path.extension().is_some_and(|e| e == "jpg") {
                all.push(path);
            }
        }
    }
    all.sort();
    all
}

/// `count` images named `img<i>.jpg` in `dir`, cycling through the photos.
fn fill_image_root(dir: &Path, photos: &[PathBuf], count: usize) -> Vec<Vec<u8>> {
    let mut bytes = Vec::new();
    for i in 0..count {
        let data = std::fs::read(&photos[i % photos.len()]).expect("read photo");
        std::fs::write(dir.join(format!("img{i}.jpg")), &data).expect("write image");
        if i < photos.len() {
            bytes.push(data);
        }
    }
    bytes
}

/// Images/s of `RecognizeBatch` with `concurrency` calls of `batch` images in flight.
async fn recognition_capacity(url: &str, photos: &[Vec<u8>], args: &Args, calls: usize) -> f64 {
    let concurrency = args.workers;
    let per_task = calls.div_ceil(concurrency);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let mut client = RecognitionServiceClient::connect(url.to_string())
            .await
            .expect("connect to recognition")
            .max_decoding_message_size(64 * 1024 * 1024);
        let photos = photos.to_vec();
        let batch = args.batch;
        tasks.push(tokio::spawn(async move {
            for c in 0..per_task {
                let images = (0..batch)
                    .map(|i| {
                        let n = (t * per_task + c) * batch + i;
                        BatchImage {
                            key: n.to_string(),
                            image: photos[n % photos.len()].clone(),
                        }
                    })
                    .collect();
                let response = client
                    .recognize_batch(RecognizeBatchRequest { images })
                    .await
                    .expect("RecognizeBatch");
                assert_eq!(response.into_inner().results.len(), batch);
            }
        }));
    }
    for t in tasks {
        t.await.expect("capacity task");
    }
    (per_task * concurrency * args.batch) as f64 / started.elapsed().as_secs_f64()
}

/// Submits `paths` in batches of 100 and returns the accepted ids.
async fn submit(receiver: &Service, paths: &[String]) -> Vec<i64> {
    let mut client = receiver.client().await;
    let mut ids = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(100) {
        for result in client.submit_images(chunk.to_vec()).await.expect("submit") {
            match result.outcome {
                Some(Outcome::Image(image)) => ids.push(image.id),
                other => panic!("refused: {other:?}"),
            }
        }
    }
    ids
}

/// Waits until every one of `ids` is terminal; returns the count that ended `done`.
async fn wait_all(store: &Store, ids: &[i64]) -> Vec<facewire_storage::ImageRecord> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let rows = store.get_many(ids.to_vec()).await.expect("read rows");
        let terminal = rows.iter().all(|r| {
            matches!(
                r.status,
                ImageStatus::Done | ImageStatus::NoFace | ImageStatus::Failed
            )
        });
        if terminal && rows.len() == ids.len() {
            return rows;
        }
        assert!(Instant::now() < deadline, "images did not finish in 10 min");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Throughput of a whole run from the rows' timestamps: first created to last updated.
fn rows_per_second(rows: &[facewire_storage::ImageRecord]) -> f64 {
    let first = rows.iter().map(|r| r.created_at).min().unwrap_or(0);
    let last = rows.iter().map(|r| r.updated_at).max().unwrap_or(0);
    rows.len() as f64 / ((last - first).max(1) as f64 / 1000.0)
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

fn describe(rows: &[facewire_storage::ImageRecord]) -> String {
    let done = rows
        .iter()
        .filter(|r| r.status == ImageStatus::Done)
        .count();
    format!("{done}/{} done", rows.len())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let backends = Backends::production();
    let images = tempfile::tempdir()?;
    let photos = photos();
    let bytes = fill_image_root(images.path(), &photos, args.images);
    let paths: Vec<String> = (0..args.images).map(|i| format!("img{i}.jpg")).collect();

    let mut env: HashMap<String, String> = backends.env.clone();
    env.insert(
        "FACEWIRE_IMAGE_ROOT".into(),
        images.path().display().to_string(),
    );
    env.insert("FACEWIRE_LOG".into(), "warn".into());
    env.insert("FACEWIRE_BATCH".into(), args.batch.to_string());
    env.insert("FACEWIRE_WORKERS".into(), args.workers.to_string());

    let recognition = Service::spawn(&["recognition"], &env).await;
    let url = recognition.grpc_url();
    env.insert("FACEWIRE_RECOGNITION_URL".into(), url.clone());
    // Warm up, then measure recognition alone.
    recognition_capacity(&url, &bytes, &args, args.workers * 2).await;
    let calls = args.images.div_ceil(args.batch);
    let capacity = recognition_capacity(&url, &bytes, &args, calls).await;

    let store = Store::open(&backends.database_url(), StoreOptions::default()).await?;
    let receiver = Service::spawn(&["receiver"], &env).await;
    let mut processors = vec![Service::spawn(&["processor"], &env).await];
    // Warm the processor's connections with a small run before measuring.
    let warm = submit(&receiver, &paths[..args.batch * 2]).await;
    wait_all(&store, &warm).await;

    let mut runs = Vec::new();
    for n in [1, 2] {
        while processors.len() < n {
            processors.push(Service::spawn(&["processor"], &env).await);
        }
        let ids = submit(&receiver, &paths).await;
        let rows = wait_all(&store, &ids).await;
        runs.push((n, rows_per_second(&rows), describe(&rows)));
    }

    // Half load: one image at a time at half the measured capacity, one processor.
    while processors.len() > 1 {
        let mut p = processors.pop().expect("a processor");
        p.terminate();
        p.wait(Duration::from_secs(30)).await;
    }
    let rate = capacity / 2.0;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (rate * args.half_load_seconds as f64).round().max(1.0) as usize;
    let mut client = receiver.client().await;
    let mut ids = Vec::with_capacity(total);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..total {
        tick.tick().await;
        let path = paths[i % paths.len()].clone();
        for result in client.submit_images(vec![path]).await? {
            if let Some(Outcome::Image(image)) = result.outcome {
                ids.push(image.id);
            }
        }
    }
    let rows = wait_all(&store, &ids).await;
    let mut latencies: Vec<i64> = rows.iter().map(|r| r.updated_at - r.created_at).collect();
    latencies.sort_unstable();

    println!(
        "pipeline benchmark: {} johns photos per run, batches of {}, {} calls in flight per processor,",
        args.images, args.batch, args.workers
    );
    println!("PostgreSQL + RabbitMQ on 127.0.0.1, one recognition replica, all on this machine");
    println!("{:<44} {:>10} {:>10}", "", "images/s", "of capacity");
    println!(
        "{:<44} {:>10.1} {:>10}",
        "recognition alone (RecognizeBatch)", capacity, "100 %"
    );
    for (n, rate, outcome) in &runs {
        println!(
            "{:<44} {:>10.1} {:>8.0} %   ({outcome})",
            format!(
                "submit -> done, {n} processor{}",
                if *n == 1 { "" } else { "s" }
            ),
            rate,
            100.0 * rate / capacity
        );
    }
    println!(
        "half load ({:.1} images/s for {} s, {}): submit -> done p50 {} ms, p99 {} ms, max {} ms",
        rate,
        args.half_load_seconds,
        describe(&rows),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0)
    );
    println!("target: >= 90 % of recognition's capacity");
    Ok(())
}
