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

use std::{collections::HashMap, time::Duration};

use clap::Parser;
use facewire_integration::{
    bench::{
        describe, fill_image_root, johns_photos, percentile, recognition_capacity, rows_per_second,
        submit, wait_all,
    },
    Backends, Service,
};
use facewire_proto::v1::submit_result::Outcome;
use facewire_storage::{Store, StoreOptions};

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let backends = Backends::production();
    let images = tempfile::tempdir()?;
    let photos = johns_photos();
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
    let urls = [url.clone()];
    recognition_capacity(&urls, &bytes, args.batch, args.workers, args.workers * 2).await;
    let calls = args.images.div_ceil(args.batch);
    let capacity = recognition_capacity(&urls, &bytes, args.batch, args.workers, calls).await;

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
