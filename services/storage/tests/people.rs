//! Faces as records and the people made of them, against both real backends.

use facewire_storage::{
    faces::Rematch, Assigned, DetectedFace, EditError, FaceScope, ImageFilter, JobKind, JobScope,
    JobState, NewImage, Outcome, PersonFilter, PersonUpdate, Store,
};

use facewire_storage::both_backends;

fn face(x: f32, matched: Option<(i64, f32)>) -> DetectedFace {
    DetectedFace {
        bbox: [x, 10.0, 40.0, 50.0],
        landmarks: vec![[x + 10.0, 20.0]; 5],
        score: 0.93,
        embedding: vec![x, 1.0, 0.0],
        crop: Some(vec![0xff, 0xd8, 0xff, 0xd9]),
        matched,
    }
}

/// Records `n` images and processes each with `faces(i)`.
async fn processed(
    store: &Store,
    faces: impl Fn(usize) -> Vec<DetectedFace>,
    n: usize,
) -> Vec<i64> {
    let new = (0..n)
        .map(|i| NewImage {
            path: format!("p/{i}.jpg"),
            content_hash: format!("{i:064x}"),
        })
        .collect();
    let ids = facewire_storage::testing::insert_ids(store, new).await;
    reprocess(store, &ids, faces).await;
    ids
}

async fn reprocess(store: &Store, ids: &[i64], faces: impl Fn(usize) -> Vec<DetectedFace>) {
    let claims = store.claim(ids.to_vec()).await.unwrap();
    let outcomes = claims
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let f = faces(i);
            (
                c,
                if f.is_empty() {
                    Outcome::NoFace
                } else {
                    Outcome::Done(f)
                },
            )
        })
        .collect();
    assert!(store.finish(outcomes).await.unwrap().iter().all(|a| *a));
}

async fn corrections_stick(store: Store) {
    let (ada, _) = store.person_for_name("Ada").await.unwrap();
    // Image 0: Ada (auto) and a stranger; image 1: Ada alone; image 2: nobody.
    let ids = processed(
        &store,
        |i| match i {
            0 => vec![face(0.0, Some((ada, 0.8))), face(100.0, None)],
            1 => vec![face(0.0, Some((ada, 0.7)))],
            _ => vec![],
        },
        3,
    )
    .await;
    let of_ada = store
        .list_filtered(
            ImageFilter {
                person_ids: vec![ada],
                ..ImageFilter::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        of_ada.iter().map(|i| i.id).collect::<Vec<_>>(),
        vec![ids[1], ids[0]]
    );
    let unknown = store
        .list_filtered(
            ImageFilter {
                has_unknown_faces: true,
                ..ImageFilter::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        unknown.iter().map(|i| i.id).collect::<Vec<_>>(),
        vec![ids[0]]
    );

    let faces0 = store
        .list_faces(FaceScope::Image(ids[0]), None, 10)
        .await
        .unwrap();
    assert_eq!(faces0.len(), 2);
    assert_eq!(faces0[0].person_name.as_deref(), Some("Ada"));
    assert_eq!(faces0[0].assigned, Some(Assigned::Auto));
    assert_eq!(faces0[0].landmarks.len(), 5);
    assert!(faces0[0].has_crop);
    let stranger = faces0[1].id;
    let wrong = faces0[0].id;

    // Name the stranger Bob by hand; take the first face away from Ada by hand.
    let (bob, created) = store.person_for_name("Bob").await.unwrap();
    assert!(created);
    store.assign_faces(vec![stranger], bob).await.unwrap();
    store.unassign_faces(vec![wrong]).await.unwrap();
    assert!(matches!(
        store.assign_faces(vec![999_999], bob).await,
        Err(EditError::NoFace(999_999))
    ));

    // A redelivery or detection re-run finds the same faces, matched to Ada again.
    assert_eq!(
        store.requeue_for_detection(vec![ids[0]]).await.unwrap(),
        vec![ids[0]]
    );
    reprocess(&store, &[ids[0]], |_| {
        vec![face(1.0, Some((ada, 0.9))), face(101.0, Some((ada, 0.6)))]
    })
    .await;
    let after = store
        .list_faces(FaceScope::Image(ids[0]), None, 10)
        .await
        .unwrap();
    assert_eq!(
        after.len(),
        2,
        "updated in place, not duplicated: {after:?}"
    );
    assert_eq!(after[0].id, wrong);
    assert_eq!(after[0].person_id, None, "must-not-link holds");
    assert_eq!(after[1].id, stranger);
    assert_eq!(
        (after[1].person_id, after[1].assigned),
        (Some(bob), Some(Assigned::Manual))
    );

    // A re-match may not give the rejected face back to Ada either.
    let candidates = store.rematch_candidates(true, 0, 100).await.unwrap();
    let rejected = candidates.iter().find(|c| c.id == wrong).unwrap();
    assert_eq!(rejected.rejected, vec![ada]);
    assert!(
        candidates.iter().all(|c| c.id != stranger),
        "manual faces are not candidates"
    );
    let changed = store
        .apply_rematches(vec![
            Rematch {
                face_id: wrong,
                matched: Some((ada, 0.99)),
            },
            Rematch {
                face_id: stranger,
                matched: Some((ada, 0.99)),
            },
        ])
        .await
        .unwrap();
    assert_eq!(changed, 1, "only the automatic face is touched");
    let after = store.faces_by_id(vec![wrong, stranger]).await.unwrap();
    assert_eq!(after[0].person_id, None);
    assert_eq!(after[1].person_id, Some(bob));

    // Counts per person.
    let people = store
        .list_persons(PersonFilter::Named, false, 0, 10)
        .await
        .unwrap();
    let names: Vec<_> = people
        .iter()
        .map(|p| (p.name.clone().unwrap(), p.face_count, p.image_count))
        .collect();
    assert_eq!(names, vec![("Ada".into(), 1, 1), ("Bob".into(), 1, 1)]);
    assert!(people[1].feature_face_id == Some(stranger));

    // Hidden people take no new faces; a stale update is refused.
    let bob_rec = store.person(bob).await.unwrap().unwrap();
    store
        .update_person(
            bob,
            PersonUpdate {
                hidden: Some(true),
                expected_version: Some(bob_rec.version),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .update_person(
                bob,
                PersonUpdate {
                    name: Some("Robert".into()),
                    expected_version: Some(bob_rec.version),
                    ..Default::default()
                }
            )
            .await,
        Err(EditError::Stale(_))
    ));
    assert!(matches!(
        store.assign_faces(vec![wrong], bob).await,
        Err(EditError::Conflict(_))
    ));
    assert!(store
        .list_persons(PersonFilter::All, false, 0, 10)
        .await
        .unwrap()
        .iter()
        .all(|p| p.id != bob));
    assert!(matches!(
        store
            .update_person(
                ada,
                PersonUpdate {
                    name: Some("Bob".into()),
                    ..Default::default()
                }
            )
            .await,
        Err(EditError::Conflict(_))
    ));

    // Deleting Ada: her detected faces lose the name, the photos stay.
    let erased = store.delete_person(ada).await.unwrap();
    assert_eq!((erased.faces_erased, erased.faces_unassigned), (0, 1));
    assert!(store.get(ids[1]).await.unwrap().unwrap().faces[0]
        .person_id
        .is_none());
    assert!(matches!(
        store.assign_faces(vec![wrong], ada).await,
        Err(EditError::NoPerson(_))
    ));
}
both_backends!(corrections, corrections_stick);

async fn merge_and_undo(store: Store) {
    let (a, _) = store.person_for_name("Ann").await.unwrap();
    let (b, _) = store.person_for_name("Anne").await.unwrap();
    let ids = processed(
        &store,
        |i| vec![face(0.0, Some((if i == 0 { a } else { b }, 0.8)))],
        3,
    )
    .await;
    let before_a = store.person(a).await.unwrap().unwrap();
    let before_b = store.person(b).await.unwrap().unwrap();
    assert!(matches!(
        store.merge_people(a, vec![a]).await,
        Err(EditError::Invalid(_))
    ));

    let merged = store.merge_people(a, vec![b]).await.unwrap();
    assert_eq!(merged.faces_moved, 2);
    assert_eq!(store.person(a).await.unwrap().unwrap().image_count, 3);
    assert!(store.person(b).await.unwrap().is_none());
    let both = store
        .list_filtered(
            ImageFilter {
                person_ids: vec![a],
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(both.len(), 3);

    let restored = store.undo_merge(merged.merge_id).await.unwrap();
    assert_eq!(restored, vec![a, b]);
    let after_a = store.person(a).await.unwrap().unwrap();
    let after_b = store.person(b).await.unwrap().unwrap();
    assert_eq!(
        (after_a.name, after_a.face_count),
        (before_a.name, before_a.face_count)
    );
    assert_eq!(
        (after_b.name, after_b.face_count, after_b.hidden),
        (before_b.name, before_b.face_count, before_b.hidden)
    );
    let of_b = store
        .list_filtered(
            ImageFilter {
                person_ids: vec![b],
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        of_b.iter().map(|i| i.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1]]
    );
    assert!(matches!(
        store.undo_merge(merged.merge_id).await,
        Err(EditError::Conflict(_))
    ));

    // After a later edit of a moved face, undo is refused and nothing changes.
    let again = store.merge_people(a, vec![b]).await.unwrap();
    let moved = store
        .list_faces(FaceScope::Person(a), None, 10)
        .await
        .unwrap();
    let (c, _) = store.person_for_name("Cy").await.unwrap();
    store
        .assign_faces(vec![moved.last().unwrap().id], c)
        .await
        .unwrap();
    assert!(matches!(
        store.undo_merge(again.merge_id).await,
        Err(EditError::Conflict(_))
    ));
    assert!(store.person(b).await.unwrap().is_none());
    assert_eq!(store.person(a).await.unwrap().unwrap().face_count, 2);

    // An unnamed person merged into takes the name of the one merged in.
    let unnamed = store.create_unnamed_person().await.unwrap();
    let suggested = store
        .list_persons(PersonFilter::Suggested, false, 0, 10)
        .await
        .unwrap();
    assert_eq!(
        suggested.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![unnamed]
    );
    let m = store.merge_people(unnamed, vec![c]).await.unwrap();
    assert_eq!(
        store
            .person(unnamed)
            .await
            .unwrap()
            .unwrap()
            .name
            .as_deref(),
        Some("Cy")
    );
    store.undo_merge(m.merge_id).await.unwrap();
    assert_eq!(store.person(unnamed).await.unwrap().unwrap().name, None);
    assert_eq!(
        store.person(c).await.unwrap().unwrap().name.as_deref(),
        Some("Cy")
    );
}
both_backends!(merges, merge_and_undo);

async fn one_job_per_kind(store: Store) {
    let (job, created) = store
        .start_job(JobKind::Recognition, JobScope::All)
        .await
        .unwrap();
    assert!(created);
    let (same, created) = store
        .start_job(JobKind::Recognition, JobScope::Missing)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(same.id, job.id);
    let (_, other_kind) = store
        .start_job(JobKind::Detection, JobScope::All)
        .await
        .unwrap();
    assert!(other_kind);

    let taken = store
        .take_job(JobKind::Recognition, "a", 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((taken.id, taken.state), (job.id, JobState::Running));
    assert!(store
        .take_job(JobKind::Recognition, "b", 0)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store.job_progress(job.id, "a", 5, 10).await.unwrap(),
        JobState::Running
    );
    // Another owner cannot report progress or finish it.
    store.job_progress(job.id, "b", 9, 10).await.unwrap();
    assert_eq!(store.job(job.id).await.unwrap().unwrap().done, 5);
    store.cancel_job(job.id).await.unwrap();
    assert_eq!(
        store.job_progress(job.id, "a", 6, 10).await.unwrap(),
        JobState::Cancelled
    );
    // Once it is over, a new one may start.
    let (next, created) = store
        .start_job(JobKind::Recognition, JobScope::All)
        .await
        .unwrap();
    assert!(created && next.id != job.id);
    let listed = store.jobs(10).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].id, next.id);
}
both_backends!(jobs, one_job_per_kind);

/// The grouping writer's batched joins take a face only while it is free, never into a
/// person it was taken away from, and never into a person merged away.
async fn batched_joins_only_take_free_faces(store: Store) {
    let (ada, _) = store.person_for_name("Ada").await.unwrap();
    let (bea, _) = store.person_for_name("Bea").await.unwrap();
    let (gone, _) = store.person_for_name("Gone").await.unwrap();
    let ids = processed(&store, |i| vec![face(i as f32 * 50.0, None)], 5).await;
    let mut faces = Vec::new();
    for id in &ids {
        faces.push(store.get(*id).await.unwrap().unwrap().faces[0].id);
    }
    // Face 0 was taken away from Ada by hand, face 1 is Bea's by hand, Gone is merged away.
    store.assign_faces(vec![faces[0]], ada).await.unwrap();
    store.unassign_faces(vec![faces[0]]).await.unwrap();
    store.assign_faces(vec![faces[1]], bea).await.unwrap();
    store.merge_people(bea, vec![gone]).await.unwrap();

    let added = store
        .group_many(vec![
            (ada, faces[0], 0.7),
            (ada, faces[1], 0.7),
            (ada, faces[2], 0.75),
            (gone, faces[3], 0.7),
            (bea, faces[4], 0.5),
        ])
        .await
        .unwrap();
    assert_eq!(added, vec![faces[2], faces[4]]);
    let after = store.faces_by_id(faces.clone()).await.unwrap();
    assert_eq!(after[0].person_id, None, "rejected pair held");
    assert_eq!(
        (after[1].person_id, after[1].assigned),
        (Some(bea), Some(Assigned::Manual)),
        "a manual assignment wins"
    );
    assert_eq!(
        (after[2].person_id, after[2].assigned, after[2].similarity),
        (Some(ada), Some(Assigned::Auto), Some(0.75))
    );
    assert_eq!(after[3].person_id, None, "no face for a merged-away person");
    assert_eq!(after[4].person_id, Some(bea));
    assert!(store.group_many(Vec::new()).await.unwrap().is_empty());
}
both_backends!(batched_joins, batched_joins_only_take_free_faces);
