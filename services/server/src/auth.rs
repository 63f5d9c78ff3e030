//! Optional bearer-token authentication, as a tower layer for gRPC services and axum
//! routes alike.
//!
//! A request must carry `authorization: Bearer <token>` when its path is protected;
//! otherwise it is answered UNAUTHENTICATED (gRPC) or 401 (HTTP) without reaching the
//! service. Routes for browsers also take the token as the password of HTTP Basic
//! authentication, which browsers know how to ask a person for. The layer wraps only what it is given, so health, reflection, `/metrics` and
//! the probes stay open by construction. Tokens are compared as SHA-256 digests in
//! constant time, so neither the content nor the length of the secret leaks by timing.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{header::AUTHORIZATION, HeaderValue, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The secret clients must present.
#[derive(Clone)]
pub struct BearerToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl BearerToken {
    /// The expected token.
    pub fn new(token: &str) -> Self {
        Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Whether an `authorization` header value presents this token.
    pub fn accepts(&self, header: Option<&HeaderValue>) -> bool {
        header
            .and_then(|h| bearer(h.as_bytes()))
            .is_some_and(|presented| self.matches(presented))
    }

    /// Whether an `authorization` header value presents this token as the password of
    /// HTTP Basic authentication (the user name is not checked).
    pub fn accepts_basic(&self, header: Option<&HeaderValue>) -> bool {
        header
            .and_then(|h| basic_password(h.as_bytes()))
            .is_some_and(|presented| self.matches(&presented))
    }

    fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.digest).into()
    }
}

/// The credentials of `Bearer <credentials>` (the scheme is case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The password of `Basic <base64(user:password)>` (the scheme is case-insensitive).
fn basic_password(value: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let password = decoded[colon + 1..].to_vec();
    (!password.is_empty()).then_some(password)
}

/// How a refused request is answered, for the response body type `B`.
pub trait Rejection<B>: Clone + Send + Sync + 'static {
    /// The response to a request without a valid token.
    fn reject(&self, reason: &'static str) -> Response<B>;
}

/// Refuses with gRPC status UNAUTHENTICATED.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcRejection;

impl<B: Default> Rejection<B> for GrpcRejection {
    fn reject(&self, reason: &'static str) -> Response<B> {
        tonic::Status::unauthenticated(reason).into_http()
    }
}

/// Refuses with HTTP 401, `WWW-Authenticate: Bearer` and the JSON error body the JSON
/// endpoints use.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpRejection;

impl<B: From<String>> Rejection<B> for HttpRejection {
    fn reject(&self, reason: &'static str) -> Response<B> {
        let body = serde_json::json!({ "error": { "code": "UNAUTHENTICATED", "message": reason } });
        unauthorized(
            body.to_string(),
            "Bearer realm=\"facewire\"",
            "application/json",
        )
    }
}

/// A 401 with `body`, the `WWW-Authenticate` challenge and the content type.
fn unauthorized<B: From<String>>(
    body: String,
    challenge: &'static str,
    content_type: &'static str,
) -> Response<B> {
    let mut response = Response::new(B::from(body));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    headers.insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    response
}

/// Refuses with HTTP 401 and `WWW-Authenticate: Basic`, so a browser asks for
/// credentials: any user name, the token as the password.
#[derive(Debug, Clone, Copy, Default)]
pub struct BrowserRejection;

impl<B: From<String>> Rejection<B> for BrowserRejection {
    fn reject(&self, reason: &'static str) -> Response<B> {
        let body = format!(
            "Unauthorized: {reason}. In a browser, sign in with any user name and the \
             facewire token as the password.\n"
        );
        unauthorized(
            body,
            "Basic realm=\"facewire\", charset=\"UTF-8\"",
            "text/plain; charset=utf-8",
        )
    }
}

#[derive(Debug, Clone)]
enum Scope {
    /// Every request through the layer.
    All,
    /// Only these request paths (`/package.Service/Method` for gRPC).
    Paths(Arc<[String]>),
}

/// Requires the bearer token on the requests in its scope; without a token configured
/// it lets everything through.
#[derive(Debug, Clone)]
pub struct AuthLayer<R> {
    token: Option<BearerToken>,
    scope: Scope,
    /// Also accept the token as an HTTP Basic password.
    basic: bool,
    rejection: R,
}

impl AuthLayer<GrpcRejection> {
    /// For a gRPC service: `methods` are full paths such as
    /// `/facewire.v1.ImageService/SubmitImages`; other methods stay open.
    pub fn grpc(token: Option<&str>, methods: &[String]) -> Self {
        Self {
            token: token.map(BearerToken::new),
            scope: Scope::Paths(methods.iter().cloned().collect()),
            basic: false,
            rejection: GrpcRejection,
        }
    }

    /// For a gRPC service every method of which needs the token (one that reveals
    /// faces, names or photos, reads included).
    pub fn grpc_all(token: Option<&str>) -> Self {
        Self {
            token: token.map(BearerToken::new),
            scope: Scope::All,
            basic: false,
            rejection: GrpcRejection,
        }
    }
}

impl AuthLayer<HttpRejection> {
    /// For HTTP routes: every request through the layer needs the token (apply it with
    /// axum's `route_layer` so unknown paths still answer 404).
    pub fn http(token: Option<&str>) -> Self {
        Self {
            token: token.map(BearerToken::new),
            scope: Scope::All,
            basic: false,
            rejection: HttpRejection,
        }
    }
}

impl AuthLayer<BrowserRejection> {
    /// For HTTP routes people use from a browser (web page forms): like
    /// [`AuthLayer::http`], but the token is also accepted as the password of HTTP Basic
    /// authentication, and a refusal asks the browser for it.
    pub fn browser(token: Option<&str>) -> Self {
        Self {
            token: token.map(BearerToken::new),
            scope: Scope::All,
            basic: true,
            rejection: BrowserRejection,
        }
    }
}

impl<S, R: Clone> tower::Layer<S> for AuthLayer<R> {
    type Service = RequireBearer<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireBearer {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AuthLayer`] produces.
#[derive(Debug, Clone)]
pub struct RequireBearer<S, R> {
    inner: S,
    layer: AuthLayer<R>,
}

impl<S: tonic::server::NamedService, R> tonic::server::NamedService for RequireBearer<S, R> {
    const NAME: &'static str = S::NAME;
}

impl<S, R, ReqBody, ResBody> tower::Service<Request<ReqBody>> for RequireBearer<S, R>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    R: Rejection<ResBody>,
    ResBody: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if let Some(token) = &self.layer.token {
            let protected = match &self.layer.scope {
                Scope::All => true,
                Scope::Paths(paths) => paths.iter().any(|p| p == req.uri().path()),
            };
            let presented = req.headers().get(AUTHORIZATION);
            let accepted =
                token.accepts(presented) || (self.layer.basic && token.accepts_basic(presented));
            if protected && !accepted {
                let reason = if req.headers().contains_key(AUTHORIZATION) {
                    "the bearer token is not valid"
                } else {
                    "this call needs `authorization: Bearer <token>`"
                };
                let response = self.layer.rejection.reject(reason);
                return Box::pin(async move { Ok(response) });
            }
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, ServiceExt};

    fn echo() -> impl tower::Service<
        Request<String>,
        Response = Response<String>,
        Error = std::convert::Infallible,
        Future = std::future::Ready<Result<Response<String>, std::convert::Infallible>>,
    > + Clone {
        tower::service_fn(|_req: Request<String>| {
            std::future::ready(Ok(Response::new("ok".into())))
        })
    }

    fn request(path: &str, auth: Option<&str>) -> Request<String> {
        let mut b = Request::builder().uri(path);
        if let Some(a) = auth {
            b = b.header(AUTHORIZATION, a);
        }
        b.body(String::new()).unwrap()
    }

    #[test]
    fn parses_the_bearer_scheme() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bear"), None);
        let t = BearerToken::new("s3cret");
        assert!(t.accepts(Some(&HeaderValue::from_static("Bearer s3cret"))));
        assert!(!t.accepts(Some(&HeaderValue::from_static("Bearer s3cre"))));
        assert!(!t.accepts(Some(&HeaderValue::from_static("s3cret"))));
        assert!(!t.accepts(None));
    }

    #[tokio::test]
    async fn grpc_protects_only_the_listed_methods() {
        let layer = AuthLayer::grpc(Some("t"), &["/p.S/Write".to_string()]);
        let svc = layer.layer(echo());
        let r = svc
            .clone()
            .oneshot(request("/p.S/Write", None))
            .await
            .unwrap();
        assert_eq!(
            tonic::Status::from_header_map(r.headers()).unwrap().code(),
            tonic::Code::Unauthenticated
        );
        let r = svc
            .clone()
            .oneshot(request("/p.S/Write", Some("Bearer t")))
            .await
            .unwrap();
        assert_eq!(r.into_body(), "ok");
        let r = svc.oneshot(request("/p.S/Read", None)).await.unwrap();
        assert_eq!(r.into_body(), "ok");
    }

    #[tokio::test]
    async fn grpc_all_protects_reads_too() {
        let svc = AuthLayer::grpc_all(Some("t")).layer(echo());
        let r = svc
            .clone()
            .oneshot(request("/p.S/Read", None))
            .await
            .unwrap();
        assert_eq!(
            tonic::Status::from_header_map(r.headers()).unwrap().code(),
            tonic::Code::Unauthenticated
        );
        let r = svc
            .oneshot(request("/p.S/Read", Some("Bearer t")))
            .await
            .unwrap();
        assert_eq!(r.into_body(), "ok");
        let open = AuthLayer::grpc_all(None).layer(echo());
        let r = open.oneshot(request("/p.S/Read", None)).await.unwrap();
        assert_eq!(r.into_body(), "ok");
    }

    #[tokio::test]
    async fn http_answers_401_and_no_token_means_open() {
        let svc = AuthLayer::http(Some("t")).layer(echo());
        let r = svc
            .clone()
            .oneshot(request("/x", Some("Bearer wrong")))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key(http::header::WWW_AUTHENTICATE));
        assert!(r.into_body().contains("UNAUTHENTICATED"));
        let open = AuthLayer::http(None).layer(echo());
        let r = open.oneshot(request("/x", None)).await.unwrap();
        assert_eq!(r.into_body(), "ok");
    }

    #[tokio::test]
    async fn browsers_may_send_the_token_as_a_basic_password() {
        use base64::Engine;
        let basic = |credentials: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            )
        };
        let svc = AuthLayer::browser(Some("t0k")).layer(echo());
        let r = svc.clone().oneshot(request("/x", None)).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let challenge = r.headers()[http::header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap();
        assert!(challenge.starts_with("Basic "), "{challenge}");
        let cases = [
            (basic("anyone:t0k"), StatusCode::OK),
            (basic(":t0k"), StatusCode::OK),
            ("Bearer t0k".to_string(), StatusCode::OK),
            (basic("t0k:wrong"), StatusCode::UNAUTHORIZED),
            (basic("t0k"), StatusCode::UNAUTHORIZED),
            ("Basic !!!".to_string(), StatusCode::UNAUTHORIZED),
        ];
        for (auth, want) in cases {
            let r = svc.clone().oneshot(request("/x", Some(&auth))).await;
            assert_eq!(r.unwrap().status(), want, "{auth}");
        }
        // The API layers take only the bearer scheme.
        let api = AuthLayer::http(Some("t0k")).layer(echo());
        let r = api
            .oneshot(request("/x", Some(&basic("u:t0k"))))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
}
