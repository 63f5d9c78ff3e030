//! The tutorial application's JSON endpoints, over the same ingest path as gRPC.
//!
//! - `POST /image/post` `{"path":"unknown4456.jpg"}` (the first release)
//! - `POST /images/post` `{"paths":[{"path":"unknown4456.jpg"}]}` (the batch API)

use axum::{
    body::Bytes,
    extract::{FromRequest, Request, State},
    http::{
        header::{CONTENT_TYPE, ORIGIN},
        StatusCode,
    },
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use facewire_config::PathError;
use facewire_storage::{ImageRecord, StoreError};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{
    convert::path_error_code,
    ingest::{Ingest, IngestError, ItemResult},
};

/// Body of `POST /image/post`.
#[derive(Debug, Deserialize)]
pub struct SingleRequest {
    /// Path relative to the image root.
    pub path: String,
}

/// One path of `POST /images/post`.
#[derive(Debug, Deserialize)]
pub struct PathItem {
    /// Path relative to the image root.
    pub path: String,
}

/// Body of `POST /images/post`.
#[derive(Debug, Deserialize)]
pub struct BatchRequest {
    /// The paths.
    pub paths: Vec<PathItem>,
}

/// A refusal, as JSON.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// Machine-readable code (`SUBMIT_ERROR_CODE_*`, `INVALID_JSON`, ...).
    pub code: String,
    /// What was wrong and what is allowed.
    pub message: String,
}

/// An accepted image, as JSON.
#[derive(Debug, Serialize)]
pub struct AcceptedBody {
    /// Image id.
    pub id: i64,
    /// Stored path.
    pub path: String,
    /// Status (`pending`).
    pub status: String,
}

/// One result of the batch endpoint.
#[derive(Debug, Serialize)]
pub struct ItemBody {
    /// The path as submitted.
    pub path: String,
    /// Present when accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Present when accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Present when refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// Response of the batch endpoint.
#[derive(Debug, Serialize)]
pub struct BatchResponse {
    /// One per submitted path, in order.
    pub results: Vec<ItemBody>,
}

/// An HTTP error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.body }))).into_response()
    }
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                code: code.to_string(),
                message: message.into(),
            },
        }
    }
}

/// A JSON request body.
///
/// The tutorial documented its endpoints with `curl -d '{"path":…}'`, which sends
/// `application/x-www-form-urlencoded`; old clients must keep working, so a body is
/// read as JSON when it is labelled JSON, form-encoded (curl's default) or not labelled
/// at all. Any other type is refused with 415. A form-encoded body from a browser
/// (one that says where it comes from, `Origin` or `Sec-Fetch-Site`) is refused too:
/// that is what a cross-site form post looks like, and a browser that means to call
/// the API sends `application/json`, which no other site can send without CORS.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let from_browser =
            req.headers().contains_key(ORIGIN) || req.headers().contains_key("sec-fetch-site");
        let accepted = match content_type.as_deref() {
            None | Some("") => true,
            Some("application/json") => true,
            Some("application/x-www-form-urlencoded") => !from_browser,
            Some(t) => t.starts_with("application/") && t.ends_with("+json"),
        };
        if !accepted {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                format!(
                    "content type {:?} is not accepted; send JSON as application/json",
                    content_type.unwrap_or_default()
                ),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BODY_TOO_LARGE",
                format!(
                    "{} ({})",
                    e.body_text(),
                    facewire_config::env_var::<crate::Limits>("max_message_bytes")
                ),
            )
        })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_JSON",
                format!("the body is not the expected JSON: {e}"),
            )
        })
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match &e {
            IngestError::EmptyBatch => {
                ApiError::new(StatusCode::BAD_REQUEST, "EMPTY_BATCH", e.to_string())
            }
            IngestError::BatchTooLarge { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "BATCH_TOO_LARGE", e.to_string())
            }
            IngestError::Store(StoreError::Unavailable(_)) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                e.to_string(),
            ),
            IngestError::Store(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string())
            }
        }
    }
}

fn refusal(e: &PathError) -> ApiError {
    let status = match e {
        PathError::NotFound(_) => StatusCode::NOT_FOUND,
        PathError::OutsideRoot(_) => StatusCode::FORBIDDEN,
        PathError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, path_error_code(e).as_str_name(), e.to_string())
}

fn accepted(rec: &ImageRecord) -> AcceptedBody {
    AcceptedBody {
        id: rec.id,
        path: rec.path.clone(),
        status: rec.status.to_string(),
    }
}

async fn post_image(
    State(ingest): State<Ingest>,
    JsonBody(req): JsonBody<SingleRequest>,
) -> Result<Json<AcceptedBody>, ApiError> {
    let mut items = ingest.submit(vec![req.path]).await?;
    match items.pop() {
        Some(ItemResult::Accepted(rec)) => Ok(Json(accepted(&rec))),
        Some(ItemResult::Refused(e)) => Err(refusal(&e)),
        None => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "no result",
        )),
    }
}

async fn post_images(
    State(ingest): State<Ingest>,
    JsonBody(req): JsonBody<BatchRequest>,
) -> Result<Json<BatchResponse>, ApiError> {
    let paths: Vec<String> = req.paths.into_iter().map(|p| p.path).collect();
    let items = ingest.submit(paths.clone()).await?;
    let results = paths
        .into_iter()
        .zip(items)
        .map(|(path, item)| match item {
            ItemResult::Accepted(rec) => ItemBody {
                path,
                id: Some(rec.id),
                status: Some(rec.status.to_string()),
                error: None,
            },
            ItemResult::Refused(e) => ItemBody {
                path,
                id: None,
                status: None,
                error: Some(refusal(&e).body),
            },
        })
        .collect();
    Ok(Json(BatchResponse { results }))
}

/// The JSON routes; without `batch_api` only the first release's `/image/post`.
pub fn routes(ingest: Ingest, batch_api: bool, max_body: usize) -> Router {
    let mut router = Router::new().route("/image/post", post(post_image));
    if batch_api {
        router = router.route("/images/post", post(post_images));
    }
    router
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(ingest)
}
