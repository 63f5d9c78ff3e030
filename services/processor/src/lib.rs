//! The processor: takes image ids off the queue in batches, claims them in the database
//! (`processing`, attempt + 1), reads the files, asks recognition who is in them in one
//! batched call, records every outcome in one transaction, and only then acknowledges the
//! messages. Redelivery is harmless: claims and outcomes are conditional on the state and
//! the attempt (see `facewire_storage::images`).
//!
//! | what went wrong | outcome |
//! | --- | --- |
//! | recognition unavailable, draining (CANCELLED), connection closed or reset, no answer in time; database blip | back to `pending`, message requeued after a backoff; after `max_attempts` → `failed` + dead-letter |
//! | a call recognition refuses as too large | split in halves, each asked again (calls are packed by bytes too, so this is rare) |
//! | file gone, unreadable, undecodable | `failed` at once with the reason (retrying cannot help) |
//! | body is not an id, id of no row | dead-letter (a poison message never blocks the queue) |
//!
//! Tracing: each message carries its submitter's `traceparent`. A batch holds images of
//! possibly several traces but makes one `RecognizeBatch` call, and a W3C trace context
//! has room for one parent: the batch continues the first image's trace (its span's
//! `trace_id`, sent to recognition) and lists the other images' trace ids in its span's
//! `linked_trace_ids`, so searching the logs for any image's trace id finds the batch.
//! Per-image lines (debug) carry each image's own `trace_id`.
//!
//! Metrics: `processor_in_flight`, `processor_images_total{outcome}`,
//! `processor_recognition_seconds`, the submit-to-done latency
//! (`facewire_submit_to_done_seconds{outcome}`) and the queue depths
//! (`facewire_queue_depth`, `facewire_queue_dead_letter_depth`, sampled every
//! [`QUEUE_DEPTH_INTERVAL`]).

use std::{collections::HashMap, sync::Arc, time::Duration};

use facewire_config::ImageRoot;
use facewire_proto::v1::{
    batch_result, recognition_service_client::RecognitionServiceClient, BatchImage,
    RecognizeBatchRequest, RecognizeBatchResponse,
};
use facewire_proto::{ClientError, ClientOptions};
use facewire_queue::{Consumer, Delivery, ResubscribingConsumer, WorkQueue};
use facewire_resilience::{BreakerLayer, ChannelError};
use facewire_server::CancellationToken;
use facewire_storage::{images::Claim, now_millis, DetectedFace, Outcome, Store};
use facewire_telemetry::{trace_context, InjectTraceContextLayer, TraceContext};
use tokio::sync::mpsc;
use tower::{util::BoxCloneSyncService, Layer, Service, ServiceExt};
use tracing::Instrument;

pub mod config;

pub use config::{ProcessorConfig, WorkConfig, DEFAULT_MAX_ATTEMPTS};

/// Failure to start the processor.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// The recognition URL is unusable.
    #[error("FACEWIRE_RECOGNITION_URL: {0}")]
    RecognitionUrl(#[from] ChannelError),
    /// The client TLS settings or the token are unusable.
    #[error("calling recognition: {0}")]
    Client(#[from] ClientError),
    /// The image root is unusable.
    #[error("FACEWIRE_IMAGE_ROOT: {0}")]
    ImageRoot(std::io::Error),
    /// The size limits contradict each other.
    #[error("{0}")]
    Limits(String),
}

/// The resilient `RecognizeBatch` call.
pub type RecognizeBatch =
    BoxCloneSyncService<RecognizeBatchRequest, RecognizeBatchResponse, tonic::Status>;

/// Builds the resilient `RecognizeBatch` call over every recognition replica, over TLS
/// for an `https://` URL and with the bearer token when one is configured.
pub fn recognize_batch_client(
    config: &WorkConfig,
    breaker: BreakerLayer,
) -> Result<RecognizeBatch, ProcessorError> {
    let options = ClientOptions::load(
        config.recognition_tls.tls_ca.as_deref(),
        config.recognition_tls.tls_server_name.as_deref(),
        config.auth.token(),
    )?;
    let channel = facewire_resilience::balanced_channel(
        &config.recognition_url,
        Duration::from_secs(10),
        &options,
    )?;
    // Every call carries the current trace context (the batch's) as `traceparent`.
    let channel = InjectTraceContextLayer.layer(channel);
    let client = RecognitionServiceClient::with_interceptor(channel, options.bearer()?)
        .max_decoding_message_size(facewire_config::DEFAULT_RECOGNITION_MAX_MESSAGE_BYTES);
    let call = tower::service_fn(move |req: RecognizeBatchRequest| {
        let mut client = client.clone();
        async move { client.recognize_batch(req).await.map(|r| r.into_inner()) }
    });
    Ok(facewire_resilience::stack(
        call,
        &config.resilience(),
        breaker,
    ))
}

/// Works through the queue.
#[derive(Clone)]
pub struct Processor {
    store: Store,
    queue: Arc<dyn WorkQueue>,
    root: ImageRoot,
    recognize: RecognizeBatch,
    breaker: BreakerLayer,
    config: WorkConfig,
}

/// How often the processor samples the queue depths into gauges.
pub const QUEUE_DEPTH_INTERVAL: Duration = Duration::from_secs(5);

/// One message, parsed.
struct Work {
    delivery: Delivery,
    id: i64,
    /// This image's context here: its submitter's trace, or a new one.
    trace: TraceContext,
}

impl Work {
    /// A span for lines about this image alone.
    fn span(&self) -> tracing::Span {
        tracing::debug_span!("image", id = self.id, trace_id = %self.trace.trace_id())
    }
}

impl Processor {
    /// A processor over `store` and `queue`, reading images under `image_root`.
    pub fn new(
        store: Store,
        queue: Arc<dyn WorkQueue>,
        image_root: &std::path::Path,
        config: WorkConfig,
    ) -> Result<Self, ProcessorError> {
        config.check_limits().map_err(ProcessorError::Limits)?;
        let root = ImageRoot::new(image_root, config.max_image_bytes)
            .map_err(ProcessorError::ImageRoot)?;
        let breaker = BreakerLayer::from_config("recognition", &config.resilience());
        let recognize = recognize_batch_client(&config, breaker.clone())?;
        Ok(Self {
            store,
            queue,
            root,
            recognize,
            breaker,
            config,
        })
    }

    /// Consumes until `shutdown`, then finishes the batches in flight. Unfinished
    /// messages go back to the queue when the consumer closes.
    pub async fn run(self, shutdown: CancellationToken) {
        let (tx, rx) = mpsc::channel::<Vec<Delivery>>(self.config.workers.max(1));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let mut workers = Vec::new();
        for _ in 0..self.config.workers.max(1) {
            let me = self.clone();
            let rx = rx.clone();
            workers.push(tokio::spawn(async move {
                loop {
                    let batch = { rx.lock().await.recv().await };
                    match batch {
                        Some(batch) => me.process(batch).await,
                        None => return,
                    }
                }
            }));
        }
        let sampler = tokio::spawn(sample_queue_depth(self.queue.clone(), shutdown.clone()));
        let mut consumer = ResubscribingConsumer::new(self.queue.clone(), self.config.prefetch);
        loop {
            // Do not take work while the breaker is open: images wait in the queue
            // instead of burning attempts.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.breaker.ready() => {}
            }
            let batch = tokio::select! {
                _ = shutdown.cancelled() => break,
                b = self.next_batch(&mut consumer) => b,
            };
            match batch {
                Ok(batch) if !batch.is_empty() => {
                    if tx.send(batch).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "queue consumer closed");
                    break;
                }
            }
        }
        drop(tx);
        for w in workers {
            let _ = w.await;
        }
        let _ = sampler.await;
        tracing::info!("processor stopped");
    }

    async fn next_batch(
        &self,
        consumer: &mut ResubscribingConsumer,
    ) -> Result<Vec<Delivery>, facewire_queue::QueueError> {
        let first = consumer.next().await?;
        let mut batch = vec![first];
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.config.batch_wait_ms);
        while batch.len() < self.config.batch.max(1) {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Ok(d)) => batch.push(d),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error while filling a batch");
                    break;
                }
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// Processes one batch of deliveries end to end, in the trace of the first (see the
    /// module documentation).
    pub async fn process(&self, deliveries: Vec<Delivery>) {
        let n = deliveries.len();
        let traces: Vec<TraceContext> = deliveries
            .iter()
            .map(|d| TraceContext::incoming(&d.headers))
            .collect();
        let Some(batch) = traces.first().map(TraceContext::child) else {
            return;
        };
        let mut linked: Vec<String> = Vec::new();
        for t in &traces {
            let id = t.trace_id().to_string();
            if t.trace_id() != batch.trace_id() && !linked.contains(&id) {
                linked.push(id);
            }
        }
        let span = tracing::info_span!(
            "batch",
            batch = n,
            trace_id = %batch.trace_id(),
            span_id = %batch.span_id(),
            linked_trace_ids = %linked.join(","),
        );
        metrics::gauge!("processor_in_flight").increment(n as f64);
        trace_context::scope(
            batch,
            self.process_inner(deliveries, traces).instrument(span),
        )
        .await;
        metrics::gauge!("processor_in_flight").decrement(n as f64);
    }

    async fn process_inner(&self, deliveries: Vec<Delivery>, traces: Vec<TraceContext>) {
        let mut work = Vec::with_capacity(deliveries.len());
        for (delivery, trace) in deliveries.into_iter().zip(traces) {
            match delivery.image_id() {
                Ok(id) => work.push(Work {
                    delivery,
                    id,
                    trace,
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "poison message: dead-lettering");
                    metrics::counter!("processor_poison_messages_total").increment(1);
                    settle(delivery.dead_letter().await);
                }
            }
        }
        if work.is_empty() {
            return;
        }
        let ids: Vec<i64> = work.iter().map(|w| w.id).collect();
        let claims = match self.store.claim(ids.clone()).await {
            Ok(c) => c,
            Err(e) => return self.requeue_later(work, 1, &e.to_string()),
        };
        let claimed: HashMap<i64, Claim> = claims.into_iter().map(|c| (c.id, c)).collect();

        // Messages for rows that are already finished (redelivery) are acked; messages
        // for rows that do not exist are poison.
        let unclaimed: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| !claimed.contains_key(id))
            .collect();
        let existing: Vec<i64> = if unclaimed.is_empty() {
            Vec::new()
        } else {
            match self.store.get_many(unclaimed.clone()).await {
                Ok(rows) => rows.into_iter().map(|r| r.id).collect(),
                Err(e) => return self.requeue_later(work, 1, &e.to_string()),
            }
        };
        let mut active = Vec::new();
        for w in work {
            if let Some(claim) = claimed.get(&w.id) {
                active.push((w, claim.clone()));
            } else if existing.contains(&w.id) {
                settle(w.delivery.ack().await);
            } else {
                tracing::warn!(
                    id = w.id,
                    "message for an image that does not exist: dead-lettering"
                );
                metrics::counter!("processor_poison_messages_total").increment(1);
                settle(w.delivery.dead_letter().await);
            }
        }

        // Attempts exhausted: fail for good.
        let (exhausted, active): (Vec<_>, Vec<_>) = active
            .into_iter()
            .partition(|(_, c)| c.attempt > self.config.max_attempts);
        for (w, c) in exhausted {
            let record = self.store.get(c.id).await.ok().flatten();
            let last = record.and_then(|r| r.last_error).unwrap_or_default();
            let reason = format!(
                "gave up after {} attempts: {last}",
                self.config.max_attempts
            );
            match self
                .store
                .finish(vec![(c.clone(), Outcome::Failed(reason))])
                .await
            {
                Ok(applied) => {
                    metrics::counter!("processor_images_total", "outcome" => "failed").increment(1);
                    if applied.first() == Some(&true) {
                        record_submit_to_done(&c, "failed");
                    }
                    w.span().in_scope(|| {
                        tracing::info!(attempts = c.attempt - 1, "gave up: failed, dead-lettered")
                    });
                    settle(w.delivery.dead_letter().await);
                }
                Err(_) => settle(w.delivery.requeue().await),
            }
        }
        if active.is_empty() {
            return;
        }

        // Open the files, checking what was opened (a file swapped for a FIFO is refused,
        // not waited on); failures here are permanent.
        let root = self.root.clone();
        let paths: Vec<String> = active.iter().map(|(_, c)| c.path.clone()).collect();
        let opened: Vec<Result<(u64, std::fs::File), String>> =
            tokio::task::spawn_blocking(move || {
                paths
                    .iter()
                    .map(|p| {
                        root.open(p)
                            .map(|(checked, file)| (checked.size, file))
                            .map_err(|e| e.to_string())
                    })
                    .collect()
            })
            .await
            .unwrap_or_else(|e| {
                (0..active.len())
                    .map(|_| Err(format!("opening images failed: {e}")))
                    .collect()
            });

        let mut outcomes: Vec<Option<Outcome>> = vec![None; active.len()];
        let mut files = Vec::new();
        for (i, file) in opened.into_iter().enumerate() {
            match file {
                Ok((size, file)) => files.push((i, size, file)),
                Err(reason) => outcomes[i] = Some(Outcome::Failed(reason)),
            }
        }
        // Calls bounded by bytes as well as by count, so that large photos never make a
        // request recognition refuses; each call's files are read just before it.
        let sizes: Vec<u64> = files.iter().map(|(_, size, _)| *size).collect();
        let calls = pack_calls(&sizes, self.config.batch.max(1), self.config.call_bytes());
        let mut files: Vec<Option<(usize, std::fs::File)>> = files
            .into_iter()
            .map(|(i, _, file)| Some((i, file)))
            .collect();
        for call in calls {
            let group: Vec<(usize, std::fs::File)> =
                call.iter().filter_map(|&k| files[k].take()).collect();
            let read: Vec<(usize, Result<Vec<u8>, String>)> =
                tokio::task::spawn_blocking(move || {
                    group
                        .into_iter()
                        .map(|(i, mut file)| {
                            let mut bytes = Vec::new();
                            let read = std::io::Read::read_to_end(&mut file, &mut bytes)
                                .map(|_| bytes)
                                .map_err(|e| format!("reading the image: {e}"));
                            (i, read)
                        })
                        .collect()
                })
                .await
                .unwrap_or_default();
            let mut images = Vec::with_capacity(read.len());
            for (i, bytes) in read {
                match bytes {
                    Ok(image) => images.push(BatchImage {
                        key: i.to_string(),
                        image,
                    }),
                    Err(reason) => {
                        outcomes[i] =
                            Some(Outcome::Failed(format!("{}: {reason}", active[i].1.path)))
                    }
                }
            }
            self.ask_recognition(images, &mut outcomes).await;
        }
        let finished: Vec<(Claim, Outcome)> = active
            .iter()
            .zip(outcomes)
            .map(|((_, c), o)| {
                (
                    c.clone(),
                    o.unwrap_or_else(|| Outcome::Retry("no result".into())),
                )
            })
            .collect();
        let kinds: Vec<Outcome> = finished.iter().map(|(_, o)| o.clone()).collect();
        let applied = match self.store.finish(finished).await {
            Ok(applied) => applied,
            Err(e) => {
                let attempt = active.iter().map(|(_, c)| c.attempt).max().unwrap_or(1);
                let work = active.into_iter().map(|(w, _)| w).collect();
                return self.requeue_later(work, attempt, &e.to_string());
            }
        };
        // Committed: now the messages may go.
        let mut tally: HashMap<&'static str, usize> = HashMap::new();
        for (((w, c), outcome), applied) in active.into_iter().zip(kinds).zip(applied) {
            let label = match &outcome {
                Outcome::Done(_) => "done",
                Outcome::NoFace => "no_face",
                Outcome::Failed(_) => "failed",
                Outcome::Retry(_) => "retry",
            };
            metrics::counter!("processor_images_total", "outcome" => label).increment(1);
            *tally.entry(label).or_default() += 1;
            // Only the write that made the image terminal counts (not a redelivery's).
            if applied && !matches!(outcome, Outcome::Retry(_)) {
                record_submit_to_done(&c, label);
            }
            w.span().in_scope(|| {
                tracing::debug!(outcome = label, attempt = c.attempt, "image recorded")
            });
            if let Outcome::Retry(reason) = &outcome {
                tracing::info!(id = c.id, attempt = c.attempt, %reason, "will retry");
                self.requeue_later(vec![w], c.attempt, reason);
            } else {
                settle(w.delivery.ack().await);
            }
        }
        let count = |label| tally.get(label).copied().unwrap_or(0);
        tracing::info!(
            done = count("done"),
            no_face = count("no_face"),
            failed = count("failed"),
            retry = count("retry"),
            "batch recorded"
        );
    }

    /// Asks recognition about `images` (keyed by their index in `outcomes`) and records
    /// an outcome for each. A call refused as too large is split in halves and each half
    /// asked again, so no image fails for its neighbours' sizes; a call cut short
    /// (recognition draining or restarting, the connection lost, no answer in time) puts
    /// its images back for a retry; only an answer about the image itself fails it.
    async fn ask_recognition(&self, images: Vec<BatchImage>, outcomes: &mut [Option<Outcome>]) {
        let mut calls = vec![images];
        while let Some(images) = calls.pop() {
            if images.is_empty() {
                continue;
            }
            let keys: Vec<usize> = images.iter().filter_map(|i| i.key.parse().ok()).collect();
            // The images are kept until the answer comes, in case the call must be split.
            let request = RecognizeBatchRequest {
                images: images.clone(),
            };
            let mut svc = self.recognize.clone();
            let started = std::time::Instant::now();
            let response = match svc.ready().await {
                Ok(ready) => ready.call(request).await,
                Err(e) => Err(e),
            };
            metrics::histogram!("processor_recognition_seconds")
                .record(started.elapsed().as_secs_f64());
            let status = match response {
                Ok(resp) => {
                    for result in resp.results {
                        let Ok(i) = result.key.parse::<usize>() else {
                            continue;
                        };
                        if i >= outcomes.len() {
                            continue;
                        }
                        outcomes[i] = Some(match result.outcome {
                            Some(batch_result::Outcome::Faces(faces)) if faces.faces.is_empty() => {
                                Outcome::NoFace
                            }
                            Some(batch_result::Outcome::Faces(faces)) => {
                                Outcome::Done(faces.faces.into_iter().map(detected_face).collect())
                            }
                            Some(batch_result::Outcome::Error(e)) => Outcome::Failed(format!(
                                "recognition refused the image: {}",
                                e.message
                            )),
                            None => Outcome::Retry("recognition returned no result".into()),
                        });
                    }
                    continue;
                }
                Err(status) => status,
            };
            let outcome = match CallFailure::of(&status) {
                CallFailure::TooLarge if images.len() > 1 => {
                    metrics::counter!("processor_split_calls_total").increment(1);
                    tracing::info!(images = images.len(), reason = %status.message(), "recognition refused the call as too large; splitting it");
                    let mut first = images;
                    let second = first.split_off(first.len() / 2);
                    calls.push(second);
                    calls.push(first);
                    continue;
                }
                // One image within the size limit: recognition is set up with a request
                // limit below it. Not the image's fault: retry (and tell the operator).
                CallFailure::TooLarge => {
                    tracing::warn!(reason = %status.message(), "recognition refused one image as too large: FACEWIRE_RECOGNITION_MAX_MESSAGE_BYTES must exceed FACEWIRE_MAX_IMAGE_BYTES");
                    Outcome::Retry(format!(
                        "recognition refused the request as too large: {}",
                        status.message()
                    ))
                }
                CallFailure::Transient => {
                    Outcome::Retry(format!("recognition unavailable: {}", status.message()))
                }
                CallFailure::Permanent => Outcome::Failed(format!("recognition failed: {status}")),
            };
            for &i in &keys {
                if let Some(slot) = outcomes.get_mut(i) {
                    if slot.is_none() {
                        *slot = Some(outcome.clone());
                    }
                }
            }
        }
    }

    /// Puts messages back after a backoff (they stay unacknowledged meanwhile, which
    /// holds back further deliveries: back-pressure while something is failing).
    fn requeue_later(&self, work: Vec<Work>, attempt: i32, reason: &str) {
        let pause = self.config.backoff(attempt);
        tracing::warn!(count = work.len(), ?pause, %reason, "transient failure; requeueing later");
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            for w in work {
                settle(w.delivery.requeue().await);
            }
        });
    }
}

/// Records the submit-to-done latency of an image that just reached a terminal state.
fn record_submit_to_done(claim: &Claim, outcome: &'static str) {
    // Clocks of different hosts may disagree a little: never record a negative latency.
    let seconds = (now_millis() - claim.created_at).max(0) as f64 / 1000.0;
    metrics::histogram!(facewire_telemetry::SUBMIT_TO_DONE_SECONDS, "outcome" => outcome)
        .record(seconds);
}

/// Samples the work queue's and the dead-letter queue's depths into gauges every
/// [`QUEUE_DEPTH_INTERVAL`] until `shutdown`. A failed sample leaves the gauge as it was.
async fn sample_queue_depth(queue: Arc<dyn WorkQueue>, shutdown: CancellationToken) {
    loop {
        let sample = async {
            match queue.depth().await {
                Ok(n) => metrics::gauge!(facewire_telemetry::QUEUE_DEPTH).set(n as f64),
                Err(e) => tracing::debug!(error = %e, "cannot sample the queue depth"),
            }
            match queue.dead_letter_depth().await {
                Ok(n) => metrics::gauge!(facewire_telemetry::DEAD_LETTER_DEPTH).set(n as f64),
                Err(e) => tracing::debug!(error = %e, "cannot sample the dead-letter depth"),
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sample => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(QUEUE_DEPTH_INTERVAL) => {}
        }
    }
}

/// What a failed recognition call means for its images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// The request was too large (or held too many images): split it and ask again.
    TooLarge,
    /// The call was cut short or could not be made (recognition draining, restarting
    /// or overloaded, the connection closed or reset, no answer in time): retry later.
    Transient,
    /// Recognition refused the call for good.
    Permanent,
}

impl CallFailure {
    /// Classifies a failed call's status.
    pub fn of(status: &tonic::Status) -> Self {
        let message = status.message();
        let too_large = match status.code() {
            // tonic's own words for a message over a limit, on either side.
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => {
                message.contains("message length too large") || message.contains("too large")
            }
            // facewire's servers rewrite tonic's words into this (see facewire-server),
            // and recognition refuses more images than its batch limit this way.
            tonic::Code::InvalidArgument => {
                (message.starts_with("request message is") && message.contains("the limit is"))
                    || message.contains("images in one request")
            }
            _ => false,
        };
        if too_large {
            CallFailure::TooLarge
        } else if facewire_resilience::is_transient(status) {
            CallFailure::Transient
        } else {
            CallFailure::Permanent
        }
    }
}

/// Splits images of `sizes` (in order) into calls of consecutive images: at most
/// `max_images` each and at most `max_bytes` of images (with their framing) each; an image
/// larger than `max_bytes` goes alone. Returns the indexes of each call's images.
pub fn pack_calls(sizes: &[u64], max_images: usize, max_bytes: usize) -> Vec<Vec<usize>> {
    let mut calls: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut bytes = 0usize;
    for (k, &size) in sizes.iter().enumerate() {
        let cost = (size as usize).saturating_add(facewire_config::BATCH_IMAGE_OVERHEAD_BYTES);
        if !current.is_empty()
            && (current.len() >= max_images.max(1) || bytes.saturating_add(cost) > max_bytes)
        {
            calls.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(k);
        bytes = bytes.saturating_add(cost);
    }
    if !current.is_empty() {
        calls.push(current);
    }
    calls
}

fn settle(result: Result<(), facewire_queue::QueueError>) {
    if let Err(e) = result {
        // The broker has already requeued an unsettled message after a lost
        // connection; the database makes the redelivery harmless.
        tracing::debug!(error = %e, "could not settle a delivery");
    }
}

/// A face recognition found, as the record the database keeps: box, landmarks, score,
/// embedding, crop, and the gallery's match (only when it names a person by id: an old
/// recognition service that sends names alone gets its faces stored unassigned, and a
/// re-match names them).
fn detected_face(f: facewire_proto::v1::Face) -> DetectedFace {
    let bbox = f
        .r#box
        .map(|b| [b.x, b.y, b.width, b.height])
        .unwrap_or_default();
    DetectedFace {
        bbox,
        landmarks: f.landmarks.iter().map(|p| [p.x, p.y]).collect(),
        score: f.detection_score,
        embedding: f.embedding,
        crop: (!f.crop_jpeg.is_empty()).then_some(f.crop_jpeg),
        matched: f
            .r#match
            .filter(|m| m.person_id > 0)
            .map(|m| (m.person_id, m.similarity.clamp(-1.0, 1.0))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_bounded_by_bytes_and_by_count() {
        const MB: u64 = 1_000_000;
        // Eight phone photos and a small one, 16 MB a call: large ones go alone or in
        // pairs that fit, never eight at once.
        let sizes = [
            12 * MB,
            3 * MB,
            10 * MB,
            14 * MB,
            9_000,
            11 * MB,
            13 * MB,
            20 * MB,
            2 * MB,
        ];
        let calls = pack_calls(&sizes, 8, 16 * MB as usize);
        let bytes = |call: &Vec<usize>| call.iter().map(|&k| sizes[k]).sum::<u64>();
        for call in &calls {
            assert!(call.len() == 1 || bytes(call) <= 16 * MB, "{calls:?}");
        }
        assert_eq!(calls.concat(), (0..sizes.len()).collect::<Vec<_>>());
        assert_eq!(
            calls,
            vec![
                vec![0, 1],
                vec![2],
                vec![3, 4],
                vec![5],
                vec![6],
                vec![7],
                vec![8]
            ]
        );
        // Small images: the count bounds the call.
        let calls = pack_calls(&[1_000; 20], 8, 16 * MB as usize);
        assert_eq!(
            calls.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![8, 8, 4]
        );
        assert!(pack_calls(&[], 8, 1).is_empty());
    }

    #[test]
    fn failed_calls_are_classified() {
        use tonic::Status;
        let too_large = [
            Status::invalid_argument(
                "request message is 100663296 bytes; the limit is 67108864 bytes (FACEWIRE_MAX_MESSAGE_BYTES)",
            ),
            Status::out_of_range(
                "Error, decoded message length too large: found 100663296 bytes, the limit is: 67108864 bytes",
            ),
            Status::invalid_argument("9 images in one request; at most 8 are accepted"),
        ];
        for status in &too_large {
            assert_eq!(CallFailure::of(status), CallFailure::TooLarge, "{status:?}");
        }
        let transient = [
            Status::cancelled("the server is shutting down"),
            Status::unavailable("connection refused"),
            Status::deadline_exceeded("no answer within 30s"),
            Status::internal("h2 protocol error: connection closed"),
            Status::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            Status::resource_exhausted("Too many active requests for the connection"),
        ];
        for status in &transient {
            assert_eq!(
                CallFailure::of(status),
                CallFailure::Transient,
                "{status:?}"
            );
        }
        for status in [
            Status::invalid_argument("bad"),
            Status::internal("the model failed"),
        ] {
            assert_eq!(
                CallFailure::of(&status),
                CallFailure::Permanent,
                "{status:?}"
            );
        }
    }

    #[test]
    fn an_image_of_the_largest_size_must_fit_a_call() {
        let mut config: WorkConfig = facewire_config::declared_defaults();
        assert!(config.check_limits().is_ok());
        assert!(config.call_bytes() < config.recognition_max_message_bytes);
        config.recognition_max_message_bytes = config.max_image_bytes as usize;
        let err = config.check_limits().unwrap_err();
        assert!(
            err.contains("FACEWIRE_RECOGNITION_MAX_MESSAGE_BYTES"),
            "{err}"
        );
    }
}
