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
use facewire_server::CancellationToken;
use facewire_telemetry::{trace_context::InjectTraceContext, InjectTraceContextLayer};
use serde::Serialize;
use tokio::sync::broadcast;
use tonic::{codegen::InterceptedService, transport::Channel, Code, Status};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use tower::Layer;

use crate::FrontendError;

/// How long to wait for a TCP connection to either service.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a unary call may take (enrolment runs face detection on every photo).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Readiness asks the receiver's health service with this deadline.
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest gRPC message exchanged with recognition (enrolment uploads).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Reconnect backoff bounds for the live feed.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often an idle live feed checks whether anybody still listens.
const IDLE_CHECK: Duration = Duration::from_secs(10);

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

/// The endpoint for `url` (TLS for `https://`), or an error naming the setting.
fn endpoint(
    url: &str,
    what: &'static str,
    options: &ClientOptions,
) -> Result<tonic::transport::Endpoint, FrontendError> {
    match options.endpoint(url) {
        Ok(e) => Ok(e.connect_timeout(CONNECT_TIMEOUT)),
        Err(e @ (ClientError::InvalidEndpoint { .. } | ClientError::NoCa { .. })) => {
            Err(FrontendError::BadUrl {
                what,
                url: url.to_string(),
                reason: e.to_string(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// A channel whose calls carry the page request's trace context (`traceparent`), so a
/// page's calls join its trace in the receiver's and recognition's logs.
type Traced = InjectTraceContext<Channel>;

/// A traced channel whose calls also carry the bearer token (when one is configured).
type Authorized = InterceptedService<Traced, BearerAuth>;

/// Clients for the receiver, the recognition service and the people service. Channels
/// connect lazily, so the frontend starts (and its pages render, saying what is down)
/// whatever is running.
#[derive(Clone)]
pub struct Upstream {
    /// The receiver's URL, for messages.
    pub receiver_url: String,
    /// The recognition service's URL, for messages.
    pub recognition_url: String,
    images: ImageServiceClient<Authorized>,
    // Separate channel without a per-call timeout: the watch stream lives for hours.
    watch: ImageServiceClient<Authorized>,
    health: HealthClient<Traced>,
    recognition: RecognitionServiceClient<Authorized>,
    // Same channel as `recognition`: PeopleService is served on recognition's address.
    people: PeopleServiceClient<Authorized>,
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
    /// Clients for the services at these URLs, over TLS for `https://` ones and sending
    /// the token of `options` (nothing is contacted yet).
    pub fn new(
        receiver_url: &str,
        recognition_url: &str,
        options: &ClientOptions,
    ) -> Result<Self, FrontendError> {
        let receiver = endpoint(receiver_url, "FACEWIRE_RECEIVER_URL", options)?;
        let recognition = endpoint(recognition_url, "FACEWIRE_RECOGNITION_URL", options)?;
        let bearer = options.bearer()?;
        let traced = |channel: Channel| InjectTraceContextLayer.layer(channel);
        let unary = traced(receiver.clone().timeout(CALL_TIMEOUT).connect_lazy());
        let recognition = traced(recognition.timeout(CALL_TIMEOUT).connect_lazy());
        Ok(Self {
            receiver_url: receiver_url.to_string(),
            recognition_url: recognition_url.to_string(),
            images: ImageServiceClient::with_interceptor(unary.clone(), bearer.clone()),
            watch: ImageServiceClient::with_interceptor(
                traced(receiver.connect_lazy()),
                bearer.clone(),
            ),
            health: HealthClient::new(unary),
            recognition: RecognitionServiceClient::with_interceptor(
                recognition.clone(),
                bearer.clone(),
            )
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
            people: PeopleServiceClient::with_interceptor(recognition, bearer),
        })
    }

    /// A page of images, newest first, filtered as `request` says.
    pub async fn list_images(
        &self,
        request: pb::ListImagesRequest,
    ) -> Result<pb::ListImagesResponse, Status> {
        Ok(self.images.clone().list_images(request).await?.into_inner())
    }

    /// One image record.
    pub async fn get_image(&self, id: i64) -> Result<pb::Image, Status> {
        self.images
            .clone()
            .get_image(pb::GetImageRequest { id })
            .await?
            .into_inner()
            .image
            .ok_or_else(|| Status::not_found(format!("no image with id {id}")))
    }

    /// Whether the receiver's ImageService reports SERVING.
    pub async fn receiver_ready(&self) -> Result<(), String> {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: "facewire.v1.ImageService".into(),
        });
        request.set_timeout(READY_TIMEOUT);
        match self.health.clone().check(request).await {
            Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
            Ok(_) => Err(format!(
                "The receiver at {} reports NOT_SERVING.",
                self.receiver_url
            )),
            Err(s) => Err(describe_failure(Service::Receiver, &self.receiver_url, &s)),
        }
    }

    /// A person's enrolled faces with their pictures, oldest first (`NOT_FOUND` for an
    /// unknown person).
    pub async fn list_faces(&self, person: String) -> Result<Vec<pb::EnrolledFaceCrop>, Status> {
        Ok(self
            .recognition
            .clone()
            .list_faces(pb::ListFacesRequest { person })
            .await?
            .into_inner()
            .faces)
    }

    /// Enrols photos of `name`; one result per photo.
    pub async fn enroll(
        &self,
        name: String,
        images: Vec<Vec<u8>>,
    ) -> Result<Vec<pb::EnrollResult>, Status> {
        Ok(self
            .recognition
            .clone()
            .enroll(pb::EnrollRequest { name, images })
            .await?
            .into_inner()
            .results)
    }

    /// One page of people.
    pub async fn list_persons(
        &self,
        request: pb::ListPersonsRequest,
    ) -> Result<pb::ListPersonsResponse, Status> {
        Ok(self
            .people
            .clone()
            .list_persons(request)
            .await?
            .into_inner())
    }

    /// One person by id (`NOT_FOUND` when there is none).
    pub async fn get_person(&self, person_id: i64) -> Result<pb::PersonRecord, Status> {
        self.people
            .clone()
            .get_person(pb::GetPersonRequest {
                person_id,
                name: String::new(),
            })
            .await?
            .into_inner()
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
            .clone()
            .update_person(request)
            .await?
            .into_inner()
            .person
            .ok_or_else(|| Status::not_found(format!("no person with id {id}")))
    }

    /// Erases a person (their photos stay, without the name).
    pub async fn delete_person(&self, person_id: i64) -> Result<pb::DeletePersonResponse, Status> {
        Ok(self
            .people
            .clone()
            .delete_person(pb::DeletePersonRequest { person_id })
            .await?
            .into_inner())
    }

    /// Moves every face of `from` into `into`; the answer names the merge to undo.
    pub async fn merge_persons(
        &self,
        into: i64,
        from: Vec<i64>,
    ) -> Result<pb::MergePersonsResponse, Status> {
        Ok(self
            .people
            .clone()
            .merge_persons(pb::MergePersonsRequest {
                into_person_id: into,
                from_person_ids: from,
            })
            .await?
            .into_inner())
    }

    /// Undoes a merge.
    pub async fn undo_merge(&self, merge_id: i64) -> Result<Vec<pb::PersonRecord>, Status> {
        Ok(self
            .people
            .clone()
            .undo_merge(pb::UndoMergeRequest { merge_id })
            .await?
            .into_inner()
            .persons)
    }

    /// The small JPEG of one face (`NOT_FOUND` when it has none).
    pub async fn face_crop(&self, face_id: i64) -> Result<Vec<u8>, Status> {
        Ok(self
            .people
            .clone()
            .get_face_crop(pb::GetFaceCropRequest { face_id })
            .await?
            .into_inner()
            .crop_jpeg)
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
        Ok(self
            .people
            .clone()
            .assign_faces(pb::AssignFacesRequest {
                face_ids,
                person_id,
                person_name,
            })
            .await?
            .into_inner())
    }

    /// Takes faces away from their person by hand.
    pub async fn unassign_faces(&self, face_ids: Vec<i64>) -> Result<Vec<pb::FaceRecord>, Status> {
        Ok(self
            .people
            .clone()
            .unassign_faces(pb::UnassignFacesRequest { face_ids })
            .await?
            .into_inner()
            .faces)
    }

    /// The stored faces most like face `face_id`, best first (at most `limit`; the
    /// service's default similarity cut). `FAILED_PRECONDITION` when the service keeps
    /// no face index.
    pub async fn search_faces(
        &self,
        face_id: i64,
        limit: i32,
    ) -> Result<Vec<pb::FaceMatch>, Status> {
        Ok(self
            .people
            .clone()
            .search_faces(pb::SearchFacesRequest {
                query: Some(pb::search_faces_request::Query::FaceId(face_id)),
                limit,
                min_similarity: 0.0,
            })
            .await?
            .into_inner()
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
            .clone()
            .list_merge_suggestions(pb::ListMergeSuggestionsRequest { person_id, limit })
            .await?
            .into_inner()
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
            .clone()
            .decline_merge_suggestion(pb::DeclineMergeSuggestionRequest {
                person_id,
                other_person_id,
            })
            .await?;
        Ok(())
    }

    /// Forgets a person; returns how many faces were removed.
    pub async fn remove_person(&self, name: String) -> Result<i32, Status> {
        Ok(self
            .recognition
            .clone()
            .remove_person(pb::RemovePersonRequest { name })
            .await?
            .into_inner()
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
        let mut backoff = BACKOFF_MIN;
        let mut idle = tokio::time::interval(IDLE_CHECK);
        idle.tick().await;
        loop {
            let mut client = self.upstream.watch.clone();
            let call = client.watch_images(pb::WatchImagesRequest { ids: vec![] });
            let opened = tokio::select! {
                _ = self.closing.cancelled() => break,
                r = call => r,
            };
            let failure = match opened {
                Ok(response) => {
                    backoff = BACKOFF_MIN;
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
            tokio::select! {
                _ = self.closing.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        self.stop_if_idle();
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.running = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn bad_urls_name_the_setting() {
        let refusal = |receiver: &str, recognition: &str| match Upstream::new(
            receiver,
            recognition,
            &ClientOptions::default(),
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
