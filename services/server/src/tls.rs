//! TLS (rustls) for the gRPC and HTTP listeners.
//!
//! One [`TlsAcceptor`] is built from PEM files and shared by both servers. [`incoming`]
//! turns a bound `TcpListener` into a stream of finished handshakes: handshakes run in
//! their own tasks, so one slow or hostile client cannot hold up the accept loop, and a
//! client that does not speak TLS (or never finishes) is dropped without a connection.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

/// A client has this long to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("FACEWIRE_TLS_CERT: no PEM certificate found ({0})")]
    NoCertificate(String),
    /// The key file holds no PEM private key.
    #[error("FACEWIRE_TLS_KEY: no PEM private key found ({0})")]
    NoKey(String),
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("TLS certificate and key are unusable: {0}")]
    Invalid(#[from] rustls::Error),
}

/// Server-side TLS settings, shared by the gRPC and HTTP listeners.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsAcceptor")
    }
}

impl TlsAcceptor {
    /// The acceptor `config` asks for: `None` (plaintext) when it names no certificate.
    pub fn from_config(config: &facewire_config::TlsConfig) -> Result<Option<Self>, TlsError> {
        config
            .paths()
            .map(|(cert, key)| Self::from_pem_files(cert, key))
            .transpose()
    }

    /// Reads a PEM certificate chain (leaf first) and its PEM private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        Self::from_pem(&read(cert)?, &read(key)?)
    }

    /// Builds the acceptor from PEM text.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::NoCertificate(e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate("the file is empty".into()));
        }
        let key =
            PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::NoKey(e.to_string()))?;
        // An explicit provider: the process-wide default is ambiguous when several crates
        // enable different rustls backends.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        // gRPC clients require h2 by ALPN; HTTP clients may use either.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The same certificate offering only HTTP/1.1 by ALPN, for the JSON port: its
    /// clients (the tutorial's) speak HTTP/1.1, and HTTP/2 there broke curl with a
    /// framing error (to investigate before offering h2 again).
    pub fn http1_only(&self) -> Self {
        let mut config = (**self.inner.config()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        }
    }
}

/// One accepted TLS connection.
#[derive(Debug)]
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    local: Option<SocketAddr>,
    remote: SocketAddr,
}

impl TlsConnection {
    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.local,
            remote_addr: Some(self.remote),
        }
    }
}

/// Completed TLS handshakes from one listener: a `Stream` for tonic and an axum
/// `Listener`. Dropping it stops accepting.
#[derive(Debug)]
pub struct TlsIncoming {
    connections: mpsc::Receiver<TlsConnection>,
    local: Option<SocketAddr>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// Accepts TCP connections on `listener` and yields those whose TLS handshake succeeds.
pub fn incoming(listener: TcpListener, acceptor: TlsAcceptor) -> TlsIncoming {
    let local = listener.local_addr().ok();
    let (tx, connections) = mpsc::channel(64);
    let accept_task = tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            crate::no_delay(&tcp);
            let acceptor = acceptor.inner.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let local = tcp.local_addr().ok();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx
                            .send(TlsConnection {
                                stream,
                                local,
                                remote,
                            })
                            .await;
                    }
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    TlsIncoming {
        connections,
        local,
        accept_task,
    }
}

impl tokio_stream::Stream for TlsIncoming {
    type Item = io::Result<TlsConnection>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.connections.poll_recv(cx).map(|c| c.map(Ok))
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(conn) => {
                let remote = conn.remote;
                (conn, remote)
            }
            // The accept task only ends when this value is dropped; never reached.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.local
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "listener has no address"))
    }
}
