//! The recognition commands: `facewire recognition` (the service), and the gallery
//! commands `enroll`, `people`, `forget`, `recognize`.
//!
//! The gallery commands work directly on the data dir's database with the models loaded
//! in-process (no server needed); with `--server URL` they call a running service.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use facewire_config::StorageConfig;
use facewire_proto::v1 as pb;
use facewire_proto::BearerAuth;
use facewire_recognition::{
    load_recognizer, RecognitionConfig, RecognizedFace, RecognizerArgs, Roster,
};
use facewire_server::CancellationToken;
use facewire_storage::{Store, StoreOptions};
use pb::recognition_service_client::RecognitionServiceClient;
use tonic::{codegen::InterceptedService, transport::Channel};

/// Where the gallery commands act: a running service, or the local database.
#[derive(Debug, Clone, clap::Args)]
pub struct GalleryTarget {
    /// URL of a running recognition service (e.g. http://127.0.0.1:50052, or https://
    /// for TLS). Default: work directly on the database, with the models loaded in this
    /// process.
    #[arg(long, env = "FACEWIRE_RECOGNITION_URL")]
    pub server: Option<String>,
    #[command(flatten)]
    pub access: super::ClientArgs,
    #[command(flatten)]
    pub storage: StorageConfig,
    #[command(flatten)]
    pub recognizer: RecognizerArgs,
}

/// `facewire enroll NAME IMAGE...`
#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    /// The person's name.
    pub name: String,
    /// Photos of them, one face each.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub target: GalleryTarget,
}

/// `facewire forget NAME`
#[derive(Debug, clap::Args)]
pub struct ForgetArgs {
    /// The person to forget, with all their faces.
    pub name: String,
    #[command(flatten)]
    pub target: GalleryTarget,
}

/// `facewire recognize IMAGE...`
#[derive(Debug, clap::Args)]
pub struct RecognizeArgs {
    /// Images to look at.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub target: GalleryTarget,
}

/// `facewire recognition`: runs the gRPC RecognitionService until SIGTERM / Ctrl-C.
pub async fn serve(config: RecognitionConfig) -> anyhow::Result<ExitCode> {
    let store = Store::open(&config.storage.database_url(), StoreOptions::default())
        .await
        .context("opening the database")?;
    let service = facewire_recognition::Recognition::build(&config, store).await?;
    match service.http_addr() {
        Some(http) => println!(
            "recognition: gRPC on {} · HTTP on {http}",
            service.grpc_addr()
        ),
        None => println!("recognition: gRPC on {}", service.grpc_addr()),
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(facewire_server::drain_on(
        facewire_server::termination_signal(),
        vec![service.health()],
        config.drain.delay(),
        shutdown.clone(),
    ));
    service.run_until_stopped(shutdown).await?;
    tracing::info!("recognition stopped");
    Ok(ExitCode::SUCCESS)
}

const CLIENT_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A recognition client whose calls carry the bearer token, when one is configured.
type Client = RecognitionServiceClient<InterceptedService<Channel, BearerAuth>>;

async fn client(url: &str, access: &super::ClientArgs) -> anyhow::Result<Client> {
    let options = access.options()?;
    let channel = options
        .endpoint(url)?
        .connect()
        .await
        .with_context(|| format!("connecting to the recognition service at {url}"))?;
    Ok(
        RecognitionServiceClient::with_interceptor(channel, options.bearer()?)
            .max_decoding_message_size(CLIENT_MESSAGE_BYTES)
            .max_encoding_message_size(CLIENT_MESSAGE_BYTES),
    )
}

async fn store(target: &GalleryTarget) -> anyhow::Result<Store> {
    Store::open(&target.storage.database_url(), StoreOptions::default())
        .await
        .context("opening the database")
}

async fn roster(target: &GalleryTarget) -> anyhow::Result<Roster> {
    let recognizer = load_recognizer(target.recognizer.options()).await?;
    Ok(Roster::open(recognizer.into(), store(target).await?).await?)
}

/// Reads every file; unreadable ones are reported and counted as failures.
fn read_all(paths: &[PathBuf], failures: &mut usize) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    paths
        .iter()
        .map(|p| match std::fs::read(p) {
            Ok(bytes) => (p.clone(), Some(bytes)),
            Err(e) => {
                println!("{}: error: cannot read: {e}", p.display());
                *failures += 1;
                (p.clone(), None)
            }
        })
        .collect()
}

fn exit(failures: usize) -> ExitCode {
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn fmt_box(b: &[f32; 4]) -> String {
    format!("box {:.0},{:.0} {:.0}×{:.0}", b[0], b[1], b[2], b[3])
}

/// `facewire enroll`: one line per image; non-zero exit if any image was not enrolled.
pub async fn enroll(args: EnrollArgs) -> anyhow::Result<ExitCode> {
    let mut failures = 0;
    let files = read_all(&args.images, &mut failures);
    let readable: Vec<_> = files
        .into_iter()
        .filter_map(|(p, b)| b.map(|b| (p, b)))
        .collect();
    let (paths, images): (Vec<PathBuf>, Vec<Vec<u8>>) = readable.into_iter().unzip();
    if images.is_empty() {
        return Ok(exit(failures));
    }
    let lines: Vec<Result<String, String>> = match &args.target.server {
        Some(url) => {
            let response = client(url, &args.target.access)
                .await?
                .enroll(pb::EnrollRequest {
                    name: args.name.clone(),
                    images,
                })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            response
                .results
                .into_iter()
                .map(|r| match r.outcome {
                    Some(pb::enroll_result::Outcome::Face(f)) => Ok(format!(
                        "{} face {}{}",
                        if f.created {
                            "enrolled as"
                        } else {
                            "already enrolled as"
                        },
                        f.id,
                        f.r#box
                            .map(|b| format!(", {}", fmt_box(&[b.x, b.y, b.width, b.height])))
                            .unwrap_or_default()
                    )),
                    Some(pb::enroll_result::Outcome::Error(e)) => Err(e.message),
                    None => Err("no result".into()),
                })
                .collect()
        }
        None => {
            let roster = std::sync::Arc::new(roster(&args.target).await?);
            let results = roster.enroll(&args.name, images).await?;
            // A new person may name faces already stored: match them again.
            facewire_recognition::People::new(roster, None)
                .rematch(false, |_, _| async { true })
                .await?;
            results
        }
        .into_iter()
        .map(|r| match r {
            Ok(f) => Ok(format!(
                "{} face {}, {}",
                if f.created {
                    "enrolled as"
                } else {
                    "already enrolled as"
                },
                f.id,
                fmt_box(&f.bbox)
            )),
            Err(e) => Err(e.to_string()),
        })
        .collect(),
    };
    for (path, line) in paths.iter().zip(lines) {
        match line {
            Ok(text) => println!("{}: {} ({text})", path.display(), args.name.trim()),
            Err(e) => {
                failures += 1;
                println!("{}: error: {e}", path.display());
            }
        }
    }
    Ok(exit(failures))
}

/// `facewire forget`: non-zero exit if nobody has that name.
pub async fn forget(args: ForgetArgs) -> anyhow::Result<ExitCode> {
    let removed = match &args.target.server {
        Some(url) => {
            client(url, &args.target.access)
                .await?
                .remove_person(pb::RemovePersonRequest {
                    name: args.name.clone(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner()
                .faces_removed as i64
        }
        None => store(&args.target)
            .await?
            .remove_person(args.name.trim())
            .await?
            .ok_or_else(|| anyhow::anyhow!("nobody named {:?} is enrolled", args.name))?,
    };
    println!("forgot {} ({removed} faces)", args.name.trim());
    Ok(ExitCode::SUCCESS)
}

fn print_faces(path: &std::path::Path, faces: &[(Option<String>, f32, [f32; 4])]) {
    println!("{}: {} face(s)", path.display(), faces.len());
    for (person, similarity, b) in faces {
        println!(
            "  {}\tsimilarity {similarity:.3}\t{}",
            person.as_deref().unwrap_or("unknown"),
            fmt_box(b)
        );
    }
}

/// `facewire recognize`: per image, each face's person (or `unknown`), similarity and
/// box. Non-zero exit if any image could not be read or decoded.
pub async fn recognize(args: RecognizeArgs) -> anyhow::Result<ExitCode> {
    let mut failures = 0;
    let files = read_all(&args.images, &mut failures);
    match &args.target.server {
        Some(url) => {
            let mut client = client(url, &args.target.access).await?;
            for (path, bytes) in files {
                let Some(image) = bytes else { continue };
                match client.recognize(pb::RecognizeRequest { image }).await {
                    Ok(response) => {
                        let faces: Vec<_> = response
                            .into_inner()
                            .faces
                            .into_iter()
                            .map(|f| {
                                let b = f.r#box.unwrap_or_default();
                                (
                                    f.r#match.map(|m| m.person),
                                    f.best_similarity,
                                    [b.x, b.y, b.width, b.height],
                                )
                            })
                            .collect();
                        print_faces(&path, &faces);
                    }
                    Err(status) => {
                        failures += 1;
                        println!("{}: error: {}", path.display(), status.message());
                    }
                }
            }
        }
        None => {
            let roster = roster(&args.target).await?;
            for (path, bytes) in files {
                let Some(image) = bytes else { continue };
                match roster.recognize(image).await {
                    Ok(faces) => {
                        let faces: Vec<_> = faces
                            .iter()
                            .map(|f: &RecognizedFace| {
                                (f.person.clone(), f.best_similarity, f.detection.bbox)
                            })
                            .collect();
                        print_faces(&path, &faces);
                    }
                    Err(e) => {
                        failures += 1;
                        println!("{}: error: {e}", path.display());
                    }
                }
            }
        }
    }
    Ok(exit(failures))
}
