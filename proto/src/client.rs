//! The typed client library.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
    Code, IntoRequest,
};

use crate::{
    status::submit_error_code_from_status,
    v1::{
        image_service_client::ImageServiceClient, submit_result::Outcome, GetImageRequest, Image,
        ImagePath, ImageStatus, ListImagesRequest, ListImagesResponse, SubmitError,
        SubmitImageRequest, SubmitImagesRequest, SubmitResult,
    },
};

/// Extra attempts for a call that never left this client (see [`never_sent`]).
const MAX_TRANSPARENT_RETRIES: usize = 2;

/// After falling back to the legacy RPC, try the batch RPC again after this long...
pub const DEFAULT_REPROBE_AFTER: Duration = Duration::from_secs(5 * 60);
/// ... or after this many submissions over the legacy RPC, whichever comes first.
pub const DEFAULT_REPROBE_CALLS: u32 = 1000;

/// Calls `$self.inner.$method($message)`, sending it again (at most
/// [`MAX_TRANSPARENT_RETRIES`] times) while the failure proves the request was never
/// sent: the HTTP/2 connection it was queued on closed first (the server sent GOAWAY
/// while draining for a rolling update). The channel reconnects, through the Service,
/// to a replica that is still serving. gRPC's own libraries call this a transparent
/// retry; it cannot duplicate a submission because the server never saw the request.
macro_rules! call_with_transparent_retry {
    ($self:ident, $method:ident, $message:expr) => {{
        let message = $message;
        let mut attempt = 0;
        loop {
            let request = $self.request(message.clone());
            match $self.inner.$method(request).await {
                Err(status) if attempt < MAX_TRANSPARENT_RETRIES && never_sent(&status) => {
                    attempt += 1;
                    tracing::debug!(attempt, "request not sent (connection closing); retrying");
                }
                other => break other,
            }
        }
    }};
}

/// Failure to reach a facewire server at all.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint URL is malformed.
    #[error("invalid endpoint {endpoint:?}: {source}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was refused.
        source: tonic::codegen::http::uri::InvalidUri,
    },
    /// Nothing answered at the endpoint.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint as given.
        endpoint: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The TLS settings were refused (e.g. the CA certificate is not PEM).
    #[error("TLS settings for {endpoint}: {source}")]
    Tls {
        /// The endpoint as given.
        endpoint: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The bearer token cannot be sent as a header (it has non-visible-ASCII bytes).
    #[error("the bearer token must be visible ASCII")]
    InvalidToken,
    /// The CA certificate bundle could not be read.
    #[error("cannot read the CA certificate bundle {path}: {source}")]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An `https://` endpoint, but no CA to verify its certificate with.
    #[error(
        "{endpoint} is https:// but no CA certificate is configured to verify it \
         (FACEWIRE_TLS_CA / --tls-ca for the facewire commands)"
    )]
    NoCa {
        /// The endpoint as given.
        endpoint: String,
    },
}

/// How to reach a server that serves TLS or wants a bearer token.
#[derive(Clone, Default)]
pub struct ClientOptions {
    /// PEM certificate(s) of the CA that signed the server's certificate. Used for
    /// `https://` endpoints, which then trust only these.
    pub ca_pem: Option<Vec<u8>>,
    /// Name to verify the server certificate against, when it differs from the
    /// endpoint's host (e.g. connecting by IP to a certificate issued for a DNS name).
    pub domain: Option<String>,
    /// Sent as `authorization: Bearer <token>` with every call.
    pub token: Option<String>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .field("domain", &self.domain)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ClientOptions {
    /// Options from settings as the facewire commands take them: the path of a PEM CA
    /// bundle (read now), a name to verify server certificates against, a bearer token
    /// (empty means none).
    pub fn load(
        ca_file: Option<&Path>,
        domain: Option<&str>,
        token: Option<&str>,
    ) -> Result<Self, ClientError> {
        let ca_pem = match ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|source| ClientError::ReadCa {
                path: path.to_path_buf(),
                source,
            })?),
            None => None,
        };
        Ok(Self {
            ca_pem,
            domain: domain.filter(|d| !d.is_empty()).map(str::to_string),
            token: token.filter(|t| !t.is_empty()).map(str::to_string),
        })
    }

    /// An endpoint for `url`: TLS when its scheme is `https://` (trusting only `ca_pem`,
    /// verifying the certificate against `domain`, else the URL's host), plaintext
    /// otherwise. Nothing is contacted yet.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, ClientError> {
        self.endpoint_inner(url, None)
    }

    /// Like [`ClientOptions::endpoint`], for a URL holding an address that was resolved
    /// from `host` (client-side balancing dials each address): the certificate is
    /// verified against `host` (or `domain`), the name the server is known by.
    pub fn endpoint_resolved_from(&self, url: &str, host: &str) -> Result<Endpoint, ClientError> {
        self.endpoint_inner(url, Some(host))
    }

    fn endpoint_inner(&self, url: &str, host: Option<&str>) -> Result<Endpoint, ClientError> {
        let endpoint = Channel::from_shared(url.to_string()).map_err(|source| {
            ClientError::InvalidEndpoint {
                endpoint: url.to_string(),
                source,
            }
        })?;
        if endpoint.uri().scheme_str() != Some("https") {
            return Ok(endpoint);
        }
        let Some(ca) = &self.ca_pem else {
            return Err(ClientError::NoCa {
                endpoint: url.to_string(),
            });
        };
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let Some(name) = self.domain.as_deref().or(host) {
            tls = tls.domain_name(name);
        }
        endpoint.tls_config(tls).map_err(|source| ClientError::Tls {
            endpoint: url.to_string(),
            source,
        })
    }

    /// The interceptor that sends this token, for generated clients
    /// (`RecognitionServiceClient::with_interceptor(channel, options.bearer()?)`).
    pub fn bearer(&self) -> Result<BearerAuth, ClientError> {
        BearerAuth::new(self.token.as_deref())
    }
}

/// Sends `authorization: Bearer <token>` with every request when a token is set, and
/// nothing otherwise. An interceptor for the generated clients.
#[derive(Clone, Default)]
pub struct BearerAuth {
    value: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth")
            .field("token", &self.value.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl BearerAuth {
    /// Sends `token` (an empty token, or none, sends nothing).
    pub fn new(token: Option<&str>) -> Result<Self, ClientError> {
        let value = match token.filter(|t| !t.is_empty()) {
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| ClientError::InvalidToken)?,
            ),
            None => None,
        };
        Ok(Self { value })
    }

    /// Adds the header to `request`.
    fn authorize<T>(&self, request: &mut tonic::Request<T>) {
        if let Some(value) = &self.value {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        self.authorize(&mut request);
        Ok(request)
    }
}

/// Since when, and for how many submissions, a client has used the legacy RPC.
#[derive(Debug, Clone, Copy)]
struct Fallback {
    since: tokio::time::Instant,
    legacy_calls: u32,
}

/// A typed facewire `ImageService` client.
///
/// [`FacewireClient::submit_images`] uses the batch RPC and, when the server answers
/// `UNIMPLEMENTED` (a server older than the batch API), falls back to the legacy
/// `SubmitImage` RPC one path at a time. It remembers that for a while (clones of the
/// client share the channel and the memory), then tries the batch RPC again: the
/// servers behind the connection may have been upgraded since (see
/// [`FacewireClient::with_reprobe`]).
#[derive(Clone, Debug)]
pub struct FacewireClient {
    inner: ImageServiceClient<Channel>,
    fallback: Arc<Mutex<Option<Fallback>>>,
    reprobe_after: Duration,
    reprobe_calls: u32,
    auth: BearerAuth,
}

impl FacewireClient {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:50051`).
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, ClientError> {
        Self::connect_with(endpoint, ClientOptions::default()).await
    }

    /// Connects to `endpoint` with TLS (for `https://` endpoints, trusting
    /// `options.ca_pem`) and a bearer token, e.g.
    /// `FacewireClient::connect_with("https://facewire:50051", ClientOptions { ca_pem: Some(pem), token: Some(t), ..Default::default() })`.
    pub async fn connect_with(
        endpoint: impl Into<String>,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let endpoint = endpoint.into();
        let auth = options.bearer()?;
        let channel = options
            .endpoint(&endpoint)?
            .connect()
            .await
            .map_err(|source| ClientError::Connect { endpoint, source })?;
        let mut client = Self::new(channel);
        client.auth = auth;
        Ok(client)
    }

    /// Wraps an existing channel.
    pub fn new(channel: Channel) -> Self {
        Self {
            inner: ImageServiceClient::new(channel),
            fallback: Arc::new(Mutex::new(None)),
            reprobe_after: DEFAULT_REPROBE_AFTER,
            reprobe_calls: DEFAULT_REPROBE_CALLS,
            auth: BearerAuth::default(),
        }
    }

    /// Once fallen back to the legacy RPC, tries the batch RPC again after `after`, or
    /// after `calls` submissions over the legacy RPC, whichever comes first (defaults
    /// [`DEFAULT_REPROBE_AFTER`] and [`DEFAULT_REPROBE_CALLS`]).
    pub fn with_reprobe(mut self, after: Duration, calls: u32) -> Self {
        self.reprobe_after = after;
        self.reprobe_calls = calls.max(1);
        self
    }

    fn fallback(&self) -> std::sync::MutexGuard<'_, Option<Fallback>> {
        self.fallback.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this submission should use the batch RPC: always until the server
    /// refused it, then again once the fallback is old enough (a re-probe).
    fn try_batch(&self) -> bool {
        let mut fallback = self.fallback();
        match fallback.as_mut() {
            None => true,
            Some(f)
                if f.since.elapsed() >= self.reprobe_after
                    || f.legacy_calls >= self.reprobe_calls =>
            {
                tracing::debug!(legacy_calls = f.legacy_calls, "trying SubmitImages again");
                true
            }
            Some(f) => {
                f.legacy_calls += 1;
                false
            }
        }
    }

    /// `message` as a request carrying the bearer token, if any.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = message.into_request();
        self.auth.authorize(&mut request);
        request
    }

    /// Whether this connection last learnt that the server only has the legacy RPC.
    pub fn uses_legacy_rpc(&self) -> bool {
        self.fallback().is_some()
    }

    /// Submits `paths` and returns one result per path, in order.
    ///
    /// Returns `Err` only when the call as a whole failed (server unreachable, batch over
    /// the server's limit, ...); a refused path is an `Err`-free result holding its error.
    pub async fn submit_images<I, S>(
        &mut self,
        paths: I,
    ) -> Result<Vec<SubmitResult>, tonic::Status>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let paths: Vec<String> = paths.into_iter().map(Into::into).collect();
        if self.try_batch() {
            let request = SubmitImagesRequest {
                paths: paths
                    .iter()
                    .map(|p| ImagePath { path: p.clone() })
                    .collect(),
            };
            match call_with_transparent_retry!(self, submit_images, request) {
                Ok(response) => {
                    if self.fallback().take().is_some() {
                        tracing::info!("server has SubmitImages now; using it again");
                    }
                    return Ok(response.into_inner().results);
                }
                Err(status) if status.code() == Code::Unimplemented => {
                    tracing::info!("server has no SubmitImages; falling back to SubmitImage");
                    *self.fallback() = Some(Fallback {
                        since: tokio::time::Instant::now(),
                        legacy_calls: 1,
                    });
                }
                Err(status) => return Err(status),
            }
        }
        let mut results = Vec::with_capacity(paths.len());
        for (i, path) in paths.into_iter().enumerate() {
            match self.submit_one(&path).await {
                Ok(image) => results.push(SubmitResult {
                    path,
                    outcome: Some(Outcome::Image(image)),
                }),
                // Nothing accepted yet and the server itself failed: report the call.
                Err(status) if i == 0 && !is_item_error(&status) => return Err(status),
                Err(status) => results.push(SubmitResult {
                    path,
                    outcome: Some(Outcome::Error(SubmitError {
                        code: submit_error_code_from_status(&status) as i32,
                        message: status.message().to_string(),
                    })),
                }),
            }
        }
        Ok(results)
    }

    /// Submits one path with the legacy RPC, which every server generation has.
    pub async fn submit_image(&mut self, path: impl Into<String>) -> Result<Image, tonic::Status> {
        self.submit_one(&path.into()).await
    }

    async fn submit_one(&mut self, path: &str) -> Result<Image, tonic::Status> {
        let request = SubmitImageRequest {
            path: path.to_string(),
        };
        let response = call_with_transparent_retry!(self, submit_image, request)?.into_inner();
        response
            .image
            .ok_or_else(|| tonic::Status::internal("server answered SubmitImage without an image"))
    }

    /// Fetches one image record.
    pub async fn get_image(&mut self, id: i64) -> Result<Image, tonic::Status> {
        call_with_transparent_retry!(self, get_image, GetImageRequest { id })?
            .into_inner()
            .image
            .ok_or_else(|| tonic::Status::internal("server answered GetImage without an image"))
    }

    /// Lists one page of images, optionally only those in `status`.
    pub async fn list_images(
        &mut self,
        page_size: i32,
        page_token: String,
        status: Option<ImageStatus>,
    ) -> Result<ListImagesResponse, tonic::Status> {
        let request = ListImagesRequest {
            page_size,
            page_token,
            status: status.unwrap_or(ImageStatus::Unspecified) as i32,
            ..Default::default()
        };
        Ok(call_with_transparent_retry!(self, list_images, request)?.into_inner())
    }

    /// Lists one page of images with every filter `ListImagesRequest` has (people, unknown
    /// faces, status).
    pub async fn list_images_filtered(
        &mut self,
        request: ListImagesRequest,
    ) -> Result<ListImagesResponse, tonic::Status> {
        Ok(call_with_transparent_retry!(self, list_images, request)?.into_inner())
    }

    /// Streams the records of `ids` as their status changes (see
    /// `ImageService.WatchImages`), with the bearer token.
    pub async fn watch_images(
        &mut self,
        ids: Vec<i64>,
    ) -> Result<tonic::Streaming<crate::v1::WatchImagesResponse>, tonic::Status> {
        let request = self.request(crate::v1::WatchImagesRequest {
            ids,
            ..Default::default()
        });
        Ok(self.inner.watch_images(request).await?.into_inner())
    }

    /// The generated client underneath, for RPCs this wrapper does not cover. Requests
    /// made through it carry no bearer token: add the `authorization` metadata yourself.
    pub fn raw(&mut self) -> &mut ImageServiceClient<Channel> {
        &mut self.inner
    }
}

/// Whether `status` is hyper's "canceled" transport error: the request was queued on a
/// connection that closed before the request was written, so the server never saw it.
fn never_sent(status: &tonic::Status) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = cause {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            return h.is_canceled();
        }
        cause = e.source();
    }
    false
}

/// Whether a status from `SubmitImage` is about the path rather than the server.
fn is_item_error(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument
            | Code::NotFound
            | Code::PermissionDenied
            | Code::OutOfRange
            | Code::FailedPrecondition
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_chooses_tls_and_https_needs_a_ca() {
        let plain = ClientOptions::default();
        assert!(plain.endpoint("http://127.0.0.1:1").is_ok());
        let err = plain.endpoint("https://facewire:443").unwrap_err();
        assert!(matches!(err, ClientError::NoCa { .. }), "{err}");
        assert!(matches!(
            plain.endpoint("not a url"),
            Err(ClientError::InvalidEndpoint { .. })
        ));
        let missing = ClientOptions::load(Some(Path::new("/nonexistent/ca.pem")), None, None);
        assert!(matches!(missing, Err(ClientError::ReadCa { .. })));
    }

    #[test]
    fn empty_settings_mean_none_and_tokens_are_redacted() {
        let options = ClientOptions::load(None, Some(""), Some("")).unwrap();
        assert!(options.domain.is_none() && options.token.is_none());
        let options = ClientOptions::load(None, None, Some("s3cret")).unwrap();
        assert!(!format!("{options:?}").contains("s3cret"));
        let bearer = options.bearer().unwrap();
        assert!(!format!("{bearer:?}").contains("s3cret"));
        let mut request = tonic::Request::new(());
        bearer.authorize(&mut request);
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer s3cret"
        );
        assert!(matches!(
            BearerAuth::new(Some("line\nbreak")),
            Err(ClientError::InvalidToken)
        ));
    }
}
