//! Stage 8: once outcomes are committed, each message is settled: acknowledged (the image
//! is finished), requeued after a backoff (a transient failure), or dead-lettered (poison,
//! or attempts exhausted).

use std::collections::BTreeMap;

use facewire_storage::Outcome;

use crate::stage::record::label;

/// What to do with an image's message after its outcome was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Finished (done, no face, failed for good): the message may go.
    Ack,
    /// Try again after the backoff of this attempt.
    RetryLater {
        /// The attempt that failed.
        attempt: i32,
        /// Why.
        reason: String,
    },
}

/// The settlement of a message whose image had `outcome` on `attempt`.
pub fn settlement(outcome: &Outcome, attempt: i32) -> Settlement {
    match outcome {
        Outcome::Retry(reason) => Settlement::RetryLater {
            attempt,
            reason: reason.clone(),
        },
        Outcome::Done(_) | Outcome::NoFace | Outcome::Failed(_) => Settlement::Ack,
    }
}

/// Images per outcome in one batch, for its summary line.
#[derive(Debug, Default)]
pub struct Tally(BTreeMap<&'static str, usize>);

impl Tally {
    /// Counts one image with `outcome`.
    pub fn add(&mut self, outcome: &Outcome) {
        *self.0.entry(label(outcome)).or_default() += 1;
    }

    /// Images counted with the outcome `label`.
    pub fn count(&self, label: &str) -> usize {
        self.0.get(label).copied().unwrap_or(0)
    }

    /// Logs the batch's summary.
    pub fn log(&self) {
        tracing::info!(
            done = self.count("done"),
            no_face = self.count("no_face"),
            failed = self.count("failed"),
            retry = self.count("retry"),
            "batch recorded"
        );
    }
}

/// Logs a settlement that failed. Nothing else to do: the broker has already requeued an
/// unsettled message after a lost connection, and the database makes the redelivery
/// harmless.
pub fn log_failure(result: Result<(), facewire_queue::QueueError>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "could not settle a delivery");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_images_are_acked_and_transient_failures_retried() {
        assert_eq!(settlement(&Outcome::NoFace, 1), Settlement::Ack);
        assert_eq!(settlement(&Outcome::Done(Vec::new()), 1), Settlement::Ack);
        assert_eq!(
            settlement(&Outcome::Failed("corrupt".into()), 1),
            Settlement::Ack
        );
        assert_eq!(
            settlement(&Outcome::Retry("recognition unavailable".into()), 3),
            Settlement::RetryLater {
                attempt: 3,
                reason: "recognition unavailable".into()
            }
        );
    }

    #[test]
    fn the_tally_counts_per_outcome() {
        let mut tally = Tally::default();
        for o in [
            Outcome::NoFace,
            Outcome::NoFace,
            Outcome::Retry(String::new()),
            Outcome::Failed(String::new()),
        ] {
            tally.add(&o);
        }
        assert_eq!(
            ["done", "no_face", "failed", "retry"].map(|l| tally.count(l)),
            [0, 2, 1, 1]
        );
    }
}
