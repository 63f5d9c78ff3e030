//! Stage 1: a delivery's body is an image id, or the message is poison.

use facewire_queue::Delivery;
use facewire_telemetry::TraceContext;

/// One message, parsed.
pub struct Work {
    /// The message, settled at the end.
    pub delivery: Delivery,
    /// The image it names.
    pub id: i64,
    /// This image's context here: its submitter's trace, or a new one.
    pub trace: TraceContext,
}

impl Work {
    /// A span for lines about this image alone.
    pub fn span(&self) -> tracing::Span {
        tracing::debug_span!("image", id = self.id, trace_id = %self.trace.trace_id())
    }
}

/// Splits deliveries (with their traces) into work and poison: a body that is not an
/// image id can never succeed and must not block the queue.
pub fn parse(deliveries: Vec<Delivery>, traces: Vec<TraceContext>) -> (Vec<Work>, Vec<Delivery>) {
    let mut work = Vec::with_capacity(deliveries.len());
    let mut poison = Vec::new();
    for (delivery, trace) in deliveries.into_iter().zip(traces) {
        match delivery.image_id() {
            Ok(id) => work.push(Work {
                delivery,
                id,
                trace,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "poison message: dead-lettering");
                poison.push(delivery);
            }
        }
    }
    (work, poison)
}

#[cfg(test)]
mod tests {
    use super::*;
    use facewire_queue::{Headers, MemoryQueue, WorkQueue};

    #[tokio::test]
    async fn ids_become_work_and_anything_else_is_poison() {
        let queue = MemoryQueue::new();
        queue.publish(&[7], &Headers::new()).await.unwrap();
        queue
            .publish_raw(&[b"seven".to_vec(), b" 9 ".to_vec()], &Headers::new())
            .unwrap();
        let mut consumer = queue.consume(10).await.unwrap();
        let mut deliveries = Vec::new();
        for _ in 0..3 {
            deliveries.push(consumer.next().await.unwrap());
        }
        let traces = deliveries
            .iter()
            .map(|d| TraceContext::incoming(&d.headers))
            .collect();
        let (work, poison) = parse(deliveries, traces);
        assert_eq!(work.iter().map(|w| w.id).collect::<Vec<_>>(), vec![7, 9]);
        assert_eq!(poison.len(), 1);
        assert_eq!(poison[0].body, b"seven");
    }
}
