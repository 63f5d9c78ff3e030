//! Faults against the real PostgreSQL and RabbitMQ, with the services as separate
//! processes. Each scenario ends with every submitted image in a terminal state.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use facewire_integration::{workspace_root, Backends, Service};
use facewire_proto::v1::{submit_result::Outcome, ImageStatus};
use facewire_queue::rabbitmq::{RabbitOptions, RabbitQueue};
use facewire_queue::{Headers, WorkQueue};

fn johns() -> PathBuf {
    workspace_root().join("testdata/dlib/johns")
}

struct Pipeline {
    backends: Backends,
    receiver: Service,
    _recognition: Service,
    _processor: Service,
    images: tempfile::TempDir,
}

/// Receiver, recognition and processor as separate processes on PostgreSQL + RabbitMQ.
async fn pipeline() -> Pipeline {
    let backends = Backends::production();
    let images = tempfile::tempdir().unwrap();
    let salley = johns().join("John_Salley");
    let mut photos: Vec<_> = std::fs::read_dir(&salley)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    photos.sort();
    std::fs::copy(&photos[0], images.path().join("good1.jpg")).unwrap();
    std::fs::copy(&photos[1], images.path().join("good2.jpg")).unwrap();
    // A truncated JPEG: the header of a real photo and nothing after it.
    let bytes = std::fs::read(&photos[2]).unwrap();
    std::fs::write(images.path().join("corrupt.jpg"), &bytes[..200]).unwrap();

    let mut env: HashMap<String, String> = backends.env.clone();
    env.insert(
        "FACEWIRE_IMAGE_ROOT".into(),
        images.path().display().to_string(),
    );
    env.insert(
        "FACEWIRE_MODEL_DIR".into(),
        workspace_root().join("models").display().to_string(),
    );
    let recognition = Service::spawn(&["recognition"], &env).await;
    env.insert("FACEWIRE_RECOGNITION_URL".into(), recognition.grpc_url());
    let processor = Service::spawn(&["processor"], &env).await;
    let receiver = Service::spawn(&["receiver"], &env).await;
    Pipeline {
        backends,
        receiver,
        _recognition: recognition,
        _processor: processor,
        images,
    }
}

impl Pipeline {
    async fn wait_terminal(&self, ids: &[i64]) -> Vec<facewire_proto::v1::Image> {
        let mut client = self.receiver.client().await;
        for _ in 0..300 {
            let mut images = Vec::new();
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
        panic!("images {ids:?} did not reach a terminal state");
    }

    fn queue(&self) -> RabbitQueue {
        let q = self.backends.queue.as_ref().unwrap();
        RabbitQueue::new(q.url(), q.name(), RabbitOptions::default()).unwrap()
    }
}

#[tokio::test]
async fn corrupt_image_fails_alone_and_poison_messages_are_dead_lettered() {
    let p = pipeline().await;
    assert!(p.images.path().exists());
    let queue = p.queue();
    // Poison: a garbage body and the id of a row that does not exist.
    queue
        .publish_raw(
            &[b"not an id".to_vec(), b"999999999".to_vec()],
            &Headers::new(),
        )
        .await
        .unwrap();

    let mut client = p.receiver.client().await;
    let results = client
        .submit_images(["good1.jpg", "corrupt.jpg", "good2.jpg"])
        .await
        .unwrap();
    let ids: Vec<i64> = results
        .iter()
        .map(|r| match &r.outcome {
            Some(Outcome::Image(i)) => i.id,
            other => panic!("not accepted: {other:?}"),
        })
        .collect();
    let images = p.wait_terminal(&ids).await;
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
}
