//! `facewire submit PATH... [--wait]`: submit images through the client library (with
//! its fallback for old servers), show progress, and print what became of them.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use facewire_proto::{
    v1::{submit_result::Outcome, Image, ImageStatus, SubmitErrorCode},
    FacewireClient,
};
use indicatif::{ProgressBar, ProgressStyle};

const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "gif"];

/// Arguments of `facewire submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// Image files or directories (walked for image files). Paths are sent as given:
    /// relative to the server's image root (the current directory for `facewire up`).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Wait until every image is processed, then print the people found.
    #[arg(long)]
    wait: bool,
    /// The receiver's gRPC URL (`https://` for TLS).
    #[arg(
        long,
        env = "FACEWIRE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    #[command(flatten)]
    access: super::ClientArgs,
    /// Paths per SubmitImages call.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
}

fn collect(paths: &[PathBuf]) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.display().to_string());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let path = e.path();
        if e.file_type()?.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
        {
            out.push(path.display().to_string());
        }
    }
    Ok(())
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

fn status_name(status: i32) -> &'static str {
    match ImageStatus::try_from(status).unwrap_or(ImageStatus::Unspecified) {
        ImageStatus::Pending => "pending",
        ImageStatus::Processing => "processing",
        ImageStatus::Done => "done",
        ImageStatus::NoFace => "no_face",
        ImageStatus::Failed => "failed",
        ImageStatus::Unspecified => "unknown",
    }
}

fn is_terminal(status: i32) -> bool {
    matches!(
        ImageStatus::try_from(status),
        Ok(ImageStatus::Done | ImageStatus::NoFace | ImageStatus::Failed)
    )
}

fn people(image: &Image) -> String {
    let names: Vec<String> = image
        .people
        .iter()
        .map(|p| {
            if p.name.is_empty() {
                "unknown".to_string()
            } else {
                format!("{} ({:.2})", p.name, p.similarity)
            }
        })
        .collect();
    names.join(", ")
}

/// Runs `facewire submit`.
pub async fn run(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let paths = collect(&args.paths)?;
    if paths.is_empty() {
        anyhow::bail!("no image files found in the given paths");
    }
    let mut client =
        FacewireClient::connect_with(args.server.clone(), args.access.options()?).await?;
    let submitting = bar(paths.len(), "submit");
    let mut accepted: BTreeMap<i64, Image> = BTreeMap::new();
    let mut refused: Vec<(String, String)> = Vec::new();
    for chunk in paths.chunks(args.batch.max(1)) {
        for result in client.submit_images(chunk.to_vec()).await? {
            match result.outcome {
                Some(Outcome::Image(image)) => {
                    accepted.insert(image.id, image);
                }
                Some(Outcome::Error(e)) => {
                    let code = SubmitErrorCode::try_from(e.code)
                        .map(|c| {
                            c.as_str_name()
                                .trim_start_matches("SUBMIT_ERROR_CODE_")
                                .to_string()
                        })
                        .unwrap_or_default();
                    refused.push((result.path, format!("{code}: {}", e.message)));
                }
                None => refused.push((result.path, "no result".into())),
            }
        }
        submitting.inc(chunk.len() as u64);
    }
    submitting.finish();

    if args.wait && !accepted.is_empty() {
        let waiting = bar(accepted.len(), "recognise");
        let ids: Vec<i64> = accepted.keys().copied().collect();
        let wait = async {
            // A server watches at most its batch limit of ids per stream: watch one
            // submitted batch's worth of ids (a size the server accepted) at a time, so any
            // number of files can be waited for. Later batches keep being processed
            // meanwhile; their streams start with the records as they are by then.
            for chunk in ids.chunks(args.batch.max(1)) {
                let mut stream = client.watch_images(chunk.to_vec()).await?;
                while let Some(msg) = stream.message().await? {
                    if let Some(image) = msg.image {
                        accepted.insert(image.id, image);
                    }
                    waiting.set_position(
                        accepted.values().filter(|i| is_terminal(i.status)).count() as u64,
                    );
                    if chunk
                        .iter()
                        .all(|id| accepted.get(id).is_some_and(|i| is_terminal(i.status)))
                    {
                        break;
                    }
                }
            }
            Ok::<_, tonic::Status>(())
        };
        match tokio::time::timeout(Duration::from_secs(args.timeout_seconds), wait).await {
            Ok(result) => result?,
            Err(_) => eprintln!("gave up waiting after {} s", args.timeout_seconds),
        }
        waiting.finish();
    }

    println!(
        "{:>6}  {:<40}  {:<10}  people / error",
        "id", "path", "status"
    );
    for image in accepted.values() {
        let detail = if image.status == ImageStatus::Failed as i32 {
            image.last_error.clone()
        } else {
            people(image)
        };
        println!(
            "{:>6}  {:<40}  {:<10}  {}",
            image.id,
            image.path,
            status_name(image.status),
            detail
        );
    }
    for (path, why) in &refused {
        println!("{:>6}  {:<40}  {:<10}  {}", "-", path, "refused", why);
    }
    let failed = refused.len()
        + accepted
            .values()
            .filter(|i| i.status == ImageStatus::Failed as i32)
            .count();
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
