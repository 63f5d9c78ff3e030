//! The receiver's configuration.

use std::path::PathBuf;

use facewire_config::{
    AuthConfig, DrainConfig, GrpcListen, HttpListen, QueueConfig, StorageConfig, TlsConfig,
};

/// Everything the receiver needs, from flags and `FACEWIRE_*` environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct ReceiverConfig {
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
    pub limits: Limits,
    #[command(flatten)]
    pub tls: TlsConfig,
    #[command(flatten)]
    pub auth: AuthConfig,
    /// Directory that submitted paths are relative to and confined to.
    #[arg(long, env = "FACEWIRE_IMAGE_ROOT", default_value = ".")]
    pub image_root: PathBuf,
    /// Serve only the API of the tutorial's first release (legacy SubmitImage and
    /// POST /image/post). For compatibility testing of rolling upgrades.
    #[arg(long, env = "FACEWIRE_LEGACY_API_ONLY", hide = true)]
    pub legacy_api_only: bool,
}

/// Request limits.
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Most paths in one batch.
    #[arg(long, env = "FACEWIRE_MAX_BATCH", default_value_t = 1000)]
    pub max_batch: usize,
    /// Largest image file accepted, in bytes (the same limit holds in the processor and
    /// recognition).
    #[arg(long, env = "FACEWIRE_MAX_IMAGE_BYTES", default_value_t = facewire_config::DEFAULT_MAX_IMAGE_BYTES)]
    pub max_image_bytes: u64,
    /// Largest request message (gRPC) or body (HTTP), in bytes.
    #[arg(long, env = "FACEWIRE_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch: 1000,
            max_image_bytes: facewire_config::DEFAULT_MAX_IMAGE_BYTES,
            max_message_bytes: 4 * 1024 * 1024,
        }
    }
}
