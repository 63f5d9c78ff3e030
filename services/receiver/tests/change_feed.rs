//! The change feed behind `WatchImages`: every change reaches a subscriber, however many
//! happen at once. A burst of more changes than one poll reads (1 000), all within the
//! feed's overlap window, used to return the same first page on every poll: the rest
//! never arrived, and `facewire submit --wait` on 1 100 photos waited for ever.

use std::{collections::HashSet, time::Duration};

use facewire_receiver::watch::ChangeFeed;
use facewire_storage::{both_backends, testing, ImageStatus, Outcome, Store};
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

    let ids = testing::insert_ids(&store, testing::new_images(BURST)).await;
    testing::process(&store, &ids, |_| Outcome::NoFace).await;

    let finished = tokio::time::timeout(Duration::from_secs(30), collector)
        .await
        .expect("every finished image reaches the subscriber")
        .unwrap();
    assert_eq!(finished, ids.into_iter().collect::<HashSet<_>>());
}
both_backends!(
    burst_over_one_page,
    a_burst_larger_than_a_page_arrives_whole
);
