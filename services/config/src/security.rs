//! Transport security and request authentication settings.

use std::path::PathBuf;

/// TLS for a service's gRPC and HTTP listeners: a PEM certificate chain and its PEM
/// private key (in Kubernetes, both mounted from a `kubernetes.io/tls` Secret). Both or
/// neither; with neither, the service speaks plaintext.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first) served on the gRPC and HTTP ports.
    #[arg(long, env = "FACEWIRE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "FACEWIRE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsConfig {
    /// The certificate and key paths when TLS is configured.
    pub fn paths(&self) -> Option<(&PathBuf, &PathBuf)> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => None,
        }
    }
}

/// How a client trusts servers that speak TLS: the URL scheme chooses (`https://` is TLS,
/// `http://` plaintext); these settings say whom to believe. Used by every caller of a
/// facewire server: the processor (recognition), the frontend (receiver and recognition),
/// `facewire up` inside itself, and the client commands' `--server`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsConfig {
    /// PEM certificate(s) of the CA that signed the servers' certificates, trusted for
    /// `https://` URLs (for a self-signed server certificate: that certificate). Required
    /// for `https://`: there is no built-in set of public roots.
    #[arg(long, env = "FACEWIRE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Name the server certificates are checked against instead of the URL's host (e.g.
    /// when connecting by IP address or through a port-forward to `localhost`).
    #[arg(long, env = "FACEWIRE_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
}

/// Bearer-token authentication of the write calls (submitting images, enrolling and
/// removing people) and the JSON endpoints. Health, reflection and `/metrics` stay open so
/// probes and scrapers need no secret. The same setting makes clients send the token.
#[derive(Clone, Default, clap::Args)]
pub struct AuthConfig {
    /// Bearer token: servers require it as `authorization: Bearer <token>` on write calls,
    /// clients send it with theirs; unset or empty: no authentication.
    #[arg(long, env = "FACEWIRE_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
}

impl AuthConfig {
    /// The token when authentication is on.
    pub fn token(&self) -> Option<&str> {
        self.auth_token.as_deref().filter(|t| !t.is_empty())
    }
}

// Never print the token, not even in a debug dump of the configuration.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("auth_token", &self.token().map(|_| "<redacted>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        tls: TlsConfig,
        #[command(flatten)]
        client_tls: ClientTlsConfig,
        #[command(flatten)]
        auth: AuthConfig,
    }

    #[test]
    fn cert_and_key_come_together() {
        let cli = Cli::try_parse_from(["x", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        assert!(cli.tls.paths().is_some());
        assert!(Cli::try_parse_from(["x", "--tls-cert", "c.pem"]).is_err());
        assert!(Cli::try_parse_from(["x", "--tls-key", "k.pem"]).is_err());
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert!(cli.tls.paths().is_none());
    }

    #[test]
    fn empty_token_means_no_auth_and_debug_hides_it() {
        let cli = Cli::try_parse_from(["x", "--auth-token", ""]).unwrap();
        assert_eq!(cli.auth.token(), None);
        let cli = Cli::try_parse_from(["x", "--auth-token", "s3cret"]).unwrap();
        assert_eq!(cli.auth.token(), Some("s3cret"));
        assert!(!format!("{:?}", cli.auth).contains("s3cret"));
    }

    #[test]
    fn a_server_can_also_be_a_client() {
        let cli = Cli::try_parse_from([
            "x",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-ca",
            "ca.pem",
            "--tls-server-name",
            "facewire",
        ])
        .unwrap();
        assert!(cli.tls.paths().is_some());
        assert_eq!(cli.client_tls.tls_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(cli.client_tls.tls_server_name.as_deref(), Some("facewire"));
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert!(cli.client_tls.tls_ca.is_none());
    }
}
