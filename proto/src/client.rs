//! The typed client library.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use tonic::{transport::Channel, Code};

use crate::{
    status::submit_error_code_from_status,
    v1::{
        image_service_client::ImageServiceClient, submit_result::Outcome, GetImageRequest, Image,
        ImagePath, ImageStatus, ListImagesRequest, ListImagesResponse, SubmitError,
        SubmitImageRequest, SubmitImagesRequest, SubmitResult,
    },
};

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
}

impl FacewireClient {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:50051`).
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, ClientError> {
        let endpoint = endpoint.into();
        let ep = Channel::from_shared(endpoint.clone()).map_err(|source| {
            ClientError::InvalidEndpoint {
                endpoint: endpoint.clone(),
                source,
            }
        })?;
        let channel = ep
            .connect()
            .await
            .map_err(|source| ClientError::Connect { endpoint, source })?;
        Ok(Self::new(channel))
    }

    /// Wraps an existing channel.
    pub fn new(channel: Channel) -> Self {
        Self {
            inner: ImageServiceClient::new(channel),
            legacy_only: Arc::new(AtomicBool::new(false)),
        }
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
            match self.inner.submit_images(request).await {
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
        let response = self
            .inner
            .submit_image(SubmitImageRequest {
                path: path.to_string(),
            })
            .await?
            .into_inner();
        response
            .image
            .ok_or_else(|| tonic::Status::internal("server answered SubmitImage without an image"))
    }

    /// Fetches one image record.
    pub async fn get_image(&mut self, id: i64) -> Result<Image, tonic::Status> {
        self.inner
            .get_image(GetImageRequest { id })
            .await?
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
        Ok(self.inner.list_images(request).await?.into_inner())
    }

    /// The generated client underneath, for RPCs this wrapper does not cover.
    pub fn raw(&mut self) -> &mut ImageServiceClient<Channel> {
        &mut self.inner
    }
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
