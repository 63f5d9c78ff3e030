//! Receiver memory benchmark: many concurrent clients submitting batches to the real
//! `facewire-receiver` binary, and the process's peak resident memory (VmHWM) printed
//! with the throughput. The figure is printed, never asserted (the target is < 50 MB
//! with 20 clients; see the README's reliability section).
//!
//! ```text
//! cargo build -p facewire-receiver --bins
//! target/debug/receiver-rss-bench --clients 20 \
//!     --database-url postgres://postgres@127.0.0.1:5432/fw_rss_bench \
//!     --amqp-url amqp://guest:guest@127.0.0.1:5672/%2f
//! ```
//!
//! The database should be a fresh one (the receiver runs its migrations there); the
//! queue is a fresh one named after this process and is left for RabbitMQ to expire.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use clap::Parser;
use facewire_proto::client::FacewireClient;

#[derive(Parser)]
struct Args {
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// Batches in the measurement (spread over the clients).
    #[arg(long, default_value_t = 400)]
    batches: usize,
    /// Paths per batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// PostgreSQL (or sqlite://) URL for the receiver.
    #[arg(long, env = "FACEWIRE_DATABASE_URL")]
    database_url: String,
    /// RabbitMQ URL; without it the receiver uses its in-process queue.
    #[arg(long, env = "FACEWIRE_AMQP_URL")]
    amqp_url: Option<String>,
    /// The receiver binary (default: `facewire-receiver` beside this one).
    #[arg(long)]
    receiver_bin: Option<PathBuf>,
    /// Extra environment for the receiver, `NAME=VALUE` (repeatable), to compare settings.
    #[arg(long = "env")]
    extra_env: Vec<String>,
}

/// Peak resident memory of process `pid` so far, in bytes.
fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Threads of process `pid` now.
fn threads(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Threads:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn run_clients(url: &str, clients: usize, batches: usize, paths: &[String]) -> Vec<Duration> {
    let per_client = batches.div_ceil(clients);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut client = FacewireClient::connect(url.to_string())
            .await
            .expect("connect to the receiver");
        let paths = paths.to_vec();
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
    latencies
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let bin = match args.receiver_bin.clone() {
        Some(bin) => bin,
        None => std::env::current_exe()?.with_file_name("facewire-receiver"),
    };
    let images = std::env::temp_dir().join(format!("receiver-rss-bench-{}", std::process::id()));
    std::fs::create_dir_all(&images)?;
    let paths: Vec<String> = (0..args.batch_size)
        .map(|i| format!("img{i}.jpg"))
        .collect();
    for (i, p) in paths.iter().enumerate() {
        // Small files: the benchmark measures the receiver, not disk reads.
        std::fs::write(images.join(p), vec![i as u8; 2048])?;
    }

    let mut command = Command::new(&bin);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("FACEWIRE_DATABASE_URL", &args.database_url)
        .env(
            "FACEWIRE_QUEUE",
            format!("receiver-rss-bench-{}", std::process::id()),
        )
        .env("FACEWIRE_IMAGE_ROOT", &images)
        .env("FACEWIRE_GRPC_ADDR", "127.0.0.1:0")
        .env("FACEWIRE_HTTP_ADDR", "127.0.0.1:0")
        .env("FACEWIRE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(amqp) = &args.amqp_url {
        command.env("FACEWIRE_AMQP_URL", amqp);
    }
    for kv in &args.extra_env {
        let (k, v) = kv.split_once('=').ok_or("--env takes NAME=VALUE")?;
        command.env(k, v);
    }
    let mut child = command.spawn()?;
    let pid = child.id();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let grpc = line
        .strip_prefix("receiver: gRPC on ")
        .and_then(|rest| rest.split(" · ").next())
        .ok_or_else(|| format!("unexpected first line {line:?}"))?
        .trim()
        .to_string();
    let url = format!("http://{grpc}");
    let idle = peak_rss_bytes(pid).unwrap_or(0);

    // Warm up, then measure.
    run_clients(&url, args.clients, args.clients, &paths).await;
    let started = Instant::now();
    let mut latencies = run_clients(&url, args.clients, args.batches, &paths).await;
    let wall = started.elapsed();
    let peak = peak_rss_bytes(pid).unwrap_or(0);
    let thread_count = threads(pid).unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&images);

    latencies.sort();
    let pick = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[i].as_secs_f64() * 1000.0
    };
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "receiver-rss-bench: {} ({}), {} clients, {} batches of {} paths",
        bin.display(),
        if args.extra_env.is_empty() {
            "defaults".to_string()
        } else {
            args.extra_env.join(" ")
        },
        args.clients,
        latencies.len(),
        args.batch_size
    );
    println!(
        "images/s {:.0} · p50 {:.2} ms · p99 {:.2} ms · threads after {} · RSS idle {:.1} MB · peak RSS {:.1} MB (target < 50 MB)",
        (latencies.len() * args.batch_size) as f64 / wall.as_secs_f64(),
        pick(0.5),
        pick(0.99),
        thread_count,
        mb(idle),
        mb(peak)
    );
    Ok(())
}
