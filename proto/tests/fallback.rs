//! The client library against an old server that only has the legacy RPC, and one
//! that is upgraded to the batch RPC while clients are connected.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use facewire_proto::{
    v1::{
        image_service_server::{ImageService, ImageServiceServer},
        submit_result::Outcome,
        GetImageRequest, GetImageResponse, Image, ImageStatus, ListImagesRequest,
        ListImagesResponse, SubmitErrorCode, SubmitImageRequest, SubmitImageResponse,
        SubmitImagesRequest, SubmitImagesResponse, SubmitResult, WatchImagesRequest,
        WatchImagesResponse,
    },
    FacewireClient,
};
use tonic::{Request, Response, Status};

/// The tutorial's first release: SubmitImage only, until `upgraded` is set. Counts the
/// calls it gets.
#[derive(Default, Clone)]
struct OldServer {
    batch_calls: Arc<AtomicUsize>,
    single_calls: Arc<AtomicUsize>,
    upgraded: Arc<AtomicBool>,
}

#[tonic::async_trait]
impl ImageService for OldServer {
    type WatchImagesStream = tokio_stream::Empty<Result<WatchImagesResponse, Status>>;

    async fn watch_images(
        &self,
        _: Request<WatchImagesRequest>,
    ) -> Result<Response<Self::WatchImagesStream>, Status> {
        Err(Status::unimplemented("WatchImages"))
    }

    async fn submit_images(
        &self,
        request: Request<SubmitImagesRequest>,
    ) -> Result<Response<SubmitImagesResponse>, Status> {
        self.batch_calls.fetch_add(1, Ordering::SeqCst);
        if !self.upgraded.load(Ordering::SeqCst) {
            return Err(Status::unimplemented("unknown method SubmitImages"));
        }
        let results = request
            .into_inner()
            .paths
            .into_iter()
            .map(|p| SubmitResult {
                outcome: Some(Outcome::Image(Image {
                    path: p.path.clone(),
                    status: ImageStatus::Pending as i32,
                    ..Image::default()
                })),
                path: p.path,
            })
            .collect();
        Ok(Response::new(SubmitImagesResponse { results }))
    }

    async fn submit_image(
        &self,
        request: Request<SubmitImageRequest>,
    ) -> Result<Response<SubmitImageResponse>, Status> {
        let n = self.single_calls.fetch_add(1, Ordering::SeqCst);
        let path = request.into_inner().path;
        if path.starts_with("missing") {
            // An old server attaches no precise code: the client infers it.
            return Err(Status::not_found(format!("{path} does not exist")));
        }
        Ok(Response::new(SubmitImageResponse {
            image: Some(Image {
                id: n as i64 + 1,
                path,
                status: ImageStatus::Pending as i32,
                ..Image::default()
            }),
        }))
    }

    async fn get_image(
        &self,
        _: Request<GetImageRequest>,
    ) -> Result<Response<GetImageResponse>, Status> {
        Err(Status::unimplemented("GetImage"))
    }

    async fn list_images(
        &self,
        _: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        Err(Status::unimplemented("ListImages"))
    }
}

async fn serve(server: OldServer) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ImageServiceServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

#[tokio::test]
async fn falls_back_to_the_legacy_rpc_and_remembers() {
    let server = OldServer::default();
    let url = serve(server.clone()).await;
    let mut client = FacewireClient::connect(url).await.unwrap();
    assert!(!client.uses_legacy_rpc());

    let results = client
        .submit_images(["a.jpg", "missing.jpg", "b.jpg"])
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    assert!(matches!(&results[0].outcome, Some(Outcome::Image(i)) if i.path == "a.jpg"));
    match &results[1].outcome {
        Some(Outcome::Error(e)) => assert_eq!(e.code, SubmitErrorCode::NotFound as i32),
        other => panic!("expected a per-item error, got {other:?}"),
    }
    assert!(matches!(&results[2].outcome, Some(Outcome::Image(i)) if i.path == "b.jpg"));
    assert!(client.uses_legacy_rpc());
    assert_eq!(server.batch_calls.load(Ordering::SeqCst), 1);
    assert_eq!(server.single_calls.load(Ordering::SeqCst), 3);

    // Remembered per connection, shared by clones: no second batch attempt.
    let mut clone = client.clone();
    clone.submit_images(["c.jpg"]).await.unwrap();
    client.submit_images(["d.jpg"]).await.unwrap();
    assert_eq!(server.batch_calls.load(Ordering::SeqCst), 1);
    assert_eq!(server.single_calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_fresh_connection_tries_the_batch_rpc_again() {
    let server = OldServer::default();
    let url = serve(server.clone()).await;
    let mut first = FacewireClient::connect(url.clone()).await.unwrap();
    first.submit_images(["a.jpg"]).await.unwrap();
    let mut second = FacewireClient::connect(url).await.unwrap();
    second.submit_images(["b.jpg"]).await.unwrap();
    // One batch attempt per connection: a server may have been upgraded since.
    assert_eq!(server.batch_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_not_a_hang() {
    let err = FacewireClient::connect("http://127.0.0.1:1")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

#[tokio::test]
async fn goes_back_to_the_batch_rpc_after_some_legacy_calls_once_the_server_has_it() {
    let server = OldServer::default();
    let url = serve(server.clone()).await;
    let mut client = FacewireClient::connect(url)
        .await
        .unwrap()
        .with_reprobe(Duration::from_secs(3600), 3);
    // Falls back on the first call, and stays on the legacy RPC for two more.
    for path in ["a.jpg", "b.jpg", "c.jpg"] {
        client.submit_images([path]).await.unwrap();
        assert!(client.uses_legacy_rpc());
    }
    assert_eq!(server.batch_calls.load(Ordering::SeqCst), 1);
    assert_eq!(server.single_calls.load(Ordering::SeqCst), 3);

    // The fleet is upgraded: the next call tries SubmitImages again and stays on it.
    server.upgraded.store(true, Ordering::SeqCst);
    let results = client.submit_images(["d.jpg", "e.jpg"]).await.unwrap();
    assert_eq!(results.len(), 2);
    assert!(!client.uses_legacy_rpc());
    client.submit_images(["f.jpg"]).await.unwrap();
    assert_eq!(server.batch_calls.load(Ordering::SeqCst), 3);
    assert_eq!(server.single_calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn re_probes_the_batch_rpc_after_a_while_and_falls_back_again_if_still_missing() {
    let server = OldServer::default();
    let url = serve(server.clone()).await;
    let mut client = FacewireClient::connect(url)
        .await
        .unwrap()
        .with_reprobe(Duration::from_millis(300), u32::MAX);
    client.submit_images(["a.jpg"]).await.unwrap();
    client.submit_images(["b.jpg"]).await.unwrap();
    assert_eq!(server.batch_calls.load(Ordering::SeqCst), 1);

    // Still old after the while: one more batch attempt, then legacy again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    client.submit_images(["c.jpg"]).await.unwrap();
    client.submit_images(["d.jpg"]).await.unwrap();
    assert!(client.uses_legacy_rpc());
    assert_eq!(server.batch_calls.load(Ordering::SeqCst), 2);

    server.upgraded.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    client.submit_images(["e.jpg"]).await.unwrap();
    assert!(!client.uses_legacy_rpc());
    assert_eq!(server.batch_calls.load(Ordering::SeqCst), 3);
    assert_eq!(server.single_calls.load(Ordering::SeqCst), 4);
}
