//! Configuration shared by every facewire service.
//!
//! Each service has one typed config struct (in its own crate) that flattens the pieces
//! here. Every field comes from a flag or an environment variable (`FACEWIRE_*`), and
//! every default works on a laptop with nothing else configured: SQLite in the data dir,
//! an in-process queue, services on localhost ports.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

mod image_root;
mod security;
#[cfg(feature = "testing")]
pub mod testing;

pub use image_root::{CheckedPath, ImageRoot, PathError};
pub use security::{AuthConfig, ClientTlsConfig, TlsConfig};

/// The largest image file facewire takes, by default (`FACEWIRE_MAX_IMAGE_BYTES`), stated
/// once for every service: the receiver refuses larger submissions, the processor reads
/// no larger file, and recognition analyses any image up to it, so an image the receiver
/// accepted is never refused later for its size. (32 MiB: phone photos are 3–15 MB.)
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 32 * 1024 * 1024;

/// Bytes a `RecognizeBatch` request spends on each image beyond the image itself (its
/// key and the protobuf framing), with room to spare.
pub const BATCH_IMAGE_OVERHEAD_BYTES: usize = 64;

/// Recognition's request limit by default (`FACEWIRE_RECOGNITION_MAX_MESSAGE_BYTES`),
/// derived from [`DEFAULT_MAX_IMAGE_BYTES`]: two images of the largest size and 1 MiB to
/// spare, so any image the receiver accepts fits in one call. Processors pack their calls
/// to fit it.
pub const DEFAULT_RECOGNITION_MAX_MESSAGE_BYTES: usize =
    2 * DEFAULT_MAX_IMAGE_BYTES as usize + 1024 * 1024;

/// A config struct as its flags declare it with nothing given: every field at its
/// `default_value`, environment variables ignored. For code that builds a service's
/// config itself (`facewire up`) and wants the defaults the flags document, without
/// repeating them as literals that drift.
///
/// # Panics
/// If `T` has a field with no default (a programming error, not a user's).
pub fn declared_defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command =
        T::augment_args(clap::Command::new("defaults")).mut_args(|arg| arg.env(None::<&str>));
    let matches = command
        .try_get_matches_from(["defaults"])
        .unwrap_or_else(|e| panic!("every field must have a default: {e}"));
    T::from_arg_matches(&matches).unwrap_or_else(|e| panic!("defaults do not parse: {e}"))
}

/// The environment variable that sets the field `id` (its Rust name) of the config struct
/// `T`, as its `#[arg(env = ...)]` declares it: for messages that tell an operator which
/// setting to change, without spelling the name a second time where it could drift.
///
/// # Panics
/// If `T` has no such field, or it has no `env` (a programming error, not a user's).
pub fn env_var<T: clap::Args>(id: &str) -> String {
    let command = T::augment_args(clap::Command::new("env"));
    let arg = command
        .get_arguments()
        .find(|a| a.get_id() == id)
        .unwrap_or_else(|| panic!("no config field {id:?}"));
    arg.get_env()
        .unwrap_or_else(|| panic!("config field {id:?} has no environment variable"))
        .to_string_lossy()
        .into_owned()
}

/// Where state lives: the data dir and the database.
#[derive(Debug, Clone, clap::Args)]
pub struct StorageConfig {
    /// Directory for the embedded database and other local state.
    #[arg(long, env = "FACEWIRE_DATA_DIR", default_value = ".facewire")]
    pub data_dir: PathBuf,

    /// Database URL: postgres://… for PostgreSQL, sqlite://PATH for SQLite.
    /// Default: SQLite at <data dir>/facewire.db.
    #[arg(long, env = "FACEWIRE_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl StorageConfig {
    /// The database URL to use, defaulting to SQLite in the data dir.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.is_empty() => url.clone(),
            _ => format!("sqlite://{}", self.data_dir.join("facewire.db").display()),
        }
    }
}

/// The work queue.
#[derive(Debug, Clone, clap::Args)]
pub struct QueueConfig {
    /// RabbitMQ URL (amqp://user:pass@host:5672/vhost). Default: an in-process queue,
    /// which only works when every service runs in one process (`facewire up`).
    #[arg(long, env = "FACEWIRE_AMQP_URL")]
    pub amqp_url: Option<String>,

    /// Name of the work queue (its dead letters go to <name>.dead).
    #[arg(long, env = "FACEWIRE_QUEUE", default_value = "facewire.images")]
    pub queue_name: String,
}

/// How a service drains on SIGTERM.
#[derive(Debug, Clone, clap::Args)]
pub struct DrainConfig {
    /// Seconds between reporting NOT_SERVING and closing listeners, so load balancers
    /// stop routing here before in-flight work is finished and the process exits.
    #[arg(long, env = "FACEWIRE_DRAIN_SECONDS", default_value_t = 1.0)]
    pub drain_seconds: f64,
}

impl DrainConfig {
    /// The drain delay.
    pub fn delay(&self) -> Duration {
        Duration::from_secs_f64(self.drain_seconds.max(0.0))
    }
}

/// The gRPC listen address.
#[derive(Debug, Clone, clap::Args)]
pub struct GrpcListen {
    /// Address the gRPC server listens on (port 0 picks a free port).
    #[arg(long, env = "FACEWIRE_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
}

/// The HTTP listen address.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpListen {
    /// Address the HTTP server (JSON endpoints, /metrics, /healthz) listens on.
    #[arg(long, env = "FACEWIRE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
}

/// Log output.
#[derive(Debug, Clone, clap::Args)]
pub struct LogConfig {
    /// Log format.
    #[arg(long, env = "FACEWIRE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing env-filter syntax, e.g. `info,facewire_receiver=debug`).
    #[arg(long, env = "FACEWIRE_LOG", default_value = "info")]
    pub log: String,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        storage: StorageConfig,
    }

    #[derive(Debug, clap::Args)]
    struct Tuning {
        #[arg(long, env = "FACEWIRE_TEST_DECLARED_DEFAULT", default_value_t = 7)]
        batch: u32,
        #[arg(long, env = "FACEWIRE_TEST_DECLARED_DEFAULT_NAME")]
        name: Option<String>,
    }

    #[test]
    fn declared_defaults_are_the_flags_defaults_whatever_the_environment() {
        // Only this test uses these variables, so setting them races with nothing.
        std::env::set_var("FACEWIRE_TEST_DECLARED_DEFAULT", "99");
        std::env::set_var("FACEWIRE_TEST_DECLARED_DEFAULT_NAME", "env");
        let t: Tuning = declared_defaults();
        assert_eq!((t.batch, t.name), (7, None));
    }

    #[test]
    fn env_var_is_the_fields_declared_variable() {
        assert_eq!(env_var::<Tuning>("batch"), "FACEWIRE_TEST_DECLARED_DEFAULT");
        assert_eq!(
            env_var::<StorageConfig>("database_url"),
            "FACEWIRE_DATABASE_URL"
        );
    }

    #[test]
    fn database_defaults_to_sqlite_in_data_dir() {
        let cli = Cli::parse_from(["x", "--data-dir", "/tmp/fw"]);
        assert_eq!(cli.storage.database_url(), "sqlite:///tmp/fw/facewire.db");
        let cli = Cli::parse_from(["x", "--database-url", "postgres://db/x"]);
        assert_eq!(cli.storage.database_url(), "postgres://db/x");
    }
}
