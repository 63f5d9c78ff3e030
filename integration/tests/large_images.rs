//! Large valid photos are recognised, and do not take small ones down with them: the
//! processor packs its recognition calls by bytes as well as by count, one per-image
//! limit holds across receiver, processor and recognition, and a call refused as too
//! large is split rather than failed.

use std::{path::Path, time::Duration};

use facewire_integration::{photos, Backends, Service};
use facewire_proto::v1::{submit_result::Outcome, Image, ImageStatus};

/// `jpeg` grown to about `size` bytes with comment segments right after its start
/// marker: still the same valid JPEG (decoders skip comments), as large as a phone's.
fn padded_jpeg(jpeg: &[u8], size: usize) -> Vec<u8> {
    assert_eq!(&jpeg[..2], b"\xff\xd8", "a JPEG starts with SOI");
    let mut out = Vec::with_capacity(size + jpeg.len());
    out.extend_from_slice(&jpeg[..2]);
    // A COM segment holds at most 65 533 bytes of payload.
    const CHUNK: usize = 65_533;
    let mut seed = 0x9e37_79b9_u32;
    while out.len() + jpeg.len() < size {
        out.extend_from_slice(b"\xff\xfe");
        out.extend_from_slice(&((CHUNK + 2) as u16).to_be_bytes());
        for _ in 0..CHUNK {
            // Noise, so nothing on the way can compress it away.
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            out.push(seed as u8);
        }
    }
    out.extend_from_slice(&jpeg[2..]);
    out
}

async fn wait_terminal(up: &Service, ids: &[i64], within: Duration) -> Vec<Image> {
    let mut client = up.client().await;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut images = Vec::new();
        for id in ids {
            images.push(client.get_image(*id).await.unwrap());
        }
        let terminal = |i: &Image| {
            [ImageStatus::Done, ImageStatus::NoFace, ImageStatus::Failed]
                .iter()
                .any(|s| *s as i32 == i.status)
        };
        if images.iter().all(terminal) {
            return images;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "images did not finish: {:?}",
            images
                .iter()
                .map(|i| (i.id, i.status, &i.path))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    std::fs::write(dir.join(name), bytes).unwrap();
    name.to_string()
}

#[tokio::test]
async fn eight_phone_sized_photos_and_a_small_one_are_all_recognised() {
    let backends = Backends::embedded();
    let images = tempfile::tempdir().unwrap();
    let salley = photos("John_Salley");
    let mut paths = Vec::new();
    for i in 0..8 {
        let jpeg = std::fs::read(&salley[i % salley.len()]).unwrap();
        // 10 to 14 MB, like the photos of the report.
        let size = (10 + i % 5) * 1_000_000;
        paths.push(write(
            images.path(),
            &format!("big{i}.jpg"),
            &padded_jpeg(&jpeg, size),
        ));
    }
    let small = std::fs::read(&salley[0]).unwrap();
    paths.push(write(images.path(), "small.jpg", &small));

    let mut env = backends.env.clone();
    env.insert(
        "FACEWIRE_IMAGE_ROOT".into(),
        images.path().display().to_string(),
    );
    let up = Service::spawn(&["up"], &env).await;
    let mut client = up.client().await;
    let ids: Vec<i64> = client
        .submit_images(paths.clone())
        .await
        .unwrap()
        .iter()
        .map(|r| match &r.outcome {
            Some(Outcome::Image(i)) => i.id,
            other => panic!("{} not accepted: {other:?}", r.path),
        })
        .collect();
    let finished = wait_terminal(&up, &ids, Duration::from_secs(180)).await;
    for image in &finished {
        assert_eq!(
            image.status,
            ImageStatus::Done as i32,
            "{} ended {:?}: {}",
            image.path,
            ImageStatus::try_from(image.status),
            image.last_error
        );
        assert_eq!(image.people.len(), 1, "{image:?}");
    }
}
