//! Stage 7: one outcome per claimed image, written in one transaction (with the hash of
//! the bytes recognised, where the file changed after it was recorded).

use facewire_storage::{images::Claim, Outcome, Store, StoreError};

/// What an attempt found out so far, per image of the batch (by index).
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// The outcome, once known.
    pub outcomes: Vec<Option<Outcome>>,
    /// The hash of the bytes read, when it is not the one on record.
    pub changed_hashes: Vec<Option<String>>,
}

impl Results {
    /// Nothing known yet about `n` images.
    pub fn new(n: usize) -> Self {
        Self {
            outcomes: vec![None; n],
            changed_hashes: vec![None; n],
        }
    }
}

/// The rows to write: each claim with its outcome (an image nobody answered about is
/// retried) and the new content hash if the file changed. A retried image's new hash is
/// not kept: nothing was recognised from those bytes, and the next attempt reads the
/// file again.
pub fn rows(claims: &[Claim], results: Results) -> Vec<(Claim, Outcome, Option<String>)> {
    claims
        .iter()
        .zip(results.outcomes)
        .zip(results.changed_hashes)
        .map(|((claim, outcome), hash)| {
            let outcome = outcome.unwrap_or_else(|| Outcome::Retry("no result".into()));
            let hash = hash.filter(|_| !matches!(outcome, Outcome::Retry(_)));
            (claim.clone(), outcome, hash)
        })
        .collect()
}

/// Writes the rows in one transaction; per row, whether it applied (false: a repeat or a
/// superseded attempt).
pub async fn record(
    store: &Store,
    rows: Vec<(Claim, Outcome, Option<String>)>,
) -> Result<Vec<bool>, StoreError> {
    store.finish_recognised(rows).await
}

/// The metric and log label of an outcome.
pub fn label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Done(_) => "done",
        Outcome::NoFace => "no_face",
        Outcome::Failed(_) => "failed",
        Outcome::Retry(_) => "retry",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use facewire_storage::{ImageStatus, NewImage, StoreOptions};

    #[test]
    fn unanswered_images_are_retried_and_only_recognised_bytes_get_their_hash_recorded() {
        let claims: Vec<Claim> = (1..=3)
            .map(|id| Claim {
                id,
                path: format!("{id}.jpg"),
                attempt: 1,
                created_at: 0,
                content_hash: "old".into(),
            })
            .collect();
        let mut results = Results::new(3);
        results.outcomes[0] = Some(Outcome::NoFace);
        results.outcomes[1] = Some(Outcome::Retry("recognition unavailable".into()));
        results.changed_hashes = vec![Some("new0".into()), Some("new1".into()), None];
        let rows = rows(&claims, results);
        let summary: Vec<(i64, &str, Option<&str>)> = rows
            .iter()
            .map(|(c, o, h)| (c.id, label(o), h.as_deref()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, "no_face", Some("new0")),
                (2, "retry", None),
                (3, "retry", None)
            ]
        );
        assert_eq!(rows[2].1, Outcome::Retry("no result".into()));
    }

    #[tokio::test]
    async fn the_new_hash_is_written_with_the_outcome_and_only_by_the_current_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/r.db", dir.path().display());
        let store = Store::open(&url, StoreOptions::default()).await.unwrap();
        let new = |p: &str| NewImage {
            path: p.into(),
            content_hash: "submitted".into(),
        };
        let ids: Vec<i64> = store
            .insert_batch(vec![new("a.jpg"), new("b.jpg")])
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        let claims = store.claim(ids.clone()).await.unwrap();
        let rows = vec![
            (claims[0].clone(), Outcome::NoFace, Some("replaced".into())),
            (claims[1].clone(), Outcome::NoFace, None),
        ];
        assert_eq!(
            record(&store, rows.clone()).await.unwrap(),
            vec![true, true]
        );
        let a = store.get(ids[0]).await.unwrap().unwrap();
        let b = store.get(ids[1]).await.unwrap().unwrap();
        assert_eq!(
            (a.status, a.content_hash.as_str()),
            (ImageStatus::NoFace, "replaced")
        );
        assert_eq!(
            (b.status, b.content_hash.as_str()),
            (ImageStatus::NoFace, "submitted")
        );

        // A repeat (a redelivered message's stale attempt) changes nothing.
        let mut stale = rows;
        stale[1].2 = Some("stale".into());
        assert_eq!(record(&store, stale).await.unwrap(), vec![false, false]);
        let b = store.get(ids[1]).await.unwrap().unwrap();
        assert_eq!(b.content_hash, "submitted");
    }
}
