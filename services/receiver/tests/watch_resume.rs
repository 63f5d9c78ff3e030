//! `WatchImages` resumes from a cursor: a client that disconnects and reconnects with the
//! cursor of the last event it got receives exactly the changes it missed, then live
//! ones, nothing twice. Bad arguments come back with `google.rpc.BadRequest` details.

use std::{collections::HashMap, sync::Arc, time::Duration};

use facewire_config::ImageRoot;
use facewire_proto::v1::{self as pb, image_service_server::ImageService};
use facewire_queue::{MemoryQueue, WorkQueue};
use facewire_receiver::{watch::ChangeFeed, ImageApi, Ingest};
use facewire_storage::{both_backends, images::Claim, testing, Outcome, Store};
use tokio_stream::StreamExt;
use tonic::Request;

/// How long to wait for an event that must come.
const EVENT_WAIT: Duration = Duration::from_secs(10);

struct App {
    api: ImageApi,
    store: Store,
    _root: tempfile::TempDir,
}

impl App {
    fn new(store: Store) -> Self {
        let root = tempfile::tempdir().unwrap();
        let queue: Arc<dyn WorkQueue> = Arc::new(MemoryQueue::new());
        let ingest = Ingest::new(
            ImageRoot::new(root.path(), 1 << 20).unwrap(),
            store.clone(),
            queue,
            100,
        );
        let feed = ChangeFeed::new(store.clone(), Duration::from_millis(20));
        Self {
            api: ImageApi::new(ingest, true, feed, 100),
            store,
            _root: root,
        }
    }

    async fn watch(
        &self,
        ids: Vec<i64>,
        cursor: &str,
    ) -> Result<facewire_receiver::grpc::WatchStream, tonic::Status> {
        let request = Request::new(pb::WatchImagesRequest {
            ids,
            cursor: cursor.to_string(),
        });
        Ok(self.api.watch_images(request).await?.into_inner())
    }

    async fn insert(&self, n: usize) -> Vec<i64> {
        testing::insert_ids(&self.store, testing::new_images(n)).await
    }

    async fn claim(&self, id: i64) -> Claim {
        self.store.claim(vec![id]).await.unwrap().pop().unwrap()
    }

    async fn finish(&self, claim: Claim, outcome: Outcome) {
        assert_eq!(
            self.store.finish(vec![(claim, outcome)]).await.unwrap(),
            vec![true]
        );
    }
}

type Event = (i64, pb::ImageStatus, String);

async fn next(stream: &mut facewire_receiver::grpc::WatchStream) -> Event {
    let msg = tokio::time::timeout(EVENT_WAIT, stream.next())
        .await
        .expect("an event in time")
        .expect("the stream is open")
        .expect("an event, not an error");
    let image = msg.image.expect("an image");
    assert!(!msg.cursor.is_empty(), "every event carries a cursor");
    (image.id, image.status(), msg.cursor)
}

/// Nothing more arrives within a short quiet period (the live poller runs every 20 ms).
async fn assert_quiet(stream: &mut facewire_receiver::grpc::WatchStream) {
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(600), stream.next()).await {
        panic!("unexpected extra event: {extra:?}");
    }
}

async fn reconnecting_client_gets_exactly_what_it_missed(store: Store) {
    let app = App::new(store);
    let ids = app.insert(4).await;
    let [a, b, c, d] = ids[..] else {
        unreachable!()
    };

    // Watch everything: the live feed starts a little in the past, so it shows the fresh
    // inserts; wait for the last one (in feed order), so this client has seen them all
    // (claimed in the same millisecond as the insert, `a` would come first and the
    // others would rightly be replayed as missed).
    let mut first = app.watch(vec![], "").await.unwrap();
    loop {
        let (id, status, _) = next(&mut first).await;
        assert_eq!(status, pb::ImageStatus::Pending);
        if id == d {
            break;
        }
    }
    // See `a` claimed, then disconnect.
    let claim_a = app.claim(a).await;
    let cursor = loop {
        let (id, status, cursor) = next(&mut first).await;
        if (id, status) == (a, pb::ImageStatus::Processing) {
            break cursor;
        }
        assert_eq!(status, pb::ImageStatus::Pending);
    };
    drop(first);

    // While disconnected: `a` finishes (possibly in the same millisecond as its claim),
    // `b` is claimed and finished, `c` is claimed. `d` does not change.
    app.finish(claim_a, Outcome::NoFace).await;
    let claim_b = app.claim(b).await;
    app.finish(claim_b, Outcome::Failed("corrupt".into())).await;
    let claim_c = app.claim(c).await;

    // Reconnect with the cursor: the missed changes, once each, as they are now.
    let mut second = app.watch(vec![], &cursor).await.unwrap();
    let mut got: HashMap<i64, pb::ImageStatus> = HashMap::new();
    let mut last_cursor = cursor.clone();
    for _ in 0..3 {
        let (id, status, cursor) = next(&mut second).await;
        assert!(got.insert(id, status).is_none(), "image {id} sent twice");
        last_cursor = cursor;
    }
    assert_eq!(
        got,
        HashMap::from([
            (a, pb::ImageStatus::NoFace),
            (b, pb::ImageStatus::Failed),
            (c, pb::ImageStatus::Processing),
        ])
    );
    assert!(!got.contains_key(&d));
    assert_quiet(&mut second).await;

    // Then live: `c` finishes and arrives once.
    app.finish(claim_c, Outcome::NoFace).await;
    let (id, status, cursor) = next(&mut second).await;
    assert_eq!((id, status), (c, pb::ImageStatus::NoFace));
    assert_ne!(cursor, last_cursor, "the cursor moves on");
    assert_quiet(&mut second).await;
    drop(second);

    // A client that resumes from the newest cursor has nothing to catch up on.
    let mut third = app.watch(vec![], &cursor).await.unwrap();
    assert_quiet(&mut third).await;
}
both_backends!(
    resume_after_disconnect,
    reconnecting_client_gets_exactly_what_it_missed
);

async fn watching_ids_resumes_too(store: Store) {
    let app = App::new(store);
    let ids = app.insert(2).await;
    let mut first = app.watch(ids.clone(), "").await.unwrap();
    // The current records first.
    next(&mut first).await;
    let (_, _, cursor) = next(&mut first).await;
    drop(first);
    let claim = app.claim(ids[1]).await;
    app.finish(claim, Outcome::NoFace).await;
    let mut second = app.watch(ids.clone(), &cursor).await.unwrap();
    let (id, status, _) = next(&mut second).await;
    assert_eq!((id, status), (ids[1], pb::ImageStatus::NoFace));
    assert_quiet(&mut second).await;
}
both_backends!(resume_watched_ids, watching_ids_resumes_too);

async fn bad_arguments_name_their_field(store: Store) {
    let app = App::new(store);
    let Err(status) = app.watch(vec![], "not-a-cursor").await else {
        panic!("a bad cursor was accepted");
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let bad = facewire_server::status::bad_request(&status).expect("BadRequest details");
    assert_eq!(bad.field_violations[0].field, "cursor");
    let info = facewire_server::status::error_info(&status).expect("ErrorInfo details");
    assert_eq!(info.domain, "facewire.dev");
    assert_eq!(info.reason, "INVALID_ARGUMENT");

    let listed = app
        .api
        .list_images(Request::new(pb::ListImagesRequest {
            page_size: -3,
            ..Default::default()
        }))
        .await;
    let Err(status) = listed else {
        panic!("a negative page size was accepted");
    };
    let bad = facewire_server::status::bad_request(&status).expect("BadRequest details");
    assert_eq!(bad.field_violations[0].field, "page_size");

    let Err(status) = app.watch(vec![i64::MAX], "").await else {
        panic!("watching a missing image was accepted");
    };
    assert_eq!(status.code(), tonic::Code::NotFound);
    let info = facewire_server::status::error_info(&status).expect("ErrorInfo details");
    assert_eq!(info.reason, "NOT_FOUND");
}
both_backends!(bad_arguments, bad_arguments_name_their_field);
