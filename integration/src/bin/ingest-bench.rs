//! Ingest benchmark: `SubmitImages` batches of 100 against the real receiver on
//! PostgreSQL + RabbitMQ, beside the raw bound measured in the same run (one multi-row
//! INSERT of 100 rows + 100 confirmed publishes, no gRPC, no path checks), at the same
//! concurrency. Both receivers are measured: the lean `facewire-receiver` (the receiver's
//! container) and `facewire receiver` (the all-in-one binary, which maps OpenCV too).
//!
//! `cargo run --release -p facewire-integration --bin ingest-bench -- --batches 300`

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use facewire_integration::{facewire_bin, receiver_bin, Backends, Service};
use facewire_queue::{Headers, WorkQueue};
use facewire_storage::{NewImage, Store, StoreOptions};

#[derive(Parser)]
struct Args {
    /// Batches per measurement.
    #[arg(long, default_value_t = 200)]
    batches: usize,
    /// Paths per batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Concurrent clients in the gRPC measurement.
    #[arg(long, default_value_t = 4)]
    clients: usize,
}

struct Summary {
    images_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn summarise(mut latencies: Vec<Duration>, images: usize, wall: Duration) -> Summary {
    latencies.sort();
    let pick = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[i].as_secs_f64() * 1000.0
    };
    Summary {
        images_per_s: images as f64 / wall.as_secs_f64(),
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
    }
}

/// The raw bound: `clients` concurrent loops of one multi-row INSERT of a batch plus its
/// confirmed publishes, over the same number of batches as the receiver gets, so both
/// sides see the same concurrency.
async fn raw_bound(store: &Store, queue: &Arc<dyn WorkQueue>, args: &Args) -> Summary {
    let per_client = args.batches.div_ceil(args.clients);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let store = store.clone();
        let queue = queue.clone();
        let batch_size = args.batch_size;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            for b in 0..per_client {
                let t = Instant::now();
                let new = (0..batch_size)
                    .map(|i| NewImage {
                        path: format!("raw/{c}/{b}/{i}.jpg"),
                        content_hash: format!("{i:064x}"),
                    })
                    .collect();
                let ids: Vec<i64> = store
                    .insert_batch(new)
                    .await
                    .expect("insert")
                    .iter()
                    .map(|r| r.id)
                    .collect();
                queue.publish(&ids, &Headers::new()).await.expect("publish");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("raw task"));
    }
    let images = latencies.len() * args.batch_size;
    summarise(latencies, images, started.elapsed())
}

async fn through_receiver(service: &Service, args: &Args) -> Summary {
    let paths: Vec<String> = (0..args.batch_size)
        .map(|i| format!("img{i}.jpg"))
        .collect();
    let per_client = args.batches.div_ceil(args.clients);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let mut client = service.client().await;
        let paths = paths.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let t = Instant::now();
                let results = client.submit_images(paths.clone()).await.expect("submit");
                assert_eq!(results.len(), paths.len());
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("client task"));
    }
    let images = latencies.len() * args.batch_size;
    summarise(latencies, images, started.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let backends = Backends::production();
    let images = tempfile::tempdir()?;
    for i in 0..args.batch_size {
        // Small files: the benchmark measures ingest, not disk reads.
        std::fs::write(
            images.path().join(format!("img{i}.jpg")),
            vec![i as u8; 2048],
        )?;
    }

    let store = Store::open(&backends.database_url(), StoreOptions::default()).await?;
    let queue = facewire_queue::open(
        backends.env.get("FACEWIRE_AMQP_URL").map(String::as_str),
        &backends.env["FACEWIRE_QUEUE"],
    )
    .await?;
    // Warm up connections on both paths before measuring.
    raw_bound(&store, &queue, &Args { batches: 5, ..args }).await;
    let raw = raw_bound(&store, &queue, &args).await;

    let mut env = backends.env.clone();
    env.insert(
        "FACEWIRE_IMAGE_ROOT".into(),
        images.path().display().to_string(),
    );
    env.insert("FACEWIRE_LOG".into(), "warn".into());
    let mut runs = Vec::new();
    for (label, program, argv) in [
        ("facewire-receiver", receiver_bin(), &[][..]),
        ("facewire receiver", facewire_bin(), &["receiver"][..]),
    ] {
        let service = Service::spawn_program(program, argv, &env).await;
        through_receiver(&service, &Args { batches: 8, ..args }).await;
        let grpc = through_receiver(&service, &args).await;
        let rss = service.peak_rss_bytes().unwrap_or(0);
        runs.push((label, grpc, rss));
    }

    println!(
        "ingest benchmark: {} batches of {} paths, {} concurrent clients, PostgreSQL + RabbitMQ on 127.0.0.1",
        args.batches, args.batch_size, args.clients
    );
    println!(
        "{:<38} {:>10} {:>9} {:>9} {:>8} {:>13}",
        "", "images/s", "p50 ms", "p99 ms", "ratio", "peak RSS MB"
    );
    println!(
        "{:<38} {:>10.0} {:>9.2} {:>9.2} {:>8} {:>13}",
        "raw bound (INSERT 100 + publish)", raw.images_per_s, raw.p50_ms, raw.p99_ms, "100 %", "-"
    );
    for (label, grpc, rss) in &runs {
        println!(
            "{:<38} {:>10.0} {:>9.2} {:>9.2} {:>6.0} % {:>13.1}",
            format!("SubmitImages via {label}"),
            grpc.images_per_s,
            grpc.p50_ms,
            grpc.p99_ms,
            100.0 * grpc.images_per_s / raw.images_per_s,
            *rss as f64 / (1024.0 * 1024.0)
        );
    }
    println!("targets: >= 50 % of the raw bound; receiver RSS < 50 MB (the lean binary is the receiver's image)");
    Ok(())
}
