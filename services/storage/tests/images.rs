//! The image state machine against both real backends.

use facewire_storage::{
    images::Claim, DetectedFace, ImageStatus, NewImage, Outcome, PersonFound, Store, StoreOptions,
};

use facewire_storage::both_backends;

fn new_images(n: usize) -> Vec<NewImage> {
    (0..n)
        .map(|i| NewImage {
            path: format!("img/{i}.jpg"),
            content_hash: format!("{i:064x}"),
        })
        .collect()
}

async fn batch_insert_keeps_order(store: Store) {
    let recs = store.insert_batch(new_images(100)).await.unwrap();
    assert_eq!(recs.len(), 100);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.path, format!("img/{i}.jpg"));
        assert_eq!(r.status, ImageStatus::Pending);
        assert_eq!(r.attempts, 0);
    }
    assert!(recs.windows(2).all(|w| w[0].id < w[1].id));
    let got = store.get(recs[5].id).await.unwrap().unwrap();
    assert_eq!(got, recs[5]);
    assert!(store.get(-1).await.unwrap().is_none());
    assert!(store.insert_batch(vec![]).await.unwrap().is_empty());
}
both_backends!(batch_insert, batch_insert_keeps_order);

async fn transitions_are_idempotent(store: Store) {
    let recs = store.insert_batch(new_images(3)).await.unwrap();
    let ids: Vec<i64> = recs.iter().map(|r| r.id).collect();
    let claims = store.claim(ids.clone()).await.unwrap();
    assert_eq!(claims.len(), 3);
    assert!(claims.iter().all(|c| c.attempt == 1));
    // A claim carries the submission time (for the submit-to-done latency).
    assert!(claims
        .iter()
        .zip(&recs)
        .all(|(c, r)| c.created_at == r.created_at));

    let (ada, _) = store.person_for_name("ada").await.unwrap();
    let found = vec![DetectedFace {
        bbox: [10.0, 10.0, 50.0, 60.0],
        score: 0.9,
        embedding: vec![1.0, 0.0],
        matched: Some((ada, 0.71)),
        ..DetectedFace::default()
    }];
    let people = vec![PersonFound {
        name: "ada".into(),
        similarity: 0.71,
        person_id: Some(ada),
    }];
    let outcomes = vec![
        (claims[0].clone(), Outcome::Done(found)),
        (claims[1].clone(), Outcome::NoFace),
        (claims[2].clone(), Outcome::Failed("corrupt JPEG".into())),
    ];
    assert_eq!(store.finish(outcomes.clone()).await.unwrap(), vec![true; 3]);
    // The same outcomes again (a redelivered message) change nothing.
    assert_eq!(store.finish(outcomes).await.unwrap(), vec![false; 3]);

    let done = store.get(ids[0]).await.unwrap().unwrap();
    assert_eq!(done.status, ImageStatus::Done);
    assert_eq!(done.people, people);
    // The redelivery wrote no second face.
    assert_eq!(done.faces.len(), 1);
    let failed = store.get(ids[2]).await.unwrap().unwrap();
    assert_eq!(failed.status, ImageStatus::Failed);
    assert_eq!(failed.last_error.as_deref(), Some("corrupt JPEG"));

    // Terminal images cannot be claimed again.
    assert!(store.claim(ids).await.unwrap().is_empty());
}
both_backends!(idempotent, transitions_are_idempotent);

async fn superseded_attempt_is_ignored(store: Store) {
    let id = store.insert_batch(new_images(1)).await.unwrap()[0].id;
    let first = store.claim(vec![id]).await.unwrap().remove(0);
    // Redelivered after a crash: a second claim bumps the attempt.
    let second = store.claim(vec![id]).await.unwrap().remove(0);
    assert_eq!(second.attempt, 2);
    // The first, stale attempt cannot finish the image.
    let stale = store.finish(vec![(first, Outcome::NoFace)]).await.unwrap();
    assert_eq!(stale, vec![false]);
    let retry = Outcome::Retry("recognition unavailable".into());
    assert_eq!(
        store.finish(vec![(second.clone(), retry)]).await.unwrap(),
        vec![true]
    );
    let rec = store.get(id).await.unwrap().unwrap();
    assert_eq!(rec.status, ImageStatus::Pending);
    assert_eq!(rec.last_error.as_deref(), Some("recognition unavailable"));
    let third: Claim = store.claim(vec![id]).await.unwrap().remove(0);
    assert_eq!(third.attempt, 3);
}
both_backends!(superseded, superseded_attempt_is_ignored);

async fn list_pages_and_filters(store: Store) {
    let recs = store.insert_batch(new_images(25)).await.unwrap();
    let claims = store.claim(vec![recs[0].id, recs[1].id]).await.unwrap();
    store
        .finish(claims.into_iter().map(|c| (c, Outcome::NoFace)).collect())
        .await
        .unwrap();
    let page1 = store.list(None, None, 10).await.unwrap();
    assert_eq!(page1.len(), 10);
    assert_eq!(page1[0].id, recs[24].id);
    let page2 = store.list(None, Some(page1[9].id), 10).await.unwrap();
    assert_eq!(page2[0].id, recs[14].id);
    let no_face = store
        .list(Some(ImageStatus::NoFace), None, 100)
        .await
        .unwrap();
    assert_eq!(no_face.len(), 2);
    let counts = store.count_by_status().await.unwrap();
    assert!(counts.contains(&(ImageStatus::Pending, 23)));
    assert!(counts.contains(&(ImageStatus::NoFace, 2)));
}
both_backends!(list, list_pages_and_filters);

async fn stale_rows_are_claimed_once(store: Store) {
    let recs = store.insert_batch(new_images(5)).await.unwrap();
    let future = facewire_storage::now_millis() + 60_000;
    let first = store.claim_stale(future, 100).await.unwrap();
    assert_eq!(first.len(), 5);
    // Just stamped: a sweep with a cutoff before now sees nothing.
    let again = store
        .claim_stale(facewire_storage::now_millis() - 1_000, 100)
        .await
        .unwrap();
    assert!(again.is_empty());
    let failed = store.fail(vec![recs[0].id], "poison".into()).await.unwrap();
    assert_eq!(failed, 1);
    let later = store.claim_stale(future + 60_000, 100).await.unwrap();
    assert_eq!(later.len(), 4);
}
both_backends!(stale, stale_rows_are_claimed_once);

#[tokio::test]
async fn unreachable_postgres_is_unavailable_not_a_panic() {
    let opts = StoreOptions {
        connect_timeout: std::time::Duration::from_millis(500),
        ..StoreOptions::default()
    };
    let store = Store::connect("postgres://postgres@127.0.0.1:1/nothing", &opts).unwrap();
    let err = store.get(1).await.unwrap_err();
    assert!(
        matches!(err, facewire_storage::StoreError::Unavailable(_)),
        "{err:?}"
    );
}

async fn changes_replay_after_a_position(store: Store) {
    let recs = store.insert_batch(new_images(5)).await.unwrap();
    let ids: Vec<i64> = recs.iter().map(|r| r.id).collect();
    let all = store.changed_after(0, 0, None, 100).await.unwrap();
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
    // Paging by the last row's position visits every row once, in order.
    let mut seen = Vec::new();
    let (mut at, mut id) = (0, 0);
    loop {
        let page = store.changed_after(at, id, None, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        (at, id) = (last.updated_at, last.id);
        seen.extend(page.iter().map(|r| r.id));
    }
    assert_eq!(seen, ids);
    // A change (in a later millisecond) moves a row after every earlier position.
    let last = all.last().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let claims = store.claim(vec![ids[1]]).await.unwrap();
    assert_eq!(claims.len(), 1);
    let changed = store
        .changed_after(last.updated_at, last.id, None, 100)
        .await
        .unwrap();
    assert_eq!(changed.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[1]]);
    assert_eq!(changed[0].status, ImageStatus::Processing);
    // Only the ids asked for.
    let only = store
        .changed_after(0, 0, Some(vec![ids[3], ids[0]]), 100)
        .await
        .unwrap();
    let mut got: Vec<i64> = only.iter().map(|r| r.id).collect();
    got.sort();
    assert_eq!(got, [ids[0], ids[3]]);
}
both_backends!(changed_after, changes_replay_after_a_position);
