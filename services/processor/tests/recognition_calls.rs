//! How the processor's calls to recognition fail, and what that does to images, against
//! a stand-in recognition service served like the real one (same server, same request
//! limit, same "too large" answer) that finds no face in anything.
//!
//! - A batch of large photos must be sent in calls within recognition's request limit,
//!   and no valid image may fail for its size or for its neighbours' sizes.
//! - A call cut short (recognition draining: CANCELLED, connection closed) is retried.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use facewire_processor::{Processor, WorkConfig};
use facewire_proto::v1::{
    batch_result,
    recognition_service_server::{RecognitionService, RecognitionServiceServer},
    BatchResult, EnrollRequest, EnrollResponse, ListFacesRequest, ListFacesResponse,
    ListPeopleRequest, ListPeopleResponse, RecognizeBatchRequest, RecognizeBatchResponse,
    RecognizeRequest, RecognizeResponse, RemovePersonRequest, RemovePersonResponse,
};
use facewire_queue::{Headers, MemoryQueue, WorkQueue};
use facewire_server::{CancellationToken, GrpcServer};
use facewire_storage::{ImageRecord, ImageStatus, NewImage, Store, StoreOptions};
use tonic::{Request, Response, Status};

/// Recognition's request limit by default.
const MESSAGE_LIMIT: usize = facewire_config::DEFAULT_RECOGNITION_MAX_MESSAGE_BYTES;

/// A recognition service that finds no face; it can cut its first calls short.
#[derive(Default, Clone)]
struct Stand {
    calls: Arc<AtomicUsize>,
    /// The first this many calls end with this status.
    fail_first: usize,
    failure: Option<(tonic::Code, &'static str)>,
    /// Images per call answered.
    answered: Arc<Mutex<Vec<usize>>>,
}

#[tonic::async_trait]
impl RecognitionService for Stand {
    async fn recognize(
        &self,
        _: Request<RecognizeRequest>,
    ) -> Result<Response<RecognizeResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn recognize_batch(
        &self,
        request: Request<RecognizeBatchRequest>,
    ) -> Result<Response<RecognizeBatchResponse>, Status> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some((code, message)) = self.failure {
            if n < self.fail_first {
                return Err(Status::new(code, message));
            }
        }
        let images = request.into_inner().images;
        self.answered.lock().unwrap().push(images.len());
        let results = images
            .into_iter()
            .map(|image| BatchResult {
                key: image.key,
                outcome: Some(batch_result::Outcome::Faces(RecognizeResponse::default())),
            })
            .collect();
        Ok(Response::new(RecognizeBatchResponse { results }))
    }

    async fn enroll(&self, _: Request<EnrollRequest>) -> Result<Response<EnrollResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn list_people(
        &self,
        _: Request<ListPeopleRequest>,
    ) -> Result<Response<ListPeopleResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn remove_person(
        &self,
        _: Request<RemovePersonRequest>,
    ) -> Result<Response<RemovePersonResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn list_faces(
        &self,
        _: Request<ListFacesRequest>,
    ) -> Result<Response<ListFacesResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
}

/// Serves `stand` like recognition does; returns its URL.
async fn serve(stand: Stand, shutdown: CancellationToken) -> String {
    let api = RecognitionServiceServer::new(stand).max_decoding_message_size(MESSAGE_LIMIT);
    let grpc = GrpcServer::new()
        .max_message_bytes(MESSAGE_LIMIT)
        .add_service(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(grpc.serve(listener, shutdown));
    url
}

/// Images of the given sizes, recorded and queued; then a processor over them runs until
/// every image is finished, and their records are returned.
async fn process(sizes: &[usize], stand: Stand) -> Vec<ImageRecord> {
    process_with(sizes, stand, |_| {}).await
}

/// [`process`] with the processor's settings changed by `tweak`.
async fn process_with(
    sizes: &[usize],
    stand: Stand,
    tweak: impl FnOnce(&mut WorkConfig),
) -> Vec<ImageRecord> {
    let data = tempfile::tempdir().unwrap();
    let images = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/f.db", data.path().display());
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    let queue: Arc<dyn WorkQueue> = Arc::new(MemoryQueue::new());
    let new = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let path = format!("{i}.jpg");
            std::fs::write(images.path().join(&path), vec![0xa5u8; size]).unwrap();
            NewImage {
                path,
                content_hash: i.to_string(),
            }
        })
        .collect();
    let ids: Vec<i64> = store
        .insert_batch(new)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    queue.publish(&ids, &Headers::new()).await.unwrap();

    let shutdown = CancellationToken::new();
    let recognition_url = serve(stand, shutdown.clone()).await;
    let mut config = WorkConfig {
        recognition_url,
        ..facewire_config::declared_defaults()
    };
    tweak(&mut config);
    let processor = Processor::new(store.clone(), queue, images.path(), config).unwrap();
    let running = tokio::spawn(processor.run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let records = loop {
        let records = store.get_many(ids.clone()).await.unwrap();
        if records.iter().all(|r| r.status.is_terminal()) {
            break records;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not finished: {:?}",
            records
                .iter()
                .map(|r| (r.id, r.status, r.last_error.clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    shutdown.cancel();
    let _ = running.await;
    records
}

fn assert_none_failed(records: &[ImageRecord]) {
    for r in records {
        assert_eq!(
            r.status,
            ImageStatus::NoFace,
            "image {} ({}): {:?}",
            r.id,
            r.path,
            r.last_error
        );
    }
}

#[tokio::test]
async fn large_photos_are_sent_within_the_request_limit_and_none_fails() {
    const MB: usize = 1_000_000;
    // Eight phone photos of 10 to 14 MB (96 MB together) and a 9 KB one.
    let mut sizes: Vec<usize> = (0..8).map(|i| (10 + i % 5) * MB).collect();
    sizes.push(9_000);
    let stand = Stand::default();
    let answered = stand.answered.clone();
    let records = process(&sizes, stand).await;
    assert_none_failed(&records);
    let answered = answered.lock().unwrap().clone();
    assert_eq!(answered.iter().sum::<usize>(), 9, "{answered:?}");
}

#[tokio::test]
async fn an_image_at_the_size_limit_is_recognised() {
    // The largest file the receiver accepts, alone and next to others.
    let limit = facewire_config::DEFAULT_MAX_IMAGE_BYTES as usize;
    let records = process(&[limit, limit, 1_000], Stand::default()).await;
    assert_none_failed(&records);
}

#[tokio::test]
async fn a_call_recognition_cancels_while_draining_is_retried() {
    let stand = Stand {
        fail_first: 3,
        failure: Some((tonic::Code::Cancelled, "the server is shutting down")),
        ..Stand::default()
    };
    let records = process(&[1_000, 2_000], stand).await;
    assert_none_failed(&records);
}

#[tokio::test]
async fn a_call_refused_as_too_large_is_split_until_it_fits() {
    const MB: usize = 1_000_000;
    let mut sizes: Vec<usize> = (0..8).map(|i| (10 + i % 5) * MB).collect();
    sizes.push(9_000);
    let stand = Stand::default();
    let answered = stand.answered.clone();
    // The processor is told recognition takes far more than it does, so its first call
    // (all eight photos, 96 MB) is refused.
    let records = process_with(&sizes, stand, |config| {
        config.batch_bytes = 1 << 30;
        config.recognition_max_message_bytes = 1 << 30;
    })
    .await;
    assert_none_failed(&records);
    let answered = answered.lock().unwrap().clone();
    assert_eq!(answered.iter().sum::<usize>(), 9, "{answered:?}");
    assert!(answered.iter().all(|&n| n < 8), "{answered:?}");
}
