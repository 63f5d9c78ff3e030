//! The subcommands; each module parses nothing itself and calls library code.

pub mod frontend;
pub mod migrate;
pub mod people;
pub mod recognition;
pub mod serve;
pub mod submit;
pub mod up;

use facewire_config::{AuthConfig, ClientTlsConfig};
use facewire_proto::{ClientError, ClientOptions};

/// How a client command reaches the server named by `--server`: TLS for an `https://`
/// URL, trusting `--tls-ca`, and the bearer token.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    #[command(flatten)]
    pub tls: ClientTlsConfig,
    #[command(flatten)]
    pub auth: AuthConfig,
}

impl ClientArgs {
    /// The client library's options (reads the CA file).
    pub fn options(&self) -> Result<ClientOptions, ClientError> {
        ClientOptions::load(
            self.tls.tls_ca.as_deref(),
            self.tls.tls_server_name.as_deref(),
            self.auth.token(),
        )
    }
}
