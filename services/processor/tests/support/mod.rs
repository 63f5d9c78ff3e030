//! A stand-in recognition service served like the real one (same server, same request
//! limit, same "too large" answer) that finds no face in anything, and a processor run
//! over it until the images are finished.

#![allow(dead_code)] // Each test binary uses part of it.

use std::{
    path::Path,
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
use facewire_queue::WorkQueue;
use facewire_server::{CancellationToken, GrpcServer};
use facewire_storage::{ImageRecord, Store};
use tonic::{Request, Response, Status};

/// Recognition's request limit by default.
pub const MESSAGE_LIMIT: usize = facewire_config::DEFAULT_RECOGNITION_MAX_MESSAGE_BYTES;

/// A recognition service that finds no face; it can cut its first calls short.
#[derive(Default, Clone)]
pub struct Stand {
    pub calls: Arc<AtomicUsize>,
    /// The first this many calls end with this status.
    pub fail_first: usize,
    pub failure: Option<(tonic::Code, &'static str)>,
    /// Images per call answered.
    pub answered: Arc<Mutex<Vec<usize>>>,
    /// The bytes of every image answered about.
    pub seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Stand {
    /// A stand-in whose every call ends with `code`.
    pub fn always_failing(code: tonic::Code, message: &'static str) -> Self {
        Self {
            fail_first: usize::MAX,
            failure: Some((code, message)),
            ..Self::default()
        }
    }
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
        self.seen
            .lock()
            .unwrap()
            .extend(images.iter().map(|i| i.image.clone()));
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
pub async fn serve(stand: Stand, shutdown: CancellationToken) -> String {
    let api = RecognitionServiceServer::new(stand).max_decoding_message_size(MESSAGE_LIMIT);
    let grpc = GrpcServer::new()
        .max_message_bytes(MESSAGE_LIMIT)
        .add_service(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(grpc.serve(listener, shutdown));
    url
}

/// Runs a processor (over `stand`, with its settings changed by `tweak`) on `queue`,
/// reading images under `images`, until every image of `ids` is finished; returns their
/// records.
pub async fn run_until_finished(
    store: &Store,
    queue: Arc<dyn WorkQueue>,
    images: &Path,
    stand: Stand,
    tweak: impl FnOnce(&mut WorkConfig),
    ids: &[i64],
) -> Vec<ImageRecord> {
    let shutdown = CancellationToken::new();
    let recognition_url = serve(stand, shutdown.clone()).await;
    let mut config = WorkConfig {
        recognition_url,
        ..facewire_config::declared_defaults()
    };
    tweak(&mut config);
    let processor = Processor::new(store.clone(), queue, images, config).unwrap();
    let running = tokio::spawn(processor.run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let records = loop {
        let records = store.get_many(ids.to_vec()).await.unwrap();
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
