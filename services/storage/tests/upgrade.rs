//! A database written by the previous release (names per image as JSON, enrolled
//! people and their faces) upgrades with nothing lost, on both backends.

use facewire_storage::{
    testing::{previous_release_database, TestDatabase},
    Assigned, FaceScope, FaceSource, ImageFilter, ImageStatus, PersonFilter, Store, StoreOptions,
};

/// Rows as the previous release wrote them: Ada enrolled with one photo; image 1 shows
/// Ada and a stranger, image 2 Ada and Bob (never enrolled: a name from an older
/// gallery), image 3 nobody, image 4 still pending.
const OLD_ROWS: &str = r#"
INSERT INTO people (id, name, created_at) VALUES (1, 'Ada', 1000);
INSERT INTO faces (person_id, content_hash, embedding, box_x, box_y, box_width, box_height, created_at, crop)
    VALUES (1, 'h1', EMBEDDING, 1, 2, 30, 40, 1000, CROP);
UPDATE gallery_version SET version = 1;
INSERT INTO images (id, path, content_hash, status, people, attempts, created_at, updated_at) VALUES
    (1, 'a.jpg', 'c1', 'done', '[{"name":"Ada","similarity":0.81},{"name":"","similarity":0.2}]', 1, 10, 20),
    (2, 'b.jpg', 'c2', 'done', '[{"name":"Ada","similarity":0.77},{"name":"Bob","similarity":0.66}]', 1, 11, 21),
    (3, 'c.jpg', 'c3', 'no_face', '[]', 1, 12, 22),
    (4, 'd.jpg', 'c4', 'pending', '[]', 0, 13, 23);
"#;

async fn check_upgraded(store: Store) {
    // Every image, its status and its people as before.
    let all = store.list(None, None, 10).await.unwrap();
    assert_eq!(all.len(), 4);
    let one = store.get(1).await.unwrap().unwrap();
    assert_eq!(one.status, ImageStatus::Done);
    let names: Vec<(&str, f32)> = one
        .people
        .iter()
        .map(|p| (p.name.as_str(), p.similarity))
        .collect();
    assert_eq!(names, vec![("Ada", 0.81), ("", 0.0)]);
    assert_eq!(
        store.get(3).await.unwrap().unwrap().status,
        ImageStatus::NoFace
    );
    assert_eq!(
        store.get(4).await.unwrap().unwrap().status,
        ImageStatus::Pending
    );

    // Queryable by person, Bob included.
    let ada = store.person_by_name("Ada").await.unwrap().unwrap();
    let bob = store.person_by_name("Bob").await.unwrap().unwrap();
    let of = |ids: Vec<i64>| {
        let store = store.clone();
        async move {
            store
                .list_filtered(
                    ImageFilter {
                        person_ids: ids,
                        ..Default::default()
                    },
                    None,
                    10,
                )
                .await
                .unwrap()
                .iter()
                .map(|i| i.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(of(vec![ada.id]).await, vec![2, 1]);
    assert_eq!(of(vec![ada.id, bob.id]).await, vec![2]);
    let legacy = store
        .list_faces(FaceScope::Image(2), None, 10)
        .await
        .unwrap();
    assert!(legacy
        .iter()
        .all(|f| f.source == FaceSource::Legacy && f.bbox.is_none()));
    assert_eq!(legacy[1].assigned, Some(Assigned::Auto));

    // The enrolment face is a face record, still in the gallery with its crop.
    let (version, gallery) = store.gallery_faces().await.unwrap();
    assert_eq!(version, 1);
    assert_eq!(gallery.len(), 1);
    assert_eq!(
        (gallery[0].person.as_str(), gallery[0].embedding.clone()),
        ("Ada", vec![1.0, 0.0])
    );
    let enrolled = store
        .list_faces(FaceScope::Person(ada.id), None, 10)
        .await
        .unwrap();
    assert_eq!(enrolled[0].source, FaceSource::Enrolled);
    assert_eq!(
        store.face_crop(enrolled[0].id).await.unwrap(),
        Some(vec![0xff, 0xd8, 0xff, 0xd9])
    );
    assert_eq!(ada.face_count, 3);
    assert_eq!(ada.image_count, 2);
    let named = store
        .list_persons(PersonFilter::Named, false, 0, 10)
        .await
        .unwrap();
    assert_eq!(named.len(), 2);

    // Detection `missing` covers the images with only legacy faces (and no_face ones).
    assert_eq!(
        store.detection_candidates(false, 0, 10).await.unwrap(),
        vec![1, 2, 3]
    );
    // New rows get fresh ids after the carried-over ones.
    let new = store
        .insert_batch(vec![facewire_storage::NewImage {
            path: "e.jpg".into(),
            content_hash: "c5".into(),
        }])
        .await
        .unwrap();
    assert!(new[0].id > 4);
}

#[tokio::test]
async fn sqlite_database_of_the_previous_release_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/facewire.db", dir.path().display());
    let sql = OLD_ROWS
        .replace("EMBEDDING", "X'0000803F00000000'")
        .replace("CROP", "X'FFD8FFD9'");
    previous_release_database(&url, &sql);
    check_upgraded(Store::open(&url, StoreOptions::default()).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_database_of_the_previous_release_upgrades() {
    let db = TestDatabase::create();
    // The previous release's PostgreSQL ids come from sequences: move them past the rows.
    let rows = OLD_ROWS
        .replace("EMBEDDING", "decode('0000803F00000000', 'hex')")
        .replace("CROP", "decode('FFD8FFD9', 'hex')");
    let sql =
        format!("{rows}\nSELECT setval('images_id_seq', 4); SELECT setval('people_id_seq', 1);");
    previous_release_database(&db.url, &sql);
    check_upgraded(Store::open(&db.url, StoreOptions::default()).await.unwrap()).await;
}
