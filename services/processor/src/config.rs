//! The processor's configuration.

use std::{path::PathBuf, time::Duration};

use facewire_config::{
    AuthConfig, ClientTlsConfig, DrainConfig, GrpcListen, HttpListen, QueueConfig, StorageConfig,
    TlsConfig,
};

/// Everything the processor needs, from flags and `FACEWIRE_*` environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct ProcessorConfig {
    #[command(flatten)]
    pub storage: StorageConfig,
    #[command(flatten)]
    pub queue: QueueConfig,
    #[command(flatten)]
    pub grpc: GrpcListen,
    #[command(flatten)]
    pub http: HttpListen,
    #[command(flatten)]
    pub drain: DrainConfig,
    #[command(flatten)]
    pub work: WorkConfig,
    /// TLS for the processor's own listeners: gRPC health and the HTTP operations port
    /// (`/healthz`, `/readyz`, `/metrics`). The operations port follows the gRPC port
    /// rather than staying plaintext, so one certificate setting makes every listener of
    /// every facewire process TLS, and probes and scrapers use one scheme throughout.
    #[command(flatten)]
    pub tls: TlsConfig,
    /// Directory image paths are relative to (the receiver's image root).
    #[arg(long, env = "FACEWIRE_IMAGE_ROOT", default_value = ".")]
    pub image_root: PathBuf,
}

/// Bytes of a recognition request beyond its images (kept free of the request limit).
pub const REQUEST_OVERHEAD_BYTES: usize = 16 * 1024;

/// Attempts per image by default: enough that an outage of recognition of up to about
/// two minutes (the half-open probes are real calls, each one an attempt of its images)
/// ends with every image done rather than failed.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 8;

/// How the processor works through the queue.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkConfig {
    /// Recognition service URL(s), comma-separated; DNS names are resolved to every
    /// address and calls balanced across them (use a headless Service on Kubernetes).
    #[arg(
        long,
        env = "FACEWIRE_RECOGNITION_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub recognition_url: String,
    /// Whom to trust for an `https://` recognition URL.
    #[command(flatten)]
    pub recognition_tls: ClientTlsConfig,
    /// The token sent with calls to recognition.
    #[command(flatten)]
    pub auth: AuthConfig,
    /// Most unacknowledged messages held (back-pressure).
    #[arg(long, env = "FACEWIRE_PREFETCH", default_value_t = 32)]
    pub prefetch: u16,
    /// Most images per recognition call and per database transaction.
    #[arg(long, env = "FACEWIRE_BATCH", default_value_t = 8)]
    pub batch: usize,
    /// How long to wait for a batch to fill, in milliseconds.
    #[arg(long, env = "FACEWIRE_BATCH_WAIT_MS", default_value_t = 20)]
    pub batch_wait_ms: u64,
    /// Batches in flight at once.
    #[arg(long, env = "FACEWIRE_WORKERS", default_value_t = 2)]
    pub workers: usize,
    /// Attempts before an image is failed and its message dead-lettered. With the
    /// backoff (1, 2, 4, 8, 16, then 30 s) the default rides out about two minutes of
    /// recognition being down before any image fails.
    #[arg(long, env = "FACEWIRE_MAX_ATTEMPTS", default_value_t = DEFAULT_MAX_ATTEMPTS)]
    pub max_attempts: i32,
    /// Timeout of one recognition call, in seconds.
    #[arg(
        long,
        env = "FACEWIRE_RECOGNITION_TIMEOUT_SECONDS",
        default_value_t = 30.0
    )]
    pub recognition_timeout_seconds: f64,
    /// Consecutive failed calls that open the circuit breaker.
    #[arg(long, env = "FACEWIRE_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,
    /// Seconds the breaker stays open before a probe.
    #[arg(long, env = "FACEWIRE_BREAKER_COOLDOWN_SECONDS", default_value_t = 5.0)]
    pub breaker_cooldown_seconds: f64,
    /// Largest image read from disk, in bytes (the receiver's and recognition's limit
    /// too).
    #[arg(long, env = "FACEWIRE_MAX_IMAGE_BYTES", default_value_t = facewire_config::DEFAULT_MAX_IMAGE_BYTES)]
    pub max_image_bytes: u64,
    /// Most image bytes in one recognition call (an image larger than this goes alone),
    /// bounding the memory a call holds.
    #[arg(long, env = "FACEWIRE_BATCH_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub batch_bytes: usize,
    /// The largest request recognition accepts (its own setting of the same name): calls
    /// are packed to fit, and one image of the largest size must fit.
    #[arg(
        long,
        env = "FACEWIRE_RECOGNITION_MAX_MESSAGE_BYTES",
        default_value_t = facewire_config::DEFAULT_RECOGNITION_MAX_MESSAGE_BYTES
    )]
    pub recognition_max_message_bytes: usize,
}

impl WorkConfig {
    /// The resilience settings for calls to recognition.
    pub fn resilience(&self) -> facewire_resilience::ResilienceConfig {
        facewire_resilience::ResilienceConfig {
            timeout: Duration::from_secs_f64(self.recognition_timeout_seconds.max(0.1)),
            concurrency: self.workers.max(1) * 2,
            breaker_failures: self.breaker_failures,
            breaker_cooldown: Duration::from_secs_f64(self.breaker_cooldown_seconds.max(0.1)),
            ..facewire_resilience::ResilienceConfig::default()
        }
    }

    /// Most image bytes in one recognition call: the batch budget, within recognition's
    /// request limit.
    pub fn call_bytes(&self) -> usize {
        let room = self
            .recognition_max_message_bytes
            .saturating_sub(REQUEST_OVERHEAD_BYTES);
        self.batch_bytes.clamp(1, room.max(1))
    }

    /// Refuses limits under which an image the receiver accepts could not be sent to
    /// recognition in a call of its own.
    pub fn check_limits(&self) -> Result<(), String> {
        let one = self.max_image_bytes as usize
            + facewire_config::BATCH_IMAGE_OVERHEAD_BYTES
            + REQUEST_OVERHEAD_BYTES;
        if one > self.recognition_max_message_bytes {
            return Err(format!(
                "FACEWIRE_RECOGNITION_MAX_MESSAGE_BYTES ({}) must exceed FACEWIRE_MAX_IMAGE_BYTES ({}) by at least {} bytes, or images of the largest size could never be recognised",
                self.recognition_max_message_bytes,
                self.max_image_bytes,
                one - self.max_image_bytes as usize
            ));
        }
        Ok(())
    }

    /// Pause before retrying an image on its `attempt`-th failure: 1 s, 2 s, 4 s, ... 30 s,
    /// each plus jitter (facewire-resilience's backoff).
    pub fn backoff(&self, attempt: i32) -> Duration {
        facewire_resilience::Backoff::new(Duration::from_secs(1), Duration::from_secs(30))
            .delay(attempt.max(1) as u32)
    }
}
