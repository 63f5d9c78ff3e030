//! The face index against a real database: a snapshot saved by one start and loaded by the
//! next is checked face by face against what changed in between (faces detected again
//! with another vector, faces gone, new faces), and one that cannot be used is rebuilt;
//! a running index follows a face detected again with another vector.

use facewire_index::synthetic::{FaceGenerator, Params};
use facewire_recognition::grouping::{FaceIndex, GroupingConfig, Loaded};
use facewire_storage::{both_backends, images::Outcome, testing, DetectedFace, Store};

/// Two places in a photo, far enough apart that a face found in the other is another face.
const HERE: [f32; 4] = [10.0, 10.0, 120.0, 120.0];
const THERE: [f32; 4] = [400.0, 300.0, 120.0, 120.0];

fn face(embedding: Vec<f32>, bbox: [f32; 4]) -> Outcome {
    Outcome::Done(vec![DetectedFace {
        bbox,
        landmarks: vec![[0.0, 0.0]; 5],
        score: 0.95,
        embedding,
        crop: None,
        matched: None,
    }])
}

/// Checks that `index` holds every stored face with the vector the database has, and
/// nothing else.
async fn holds_the_database(index: &FaceIndex, store: &Store, stage: &str) {
    let faces = store.index_faces(0, 100_000).await.unwrap();
    assert_eq!(index.len(), faces.len(), "{stage}");
    for face in faces {
        let held = index
            .embedding(face.id)
            .unwrap_or_else(|| panic!("{stage}: face {} not held", face.id));
        let similarity = facewire_index::dot(&held, &face.embedding);
        assert!(
            similarity >= 0.999,
            "{stage}: face {} held with another vector ({similarity})",
            face.id
        );
    }
}

async fn a_snapshot_is_checked_against_the_database(store: Store) {
    let generator = FaceGenerator::new(Params::sface_like(40, 31));
    // Approximate from 100 faces: the graph is what a snapshot saves.
    let config = GroupingConfig {
        exact_below: 100,
        ..GroupingConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("face-index.usearch");

    let images = testing::insert_ids(&store, testing::new_images(300)).await;
    testing::process(&store, &images, |i| face(generator.face(i), HERE)).await;
    let (first, loaded) = FaceIndex::load_from(&store, config, Some(&path))
        .await
        .unwrap();
    assert_eq!(
        loaded,
        Loaded {
            indexed: 300,
            ..Loaded::default()
        },
        "no snapshot yet: built from the database"
    );
    assert!(first.save(&path).unwrap(), "a graph is saved");

    // Then, while the index is down: ten images run again find their face elsewhere (the
    // old face goes, a new one comes), ten find it in the same place with another vector
    // (the face keeps its id), and 25 new images come in.
    let rerun = images[..20].to_vec();
    assert_eq!(
        store
            .requeue_for_detection(rerun.clone())
            .await
            .unwrap()
            .len(),
        20
    );
    testing::process(&store, &rerun, |i| {
        face(generator.face(1_000 + i), if i < 10 { THERE } else { HERE })
    })
    .await;
    let new = testing::insert_ids(&store, testing::new_images(25)).await;
    testing::process(&store, &new, |i| face(generator.face(2_000 + i), HERE)).await;

    // The running index follows the same changes (a face detected again moves too).
    first.sync(&store).await.unwrap();
    first.drop_deleted(&store).await.unwrap();
    holds_the_database(&first, &store, "followed").await;

    let (second, loaded) = FaceIndex::load_from(&store, config, Some(&path))
        .await
        .unwrap();
    assert_eq!(
        loaded,
        Loaded {
            restored: 280,
            indexed: 10 + 10 + 25,
            removed: 10,
            snapshot_refused: None,
        }
    );
    holds_the_database(&second, &store, "from the snapshot").await;
    let query = generator.face(2_003);
    assert_eq!(
        second.search(&query, 1)[0].face_id,
        first.search(&query, 1)[0].face_id,
        "a face that came while it was down is found"
    );

    // A snapshot that cannot be used is reported and the index built from the database.
    std::fs::write(
        dir.path().join("face-index.usearch.ids"),
        b"written by something else",
    )
    .unwrap();
    let (third, loaded) = FaceIndex::load_from(&store, config, Some(&path))
        .await
        .unwrap();
    assert_eq!((loaded.restored, loaded.indexed), (0, 325), "{loaded:?}");
    assert!(loaded.snapshot_refused.is_some(), "{loaded:?}");
    holds_the_database(&third, &store, "rebuilt").await;
}

both_backends!(
    face_index_snapshot,
    a_snapshot_is_checked_against_the_database
);
