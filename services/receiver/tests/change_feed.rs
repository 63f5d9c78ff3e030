//! The change feed behind `WatchImages`: every change reaches a subscriber, however many
//! happen at once. A burst of more changes than one poll reads (1 000), all within the
//! feed's overlap window, used to return the same first page on every poll: the rest
//! never arrived, and `facewire submit --wait` on 1 100 photos waited for ever.

use std::{collections::HashSet, time::Duration};

use facewire_receiver::watch::ChangeFeed;
use facewire_storage::{both_backends, ImageStatus, NewImage, Outcome, Store};
use tokio::sync::broadcast::error::RecvError;

/// More than one poll's page.
const BURST: usize = 1_500;

async fn a_burst_larger_than_a_page_arrives_whole(store: Store) {
    let feed = ChangeFeed::new(store.clone(), Duration::from_millis(20));
    let mut changes = feed.subscribe();
    // Collect as the feed sends, so the broadcast buffer never overflows.
    let collector = tokio::spawn(async move {
        let mut finished = HashSet::new();
        while finished.len() < BURST {
            match changes.recv().await {
                Ok(r) if r.status == ImageStatus::NoFace => {
                    finished.insert(r.id);
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            }
        }
        finished
    });

    let tag = facewire_storage::now_millis();
    let new = (0..BURST)
        .map(|i| NewImage {
            path: format!("{tag}/{i}.jpg"),
            content_hash: format!("{tag:032x}{i:032x}"),
        })
        .collect();
    let ids: Vec<i64> = store
        .insert_batch(new)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    let claims = store.claim(ids.clone()).await.unwrap();
    assert_eq!(claims.len(), BURST);
    store
        .finish(claims.into_iter().map(|c| (c, Outcome::NoFace)).collect())
        .await
        .unwrap();

    let finished = tokio::time::timeout(Duration::from_secs(30), collector)
        .await
        .expect("every finished image reaches the subscriber")
        .unwrap();
    assert_eq!(finished, ids.into_iter().collect::<HashSet<_>>());
}
both_backends!(burst_over_one_page, a_burst_larger_than_a_page_arrives_whole);
