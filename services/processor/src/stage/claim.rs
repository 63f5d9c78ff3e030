//! Stage 2: claim the images (`processing`, attempt + 1) and sort out the messages whose
//! rows could not be claimed.

use std::collections::HashMap;

use facewire_storage::{images::Claim, Store, StoreError};

/// What claiming a batch found, per message (`T` is the message).
#[derive(Debug)]
pub struct Claimed<T> {
    /// Claimed for this attempt, in message order.
    pub active: Vec<(T, Claim)>,
    /// Rows that are already finished (a redelivery): nothing to do but acknowledge.
    pub finished: Vec<T>,
    /// Ids of no row: poison.
    pub unknown: Vec<T>,
}

/// The database could not be asked: every message goes back, with the error.
#[derive(Debug)]
pub struct Unclaimed<T> {
    /// The messages, in order.
    pub items: Vec<T>,
    /// What went wrong.
    pub error: StoreError,
}

/// Claims the images of `items` (each with its image id) and sorts the messages.
pub async fn claim<T>(store: &Store, items: Vec<(i64, T)>) -> Result<Claimed<T>, Unclaimed<T>> {
    let ids: Vec<i64> = items.iter().map(|(id, _)| *id).collect();
    let claims = match store.claim(ids).await {
        Ok(claims) => claims,
        Err(error) => return Err(unclaimed(items, error)),
    };
    let unclaimed_ids: Vec<i64> = items
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !claims.iter().any(|c| c.id == *id))
        .collect();
    let existing: Vec<i64> = if unclaimed_ids.is_empty() {
        Vec::new()
    } else {
        match store.get_many(unclaimed_ids).await {
            Ok(rows) => rows.into_iter().map(|r| r.id).collect(),
            Err(error) => return Err(unclaimed(items, error)),
        }
    };
    Ok(sort_out(items, claims, &existing))
}

fn unclaimed<T>(items: Vec<(i64, T)>, error: StoreError) -> Unclaimed<T> {
    Unclaimed {
        items: items.into_iter().map(|(_, item)| item).collect(),
        error,
    }
}

/// Pairs each message with its claim; a message without one is for a finished row when
/// its id is in `existing`, for no row otherwise.
pub fn sort_out<T>(items: Vec<(i64, T)>, claims: Vec<Claim>, existing: &[i64]) -> Claimed<T> {
    let claims: HashMap<i64, Claim> = claims.into_iter().map(|c| (c.id, c)).collect();
    let mut sorted = Claimed {
        active: Vec::new(),
        finished: Vec::new(),
        unknown: Vec::new(),
    };
    for (id, item) in items {
        if let Some(claim) = claims.get(&id) {
            sorted.active.push((item, claim.clone()));
        } else if existing.contains(&id) {
            sorted.finished.push(item);
        } else {
            sorted.unknown.push(item);
        }
    }
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;
    use facewire_storage::{NewImage, Outcome, StoreOptions};

    #[tokio::test]
    async fn pending_rows_are_claimed_finished_ones_acked_and_missing_ones_poison() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/c.db", dir.path().display());
        let store = Store::open(&url, StoreOptions::default()).await.unwrap();
        let rows = store
            .insert_batch(
                ["a.jpg", "b.jpg"]
                    .iter()
                    .map(|p| NewImage {
                        path: p.to_string(),
                        content_hash: format!("hash of {p}"),
                    })
                    .collect(),
            )
            .await
            .unwrap();
        let (a, b) = (rows[0].id, rows[1].id);
        // b is finished already: its message is a redelivery.
        let first = store.claim(vec![b]).await.unwrap();
        store
            .finish(vec![(first[0].clone(), Outcome::NoFace)])
            .await
            .unwrap();

        let items = vec![(a, "msg a"), (b, "msg b"), (a + b + 100, "msg none")];
        let claimed = claim(&store, items).await.unwrap();
        assert_eq!(claimed.active.len(), 1);
        let (msg, claim) = &claimed.active[0];
        assert_eq!(*msg, "msg a");
        assert_eq!(claim.attempt, 1);
        assert_eq!(claim.content_hash, "hash of a.jpg");
        assert_eq!(claimed.finished, vec!["msg b"]);
        assert_eq!(claimed.unknown, vec!["msg none"]);
        let a_now = store.get(a).await.unwrap().unwrap();
        assert_eq!(a_now.status, facewire_storage::ImageStatus::Processing);
    }

    #[test]
    fn messages_keep_their_order_and_a_repeated_id_shares_its_claim() {
        let claim = |id| Claim {
            id,
            path: format!("{id}.jpg"),
            attempt: 2,
            created_at: 0,
            content_hash: String::new(),
        };
        let sorted = sort_out(
            vec![(3, 'x'), (1, 'y'), (2, 'z'), (3, 'w')],
            vec![claim(1), claim(3)],
            &[2],
        );
        let active: Vec<(char, i64)> = sorted.active.iter().map(|(m, c)| (*m, c.id)).collect();
        assert_eq!(active, vec![('x', 3), ('y', 1), ('w', 3)]);
        assert_eq!(sorted.finished, vec!['z']);
        assert!(sorted.unknown.is_empty());
    }
}
