//! A rolling update of recognition and of the processors under load, replayed with real
//! processes: two recognition replicas behind a round-robin front (a ClusterIP Service)
//! and two processors consume a steady stream of submissions; each recognition replica is
//! replaced in turn (a new one added, the old one's endpoint removed and SIGTERM sent while
//! batches are in flight), then each processor (a new one started, the old one sent
//! SIGTERM). Every image must end `done` (or `no_face`): a graceful stop may delay work,
//! never fail it.
//!
//! Before the processor treated a call cancelled by a stopping recognition as transient,
//! this lost images on every run (8 of 400 in the measurement).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use facewire_integration::{bench::johns_photos, rolling::Front, Backends, Service};
use facewire_proto::v1::submit_result::Outcome;
use facewire_storage::{ImageStatus, Store, StoreOptions};

async fn recognition(env: &HashMap<String, String>) -> Service {
    Service::spawn(&["recognition"], env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_recognition_and_processors_under_load_fails_nothing() {
    let backends = Backends::production();
    let images = tempfile::tempdir().expect("image dir");
    let photos = johns_photos();
    for (i, photo) in photos.iter().enumerate() {
        std::fs::copy(photo, images.path().join(format!("p{i}.jpg"))).expect("copy photo");
    }
    let mut env = backends.env.clone();
    env.insert(
        "FACEWIRE_IMAGE_ROOT".into(),
        images.path().display().to_string(),
    );
    env.insert("FACEWIRE_DRAIN_SECONDS".into(), "0.5".into());
    env.insert("FACEWIRE_RECOGNITION_WORKERS".into(), "1".into());
    // Batches of 4 keep calls in flight long enough to be cut by a stop.
    env.insert("FACEWIRE_BATCH".into(), "4".into());

    let front = Front::start().await;
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let r = recognition(&env).await;
        front.add(r.grpc_addr());
        replicas.push(r);
    }
    let mut worker_env = env.clone();
    worker_env.insert(
        "FACEWIRE_RECOGNITION_URL".into(),
        format!("http://{}", front.addr()),
    );
    let receiver = Service::spawn(&["receiver"], &env).await;
    let mut processors = Vec::new();
    for _ in 0..2 {
        processors.push(Service::spawn(&["processor"], &worker_env).await);
    }

    // Steady load: a batch of 8 photos every 100 ms until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let submitter = {
        let stop = stop.clone();
        let mut client = receiver.client().await;
        let n = photos.len();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut k = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let paths: Vec<String> = (0..8).map(|j| format!("p{}.jpg", (k + j) % n)).collect();
                k += 8;
                for result in client.submit_images(paths).await.expect("submit") {
                    match result.outcome {
                        Some(Outcome::Image(image)) => ids.push(image.id),
                        other => panic!("refused: {other:?}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ids
        })
    };
    let store = Store::open(&backends.database_url(), StoreOptions::default())
        .await
        .expect("open store");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Roll recognition: add a new replica, then remove and stop an old one, twice.
    for _ in 0..2 {
        let new = recognition(&env).await;
        front.add(new.grpc_addr());
        let mut old = replicas.remove(0);
        front.drain(old.grpc_addr());
        old.terminate();
        let status = old
            .wait(Duration::from_secs(30))
            .await
            .expect("recognition did not exit after SIGTERM");
        assert!(status.success(), "recognition exited with {status:?}");
        replicas.push(new);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Roll the processors the same way.
    for _ in 0..2 {
        let new = Service::spawn(&["processor"], &worker_env).await;
        let mut old = processors.remove(0);
        old.terminate();
        let status = old
            .wait(Duration::from_secs(30))
            .await
            .expect("processor did not exit after SIGTERM");
        assert!(status.success(), "processor exited with {status:?}");
        processors.push(new);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let ids = submitter.await.expect("submitter");
    assert!(ids.len() >= 80, "too little load: {} images", ids.len());

    let deadline = Instant::now() + Duration::from_secs(180);
    let rows = loop {
        let rows = store.get_many(ids.clone()).await.expect("rows");
        let open = rows
            .iter()
            .filter(|r| matches!(r.status, ImageStatus::Pending | ImageStatus::Processing))
            .count();
        if open == 0 && rows.len() == ids.len() {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "{open} of {} images still open after 3 minutes",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let failed: Vec<_> = rows
        .iter()
        .filter(|r| !matches!(r.status, ImageStatus::Done | ImageStatus::NoFace))
        .map(|r| (r.id, r.status, r.last_error.clone()))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} images did not end done: {failed:?}",
        failed.len(),
        ids.len()
    );
    println!(
        "rolled 2 recognition replicas and 2 processors under load: {}/{} images done",
        rows.len(),
        ids.len()
    );
}
