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
//! | file replaced after submission (its bytes no longer match the recorded hash) | recognised as it is now; the new hash is recorded with the outcome, and the change logged |
//!
//! The stages of a batch are in [`stage`], one module each.
//!
//! Tracing: each message carries its submitter's `traceparent`. A batch holds images of
//! possibly several traces but makes one `RecognizeBatch` call, and a W3C trace context
//! has room for one parent: the batch continues the first image's trace (its span's
//! `trace_id`, sent to recognition) and lists the other images' trace ids in its span's
//! `linked_trace_ids`, so searching the logs for any image's trace id finds the batch.
//! Per-image lines (debug) carry each image's own `trace_id`.
//!
//! Metrics: `processor_in_flight`, `processor_images_total{outcome}`,
//! `processor_changed_files_total`, `processor_poison_messages_total`,
//! `processor_recognition_seconds`, the submit-to-done latency
//! (`facewire_submit_to_done_seconds{outcome}`) and the queue depths
//! (`facewire_queue_depth`, `facewire_queue_dead_letter_depth`, sampled every
//! [`QUEUE_DEPTH_INTERVAL`]).

use std::{sync::Arc, time::Duration};

use facewire_config::ImageRoot;
use facewire_proto::v1::{
    recognition_service_client::RecognitionServiceClient, BatchImage, RecognizeBatchRequest,
    RecognizeBatchResponse,
};
use facewire_proto::{ClientError, ClientOptions};
use facewire_queue::{Consumer, Delivery, ResubscribingConsumer, WorkQueue};
use facewire_resilience::{BreakerLayer, ChannelError};
use facewire_server::CancellationToken;
use facewire_storage::{images::Claim, now_millis, Outcome, Store};
use facewire_telemetry::{trace_context, InjectTraceContextLayer, TraceContext};
use tokio::sync::mpsc;
use tower::{util::BoxCloneSyncService, Layer};
use tracing::Instrument;

use stage::{
    load::ToRead,
    parse::Work,
    record::Results,
    settle::{settlement, Settlement, Tally},
};

pub mod config;
pub mod stage;

pub use config::{ProcessorConfig, WorkConfig, DEFAULT_MAX_ATTEMPTS};
pub use stage::{pack::pack_calls, recognise::CallFailure};

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

    /// The batch's stages, in order (see [`stage`]).
    async fn process_inner(&self, deliveries: Vec<Delivery>, traces: Vec<TraceContext>) {
        let (work, poison) = stage::parse::parse(deliveries, traces);
        self.dead_letter_poison(poison).await;
        if work.is_empty() {
            return;
        }
        let items = work.into_iter().map(|w| (w.id, w)).collect();
        let claimed = match stage::claim::claim(&self.store, items).await {
            Ok(claimed) => claimed,
            Err(unclaimed) => {
                return self.requeue_later(unclaimed.items, 1, &unclaimed.error.to_string())
            }
        };
        self.settle_unclaimed(claimed.finished, claimed.unknown)
            .await;
        let (exhausted, active) =
            stage::attempts::split_exhausted(claimed.active, self.config.max_attempts);
        self.give_up(exhausted).await;
        if active.is_empty() {
            return;
        }
        let claims: Vec<Claim> = active.iter().map(|(_, c)| c.clone()).collect();
        let results = self.load_and_recognise(&claims).await;
        let rows = stage::record::rows(&claims, results);
        let outcomes: Vec<Outcome> = rows.iter().map(|(_, o, _)| o.clone()).collect();
        let applied = match stage::record::record(&self.store, rows).await {
            Ok(applied) => applied,
            Err(e) => {
                let attempt = claims.iter().map(|c| c.attempt).max().unwrap_or(1);
                let work = active.into_iter().map(|(w, _)| w).collect();
                return self.requeue_later(work, attempt, &e.to_string());
            }
        };
        // Committed: now the messages may go.
        self.settle(active, outcomes, applied).await;
    }

    /// Dead-letters messages that are not image ids.
    async fn dead_letter_poison(&self, poison: Vec<Delivery>) {
        for delivery in poison {
            metrics::counter!("processor_poison_messages_total").increment(1);
            stage::settle::log_failure(delivery.dead_letter().await);
        }
    }

    /// Settles the messages the claim found nothing to do for: redeliveries for finished
    /// images are acknowledged, messages for images that do not exist dead-lettered.
    async fn settle_unclaimed(&self, finished: Vec<Work>, unknown: Vec<Work>) {
        for w in finished {
            stage::settle::log_failure(w.delivery.ack().await);
        }
        for w in unknown {
            tracing::warn!(
                id = w.id,
                "message for an image that does not exist: dead-lettering"
            );
            metrics::counter!("processor_poison_messages_total").increment(1);
            stage::settle::log_failure(w.delivery.dead_letter().await);
        }
    }

    /// Fails images whose attempts are exhausted (keeping their last error) and
    /// dead-letters their messages; a message whose failure could not be recorded is
    /// requeued, to be given up on again.
    async fn give_up(&self, exhausted: Vec<(Work, Claim)>) {
        for (w, c) in exhausted {
            let record = self.store.get(c.id).await.ok().flatten();
            let last = record.and_then(|r| r.last_error);
            let reason = stage::attempts::give_up_reason(self.config.max_attempts, last.as_deref());
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
                    stage::settle::log_failure(w.delivery.dead_letter().await);
                }
                Err(_) => stage::settle::log_failure(w.delivery.requeue().await),
            }
        }
    }

    /// Opens the claimed files, packs them into calls, and per call reads its files
    /// (rechecking their hashes) just before asking recognition about them.
    async fn load_and_recognise(&self, claims: &[Claim]) -> Results {
        let mut results = Results::new(claims.len());
        let root = self.root.clone();
        let paths: Vec<String> = claims.iter().map(|c| c.path.clone()).collect();
        let opened = tokio::task::spawn_blocking(move || stage::load::open_all(&root, &paths))
            .await
            .unwrap_or_else(|e| {
                (0..claims.len())
                    .map(|_| Err(format!("opening images failed: {e}")))
                    .collect()
            });
        let mut files = Vec::new();
        for (i, file) in opened.into_iter().enumerate() {
            match file {
                Ok((size, file)) => files.push((i, size, file)),
                Err(reason) => results.outcomes[i] = Some(Outcome::Failed(reason)),
            }
        }
        let sizes: Vec<u64> = files.iter().map(|(_, size, _)| *size).collect();
        let calls = pack_calls(&sizes, self.config.batch.max(1), self.config.call_bytes());
        let mut files: Vec<Option<ToRead>> = files
            .into_iter()
            .map(|(index, _, file)| {
                Some(ToRead {
                    index,
                    file,
                    recorded_hash: claims[index].content_hash.clone(),
                })
            })
            .collect();
        for call in calls {
            let group: Vec<ToRead> = call.iter().filter_map(|&k| files[k].take()).collect();
            let read = tokio::task::spawn_blocking(move || stage::load::read_all(group))
                .await
                .unwrap_or_default();
            let mut images = Vec::with_capacity(read.len());
            for (i, loaded) in read {
                match loaded {
                    Ok(loaded) => {
                        if let Some(now) = &loaded.changed_hash {
                            tracing::warn!(
                                id = claims[i].id,
                                path = %claims[i].path,
                                recorded = %claims[i].content_hash,
                                now = %now,
                                "the file changed after it was recorded; recognising what is there now"
                            );
                            metrics::counter!("processor_changed_files_total").increment(1);
                        }
                        results.changed_hashes[i] = loaded.changed_hash;
                        images.push(BatchImage {
                            key: i.to_string(),
                            image: loaded.bytes,
                        });
                    }
                    Err(reason) => {
                        results.outcomes[i] =
                            Some(Outcome::Failed(format!("{}: {reason}", claims[i].path)))
                    }
                }
            }
            stage::recognise::recognise(&self.recognize, images, &mut results.outcomes).await;
        }
        results
    }

    /// Settles each message by its recorded outcome, counting and logging the outcomes.
    async fn settle(&self, active: Vec<(Work, Claim)>, outcomes: Vec<Outcome>, applied: Vec<bool>) {
        let mut tally = Tally::default();
        for (((w, c), outcome), applied) in active.into_iter().zip(outcomes).zip(applied) {
            let label = stage::record::label(&outcome);
            metrics::counter!("processor_images_total", "outcome" => label).increment(1);
            tally.add(&outcome);
            // Only the write that made the image terminal counts (not a redelivery's).
            if applied && !matches!(outcome, Outcome::Retry(_)) {
                record_submit_to_done(&c, label);
            }
            w.span().in_scope(|| {
                tracing::debug!(outcome = label, attempt = c.attempt, "image recorded")
            });
            match settlement(&outcome, c.attempt) {
                Settlement::Ack => stage::settle::log_failure(w.delivery.ack().await),
                Settlement::RetryLater { attempt, reason } => {
                    tracing::info!(id = c.id, attempt, %reason, "will retry");
                    self.requeue_later(vec![w], attempt, &reason);
                }
            }
        }
        tally.log();
    }

    /// Puts messages back after a backoff (they stay unacknowledged meanwhile, which
    /// holds back further deliveries: back-pressure while something is failing).
    fn requeue_later(&self, work: Vec<Work>, attempt: i32, reason: &str) {
        let pause = self.config.backoff(attempt);
        tracing::warn!(count = work.len(), ?pause, %reason, "transient failure; requeueing later");
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            for w in work {
                stage::settle::log_failure(w.delivery.requeue().await);
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

#[cfg(test)]
mod tests {
    use super::*;

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
