//! Do recognition replicas add capacity? Runs the pipeline with 1 and then 2 recognition
//! replicas, one worker and one inference thread each, pinned to one core each with
//! `taskset` (when it is installed), behind the processors' balancer; prints the pipeline's
//! throughput for each and the ratio.
//!
//! `cargo build --release -p facewire -p facewire-integration && target/release/replica-bench`
//!
//! The images are submitted while no processor runs, so the receiver's work is outside
//! the measurement; throughput is read off the rows' own timestamps (first to last
//! finished). Recognition alone (`RecognizeBatch` straight at the replicas, the same
//! batch and calls in flight) is measured in the same run for comparison. Needs the models
//! (scripts/setup) and the photos (scripts/fetch-testdata). Prints numbers; asserts
//! nothing about time.

use std::{collections::HashMap, path::Path, time::Duration};

use clap::Parser;
use facewire_integration::{
    bench::{
        describe, fill_image_root, johns_photos, processing_rate, recognition_capacity, submit,
        wait_all,
    },
    facewire_bin, Backends, Service,
};
use facewire_storage::{Store, StoreOptions};

#[derive(Parser)]
struct Args {
    /// Images per run.
    #[arg(long, default_value_t = 800)]
    images: usize,
    /// Images per recognition call (the processor's FACEWIRE_BATCH).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Recognition calls in flight per processor (the processor's FACEWIRE_WORKERS).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Processors (each balances its calls across every replica).
    #[arg(long, default_value_t = 2)]
    processors: usize,
    /// Replica counts to run, in order.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
    replicas: Vec<usize>,
}

/// Whether `taskset` (util-linux) is on the PATH.
fn have_taskset() -> bool {
    std::process::Command::new("taskset")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `n` recognition replicas, replica `i` pinned to core `i mod cores` when it can be.
async fn replicas(n: usize, env: &HashMap<String, String>, pin: bool) -> Vec<Service> {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mut env = env.clone();
    env.insert("FACEWIRE_RECOGNITION_WORKERS".into(), "1".into());
    env.insert("FACEWIRE_ENGINE_THREADS".into(), "1".into());
    let bin = facewire_bin().display().to_string();
    let mut out = Vec::new();
    for i in 0..n {
        let core = (i % cores).to_string();
        out.push(if pin {
            Service::spawn_program(
                Path::new("taskset"),
                &["-c", &core, &bin, "recognition"],
                &env,
            )
            .await
        } else {
            Service::spawn(&["recognition"], &env).await
        });
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pin = have_taskset();
    let backends = Backends::production();
    let images = tempfile::tempdir()?;
    let bytes = fill_image_root(images.path(), &johns_photos(), args.images);
    let paths: Vec<String> = (0..args.images).map(|i| format!("img{i}.jpg")).collect();
    let mut env: HashMap<String, String> = backends.env.clone();
    env.insert(
        "FACEWIRE_IMAGE_ROOT".into(),
        images.path().display().to_string(),
    );
    env.insert("FACEWIRE_LOG".into(), "warn".into());
    env.insert("FACEWIRE_BATCH".into(), args.batch.to_string());
    env.insert("FACEWIRE_WORKERS".into(), args.workers.to_string());
    let store = Store::open(&backends.database_url(), StoreOptions::default()).await?;
    let receiver = Service::spawn(&["receiver"], &env).await;

    let mut results = Vec::new();
    for &n in &args.replicas {
        let mut running = replicas(n, &env, pin).await;
        let urls: Vec<String> = running.iter().map(Service::grpc_url).collect();
        // Warm every replica, then measure them alone.
        let in_flight = args.workers * args.processors;
        recognition_capacity(&urls, &bytes, args.batch, in_flight.div_ceil(n), 4 * n).await;
        let calls = args.images.div_ceil(args.batch);
        let alone =
            recognition_capacity(&urls, &bytes, args.batch, in_flight.div_ceil(n), calls).await;

        let ids = submit(&receiver, &paths).await;
        let mut env = env.clone();
        env.insert("FACEWIRE_RECOGNITION_URL".into(), urls.join(","));
        let mut processors = Vec::new();
        for _ in 0..args.processors {
            processors.push(Service::spawn(&["processor"], &env).await);
        }
        let rows = wait_all(&store, &ids).await;
        let rate = processing_rate(&rows);
        results.push((n, alone, rate, describe(&rows)));
        for mut s in processors.into_iter().chain(running.drain(..)) {
            s.terminate();
            s.wait(Duration::from_secs(30)).await;
        }
    }

    println!(
        "replica benchmark: {} johns photos per run, {} processors × {} calls of {} in flight,",
        args.images, args.processors, args.workers, args.batch
    );
    println!(
        "each recognition replica 1 worker × 1 thread{}; PostgreSQL + RabbitMQ on 127.0.0.1",
        if pin {
            ", pinned to its own core (taskset)"
        } else {
            " (taskset not found: not pinned)"
        }
    );
    println!("| replicas | recognition alone (images/s) | pipeline (images/s) | pipeline vs 1 replica | outcome |");
    println!("|---|---|---|---|---|");
    let base = results.first().map_or(1.0, |r| r.2);
    for (n, alone, rate, outcome) in &results {
        println!(
            "| {n} | {alone:.1} | {rate:.1} | {:.2}× | {outcome} |",
            rate / base
        );
    }
    for (n, alone, rate, _) in &results {
        println!(
            "replicas replicas={n} recognition_alone={alone:.1} pipeline={rate:.1} ratio={:.2}",
            rate / base
        );
    }
    Ok(())
}
