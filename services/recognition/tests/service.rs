//! The gRPC service end to end: real listeners on 127.0.0.1, real PostgreSQL (a fresh
//! database per test) or SQLite (a temp file), the real models and dlib photos.

mod support;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::Parser;
use facewire_proto::v1 as pb;
use facewire_recognition::{Recognition, RecognitionConfig, Roster};
use facewire_server::CancellationToken;
use facewire_storage::{testing::TestDatabase, Store, StoreOptions};
use pb::recognition_service_client::RecognitionServiceClient;
use support::*;
use tonic::{transport::Channel, Code};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: RecognitionConfig,
}

struct Service {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Service {
    async fn start(database_url: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "recognition".to_string(),
            "--database-url".into(),
            database_url.into(),
            "--grpc-addr".into(),
            "127.0.0.1:0".into(),
            "--model-dir".into(),
            model_dir().display().to_string(),
            "--workers".into(),
            "1".into(),
            "--gallery-poll-seconds".into(),
            "0.2".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let config = Cli::parse_from(args).config;
        let store = Store::open(database_url, StoreOptions::default())
            .await
            .unwrap();
        let service = Recognition::build(&config, store).await.unwrap();
        let addr = service.grpc_addr();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move { service.run_until_stopped(stop).await.unwrap() });
        Self {
            addr,
            shutdown,
            task,
        }
    }

    async fn client(&self) -> RecognitionServiceClient<Channel> {
        RecognitionServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
            .max_encoding_message_size(64 << 20)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}

fn read(path: &PathBuf) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// The people the response names, in face order ("unknown" for unmatched faces).
fn names(r: &pb::RecognizeResponse) -> Vec<String> {
    r.faces
        .iter()
        .map(|f| {
            f.r#match
                .as_ref()
                .map_or("unknown".into(), |m| m.person.clone())
        })
        .collect()
}

async fn enroll_first_photos(client: &mut RecognitionServiceClient<Channel>) {
    for person in JOHNS {
        let r = client
            .enroll(pb::EnrollRequest {
                name: person.into(),
                images: vec![read(&johns(person)[0])],
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            matches!(&r.results[0].outcome, Some(pb::enroll_result::Outcome::Face(f)) if f.created),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn enroll_recognize_list_and_forget_over_grpc_on_postgres() {
    let db = TestDatabase::create();
    let service = Service::start(&db.url, &[]).await;
    let mut client = service.client().await;
    enroll_first_photos(&mut client).await;

    // Per-image enrolment errors: the good image is stored, the others say why.
    let r = client
        .enroll(pb::EnrollRequest {
            name: "John_Simm".into(),
            images: vec![
                read(&johns("John_Simm")[1]),
                photo("faces/2008_002506.jpg"),
                Vec::new(),
                read(&johns("John_Simm")[0]),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    use pb::enroll_result::Outcome;
    assert!(matches!(&r.results[0].outcome, Some(Outcome::Face(f)) if f.created));
    match &r.results[1].outcome {
        Some(Outcome::Error(e)) => {
            assert_eq!(e.code, pb::ImageErrorCode::FaceCount as i32);
            assert!(e.message.contains("found 3"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&r.results[2].outcome, Some(Outcome::Error(e)) if e.code == pb::ImageErrorCode::Empty as i32)
    );
    // The same photo again is the same face.
    assert!(matches!(&r.results[3].outcome, Some(Outcome::Face(f)) if !f.created));

    // Bad names are refused as a whole.
    for bad in ["", "../etc/passwd", "a/b"] {
        let status = client
            .enroll(pb::EnrollRequest {
                name: bad.into(),
                images: vec![read(&johns("John_Simm")[2])],
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
    }

    // Photos never enrolled are identified, in a batch with a bad item.
    let mut images = Vec::new();
    for person in JOHNS {
        for path in &johns(person)[2..4] {
            images.push(pb::BatchImage {
                key: person.into(),
                image: read(path),
            });
        }
    }
    images.push(pb::BatchImage {
        key: "junk".into(),
        image: b"not an image".to_vec(),
    });
    let batch = client
        .recognize_batch(pb::RecognizeBatchRequest { images })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.results.len(), 11);
    for result in &batch.results[..10] {
        match &result.outcome {
            Some(pb::batch_result::Outcome::Faces(faces)) => {
                assert_eq!(names(faces), vec![result.key.clone()], "{faces:?}");
            }
            other => panic!("{}: {other:?}", result.key),
        }
    }
    assert!(matches!(
        &batch.results[10].outcome,
        Some(pb::batch_result::Outcome::Error(e)) if e.code == pb::ImageErrorCode::Undecodable as i32
    ));

    let people = client
        .list_people(pb::ListPeopleRequest {})
        .await
        .unwrap()
        .into_inner()
        .people;
    let listed: Vec<(String, i32)> = people.into_iter().map(|p| (p.name, p.face_count)).collect();
    assert_eq!(listed.len(), 5);
    assert!(listed.contains(&("John_Simm".into(), 2)), "{listed:?}");

    // Forgotten people are no longer recognised.
    let removed = client
        .remove_person(pb::RemovePersonRequest {
            name: "John_Simm".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.faces_removed, 2);
    let r = client
        .recognize(pb::RecognizeRequest {
            image: read(&johns("John_Simm")[5]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&r), vec!["unknown".to_string()]);
    let status = client
        .remove_person(pb::RemovePersonRequest {
            name: "John_Simm".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // A single bad image is an error for that call only; the service stays up.
    let status = client
        .recognize(pb::RecognizeRequest { image: vec![] })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("empty"), "{}", status.message());
    let r = client
        .recognize(pb::RecognizeRequest {
            image: read(&johns("John_Savage")[6]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&r), vec!["John_Savage".to_string()]);
    service.stop().await;
}

#[tokio::test]
async fn replicas_see_each_others_enrolments() {
    let db = TestDatabase::create();
    let a = Service::start(&db.url, &[]).await;
    let b = Service::start(&db.url, &[]).await;
    let query = read(&johns("John_Shimkus")[4]);
    let mut client_b = b.client().await;
    let before = client_b
        .recognize(pb::RecognizeRequest {
            image: query.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&before), vec!["unknown".to_string()]);

    enroll_first_photos(&mut a.client().await).await;

    // B learns of it by polling the gallery version (every 0.2 s here); wait for that
    // with a generous bound rather than assuming a duration.
    let mut seen = Vec::new();
    for _ in 0..300 {
        let r = client_b
            .recognize(pb::RecognizeRequest {
                image: query.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        seen = names(&r);
        if seen == ["John_Shimkus"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, vec!["John_Shimkus".to_string()]);

    // And forgetting through B reaches A.
    b.client()
        .await
        .remove_person(pb::RemovePersonRequest {
            name: "John_Shimkus".into(),
        })
        .await
        .unwrap();
    let mut client_a = a.client().await;
    for _ in 0..300 {
        let r = client_a
            .recognize(pb::RecognizeRequest {
                image: query.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        seen = names(&r);
        if seen == ["unknown"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, vec!["unknown".to_string()]);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn known_people_directory_is_enrolled_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_people");
    std::fs::create_dir(&known).unwrap();
    let salley = johns("John_Salley");
    std::fs::copy(&salley[0], known.join("salley_1.jpg")).unwrap();
    std::fs::copy(&salley[1], known.join("salley_2.jpg")).unwrap();
    // The same photo under another name of the same person: one face, by content hash.
    std::fs::copy(&salley[0], known.join("salley_3.jpg")).unwrap();
    std::fs::copy(&johns("John_Savage")[0], known.join("savage_1.jpg")).unwrap();
    std::fs::write(known.join("notes_1.jpg"), b"not a photo").unwrap();
    std::fs::copy(
        data_dir().join("faces/2008_002506.jpg"),
        known.join("group_1.jpg"),
    )
    .unwrap();

    let url = format!("sqlite://{}/facewire.db", dir.path().display());
    let known_arg = known.display().to_string();
    let service = Service::start(&url, &["--known-people", &known_arg]).await;
    let mut client = service.client().await;
    let people = client
        .list_people(pb::ListPeopleRequest {})
        .await
        .unwrap()
        .into_inner()
        .people;
    let listed: Vec<(String, i32)> = people.into_iter().map(|p| (p.name, p.face_count)).collect();
    assert_eq!(listed, vec![("salley".into(), 2), ("savage".into(), 1)]);
    let r = client
        .recognize(pb::RecognizeRequest {
            image: read(&salley[7]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&r), vec!["salley".to_string()]);
    service.stop().await;

    // A restart enrols nothing new.
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    let roster = Roster::open(own_recognizer(), store).await.unwrap();
    let report = roster.enroll_directory(&known).await.unwrap();
    assert_eq!((report.enrolled, report.unchanged), (0, 4));
    let rejected: Vec<String> = report
        .rejected
        .iter()
        .map(|(p, why)| format!("{}: {why}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(
        rejected[0].starts_with("group_1.jpg") && rejected[0].contains("found 3"),
        "{rejected:?}"
    );
    assert!(rejected[1].starts_with("notes_1.jpg"), "{rejected:?}");
}

async fn list_faces(
    client: &mut RecognitionServiceClient<Channel>,
    person: &str,
) -> Result<Vec<pb::EnrolledFaceCrop>, tonic::Status> {
    let request = pb::ListFacesRequest {
        person: person.into(),
    };
    Ok(client.list_faces(request).await?.into_inner().faces)
}

#[tokio::test]
async fn list_faces_returns_the_enrolled_crops_on_sqlite() {
    use opencv::{imgcodecs, prelude::*};

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/facewire.db", dir.path().display());
    // A face stored before crops were kept: listed, with no picture.
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    let mut embedding = vec![0.0f32; facewire_recognition::EMBEDDING_DIM];
    embedding[0] = 1.0;
    let old = store
        .enroll_face(facewire_storage::gallery::NewFace {
            person: "Old Timer".into(),
            content_hash: "0".repeat(64),
            embedding,
            bbox: [0.0, 0.0, 10.0, 10.0],
            crop: None,
        })
        .await
        .unwrap();
    drop(store);

    let service = Service::start(&url, &[]).await;
    let mut client = service.client().await;
    let salley = johns("John_Salley");
    let enrolled = client
        .enroll(pb::EnrollRequest {
            name: "John_Salley".into(),
            images: vec![read(&salley[0]), read(&salley[1])],
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<i64> = enrolled
        .results
        .iter()
        .map(|r| match &r.outcome {
            Some(pb::enroll_result::Outcome::Face(f)) => f.id,
            other => panic!("{other:?}"),
        })
        .collect();

    let faces = list_faces(&mut client, "John_Salley").await.unwrap();
    assert_eq!(faces.iter().map(|f| f.id).collect::<Vec<_>>(), ids);
    for face in &faces {
        assert!(face.crop_jpeg.starts_with(&[0xff, 0xd8]), "not a JPEG");
        let bytes = opencv::core::Vector::<u8>::from_slice(&face.crop_jpeg);
        let crop = imgcodecs::imdecode(&bytes, imgcodecs::IMREAD_COLOR).unwrap();
        assert_eq!((crop.cols(), crop.rows()), (112, 112));
    }

    let old_faces = list_faces(&mut client, "Old Timer").await.unwrap();
    assert_eq!(old_faces.len(), 1);
    assert_eq!(old_faces[0].id, old.id);
    assert!(old_faces[0].crop_jpeg.is_empty());

    let status = list_faces(&mut client, "Nobody").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    service.stop().await;
}

#[tokio::test]
async fn embedded_roster_works_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/g.db", dir.path().display());
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    let roster = Arc::new(Roster::open(own_recognizer(), store).await.unwrap());
    let results = roster
        .enroll("John Schneider", vec![read(&johns("John_Schneider")[0])])
        .await
        .unwrap();
    assert!(results[0].is_ok());
    let faces = roster
        .recognize(read(&johns("John_Schneider")[9]))
        .await
        .unwrap();
    assert_eq!(faces[0].person.as_deref(), Some("John Schneider"));
    assert!(faces[0].best_similarity >= facewire_recognition::DEFAULT_MATCH_THRESHOLD);
}

#[tokio::test]
async fn grpcurl_sees_reflection_and_health() {
    let db = TestDatabase::create();
    let service = Service::start(&db.url, &[]).await;
    let grpcurl = ["grpcurl", "../../.ci/tools/venv/bin/grpcurl"]
        .into_iter()
        .find(|g| {
            std::process::Command::new(g)
                .arg("-version")
                .output()
                .is_ok()
        })
        .expect("grpcurl not found: run scripts/setup");
    let addr = service.addr.to_string();
    let out = tokio::process::Command::new(grpcurl)
        .args(["-plaintext", &addr, "list"])
        .output()
        .await
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("facewire.v1.RecognitionService"),
        "{listed} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tokio::process::Command::new(grpcurl)
        .args([
            "-plaintext",
            "-d",
            r#"{"service":"facewire.v1.RecognitionService"}"#,
            &addr,
            "grpc.health.v1.Health/Check",
        ])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("SERVING"));
    let out = tokio::process::Command::new(grpcurl)
        .args([
            "-plaintext",
            "-d",
            "{}",
            &addr,
            "facewire.v1.RecognitionService/ListPeople",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    service.stop().await;
}

/// PeopleService refuses bad input with precise codes, and adds a face drawn on an
/// image from its box.
#[tokio::test]
async fn people_service_refuses_bad_input_and_embeds_drawn_faces() {
    use pb::people_service_client::PeopleServiceClient;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(&johns("John_Simm")[0], root.join("a.jpg")).unwrap();
    let url = format!("sqlite://{}/people.db", dir.path().display());
    let service = Service::start(&url, &["--image-root", &root.display().to_string()]).await;
    // The image as the pipeline records it, with its face missed by the detector.
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    let image = store
        .insert_batch(vec![facewire_storage::NewImage {
            path: "a.jpg".into(),
            content_hash: "h".into(),
        }])
        .await
        .unwrap()[0]
        .id;
    let claims = store.claim(vec![image]).await.unwrap();
    store
        .finish(vec![(claims[0].clone(), facewire_storage::Outcome::NoFace)])
        .await
        .unwrap();
    let found = service
        .client()
        .await
        .recognize(pb::RecognizeRequest {
            image: read(&johns("John_Simm")[0]),
        })
        .await
        .unwrap()
        .into_inner();
    let real = found.faces[0].r#box.unwrap();
    let mut people = PeopleServiceClient::connect(format!("http://{}", service.addr))
        .await
        .unwrap();
    let code =
        |r: Result<tonic::Response<pb::AddFaceResponse>, tonic::Status>| r.unwrap_err().code();
    let drawn = |image_id, b: pb::BoundingBox, name: &str| pb::AddFaceRequest {
        image_id,
        r#box: Some(b),
        person_id: 0,
        person_name: name.into(),
    };
    let outside = pb::BoundingBox { x: -5.0, ..real };
    assert_eq!(
        code(people.add_face(drawn(image, outside, "")).await),
        Code::InvalidArgument
    );
    let huge = pb::BoundingBox { width: 1e6, ..real };
    assert_eq!(
        code(people.add_face(drawn(image, huge, "")).await),
        Code::InvalidArgument
    );
    let tiny = pb::BoundingBox {
        width: 8.0,
        height: 8.0,
        ..real
    };
    assert_eq!(
        code(people.add_face(drawn(image, tiny, "")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(people.add_face(drawn(999, real, "")).await),
        Code::NotFound
    );
    assert_eq!(
        code(people.add_face(drawn(image, real, "<b>x</b>")).await),
        Code::InvalidArgument
    );
    let face = people
        .add_face(drawn(image, real, "John Simm"))
        .await
        .unwrap()
        .into_inner()
        .face
        .unwrap();
    assert_eq!(face.source, pb::FaceSource::Drawn as i32);
    assert_eq!(face.assigned, pb::FaceAssignment::Manual as i32);
    assert_eq!(face.person_name, "John Simm");
    assert!(face.has_crop);
    // Its embedding is the person's: the same photo's detected face matches them now.
    let again = service
        .client()
        .await
        .recognize(pb::RecognizeRequest {
            image: read(&johns("John_Simm")[1]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&again), vec!["John Simm".to_string()]);

    // Names: empty, too long, markup.
    for bad in ["", "   ", &"x".repeat(101), "<script>"] {
        let r = people
            .assign_faces(pb::AssignFacesRequest {
                face_ids: vec![face.id],
                person_id: 0,
                person_name: bad.into(),
            })
            .await;
        assert_eq!(r.unwrap_err().code(), Code::InvalidArgument, "{bad:?}");
    }
    let missing = people
        .assign_faces(pb::AssignFacesRequest {
            face_ids: vec![face.id, 424_242],
            person_id: face.person_id,
            person_name: String::new(),
        })
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    let person = people
        .get_person(pb::GetPersonRequest {
            person_id: face.person_id,
            name: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .person
        .unwrap();
    // Two clients edit the same version: the second is refused, not lost.
    let update = |name: &str| pb::UpdatePersonRequest {
        person_id: person.id,
        name: Some(name.into()),
        hidden: None,
        feature_face_id: None,
        expected_version: person.version,
    };
    people.update_person(update("John S")).await.unwrap();
    let lost = people.update_person(update("John T")).await;
    assert_eq!(lost.unwrap_err().code(), Code::Aborted);
    // Merging a person into themselves; undoing a merge that does not exist or twice.
    let merge = |into, from: Vec<i64>| pb::MergePersonsRequest {
        into_person_id: into,
        from_person_ids: from,
    };
    let own = people
        .merge_persons(merge(person.id, vec![person.id]))
        .await;
    assert_eq!(own.unwrap_err().code(), Code::InvalidArgument);
    let other = store.person_for_name("Other").await.unwrap().0;
    let merged = people
        .merge_persons(merge(person.id, vec![other]))
        .await
        .unwrap()
        .into_inner();
    let undo = pb::UndoMergeRequest {
        merge_id: merged.merge_id,
    };
    people.undo_merge(undo).await.unwrap();
    assert_eq!(
        people.undo_merge(undo).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    // Hidden people take no faces.
    let hide = pb::UpdatePersonRequest {
        person_id: other,
        name: None,
        hidden: Some(true),
        feature_face_id: None,
        expected_version: 0,
    };
    people.update_person(hide).await.unwrap();
    let to_hidden = people
        .assign_faces(pb::AssignFacesRequest {
            face_ids: vec![face.id],
            person_id: other,
            person_name: String::new(),
        })
        .await;
    assert_eq!(to_hidden.unwrap_err().code(), Code::FailedPrecondition);
    // A re-run started twice is one job.
    let start = pb::StartJobRequest {
        kind: pb::JobKind::Detection as i32,
        scope: pb::JobScope::All as i32,
    };
    let first = people.start_job(start).await.unwrap().into_inner();
    let second = people.start_job(start).await.unwrap().into_inner();
    assert!(first.created && !second.created);
    assert_eq!(first.job.unwrap().id, second.job.unwrap().id);
    service.stop().await;
}

/// A unit vector along axis `i`: distinct faces that need no model.
fn axis(i: usize) -> Vec<f32> {
    let mut e = vec![0.0f32; facewire_recognition::EMBEDDING_DIM];
    e[i] = 1.0;
    e
}

#[tokio::test]
async fn a_gallery_reload_reads_only_new_or_changed_embeddings() {
    use facewire_storage::{gallery::NewFace, PersonUpdate};

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/g.db", dir.path().display());
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    let enrol = |person: &'static str, i: usize| {
        let store = store.clone();
        async move {
            store
                .enroll_face(NewFace {
                    person: person.into(),
                    content_hash: format!("{i:064x}"),
                    embedding: axis(i),
                    bbox: [0.0, 0.0, 10.0, 10.0],
                    crop: None,
                })
                .await
                .unwrap()
        }
    };
    for i in 0..20 {
        enrol("Ann", i).await;
    }
    enrol("Bob", 20).await;
    let roster = Roster::open(own_recognizer(), store.clone()).await.unwrap();
    assert_eq!(roster.recognizer().gallery().len(), 21);

    // Nothing changed: no embedding is read again.
    let report = roster.reload().await.unwrap();
    assert_eq!((report.faces, report.embeddings_read), (21, 0));

    // One enrolment: one embedding read, not 22.
    enrol("Ann", 21).await;
    let report = roster.reload().await.unwrap();
    assert_eq!((report.faces, report.embeddings_read), (22, 1));

    // A rename needs no embedding, and matching answers with the new name.
    let (_, members) = store.gallery_members().await.unwrap();
    let bob = members
        .iter()
        .find(|m| m.person == "Bob")
        .unwrap()
        .person_id;
    store
        .update_person(
            bob,
            PersonUpdate {
                name: Some("Robert".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let report = roster.reload().await.unwrap();
    assert_eq!((report.faces, report.embeddings_read), (22, 0));
    let query: [f32; facewire_recognition::EMBEDDING_DIM] = axis(20).try_into().unwrap();
    let (name, _) = roster.recognizer().identify(&query);
    assert_eq!(name.as_deref(), Some("Robert"));

    // Deleting him removes his face without reading any.
    store.delete_person(bob).await.unwrap();
    let report = roster.reload().await.unwrap();
    assert_eq!((report.faces, report.embeddings_read), (21, 0));
    let (name, _) = roster.recognizer().identify(&query);
    assert_ne!(name.as_deref(), Some("Robert"));
}
