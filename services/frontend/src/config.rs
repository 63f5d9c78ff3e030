//! The frontend's configuration.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use facewire_config::{AuthConfig, ClientTlsConfig, DrainConfig, TlsConfig};

/// Everything the frontend needs, from flags and `FACEWIRE_*` environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct FrontendConfig {
    /// Address the web page listens on (port 0 picks a free port).
    // Not `facewire_config::HttpListen`: the standalone frontend must not collide with
    // the receiver's HTTP port (8080) on a laptop, so its default differs.
    #[arg(long, env = "FACEWIRE_HTTP_ADDR", default_value = "127.0.0.1:8081")]
    pub http_addr: SocketAddr,

    /// gRPC URL(s) of the receiver (ImageService), comma-separated; calls are spread
    /// over every address the names resolve to.
    #[arg(
        long,
        env = "FACEWIRE_RECEIVER_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub receiver_url: String,

    /// gRPC URL(s) of the recognition service (RecognitionService), comma-separated;
    /// calls are spread over every address the names resolve to.
    #[arg(
        long,
        env = "FACEWIRE_RECOGNITION_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub recognition_url: String,

    /// Directory image paths are relative to; thumbnails are read from it (read-only,
    /// confined to it exactly as the receiver confines submissions).
    #[arg(long, env = "FACEWIRE_IMAGE_ROOT", default_value = ".")]
    pub image_root: PathBuf,

    /// Largest image file served as a thumbnail, in bytes.
    #[arg(long, env = "FACEWIRE_MAX_IMAGE_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_image_bytes: u64,

    /// Largest enrolment upload (all photos of one form submission), in bytes.
    #[arg(long, env = "FACEWIRE_MAX_UPLOAD_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_upload_bytes: usize,

    #[command(flatten)]
    pub drain: DrainConfig,

    /// TLS for the web page (HTTPS).
    #[command(flatten)]
    pub tls: TlsConfig,

    /// Whom to trust for `https://` receiver and recognition URLs.
    #[command(flatten)]
    pub client_tls: ClientTlsConfig,

    /// The token: enrolling and removing people on the page require it (browsers are asked
    /// for it as a password), and the frontend sends it to the receiver and recognition.
    #[command(flatten)]
    pub auth: AuthConfig,

    /// How calls to the receiver and recognition are made (timeout, breaker, balancing).
    #[command(flatten)]
    pub upstream: UpstreamConfig,
}

/// The client stack for the frontend's calls to the receiver and recognition.
#[derive(Debug, Clone, clap::Args)]
pub struct UpstreamConfig {
    /// Timeout of one call, in seconds (enrolment runs face detection on every photo).
    #[arg(
        long,
        env = "FACEWIRE_UPSTREAM_TIMEOUT_SECONDS",
        default_value_t = 60.0
    )]
    pub upstream_timeout_seconds: f64,
    /// Consecutive failed calls to one service that open its circuit breaker.
    #[arg(long, env = "FACEWIRE_UPSTREAM_BREAKER_FAILURES", default_value_t = 5)]
    pub upstream_breaker_failures: u32,
    /// Seconds a breaker stays open before a probe.
    #[arg(
        long,
        env = "FACEWIRE_UPSTREAM_BREAKER_COOLDOWN_SECONDS",
        default_value_t = 5.0
    )]
    pub upstream_breaker_cooldown_seconds: f64,
    /// Seconds between DNS look-ups of the URLs' names (replicas come and go).
    #[arg(
        long,
        env = "FACEWIRE_UPSTREAM_REFRESH_SECONDS",
        default_value_t = 10.0
    )]
    pub upstream_refresh_seconds: f64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            upstream_timeout_seconds: 60.0,
            upstream_breaker_failures: 5,
            upstream_breaker_cooldown_seconds: 5.0,
            upstream_refresh_seconds: 10.0,
        }
    }
}

impl UpstreamConfig {
    /// The resilience settings of these calls.
    pub fn resilience(&self) -> facewire_resilience::ResilienceConfig {
        facewire_resilience::ResilienceConfig {
            timeout: Duration::from_secs_f64(self.upstream_timeout_seconds.max(0.1)),
            breaker_failures: self.upstream_breaker_failures,
            breaker_cooldown: Duration::from_secs_f64(
                self.upstream_breaker_cooldown_seconds.max(0.1),
            ),
            // Pages fan out several calls each.
            concurrency: 64,
            ..facewire_resilience::ResilienceConfig::default()
        }
    }

    /// How often names are resolved again.
    pub fn refresh(&self) -> Duration {
        Duration::from_secs_f64(self.upstream_refresh_seconds.max(0.1))
    }
}

impl FrontendConfig {
    /// A configuration with every default, for tests and `facewire up`.
    pub fn local(receiver_url: &str, recognition_url: &str, image_root: PathBuf) -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            receiver_url: receiver_url.to_string(),
            recognition_url: recognition_url.to_string(),
            image_root,
            max_image_bytes: 32 * 1024 * 1024,
            max_upload_bytes: 32 * 1024 * 1024,
            drain: DrainConfig { drain_seconds: 1.0 },
            tls: TlsConfig::default(),
            client_tls: ClientTlsConfig::default(),
            auth: AuthConfig::default(),
            upstream: UpstreamConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        frontend: FrontendConfig,
    }

    #[test]
    fn defaults_work_on_a_laptop() {
        let cli = Cli::parse_from(["x"]);
        assert_eq!(cli.frontend.http_addr.to_string(), "127.0.0.1:8081");
        assert_eq!(cli.frontend.receiver_url, "http://127.0.0.1:50051");
        assert_eq!(cli.frontend.recognition_url, "http://127.0.0.1:50052");
        assert_eq!(cli.frontend.image_root, PathBuf::from("."));
        let upstream = cli.frontend.upstream.resilience();
        assert_eq!(upstream.timeout, Duration::from_secs(60));
        assert_eq!(upstream.breaker_failures, 5);
    }

    #[test]
    fn flags_override_defaults() {
        let cli = Cli::parse_from([
            "x",
            "--receiver-url",
            "http://10.0.0.1:1",
            "--image-root",
            "/srv/img",
        ]);
        assert_eq!(cli.frontend.receiver_url, "http://10.0.0.1:1");
        assert_eq!(cli.frontend.image_root, PathBuf::from("/srv/img"));
    }
}
