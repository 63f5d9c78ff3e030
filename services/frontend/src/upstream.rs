//! The services behind the page: gRPC clients for the receiver, the recognition service
//! and the people service (served beside recognition, on the same channel), and the live
//! feed — one `WatchImages` stream per frontend, shared by every open page, reconnected
//! whenever it breaks.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use facewire_proto::{
    v1::{
        self as pb, image_service_client::ImageServiceClient,
        people_service_client::PeopleServiceClient,
        recognition_service_client::RecognitionServiceClient,
    },
    BearerAuth, ClientError, ClientOptions,
};
use facewire_resilience::{
    balanced_channel, Backoff, BalancedChannel, BreakerLayer, ChannelError, ResilientClient,
};
use facewire_server::CancellationToken;
use facewire_telemetry::{trace_context::InjectTraceContext, InjectTraceContextLayer};
use serde::Serialize;
use tokio::sync::broadcast;
use tonic::{codegen::InterceptedService, Code, Status};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use tower::Layer;

use crate::{config::UpstreamConfig, FrontendError};

/// Readiness asks the receiver's health service with this deadline.
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest gRPC message exchanged with recognition (enrolment uploads).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// How often an idle live feed checks whether anybody still listens.
const IDLE_CHECK: Duration = Duration::from_secs(10);

/// Pauses between attempts to reopen the live feed.
fn feed_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(250), Duration::from_secs(5))
}

/// Which backing service a failure concerns, for messages on the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The receiver (ImageService).
    Receiver,
    /// The recognition service.
    Recognition,
}

impl Service {
    fn label(self) -> &'static str {
        match self {
            Service::Receiver => "receiver",
            Service::Recognition => "recognition service",
        }
    }
}

/// A sentence for the page saying what went wrong talking to `service` at `url`:
/// unreachable (down, timing out) or an answer with an error.
pub fn describe_failure(service: Service, url: &str, status: &Status) -> String {
    let label = service.label();
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled => {
            let detail = if status.message().is_empty() {
                format!("{:?}", status.code())
            } else {
                status.message().to_string()
            };
            format!("The {label} at {url} is unreachable ({detail}).")
        }
        code => format!(
            "The {label} at {url} answered {code:?}: {}",
            status.message()
        ),
    }
}

/// A channel balancing over every replica behind `urls` (TLS for `https://`), whose
/// calls carry the page request's trace context; or an error naming the setting.
fn channel(
    urls: &str,
    what: &'static str,
    options: &ClientOptions,
    config: &UpstreamConfig,
) -> Result<Traced, FrontendError> {
    let bad = |reason: String| FrontendError::BadUrl {
        what,
        url: urls.to_string(),
        reason,
    };
    match balanced_channel(urls, config.refresh(), options) {
        Ok(channel) => Ok(InjectTraceContextLayer.layer(channel)),
        Err(ChannelError::InvalidUrl(url)) => Err(bad(format!(
            "{url:?} is not an http:// or https:// URL with a host"
        ))),
        Err(ChannelError::Client(
            e @ (ClientError::InvalidEndpoint { .. } | ClientError::NoCa { .. }),
        )) => Err(bad(e.to_string())),
        Err(ChannelError::Client(e)) => Err(e.into()),
    }
}

/// A channel whose calls carry the page request's trace context (`traceparent`), so a
/// page's calls join its trace in the receiver's and recognition's logs.
type Traced = InjectTraceContext<BalancedChannel>;

/// A traced channel whose calls also carry the bearer token (when one is configured).
type Authorized = InterceptedService<Traced, BearerAuth>;

/// Clients for the receiver, the recognition service and the people service. Each call
/// goes through the resilience stack (timeout, breaker, retries of reads) and is spread
/// over every replica. Channels connect lazily, so the frontend starts (and its pages
/// render, saying what is down) whatever is running.
#[derive(Clone)]
pub struct Upstream {
    /// The receiver's URL, for messages.
    pub receiver_url: String,
    /// The recognition service's URL, for messages.
    pub recognition_url: String,
    images: ResilientClient<ImageServiceClient<Authorized>>,
    // Same channel, outside the stack: the watch stream lives for hours.
    watch: ImageServiceClient<Authorized>,
    health: HealthClient<Traced>,
    recognition: ResilientClient<RecognitionServiceClient<Authorized>>,
    // Same channel and breaker as `recognition`: PeopleService is served on
    // recognition's address.
    people: ResilientClient<PeopleServiceClient<Authorized>>,
}

/// Who faces are assigned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignee {
    /// An existing person.
    Id(i64),
    /// A person by name, created when nobody has it.
    Name(String),
}

impl Upstream {
    /// Clients for the services at these URLs (each a comma-separated list), over TLS
    /// for `https://` ones, sending the token of `options`, with the timeout and breaker
    /// of `config`. Nothing is contacted yet; must be called within a Tokio runtime
    /// (names are resolved in the background).
    pub fn new(
        receiver_url: &str,
        recognition_url: &str,
        options: &ClientOptions,
        config: &UpstreamConfig,
    ) -> Result<Self, FrontendError> {
        let receiver = channel(receiver_url, "FACEWIRE_RECEIVER_URL", options, config)?;
        let recognition = channel(recognition_url, "FACEWIRE_RECOGNITION_URL", options, config)?;
        let bearer = options.bearer()?;
        let resilience = config.resilience();
        let receiver_breaker = BreakerLayer::from_config("frontend-receiver", &resilience);
        let recognition_breaker = BreakerLayer::from_config("frontend-recognition", &resilience);
        let images = ImageServiceClient::with_interceptor(receiver.clone(), bearer.clone());
        Ok(Self {
            receiver_url: receiver_url.to_string(),
            recognition_url: recognition_url.to_string(),
            images: ResilientClient::new(images.clone(), &resilience, receiver_breaker),
            watch: images,
            health: HealthClient::new(receiver),
            recognition: ResilientClient::new(
                RecognitionServiceClient::with_interceptor(recognition.clone(), bearer.clone())
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
                &resilience,
                recognition_breaker.clone(),
            ),
            people: ResilientClient::new(
                PeopleServiceClient::with_interceptor(recognition, bearer),
                &resilience,
                recognition_breaker,
            ),
        })
    }

    /// A page of images, newest first, filtered as `request` says.
    pub async fn list_images(
        &self,
        request: pb::ListImagesRequest,
    ) -> Result<pb::ListImagesResponse, Status> {
        self.images
            .call(move |mut c| {
                let request = request.clone();
                async move { c.list_images(request).await }
            })
            .await
    }

    /// One image record.
    pub async fn get_image(&self, id: i64) -> Result<pb::Image, Status> {
        self.images
            .call(move |mut c| async move { c.get_image(pb::GetImageRequest { id }).await })
            .await?
            .image
            .ok_or_else(|| Status::not_found(format!("no image with id {id}")))
    }

    /// Whether the receiver's ImageService reports SERVING.
    pub async fn receiver_ready(&self) -> Result<(), String> {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: "facewire.v1.ImageService".into(),
        });
        request.set_timeout(READY_TIMEOUT);
        let mut health = self.health.clone();
        let check = tokio::time::timeout(READY_TIMEOUT, health.check(request));
        match check.await {
            Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
            Ok(Ok(_)) => Err(format!(
                "The receiver at {} reports NOT_SERVING.",
                self.receiver_url
            )),
            Ok(Err(s)) => Err(describe_failure(Service::Receiver, &self.receiver_url, &s)),
            Err(_) => Err(describe_failure(
                Service::Receiver,
                &self.receiver_url,
                &Status::deadline_exceeded(format!("no answer within {READY_TIMEOUT:?}")),
            )),
        }
    }

    /// A person's enrolled faces with their pictures, oldest first (`NOT_FOUND` for an
    /// unknown person).
    pub async fn list_faces(&self, person: String) -> Result<Vec<pb::EnrolledFaceCrop>, Status> {
        Ok(self
            .recognition
            .call(move |mut c| {
                let person = person.clone();
                async move { c.list_faces(pb::ListFacesRequest { person }).await }
            })
            .await?
            .faces)
    }

    /// Enrols photos of `name`; one result per photo.
    pub async fn enroll(
        &self,
        name: String,
        images: Vec<Vec<u8>>,
    ) -> Result<Vec<pb::EnrollResult>, Status> {
        let request = pb::EnrollRequest { name, images };
        Ok(self
            .recognition
            .call_once(move |mut c| {
                let request = request.clone();
                async move { c.enroll(request).await }
            })
            .await?
            .results)
    }

    /// One page of people.
    pub async fn list_persons(
        &self,
        request: pb::ListPersonsRequest,
    ) -> Result<pb::ListPersonsResponse, Status> {
        self.people
            .call(move |mut c| {
                let request = request.clone();
                async move { c.list_persons(request).await }
            })
            .await
    }

    /// One person by id (`NOT_FOUND` when there is none).
    pub async fn get_person(&self, person_id: i64) -> Result<pb::PersonRecord, Status> {
        self.people
            .call(move |mut c| async move {
                c.get_person(pb::GetPersonRequest {
                    person_id,
                    name: String::new(),
                })
                .await
            })
            .await?
            .person
            .ok_or_else(|| Status::not_found(format!("no person with id {person_id}")))
    }

    /// Renames, hides or unhides a person (`ABORTED` when `expected_version` is stale).
    pub async fn update_person(
        &self,
        request: pb::UpdatePersonRequest,
    ) -> Result<pb::PersonRecord, Status> {
        let id = request.person_id;
        self.people
            .call_once(move |mut c| {
                let request = request.clone();
                async move { c.update_person(request).await }
            })
            .await?
            .person
            .ok_or_else(|| Status::not_found(format!("no person with id {id}")))
    }

    /// Erases a person (their photos stay, without the name).
    pub async fn delete_person(&self, person_id: i64) -> Result<pb::DeletePersonResponse, Status> {
        self.people
            .call_once(move |mut c| async move {
                c.delete_person(pb::DeletePersonRequest { person_id }).await
            })
            .await
    }

    /// Moves every face of `from` into `into`; the answer names the merge to undo.
    pub async fn merge_persons(
        &self,
        into: i64,
        from: Vec<i64>,
    ) -> Result<pb::MergePersonsResponse, Status> {
        let request = pb::MergePersonsRequest {
            into_person_id: into,
            from_person_ids: from,
        };
        self.people
            .call_once(move |mut c| {
                let request = request.clone();
                async move { c.merge_persons(request).await }
            })
            .await
    }

    /// Undoes a merge.
    pub async fn undo_merge(&self, merge_id: i64) -> Result<Vec<pb::PersonRecord>, Status> {
        Ok(self
            .people
            .call_once(
                move |mut c| async move { c.undo_merge(pb::UndoMergeRequest { merge_id }).await },
            )
            .await?
            .persons)
    }

    /// The small JPEG of one face (`NOT_FOUND` when it has none).
    pub async fn face_crop(&self, face_id: i64) -> Result<Vec<u8>, Status> {
        Ok(
            self.people
                .call(move |mut c| async move {
                    c.get_face_crop(pb::GetFaceCropRequest { face_id }).await
                })
                .await?
                .crop_jpeg,
        )
    }

    /// Names faces by hand.
    pub async fn assign_faces(
        &self,
        face_ids: Vec<i64>,
        to: Assignee,
    ) -> Result<pb::AssignFacesResponse, Status> {
        let (person_id, person_name) = match to {
            Assignee::Id(id) => (id, String::new()),
            Assignee::Name(name) => (0, name),
        };
        let request = pb::AssignFacesRequest {
            face_ids,
            person_id,
            person_name,
        };
        self.people
            .call_once(move |mut c| {
                let request = request.clone();
                async move { c.assign_faces(request).await }
            })
            .await
    }

    /// Takes faces away from their person by hand.
    pub async fn unassign_faces(&self, face_ids: Vec<i64>) -> Result<Vec<pb::FaceRecord>, Status> {
        let request = pb::UnassignFacesRequest { face_ids };
        Ok(self
            .people
            .call_once(move |mut c| {
                let request = request.clone();
                async move { c.unassign_faces(request).await }
            })
            .await?
            .faces)
    }

    /// The stored faces most like `query` (a stored face, or the largest face in a
    /// photo), best first (at most `limit`; the service's default similarity cut).
    /// `FAILED_PRECONDITION` when the service keeps no face index.
    pub async fn search_faces(
        &self,
        query: pb::search_faces_request::Query,
        limit: i32,
    ) -> Result<Vec<pb::FaceMatch>, Status> {
        let request = pb::SearchFacesRequest {
            query: Some(query),
            limit,
            min_similarity: 0.0,
        };
        Ok(self
            .people
            .call(move |mut c| {
                let request = request.clone();
                async move { c.search_faces(request).await }
            })
            .await?
            .matches)
    }

    /// People whose faces look like `person_id`'s ("same person?"), at most `limit`.
    pub async fn merge_suggestions(
        &self,
        person_id: i64,
        limit: i32,
    ) -> Result<Vec<pb::MergeSuggestion>, Status> {
        Ok(self
            .people
            .call(move |mut c| async move {
                c.list_merge_suggestions(pb::ListMergeSuggestionsRequest { person_id, limit })
                    .await
            })
            .await?
            .suggestions)
    }

    /// Records that `person_id` and `other_person_id` are not the same person, so the
    /// pair is never suggested again.
    pub async fn decline_merge_suggestion(
        &self,
        person_id: i64,
        other_person_id: i64,
    ) -> Result<(), Status> {
        self.people
            .call_once(move |mut c| async move {
                c.decline_merge_suggestion(pb::DeclineMergeSuggestionRequest {
                    person_id,
                    other_person_id,
                })
                .await
            })
            .await?;
        Ok(())
    }

    /// Forgets a person; returns how many faces were removed.
    pub async fn remove_person(&self, name: String) -> Result<i32, Status> {
        Ok(self
            .recognition
            .call_once(move |mut c| {
                let name = name.clone();
                async move { c.remove_person(pb::RemovePersonRequest { name }).await }
            })
            .await?
            .faces_removed)
    }
}

/// Whether the live feed is following the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedState {
    /// True while the `WatchImages` stream is open.
    pub connected: bool,
    /// Why not, when not.
    pub message: String,
}

/// What the live feed broadcasts to open pages.
#[derive(Debug, Clone)]
pub enum FeedEvent {
    /// An image changed.
    Image(Box<pb::Image>),
    /// The stream to the receiver opened or broke. Pages re-list on every open, since
    /// changes made while the stream was down were never sent.
    State(FeedState),
}

struct FeedShared {
    running: bool,
    state: FeedState,
}

/// The shared live feed: started by the first subscriber, stopped when nobody has
/// listened for a while, or for good when `closing` is cancelled.
#[derive(Clone)]
pub struct LiveFeed {
    tx: broadcast::Sender<FeedEvent>,
    shared: Arc<Mutex<FeedShared>>,
    upstream: Upstream,
    closing: CancellationToken,
}

impl LiveFeed {
    /// A feed over the receiver in `upstream`; it stops when `closing` is cancelled.
    pub fn new(upstream: Upstream, closing: CancellationToken) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self {
            tx,
            shared: Arc::new(Mutex::new(FeedShared {
                running: false,
                state: FeedState {
                    connected: false,
                    message: "connecting to the receiver".into(),
                },
            })),
            upstream,
            closing,
        }
    }

    /// Subscribes to every event from now on and returns the current state, starting
    /// the stream to the receiver if it is not running.
    pub fn subscribe(&self) -> (broadcast::Receiver<FeedEvent>, FeedState) {
        // Subscribing under the lock pairs with the idle check in `run`, so a feed never
        // stops between a subscriber arriving and being counted.
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        if !shared.running && !self.closing.is_cancelled() {
            shared.running = true;
            shared.state = FeedState {
                connected: false,
                message: "connecting to the receiver".into(),
            };
            tokio::spawn(self.clone().run());
        }
        metrics::gauge!("facewire_frontend_live_pages").set(self.tx.receiver_count() as f64);
        (rx, shared.state.clone())
    }

    fn set_state(&self, state: FeedState) {
        metrics::gauge!("facewire_frontend_upstream_connected").set(if state.connected {
            1.0
        } else {
            0.0
        });
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).state = state.clone();
        let _ = self.tx.send(FeedEvent::State(state));
    }

    /// Stops the feed if nobody listens; true when it stopped.
    fn stop_if_idle(&self) -> bool {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let listeners = self.tx.receiver_count();
        metrics::gauge!("facewire_frontend_live_pages").set(listeners as f64);
        if listeners == 0 || self.closing.is_cancelled() {
            shared.running = false;
            return true;
        }
        false
    }

    async fn run(self) {
        let mut pauses = feed_backoff().delays();
        let mut idle = tokio::time::interval(IDLE_CHECK);
        idle.tick().await;
        loop {
            let mut client = self.upstream.watch.clone();
            let call = client.watch_images(pb::WatchImagesRequest::default());
            let opened = tokio::select! {
                _ = self.closing.cancelled() => break,
                r = call => r,
            };
            let failure = match opened {
                Ok(response) => {
                    pauses = feed_backoff().delays();
                    tracing::debug!("live feed: watching the receiver");
                    self.set_state(FeedState {
                        connected: true,
                        message: String::new(),
                    });
                    let mut stream = response.into_inner();
                    loop {
                        tokio::select! {
                            _ = self.closing.cancelled() => break,
                            _ = idle.tick() => {
                                if self.stop_if_idle() {
                                    return;
                                }
                            }
                            message = stream.message() => match message {
                                Ok(Some(change)) => {
                                    if let Some(image) = change.image {
                                        let _ = self.tx.send(FeedEvent::Image(Box::new(image)));
                                    }
                                }
                                Ok(None) => break,
                                Err(status) => {
                                    tracing::warn!(%status, "live feed: the watch stream broke");
                                    break;
                                }
                            },
                        }
                    }
                    if self.closing.is_cancelled() {
                        break;
                    }
                    format!(
                        "The stream of changes from the receiver at {} ended; reconnecting.",
                        self.upstream.receiver_url
                    )
                }
                Err(status) => {
                    tracing::debug!(%status, "live feed: cannot watch the receiver");
                    describe_failure(Service::Receiver, &self.upstream.receiver_url, &status)
                }
            };
            metrics::counter!("facewire_frontend_upstream_reconnects_total").increment(1);
            self.set_state(FeedState {
                connected: false,
                message: failure,
            });
            if self.stop_if_idle() {
                return;
            }
            let pause = pauses.next().unwrap_or(Duration::from_secs(5));
            tokio::select! {
                _ = self.closing.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        self.stop_if_idle();
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.running = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use pb::image_service_server::{ImageService, ImageServiceServer};

    /// A receiver replica that answers `ListImages` and counts the calls.
    #[derive(Clone, Default)]
    struct Replica {
        lists: Arc<AtomicUsize>,
    }

    #[tonic::async_trait]
    impl ImageService for Replica {
        type WatchImagesStream = tokio_stream::Empty<Result<pb::WatchImagesResponse, Status>>;

        async fn watch_images(
            &self,
            _: tonic::Request<pb::WatchImagesRequest>,
        ) -> Result<tonic::Response<Self::WatchImagesStream>, Status> {
            Err(Status::unimplemented("WatchImages"))
        }

        async fn submit_images(
            &self,
            _: tonic::Request<pb::SubmitImagesRequest>,
        ) -> Result<tonic::Response<pb::SubmitImagesResponse>, Status> {
            Err(Status::unimplemented("SubmitImages"))
        }

        async fn submit_image(
            &self,
            _: tonic::Request<pb::SubmitImageRequest>,
        ) -> Result<tonic::Response<pb::SubmitImageResponse>, Status> {
            Err(Status::unimplemented("SubmitImage"))
        }

        async fn get_image(
            &self,
            _: tonic::Request<pb::GetImageRequest>,
        ) -> Result<tonic::Response<pb::GetImageResponse>, Status> {
            Err(Status::unimplemented("GetImage"))
        }

        async fn list_images(
            &self,
            _: tonic::Request<pb::ListImagesRequest>,
        ) -> Result<tonic::Response<pb::ListImagesResponse>, Status> {
            self.lists.fetch_add(1, Ordering::SeqCst);
            Ok(tonic::Response::new(pb::ListImagesResponse::default()))
        }
    }

    async fn serve(replica: Replica) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ImageServiceServer::new(replica))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn calls_are_spread_over_every_receiver_replica() {
        let (a, b) = (Replica::default(), Replica::default());
        let urls = format!("{},{}", serve(a.clone()).await, serve(b.clone()).await);
        let upstream = Upstream::new(
            &urls,
            "http://127.0.0.1:1",
            &ClientOptions::default(),
            &UpstreamConfig::default(),
        )
        .unwrap();
        for _ in 0..40 {
            upstream
                .list_images(pb::ListImagesRequest::default())
                .await
                .unwrap();
        }
        let (a, b) = (
            a.lists.load(Ordering::SeqCst),
            b.lists.load(Ordering::SeqCst),
        );
        assert_eq!(a + b, 40);
        assert!(a > 0 && b > 0, "one replica got every call: {a} and {b}");
    }

    #[test]
    fn failures_say_which_service_is_unreachable() {
        let down = Status::unavailable("tcp connect error");
        assert_eq!(
            describe_failure(Service::Receiver, "http://127.0.0.1:1", &down),
            "The receiver at http://127.0.0.1:1 is unreachable (tcp connect error)."
        );
        let refused = Status::invalid_argument("name may not start with '.'");
        assert_eq!(
            describe_failure(Service::Recognition, "http://r", &refused),
            "The recognition service at http://r answered InvalidArgument: name may not start with '.'"
        );
    }

    #[tokio::test]
    async fn bad_urls_name_the_setting() {
        let refusal = |receiver: &str, recognition: &str| match Upstream::new(
            receiver,
            recognition,
            &ClientOptions::default(),
            &UpstreamConfig::default(),
        ) {
            Ok(_) => panic!("accepted {receiver} and {recognition}"),
            Err(e) => e.to_string(),
        };
        let err = refusal("not a url", "http://127.0.0.1:50052");
        assert!(err.contains("FACEWIRE_RECEIVER_URL"), "{err}");
        // https:// without a CA to verify the server is refused at start, naming the URL.
        let err = refusal("http://127.0.0.1:50051", "https://recognition:50052");
        assert!(err.contains("FACEWIRE_RECOGNITION_URL"), "{err}");
    }

    #[tokio::test]
    async fn a_down_receiver_is_reported_not_hung_on() {
        // Port 1 on localhost refuses connections: the call fails fast with Unavailable.
        let upstream = Upstream::new(
            "http://127.0.0.1:1",
            "http://127.0.0.1:1",
            &ClientOptions::default(),
            &UpstreamConfig::default(),
        )
        .unwrap();
        let request = pb::ListImagesRequest {
            page_size: 10,
            ..Default::default()
        };
        let err = upstream.list_images(request).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        let ready = upstream.receiver_ready().await.unwrap_err();
        assert!(ready.contains("is unreachable"), "{ready}");
        let err = upstream
            .list_persons(pb::ListPersonsRequest::default())
            .await
            .unwrap_err();
        assert!(describe_failure(Service::Recognition, "u", &err).contains("unreachable"));
        let err = upstream.get_person(3).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
    }

    #[tokio::test]
    async fn the_feed_reports_a_down_receiver_and_stops_when_closed() {
        let upstream = Upstream::new(
            "http://127.0.0.1:1",
            "http://127.0.0.1:1",
            &ClientOptions::default(),
            &UpstreamConfig::default(),
        )
        .unwrap();
        let closing = CancellationToken::new();
        let feed = LiveFeed::new(upstream, closing.clone());
        let (mut rx, state) = feed.subscribe();
        assert!(!state.connected);
        match rx.recv().await.unwrap() {
            FeedEvent::State(s) => {
                assert!(!s.connected);
                assert!(s.message.contains("unreachable"), "{}", s.message);
            }
            FeedEvent::Image(_) => panic!("no images from a down receiver"),
        }
        closing.cancel();
        let stopped = async {
            while feed.shared.lock().unwrap().running {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), stopped)
            .await
            .expect("the feed stops once closed");
    }
}
