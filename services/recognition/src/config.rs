//! The recognition service's configuration: one clap struct, every field a flag or a
//! `FACEWIRE_*` environment variable, every default usable on a laptop.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use facewire_config::{AuthConfig, DrainConfig, StorageConfig, TlsConfig};

use crate::{
    engine::{EngineKind, EngineOptions},
    image::{ImageLimits, OversizePolicy, DEFAULT_DECODE_BUDGET_MIB},
    DetectorOptions, RecognizerOptions, DEFAULT_MATCH_THRESHOLD,
};

/// Where the face models are and which engine runs them. Shared by `facewire
/// recognition` and `facewire up`.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Directory holding face_detection_yunet_2023mar.onnx, face_recognition_sface_2021dec.onnx
    /// and their prepared forms. Unset: ./models, the user's data directory
    /// (~/.local/share/facewire/models, where scripts/setup installs them), beside the
    /// binary, then /usr/local/share, /usr/share and /opt/facewire; the error of a failed
    /// search names every place looked in.
    #[arg(long, env = "FACEWIRE_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,

    /// Inference engine: `onnxruntime`, `opencv`, or `auto` (ONNX Runtime when its
    /// library and prepared models are found, otherwise OpenCV, with a warning).
    #[arg(long, env = "FACEWIRE_ENGINE", value_enum, default_value_t = EngineKind::Auto)]
    pub engine: EngineKind,

    /// Threads one worker uses for one inference (ONNX Runtime). The default of one per
    /// worker, with one worker per core, gives the most images per second (see the
    /// README's engine figures).
    #[arg(long, env = "FACEWIRE_ENGINE_THREADS", default_value_t = 1)]
    pub engine_threads: usize,

    /// The ONNX Runtime shared library. Unset: libonnxruntime.so beside the models,
    /// beside the binary, or in /usr/local/lib, /usr/lib.
    #[arg(long, env = "FACEWIRE_ONNXRUNTIME_LIBRARY")]
    pub onnxruntime_library: Option<PathBuf>,
}

impl EngineArgs {
    /// The options for [`Models::resolve`](crate::engine::Models::resolve).
    pub fn options(&self) -> EngineOptions {
        EngineOptions {
            kind: self.engine,
            model_dir: self.model_dir.clone(),
            runtime_library: self.onnxruntime_library.clone(),
            threads: self.engine_threads.max(1),
        }
    }
}

/// Models, thresholds and image limits: everything needed to build a
/// [`Recognizer`](crate::Recognizer). Shared by the service and the embedded CLI.
#[derive(Debug, Clone, clap::Args)]
pub struct RecognizerArgs {
    #[command(flatten)]
    pub engine: EngineArgs,

    /// Cosine similarity at or above which a face is identified as an enrolled person.
    /// The default comes from the ROC measured on dlib's labeled photos (see the README).
    #[arg(long, env = "FACEWIRE_MATCH_THRESHOLD", default_value_t = DEFAULT_MATCH_THRESHOLD)]
    pub match_threshold: f32,

    /// Detector confidence below which a candidate face is ignored.
    #[arg(long, env = "FACEWIRE_DETECTION_THRESHOLD", default_value_t = 0.6)]
    pub detection_threshold: f32,

    /// Images are shrunk so their longest side is at most this before detection.
    #[arg(long, env = "FACEWIRE_DETECTION_MAX_SIDE", default_value_t = 640)]
    pub detection_max_side: i32,

    /// Network instances analysing images at once (default: one per CPU).
    #[arg(long, env = "FACEWIRE_RECOGNITION_WORKERS")]
    pub workers: Option<usize>,

    /// Largest encoded image accepted, in bytes.
    #[arg(long, env = "FACEWIRE_MAX_IMAGE_BYTES", default_value_t = facewire_config::DEFAULT_MAX_IMAGE_BYTES as usize)]
    pub max_image_bytes: usize,

    /// Most pixels (width × height, read from the header) decoded.
    #[arg(long, env = "FACEWIRE_MAX_PIXELS", default_value_t = 40_000_000)]
    pub max_pixels: u64,

    /// Above the pixel limit: `refuse`, or `downscale` (JPEG only, decoded at 1/2–1/8).
    #[arg(long, env = "FACEWIRE_OVERSIZE", default_value = "refuse")]
    pub oversize: OversizePolicy,

    /// Decoded image bytes (MiB) held at once by the whole process, counted from each
    /// header before decoding; images beyond it wait in a queue. The default keeps the
    /// service under 1 GiB RSS however small the files carrying huge images are.
    #[arg(long, env = "FACEWIRE_DECODE_BUDGET_MIB", default_value_t = DEFAULT_DECODE_BUDGET_MIB)]
    pub decode_budget_mib: u64,

    /// Longest wait, in seconds, for the decode budget; an image still waiting is refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(long, env = "FACEWIRE_DECODE_WAIT_SECONDS", default_value_t = 30.0)]
    pub decode_wait_seconds: f64,
}

impl RecognizerArgs {
    /// The options for [`Recognizer::load`](crate::Recognizer::load).
    pub fn options(&self) -> RecognizerOptions {
        let mut options = RecognizerOptions::new(PathBuf::new());
        options.engine = self.engine.options();
        options.match_threshold = self.match_threshold;
        options.detector = DetectorOptions {
            score_threshold: self.detection_threshold,
            max_side: self.detection_max_side.max(32),
            ..DetectorOptions::default()
        };
        if let Some(workers) = self.workers {
            options.workers = workers.max(1);
        }
        options.limits = ImageLimits {
            max_bytes: self.max_image_bytes,
            max_pixels: self.max_pixels,
            oversize: self.oversize,
            decode_budget_bytes: self.decode_budget_mib.max(1).saturating_mul(1 << 20),
            decode_wait: Duration::try_from_secs_f64(self.decode_wait_seconds.max(0.0))
                .unwrap_or(Duration::MAX),
        };
        options
    }
}

/// `facewire recognition`: the gRPC RecognitionService.
#[derive(Debug, Clone, clap::Args)]
pub struct RecognitionConfig {
    #[command(flatten)]
    pub storage: StorageConfig,
    #[command(flatten)]
    pub recognizer: RecognizerArgs,
    #[command(flatten)]
    pub drain: DrainConfig,
    /// TLS for the gRPC port and the operations port alike.
    #[command(flatten)]
    pub tls: TlsConfig,
    /// The token `Enroll` and `RemovePerson` require (recognising and listing stay open).
    #[command(flatten)]
    pub auth: AuthConfig,
    /// Grouping unknown faces into suggested people.
    #[command(flatten)]
    pub grouping: crate::grouping::GroupingConfig,

    /// Address the gRPC server listens on (port 0 picks a free port).
    #[arg(long, env = "FACEWIRE_GRPC_ADDR", default_value = "127.0.0.1:50052")]
    pub grpc_addr: SocketAddr,

    /// Address of the HTTP operations port: `/healthz` (liveness, unaffected by a drain),
    /// `/readyz` and `/metrics`. Unset: no HTTP port.
    #[arg(long, env = "FACEWIRE_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,

    /// A directory of known people in the tutorial's convention (`<name>_<n>.jpg`),
    /// enrolled at start. Idempotent: a photo already enrolled is skipped by content hash.
    #[arg(long, env = "FACEWIRE_KNOWN_PEOPLE")]
    pub known_people: Option<PathBuf>,
    /// Directory submitted image paths are relative to; needed to embed a face a user
    /// drew on an image (AddFace). Unset: AddFace is refused.
    #[arg(long = "image-root", env = "FACEWIRE_IMAGE_ROOT")]
    pub image_root: Option<PathBuf>,

    /// How often to check the database for enrolments made by other replicas.
    #[arg(long, env = "FACEWIRE_GALLERY_POLL_SECONDS", default_value_t = 2.0)]
    pub gallery_poll_seconds: f64,

    /// Most images in one RecognizeBatch or Enroll request.
    #[arg(long, env = "FACEWIRE_RECOGNITION_MAX_BATCH", default_value_t = 64)]
    pub max_batch: usize,

    /// Largest gRPC request accepted, in bytes.
    #[arg(long, env = "FACEWIRE_RECOGNITION_MAX_MESSAGE_BYTES", default_value_t = facewire_config::DEFAULT_RECOGNITION_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// File the face index is saved to (on a clean stop, and after a start that had to
    /// build it) and loaded from at start, checked against the database face by face, so
    /// a large library starts without rebuilding its graph. Default: `face-index.usearch`
    /// in the data dir with the embedded SQLite database, none with a database server;
    /// `none` turns it off. Each replica needs its own file or a shared directory.
    #[arg(long, env = "FACEWIRE_FACE_INDEX_SNAPSHOT")]
    pub face_index_snapshot: Option<PathBuf>,

    /// Share of the face index's faces (0–1) that named faces must reach for lookups to
    /// search the face index itself instead of a graph of their own: one graph in memory,
    /// but a lookup costs about the inverse of the share (README: one graph for the
    /// gallery and the face index). Lower it to save memory, raise it to keep lookups
    /// fast; above 1: never.
    #[arg(long, env = "FACEWIRE_GALLERY_SHARE_FROM", default_value_t = crate::gallery::SHARED_FROM_SHARE)]
    pub gallery_share_from: f64,
}

impl RecognitionConfig {
    /// The gallery poll interval (at least 50 ms).
    pub fn gallery_poll(&self) -> Duration {
        Duration::from_secs_f64(self.gallery_poll_seconds.max(0.05))
    }

    /// When the gallery is served from the face index (see `gallery_share_from`).
    pub fn gallery_sharing(&self) -> crate::gallery::Sharing {
        crate::gallery::Sharing {
            min_share: self.gallery_share_from,
            ..Default::default()
        }
    }

    /// Where the face index snapshot lives, if anywhere (see `face_index_snapshot`).
    pub fn face_index_snapshot(&self) -> Option<PathBuf> {
        face_index_snapshot(self.face_index_snapshot.as_deref(), &self.storage)
    }
}

/// Where the face index snapshot of a deployment lives: `given` (`none` or empty: nowhere),
/// else `face-index.usearch` in the data dir with the embedded SQLite database, else (a
/// database server) nowhere. The service writes it; a command working on the database
/// directly reads it.
pub fn face_index_snapshot(given: Option<&Path>, storage: &StorageConfig) -> Option<PathBuf> {
    match given {
        Some(path) if path.as_os_str().is_empty() || path.as_os_str() == "none" => None,
        Some(path) => Some(path.to_path_buf()),
        None if storage.database_url.as_deref().is_none_or(str::is_empty) => {
            Some(storage.data_dir.join("face-index.usearch"))
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: RecognitionConfig,
    }

    #[test]
    fn defaults_and_flags() {
        let cli = Cli::parse_from(["x"]);
        let o = cli.config.recognizer.options();
        assert_eq!(o.match_threshold, DEFAULT_MATCH_THRESHOLD);
        assert_eq!(o.limits.oversize, OversizePolicy::Refuse);
        assert_eq!(cli.config.grpc_addr.port(), 50052);
        assert!(cli.config.http_addr.is_none());
        assert_eq!(o.engine, EngineOptions::default());
        assert!(cli.config.tls.paths().is_none() && cli.config.auth.token().is_none());
        let cli = Cli::parse_from([
            "x",
            "--match-threshold",
            "0.5",
            "--oversize",
            "downscale",
            "--workers",
            "3",
        ]);
        let o = cli.config.recognizer.options();
        assert_eq!((o.match_threshold, o.workers), (0.5, 3));
        assert_eq!(o.limits.oversize, OversizePolicy::Downscale);
        assert!(Cli::try_parse_from(["x", "--oversize", "shrink"]).is_err());
        let cli = Cli::parse_from([
            "x",
            "--decode-budget-mib",
            "64",
            "--decode-wait-seconds",
            "2.5",
        ]);
        let o = cli.config.recognizer.options();
        assert_eq!(o.limits.decode_budget_bytes, 64 << 20);
        assert_eq!(o.limits.decode_wait, Duration::from_millis(2500));
    }

    #[test]
    fn the_face_index_snapshot_lives_beside_the_embedded_database_unless_told() {
        let snapshot = |args: &[&str]| {
            Cli::parse_from([&["x"], args].concat())
                .config
                .face_index_snapshot()
        };
        assert_eq!(
            snapshot(&["--data-dir", "/var/lib/fw"]),
            Some(PathBuf::from("/var/lib/fw/face-index.usearch"))
        );
        let server = ["--database-url", "postgres://db/facewire"];
        assert_eq!(snapshot(&server), None, "no local state with a server");
        assert_eq!(
            snapshot(&[&server[..], &["--face-index-snapshot", "/cache/faces"]].concat()),
            Some(PathBuf::from("/cache/faces"))
        );
        assert_eq!(snapshot(&["--face-index-snapshot", "none"]), None);
    }
}
