//! Replays issue 11's memory attack against a spawned `facewire recognition` and prints
//! its peak RSS (VmHWM): a 6320 × 6320 16-bit RGBA PNG — a few hundred KB that decode to
//! 320 MB at 16 bits — sent as 16 copies in one RecognizeBatch, then as 50 concurrent
//! Recognize calls. The target is a peak under 1 GiB with the default decode budget.
//!
//! `cargo run -p facewire-integration --bin decode-attack-bench`
//! (set FACEWIRE_DECODE_BUDGET_MIB to try another budget). Needs the models
//! (scripts/setup). Prints numbers; asserts nothing.

use std::collections::BTreeMap;

use clap::Parser;
use facewire_integration::{Backends, Service};
use facewire_proto::v1 as pb;
use image::{codecs::png, ImageEncoder};
use pb::{batch_result::Outcome, recognition_service_client::RecognitionServiceClient};

#[derive(Parser)]
struct Args {
    /// Side of the square attack PNG, in pixels.
    #[arg(long, default_value_t = 6320)]
    side: u32,
    /// Copies in the one RecognizeBatch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Concurrent Recognize calls.
    #[arg(long, default_value_t = 50)]
    concurrent: usize,
}

/// The attack file: all-zero 16-bit RGBA, compressed as hard as PNG allows.
fn attack_png(side: u32) -> anyhow::Result<Vec<u8>> {
    let bytes = vec![0u8; side as usize * side as usize * 8];
    let mut out = Vec::new();
    png::PngEncoder::new_with_quality(
        &mut out,
        png::CompressionType::Best,
        png::FilterType::NoFilter,
    )
    .write_image(&bytes, side, side, image::ExtendedColorType::Rgba16)?;
    Ok(out)
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("?".into(), |b| format!("{} MiB", b >> 20))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let png = attack_png(args.side)?;
    let backends = Backends::embedded();
    let recognition = Service::spawn(&["recognition"], &backends.env).await;
    let client = RecognitionServiceClient::connect(recognition.grpc_url())
        .await?
        .max_encoding_message_size(256 << 20)
        .max_decoding_message_size(256 << 20);
    let idle = recognition.peak_rss_bytes();

    let batch = pb::RecognizeBatchRequest {
        images: (0..args.batch)
            .map(|i| pb::BatchImage {
                key: i.to_string(),
                image: png.clone(),
            })
            .collect(),
    };
    let mut batch_outcomes = BTreeMap::<String, usize>::new();
    match client.clone().recognize_batch(batch).await {
        Ok(r) => {
            for result in r.into_inner().results {
                let key = match result.outcome {
                    Some(Outcome::Faces(_)) => "ok".to_string(),
                    Some(Outcome::Error(e)) => format!("image error {}", e.code),
                    None => "no outcome".into(),
                };
                *batch_outcomes.entry(key).or_default() += 1;
            }
        }
        Err(status) => {
            *batch_outcomes
                .entry(format!("call {:?}", status.code()))
                .or_default() += 1
        }
    }
    let after_batch = recognition.peak_rss_bytes();

    let calls = (0..args.concurrent).map(|_| {
        let mut client = client.clone();
        let image = png.clone();
        async move { client.recognize(pb::RecognizeRequest { image }).await }
    });
    let mut call_outcomes = BTreeMap::<String, usize>::new();
    for outcome in futures::future::join_all(calls).await {
        let key = match outcome {
            Ok(_) => "ok".to_string(),
            Err(status) => format!("{:?}", status.code()),
        };
        *call_outcomes.entry(key).or_default() += 1;
    }
    let after_concurrent = recognition.peak_rss_bytes();
    let alive = recognition.peak_rss_bytes().is_some();

    println!(
        "decode attack: {s} × {s} 16-bit RGBA PNG of {} KB (320 MB at 16 bits, {} MB as 8-bit BGR)",
        png.len() >> 10,
        u64::from(args.side).pow(2) * 3 / 1_000_000,
        s = args.side,
    );
    println!(
        "decode budget: {}",
        std::env::var("FACEWIRE_DECODE_BUDGET_MIB").unwrap_or_else(|_| "default".into())
    );
    println!("{:<44} {:>12}", "peak RSS (VmHWM) of recognition", "");
    println!("{:<44} {:>12}", "after start", mib(idle));
    println!(
        "{:<44} {:>12}   {batch_outcomes:?}",
        format!("after {} copies in one RecognizeBatch", args.batch),
        mib(after_batch)
    );
    println!(
        "{:<44} {:>12}   {call_outcomes:?}",
        format!("after {} concurrent Recognize", args.concurrent),
        mib(after_concurrent)
    );
    println!(
        "target: peak <= 1024 MiB; process {}",
        if alive { "still running" } else { "gone" }
    );
    Ok(())
}
