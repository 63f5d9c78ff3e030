//! The typed client library.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig},
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

/// A typed facewire `ImageService` client.
///
/// [`FacewireClient::submit_images`] uses the batch RPC and, when the server answers
/// `UNIMPLEMENTED` (a server older than the batch API), falls back to the legacy
/// `SubmitImage` RPC one path at a time. It remembers that for the connection: clones of
/// the client share the channel and the memory.
#[derive(Clone, Debug)]
pub struct FacewireClient {
    inner: ImageServiceClient<Channel>,
    legacy_only: Arc<AtomicBool>,
    authorization: Option<MetadataValue<Ascii>>,
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
        let authorization = match &options.token {
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| ClientError::InvalidToken)?,
            ),
            None => None,
        };
        let mut ep = Channel::from_shared(endpoint.clone()).map_err(|source| {
            ClientError::InvalidEndpoint {
                endpoint: endpoint.clone(),
                source,
            }
        })?;
        if options.ca_pem.is_some() || options.domain.is_some() {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &options.ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some(domain) = &options.domain {
                tls = tls.domain_name(domain.clone());
            }
            ep = ep.tls_config(tls).map_err(|source| ClientError::Tls {
                endpoint: endpoint.clone(),
                source,
            })?;
        }
        let channel = ep
            .connect()
            .await
            .map_err(|source| ClientError::Connect { endpoint, source })?;
        let mut client = Self::new(channel);
        client.authorization = authorization;
        Ok(client)
    }

    /// Wraps an existing channel.
    pub fn new(channel: Channel) -> Self {
        Self {
            inner: ImageServiceClient::new(channel),
            legacy_only: Arc::new(AtomicBool::new(false)),
            authorization: None,
        }
    }

    /// `message` as a request carrying the bearer token, if any.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = message.into_request();
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        request
    }

    /// Whether this connection has learnt that the server only has the legacy RPC.
    pub fn uses_legacy_rpc(&self) -> bool {
        self.legacy_only.load(Ordering::Relaxed)
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
        if !self.uses_legacy_rpc() {
            let request = SubmitImagesRequest {
                paths: paths
                    .iter()
                    .map(|p| ImagePath { path: p.clone() })
                    .collect(),
            };
            match call_with_transparent_retry!(self, submit_images, request) {
                Ok(response) => return Ok(response.into_inner().results),
                Err(status) if status.code() == Code::Unimplemented => {
                    tracing::info!("server has no SubmitImages; falling back to SubmitImage");
                    self.legacy_only.store(true, Ordering::Relaxed);
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
        };
        Ok(call_with_transparent_retry!(self, list_images, request)?.into_inner())
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
