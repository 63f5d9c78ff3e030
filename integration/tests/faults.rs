//! Faults against the real PostgreSQL and RabbitMQ, with the services as separate
//! processes. Each scenario ends with every submitted image in a terminal state.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use facewire_integration::{workspace_root, Backends, Service};
use facewire_proto::v1::{submit_result::Outcome, Image, ImageStatus};
use facewire_queue::rabbitmq::{RabbitOptions, RabbitQueue};
use facewire_queue::{Headers, WorkQueue};
use facewire_storage::{ImageStatus as StoredStatus, Store, StoreOptions};

/// Restarting RabbitMQ disturbs every test using it: the restart test holds this for
/// writing, the others for reading, so it runs alone within this binary (cargo runs test
/// binaries one after another).
static BROKER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn johns() -> PathBuf {
    workspace_root().join("testdata/dlib/johns")
}

/// A fresh database and queue, an image dir with `count` photos of one person
/// (`good<i>.jpg`) and a truncated JPEG (`corrupt.jpg`), and the shared environment.
struct Setup {
    backends: Backends,
    images: tempfile::TempDir,
    env: HashMap<String, String>,
}

fn setup(count: usize) -> Setup {
    let backends = Backends::production();
    let images = tempfile::tempdir().unwrap();
    let mut photos: Vec<_> = std::fs::read_dir(johns().join("John_Salley"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    photos.sort();
    for i in 0..count {
        std::fs::copy(
            &photos[i % photos.len()],
            images.path().join(format!("good{i}.jpg")),
        )
        .unwrap();
    }
    let bytes = std::fs::read(&photos[0]).unwrap();
    std::fs::write(images.path().join("corrupt.jpg"), &bytes[..200]).unwrap();
    let mut env: HashMap<String, String> = backends.env.clone();
    env.insert(
        "FACEWIRE_IMAGE_ROOT".into(),
        images.path().display().to_string(),
    );
    env.insert("FACEWIRE_BREAKER_COOLDOWN_SECONDS".into(), "1".into());
    Setup {
        backends,
        images,
        env,
    }
}

impl Setup {
    fn with(&self, key: &str, value: String) -> HashMap<String, String> {
        let mut env = self.env.clone();
        env.insert(key.into(), value);
        env
    }

    fn queue(&self) -> RabbitQueue {
        let q = self.backends.queue.as_ref().unwrap();
        RabbitQueue::new(q.url(), q.name(), RabbitOptions::default()).unwrap()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn submit(receiver: &Service, paths: Vec<String>) -> Vec<i64> {
    let mut client = receiver.client().await;
    client
        .submit_images(paths)
        .await
        .unwrap()
        .iter()
        .map(|r| match &r.outcome {
            Some(Outcome::Image(i)) => i.id,
            other => panic!("not accepted: {other:?}"),
        })
        .collect()
}

async fn wait_terminal(receiver: &Service, ids: &[i64], seconds: u64) -> Vec<Image> {
    let mut client = receiver.client().await;
    let mut images = Vec::new();
    for _ in 0..seconds * 5 {
        images.clear();
        for id in ids {
            images.push(client.get_image(*id).await.unwrap());
        }
        let terminal = images.iter().all(|i| {
            [ImageStatus::Done, ImageStatus::NoFace, ImageStatus::Failed]
                .iter()
                .any(|s| *s as i32 == i.status)
        });
        if terminal {
            return images;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("images did not reach a terminal state: {images:?}");
}

fn all_done_as_salley(images: &[Image]) {
    for i in images {
        assert_eq!(i.status, ImageStatus::Done as i32, "{i:?}");
        assert_eq!(i.people.len(), 1, "one face, recorded once: {i:?}");
    }
}

#[tokio::test]
async fn corrupt_image_fails_alone_and_poison_messages_are_dead_lettered() {
    let _broker = BROKER.read().await;
    let s = setup(2);
    let recognition = Service::spawn(&["recognition"], &s.env).await;
    let env = s.with("FACEWIRE_RECOGNITION_URL", recognition.grpc_url());
    let _processor = Service::spawn(&["processor"], &env).await;
    let receiver = Service::spawn(&["receiver"], &env).await;
    let queue = s.queue();
    // Poison: a garbage body and the id of a row that does not exist.
    queue
        .publish_raw(
            &[b"not an id".to_vec(), b"999999999".to_vec()],
            &Headers::new(),
        )
        .await
        .unwrap();

    let ids = submit(
        &receiver,
        vec!["good0.jpg".into(), "corrupt.jpg".into(), "good1.jpg".into()],
    )
    .await;
    let images = wait_terminal(&receiver, &ids, 60).await;
    assert_eq!(
        images[0].status,
        ImageStatus::Done as i32,
        "{:?}",
        images[0]
    );
    assert_eq!(
        images[2].status,
        ImageStatus::Done as i32,
        "{:?}",
        images[2]
    );
    assert_eq!(
        images[1].status,
        ImageStatus::Failed as i32,
        "{:?}",
        images[1]
    );
    assert!(!images[1].last_error.is_empty());
    assert_eq!(images[1].attempts, 1, "a corrupt image is not retried");

    let mut dead = 0;
    for _ in 0..50 {
        dead = queue.dead_letter_depth().await.unwrap();
        if dead >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead, 2, "both poison messages dead-lettered");
    assert!(s.images.path().exists());
}

#[tokio::test]
async fn recognition_down_then_back_images_wait_then_finish() {
    let _broker = BROKER.read().await;
    let s = setup(4);
    let port = free_port();
    let rec_env = s.with("FACEWIRE_GRPC_ADDR", format!("127.0.0.1:{port}"));
    let mut recognition = Service::spawn(&["recognition"], &rec_env).await;
    let env = s.with(
        "FACEWIRE_RECOGNITION_URL",
        format!("http://127.0.0.1:{port}"),
    );
    let processor = Service::spawn(&["processor"], &env).await;
    let receiver = Service::spawn(&["receiver"], &env).await;

    recognition.terminate();
    recognition
        .wait(Duration::from_secs(20))
        .await
        .expect("recognition stops");
    let down_since = std::time::Instant::now();
    let ids = submit(&receiver, (0..4).map(|i| format!("good{i}.jpg")).collect()).await;
    // The processor's calls fail until its breaker opens and stops them.
    let metrics = format!("{}/metrics", processor.http_url());
    let open = "client_breaker_state{breaker=\"recognition\"} 2";
    let mut seen_open = false;
    while down_since.elapsed() < Duration::from_secs(30) {
        let text = reqwest::get(&metrics)
            .await
            .expect("processor /metrics")
            .text()
            .await
            .unwrap_or_default();
        seen_open |= text.contains(open);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        seen_open,
        "the breaker never opened while recognition was down"
    );
    // Down for 30 s: nothing finished, nothing failed.
    let mut client = receiver.client().await;
    for id in &ids {
        let image = client.get_image(*id).await.unwrap();
        assert!(
            image.status == ImageStatus::Pending as i32
                || image.status == ImageStatus::Processing as i32,
            "{image:?}"
        );
    }
    let _back = Service::spawn(&["recognition"], &rec_env).await;
    let images = wait_terminal(&receiver, &ids, 90).await;
    all_done_as_salley(&images);
}

/// Images in `processing` among `counts` (from `Store::count_by_status`).
fn processing(counts: &[(StoredStatus, i64)]) -> i64 {
    counts
        .iter()
        .filter(|(status, _)| *status == StoredStatus::Processing)
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test]
async fn a_processor_killed_mid_batch_loses_nothing() {
    let _broker = BROKER.read().await;
    let s = setup(24);
    let recognition = Service::spawn(&["recognition"], &s.env).await;
    let env = s.with("FACEWIRE_RECOGNITION_URL", recognition.grpc_url());
    let receiver = Service::spawn(&["receiver"], &env).await;
    let mut first = Service::spawn(&["processor"], &env).await;
    let store = Store::open(&s.backends.database_url(), StoreOptions::default())
        .await
        .unwrap();
    let ids = submit(&receiver, (0..24).map(|i| format!("good{i}.jpg")).collect()).await;
    // Kill the moment a batch is claimed, so that the kill really lands mid-batch.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let counts = store.count_by_status().await.unwrap();
        if processing(&counts) > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no image was ever processing: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill().await; // kill -9: unacked messages go back to the queue

    // Nothing moves a row out of `processing` but a processor, and the only one is dead:
    // what was being worked on at the kill is still there to see.
    let at_kill = store.count_by_status().await.unwrap();
    assert!(
        processing(&at_kill) > 0,
        "the kill did not land mid-batch: {at_kill:?}"
    );
    let _second = Service::spawn(&["processor"], &env).await;
    // Rows claimed by the dead processor are redelivered by RabbitMQ; the reconciler
    // covers anything else.
    let rec = s.with("FACEWIRE_RECONCILE_AFTER_SECONDS", "5".into());
    let _reconciler = Service::spawn(&["reconciler"], &rec).await;
    let images = wait_terminal(&receiver, &ids, 120).await;
    all_done_as_salley(&images);
}

#[tokio::test]
async fn two_processors_and_two_reconcilers_never_process_twice() {
    let _broker = BROKER.read().await;
    let s = setup(20);
    let recognition = Service::spawn(&["recognition"], &s.env).await;
    let env = s.with("FACEWIRE_RECOGNITION_URL", recognition.grpc_url());
    let receiver = Service::spawn(&["receiver"], &env).await;
    let _p1 = Service::spawn(&["processor"], &env).await;
    let _p2 = Service::spawn(&["processor"], &env).await;
    let mut rec = env.clone();
    rec.insert("FACEWIRE_RECONCILE_AFTER_SECONDS".into(), "30".into());
    rec.insert("FACEWIRE_RECONCILE_INTERVAL_SECONDS".into(), "0.2".into());
    let _r1 = Service::spawn(&["reconciler"], &rec).await;
    let _r2 = Service::spawn(&["reconciler"], &rec).await;
    let ids = submit(&receiver, (0..20).map(|i| format!("good{i}.jpg")).collect()).await;
    let images = wait_terminal(&receiver, &ids, 120).await;
    all_done_as_salley(&images);
    for i in &images {
        assert_eq!(i.attempts, 1, "processed once: {i:?}");
    }
}

/// `rabbitmqctl stop_app`; `start_app` again when dropped, even if the test fails.
struct BrokerStopped;

fn rabbitmqctl(verb: &str) {
    let out = std::process::Command::new("rabbitmqctl")
        .arg(verb)
        .output()
        .expect("run rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl {verb}: {out:?}");
}

impl BrokerStopped {
    fn stop() -> Self {
        rabbitmqctl("stop_app");
        Self
    }
}

impl Drop for BrokerStopped {
    fn drop(&mut self) {
        rabbitmqctl("start_app");
    }
}

#[tokio::test]
async fn rabbitmq_restarted_during_a_run_loses_nothing() {
    let _broker = BROKER.write().await;
    let s = setup(30);
    let recognition = Service::spawn(&["recognition"], &s.env).await;
    let env = s.with("FACEWIRE_RECOGNITION_URL", recognition.grpc_url());
    let receiver = Service::spawn(&["receiver"], &env).await;
    let _processor = Service::spawn(&["processor"], &env).await;
    let mut rec = env.clone();
    rec.insert("FACEWIRE_RECONCILE_AFTER_SECONDS".into(), "5".into());
    rec.insert("FACEWIRE_RECONCILE_INTERVAL_SECONDS".into(), "1".into());
    let _reconciler = Service::spawn(&["reconciler"], &rec).await;

    let mut ids = submit(&receiver, (0..15).map(|i| format!("good{i}.jpg")).collect()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = BrokerStopped::stop();
    // Submitted while the broker is down: recorded, not published; the reconciler
    // re-queues them once it is back.
    ids.extend(
        submit(
            &receiver,
            (15..30).map(|i| format!("good{i}.jpg")).collect(),
        )
        .await,
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(stopped);

    let images = wait_terminal(&receiver, &ids, 150).await;
    all_done_as_salley(&images);
    assert_eq!(images.len(), 30);
}
