//! In-process fakes of the receiver's ImageService and the PeopleService, holding a small
//! world of images, faces and people, served on a local port the frontend is pointed at.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
};

use axum::Router;
use facewire_proto::v1::{
    self as pb,
    image_service_server::{ImageService, ImageServiceServer},
    people_service_server::{PeopleService, PeopleServiceServer},
};
use futures::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::{Frontend, FrontendConfig};

type Answer<T> = Result<Response<T>, Status>;
type Replies<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

struct Merge {
    id: i64,
    into: i64,
    from: pb::PersonRecord,
    faces: Vec<i64>,
    undone: bool,
}

/// Suggested people with fewer faces are "small": left out unless asked for.
const GROUPING_MIN_FACES: i64 = 2;

/// Images with faces, and people.
pub(crate) struct World {
    images: Vec<pb::Image>,
    persons: Vec<pb::PersonRecord>,
    crops: HashMap<i64, Vec<u8>>,
    merges: Vec<Merge>,
    next_id: i64,
    /// Pairs of people whose faces look alike: (a, b, similarity, votes), either way.
    look_alikes: Vec<(i64, i64, f32, i32)>,
    /// Every `DeclineMergeSuggestion` received, as (person_id, other_person_id).
    pub(crate) declined: Vec<(i64, i64)>,
    /// Every face searched with.
    pub(crate) searched: Vec<i64>,
    /// Every photo searched with.
    pub(crate) searched_photos: Vec<Vec<u8>>,
    /// Whether the service keeps a face index (search and suggestions need one).
    indexed: bool,
}

fn face(id: i64, b: [f32; 4], person_id: i64, assigned: pb::FaceAssignment) -> pb::ImageFace {
    pb::ImageFace {
        id,
        r#box: Some(pb::BoundingBox {
            x: b[0],
            y: b[1],
            width: b[2],
            height: b[3],
        }),
        person_id,
        assigned: assigned as i32,
        similarity: if assigned == pb::FaceAssignment::Auto {
            0.91
        } else {
            0.0
        },
        detection_score: 0.9,
        ..Default::default()
    }
}

fn image(id: i64, path: &str, faces: Vec<pb::ImageFace>) -> pb::Image {
    pb::Image {
        id,
        path: path.into(),
        status: pb::ImageStatus::Done as i32,
        faces,
        ..Default::default()
    }
}

fn person(id: i64, name: &str, feature_face_id: i64, hidden: bool) -> pb::PersonRecord {
    pb::PersonRecord {
        id,
        name: name.into(),
        hidden,
        feature_face_id,
        version: 1,
        ..Default::default()
    }
}

impl World {
    /// Image 42 (`team/a.jpg`, 200 x 100) with a face of person 3 (whose name is markup)
    /// and an unknown face 7; bob (4) in image 43; an unnamed person (5, two faces),
    /// hidden carol (6) and a small unnamed person (15, one face) in image 44. Person 3
    /// looks like 5 and like bob; every face is indexed.
    pub(crate) fn example() -> Self {
        use pb::FaceAssignment::{Auto, Manual, Unspecified};
        Self {
            images: vec![
                image(
                    42,
                    "team/a.jpg",
                    vec![
                        face(8, [100.0, 20.0, 30.0, 30.0], 3, Auto),
                        face(7, [20.0, 10.0, 40.0, 40.0], 0, Unspecified),
                    ],
                ),
                image(43, "b.jpg", vec![face(10, [1.0, 1.0, 5.0, 5.0], 4, Manual)]),
                image(
                    44,
                    "c.jpg",
                    vec![
                        face(11, [1.0, 1.0, 5.0, 5.0], 5, Auto),
                        face(12, [9.0, 1.0, 5.0, 5.0], 6, Manual),
                        face(13, [17.0, 1.0, 5.0, 5.0], 5, Auto),
                        face(14, [25.0, 1.0, 5.0, 5.0], 15, Auto),
                    ],
                ),
            ],
            persons: vec![
                person(3, "<script>alert(1)</script>", 8, false),
                person(4, "bob", 10, false),
                person(5, "", 11, false),
                person(6, "carol", 12, true),
                person(15, "", 14, false),
            ],
            crops: HashMap::from([(8, b"jpeg of face 8".to_vec())]),
            merges: Vec::new(),
            next_id: 100,
            look_alikes: vec![(3, 5, 0.8349, 3), (4, 3, 0.6, 1)],
            declined: Vec::new(),
            searched: Vec::new(),
            searched_photos: Vec::new(),
            indexed: true,
        }
    }

    /// The same world served by a service that keeps no face index.
    pub(crate) fn without_index(mut self) -> Self {
        self.indexed = false;
        self
    }

    fn check_indexed(&self) -> Result<(), Status> {
        if self.indexed {
            Ok(())
        } else {
            // Worded as the real service words it, with an internal detail a page must
            // never pass on.
            Err(Status::failed_precondition(
                "this service keeps no face index (hnsw shard /var/lib/x missing)",
            ))
        }
    }

    fn faces_mut(&mut self) -> impl Iterator<Item = &mut pb::ImageFace> {
        self.images.iter_mut().flat_map(|i| i.faces.iter_mut())
    }

    fn person(&self, id: i64) -> Option<pb::PersonRecord> {
        let mut p = self.persons.iter().find(|p| p.id == id)?.clone();
        p.face_count = self
            .images
            .iter()
            .flat_map(|i| &i.faces)
            .filter(|f| f.person_id == id)
            .count() as i64;
        p.image_count = self
            .images
            .iter()
            .filter(|i| i.faces.iter().any(|f| f.person_id == id))
            .count() as i64;
        Some(p)
    }

    fn name_of(&self, id: i64) -> String {
        self.persons
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.name.clone())
            .unwrap_or_default()
    }

    /// An image as the receiver answers: names filled in, people derived from faces.
    fn view(&self, image: &pb::Image) -> pb::Image {
        let mut image = image.clone();
        for f in &mut image.faces {
            f.person_name = self.name_of(f.person_id);
        }
        image.people = image
            .faces
            .iter()
            .map(|f| pb::Person {
                name: f.person_name.clone(),
                similarity: f.similarity,
                person_id: f.person_id,
            })
            .collect();
        image
    }

    fn record(&self, face_id: i64) -> Option<pb::FaceRecord> {
        self.images.iter().find_map(|i| {
            i.faces
                .iter()
                .find(|f| f.id == face_id)
                .map(|f| pb::FaceRecord {
                    id: f.id,
                    image_id: i.id,
                    person_id: f.person_id,
                    person_name: self.name_of(f.person_id),
                    assigned: f.assigned,
                    similarity: f.similarity,
                    r#box: f.r#box,
                    image_path: i.path.clone(),
                    has_crop: self.crops.contains_key(&f.id),
                    ..Default::default()
                })
        })
    }

    fn check_faces(&self, ids: &[i64]) -> Result<(), Status> {
        match ids.iter().find(|id| self.record(**id).is_none()) {
            Some(id) => Err(Status::not_found(format!("no face {id}"))),
            None => Ok(()),
        }
    }

    fn set_faces(&mut self, ids: &[i64], person_id: i64, assigned: pb::FaceAssignment) {
        for f in self.faces_mut() {
            if ids.contains(&f.id) {
                f.person_id = person_id;
                f.assigned = assigned as i32;
                f.similarity = 0.0;
            }
        }
    }
}

#[derive(Clone)]
struct Fake(Arc<Mutex<World>>);

impl Fake {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }
}

#[tonic::async_trait]
impl ImageService for Fake {
    async fn submit_images(
        &self,
        _: Request<pb::SubmitImagesRequest>,
    ) -> Answer<pb::SubmitImagesResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn submit_image(
        &self,
        _: Request<pb::SubmitImageRequest>,
    ) -> Answer<pb::SubmitImageResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_image(
        &self,
        request: Request<pb::GetImageRequest>,
    ) -> Answer<pb::GetImageResponse> {
        let id = request.into_inner().id;
        let world = self.world();
        let image = world
            .images
            .iter()
            .find(|i| i.id == id)
            .ok_or_else(|| Status::not_found(format!("no image {id}")))?;
        Ok(Response::new(pb::GetImageResponse {
            image: Some(world.view(image)),
        }))
    }

    async fn list_images(
        &self,
        request: Request<pb::ListImagesRequest>,
    ) -> Answer<pb::ListImagesResponse> {
        let request = request.into_inner();
        let world = self.world();
        let mut images: Vec<pb::Image> = world
            .images
            .iter()
            .filter(|i| {
                request
                    .person_ids
                    .iter()
                    .all(|p| i.faces.iter().any(|f| f.person_id == *p))
            })
            .filter(|i| request.status == 0 || i.status == request.status)
            .map(|i| world.view(i))
            .collect();
        images.reverse();
        Ok(Response::new(pb::ListImagesResponse {
            images,
            next_page_token: String::new(),
        }))
    }

    type WatchImagesStream = Replies<pb::WatchImagesResponse>;

    async fn watch_images(
        &self,
        _: Request<pb::WatchImagesRequest>,
    ) -> Answer<Self::WatchImagesStream> {
        Ok(Response::new(Box::pin(futures::stream::pending())))
    }
}

#[tonic::async_trait]
impl PeopleService for Fake {
    async fn list_persons(
        &self,
        request: Request<pb::ListPersonsRequest>,
    ) -> Answer<pb::ListPersonsResponse> {
        let request = request.into_inner();
        let world = self.world();
        let mut persons: Vec<pb::PersonRecord> = world
            .persons
            .iter()
            .filter(|p| request.include_hidden || !p.hidden)
            .filter(|p| match pb::PersonFilter::try_from(request.filter) {
                Ok(pb::PersonFilter::Named) => !p.name.is_empty(),
                Ok(pb::PersonFilter::Suggested) => p.name.is_empty(),
                _ => true,
            })
            .filter_map(|p| world.person(p.id))
            .filter(|p| {
                request.include_small || !p.name.is_empty() || p.face_count >= GROUPING_MIN_FACES
            })
            .collect();
        persons.sort_by_key(|p| (p.name.is_empty(), p.name.clone()));
        Ok(Response::new(pb::ListPersonsResponse {
            persons,
            next_page_token: String::new(),
        }))
    }

    async fn get_person(
        &self,
        request: Request<pb::GetPersonRequest>,
    ) -> Answer<pb::GetPersonResponse> {
        let id = request.into_inner().person_id;
        let person = self
            .world()
            .person(id)
            .ok_or_else(|| Status::not_found(format!("no person {id}")))?;
        Ok(Response::new(pb::GetPersonResponse {
            person: Some(person),
        }))
    }

    async fn update_person(
        &self,
        request: Request<pb::UpdatePersonRequest>,
    ) -> Answer<pb::UpdatePersonResponse> {
        let request = request.into_inner();
        let mut world = self.world();
        let id = request.person_id;
        let p = world
            .persons
            .iter_mut()
            .find(|p| p.id == id)
            .ok_or_else(|| Status::not_found(format!("no person {id}")))?;
        if request.expected_version != 0 && request.expected_version != p.version {
            return Err(Status::aborted(format!(
                "person {id} is at version {}",
                p.version
            )));
        }
        if let Some(name) = request.name {
            if name.contains('<') {
                return Err(Status::invalid_argument("a name may not hold <"));
            }
            if name == "boom" {
                return Err(Status::internal("secret table people_v2 locked"));
            }
            p.name = name;
        }
        if let Some(hidden) = request.hidden {
            p.hidden = hidden;
        }
        p.version += 1;
        let person = world.person(id);
        Ok(Response::new(pb::UpdatePersonResponse { person }))
    }

    async fn delete_person(
        &self,
        request: Request<pb::DeletePersonRequest>,
    ) -> Answer<pb::DeletePersonResponse> {
        let id = request.into_inner().person_id;
        let mut world = self.world();
        if world.person(id).is_none() {
            return Err(Status::not_found(format!("no person {id}")));
        }
        world.persons.retain(|p| p.id != id);
        let mut unassigned = 0;
        for f in world.faces_mut() {
            if f.person_id == id {
                f.person_id = 0;
                unassigned += 1;
            }
        }
        Ok(Response::new(pb::DeletePersonResponse {
            faces_erased: 0,
            faces_unassigned: unassigned,
        }))
    }

    async fn merge_persons(
        &self,
        request: Request<pb::MergePersonsRequest>,
    ) -> Answer<pb::MergePersonsResponse> {
        let request = request.into_inner();
        let mut world = self.world();
        let into = request.into_person_id;
        let from = request.from_person_ids[0];
        let (Some(_), Some(record)) = (world.person(into), world.person(from)) else {
            return Err(Status::not_found("no such person"));
        };
        let faces: Vec<i64> = world
            .images
            .iter()
            .flat_map(|i| &i.faces)
            .filter(|f| f.person_id == from)
            .map(|f| f.id)
            .collect();
        world.set_faces(&faces, into, pb::FaceAssignment::Manual);
        world.persons.retain(|p| p.id != from);
        world.next_id += 1;
        let id = world.next_id;
        let moved = faces.len() as i64;
        world.merges.push(Merge {
            id,
            into,
            from: record,
            faces,
            undone: false,
        });
        Ok(Response::new(pb::MergePersonsResponse {
            merge_id: id,
            person: world.person(into),
            faces_moved: moved,
        }))
    }

    async fn undo_merge(
        &self,
        request: Request<pb::UndoMergeRequest>,
    ) -> Answer<pb::UndoMergeResponse> {
        let id = request.into_inner().merge_id;
        let mut world = self.world();
        let merge = world
            .merges
            .iter_mut()
            .find(|m| m.id == id)
            .ok_or_else(|| Status::not_found(format!("no merge {id}")))?;
        if merge.undone {
            return Err(Status::failed_precondition("the merge was undone already"));
        }
        merge.undone = true;
        let (into, from, faces) = (merge.into, merge.from.clone(), merge.faces.clone());
        let from_id = from.id;
        world.persons.push(from);
        world.set_faces(&faces, from_id, pb::FaceAssignment::Manual);
        let persons = [into, from_id]
            .iter()
            .filter_map(|p| world.person(*p))
            .collect();
        Ok(Response::new(pb::UndoMergeResponse { persons }))
    }

    async fn list_face_records(
        &self,
        _: Request<pb::ListFaceRecordsRequest>,
    ) -> Answer<pb::ListFaceRecordsResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_face_crop(
        &self,
        request: Request<pb::GetFaceCropRequest>,
    ) -> Answer<pb::GetFaceCropResponse> {
        let id = request.into_inner().face_id;
        let crop = self
            .world()
            .crops
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no picture of face {id}")))?;
        Ok(Response::new(pb::GetFaceCropResponse { crop_jpeg: crop }))
    }

    async fn assign_faces(
        &self,
        request: Request<pb::AssignFacesRequest>,
    ) -> Answer<pb::AssignFacesResponse> {
        let request = request.into_inner();
        let mut world = self.world();
        world.check_faces(&request.face_ids)?;
        let person_id = if request.person_id != 0 {
            world
                .person(request.person_id)
                .ok_or_else(|| Status::not_found("no such person"))?
                .id
        } else {
            let name = request.person_name.trim().to_string();
            match world.persons.iter().find(|p| p.name == name) {
                Some(p) => p.id,
                None => {
                    world.next_id += 1;
                    let id = world.next_id;
                    world
                        .persons
                        .push(person(id, &name, request.face_ids[0], false));
                    id
                }
            }
        };
        world.set_faces(&request.face_ids, person_id, pb::FaceAssignment::Manual);
        let faces = request
            .face_ids
            .iter()
            .filter_map(|id| world.record(*id))
            .collect();
        Ok(Response::new(pb::AssignFacesResponse {
            person: world.person(person_id),
            faces,
            rematched: 0,
        }))
    }

    async fn unassign_faces(
        &self,
        request: Request<pb::UnassignFacesRequest>,
    ) -> Answer<pb::UnassignFacesResponse> {
        let ids = request.into_inner().face_ids;
        let mut world = self.world();
        world.check_faces(&ids)?;
        world.set_faces(&ids, 0, pb::FaceAssignment::Manual);
        let faces = ids.iter().filter_map(|id| world.record(*id)).collect();
        Ok(Response::new(pb::UnassignFacesResponse { faces }))
    }

    async fn add_face(&self, _: Request<pb::AddFaceRequest>) -> Answer<pb::AddFaceResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn start_job(&self, _: Request<pb::StartJobRequest>) -> Answer<pb::StartJobResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_jobs(&self, _: Request<pb::ListJobsRequest>) -> Answer<pb::ListJobsResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_job(&self, _: Request<pb::GetJobRequest>) -> Answer<pb::GetJobResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn cancel_job(&self, _: Request<pb::CancelJobRequest>) -> Answer<pb::CancelJobResponse> {
        Err(Status::unimplemented("fake"))
    }

    type WatchJobStream = Replies<pb::WatchJobResponse>;

    async fn watch_job(&self, _: Request<pb::WatchJobRequest>) -> Answer<Self::WatchJobStream> {
        Err(Status::unimplemented("fake"))
    }

    /// By face only: every other face, by id, less alike each time (the first a hair
    /// over 1, as float arithmetic may give).
    async fn search_faces(
        &self,
        request: Request<pb::SearchFacesRequest>,
    ) -> Answer<pb::SearchFacesResponse> {
        let request = request.into_inner();
        let mut world = self.world();
        // A photo is searched as if its face were none stored (id 0); a photo whose
        // bytes start with "no face" has none.
        let id = match request.query {
            Some(pb::search_faces_request::Query::FaceId(id)) => {
                world.searched.push(id);
                id
            }
            Some(pb::search_faces_request::Query::Image(bytes)) => {
                let faceless = bytes.starts_with(b"no face");
                world.searched_photos.push(bytes);
                if faceless {
                    return Err(Status::invalid_argument("FaceCount(0) at yunet.rs:88"));
                }
                0
            }
            None => return Err(Status::invalid_argument("no query")),
        };
        world.check_indexed()?;
        if id != 0 && world.record(id).is_none() {
            return Err(Status::not_found(format!("no face {id} in table faces_v3")));
        }
        let mut others: Vec<pb::FaceRecord> = world
            .images
            .iter()
            .flat_map(|i| &i.faces)
            .filter(|f| f.id != id)
            .filter_map(|f| world.record(f.id))
            .collect();
        others.sort_by_key(|f| f.id);
        let matches = others
            .iter()
            .take(usize::try_from(request.limit).unwrap_or(0).max(1))
            .enumerate()
            .map(|(rank, f)| pb::FaceMatch {
                face_id: f.id,
                similarity: if rank == 0 {
                    1.000_000_4
                } else {
                    0.9 - 0.1 * rank as f32
                },
                person_id: f.person_id,
                person_name: f.person_name.clone(),
                image_id: f.image_id,
                image_path: f.image_path.clone(),
            })
            .collect();
        Ok(Response::new(pb::SearchFacesResponse {
            matches,
            query_box: None,
        }))
    }

    async fn list_merge_suggestions(
        &self,
        request: Request<pb::ListMergeSuggestionsRequest>,
    ) -> Answer<pb::ListMergeSuggestionsResponse> {
        let request = request.into_inner();
        let world = self.world();
        world.check_indexed()?;
        let id = request.person_id;
        if world.person(id).is_none() {
            return Err(Status::not_found(format!("no person {id}")));
        }
        let declined = |other: i64| {
            world
                .declined
                .iter()
                .any(|&(a, b)| (a, b) == (id, other) || (a, b) == (other, id))
        };
        let suggestions = world
            .look_alikes
            .iter()
            .filter_map(|&(a, b, similarity, votes)| match id {
                _ if id == a => Some((b, similarity, votes)),
                _ if id == b => Some((a, similarity, votes)),
                _ => None,
            })
            .filter(|(other, ..)| !declined(*other))
            .filter_map(|(other, similarity, votes)| {
                world.person(other).map(|p| pb::MergeSuggestion {
                    person: Some(p),
                    similarity,
                    votes,
                })
            })
            .take(usize::try_from(request.limit).unwrap_or(0))
            .collect();
        Ok(Response::new(pb::ListMergeSuggestionsResponse {
            suggestions,
        }))
    }

    async fn decline_merge_suggestion(
        &self,
        request: Request<pb::DeclineMergeSuggestionRequest>,
    ) -> Answer<pb::DeclineMergeSuggestionResponse> {
        let request = request.into_inner();
        let mut world = self.world();
        let (a, b) = (request.person_id, request.other_person_id);
        if a == b {
            return Err(Status::invalid_argument(
                "a person cannot be declined as themselves",
            ));
        }
        if world.person(a).is_none() || world.person(b).is_none() {
            return Err(Status::not_found("no such person"));
        }
        world.declined.push((a, b));
        Ok(Response::new(pb::DeclineMergeSuggestionResponse {}))
    }
}

/// A frontend in front of the fakes, with `team/a.jpg` (200 x 100) in its image root.
pub(crate) struct FakeSite {
    pub(crate) router: Router,
    world: Arc<Mutex<World>>,
    _root: tempfile::TempDir,
}

impl FakeSite {
    pub(crate) async fn start(world: World) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let world = Arc::new(Mutex::new(world));
        let fake = Fake(world.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ImageServiceServer::new(fake.clone()))
                .add_service(PeopleServiceServer::new(fake))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("team")).unwrap();
        image::RgbImage::from_pixel(200, 100, image::Rgb([90, 90, 90]))
            .save(root.path().join("team/a.jpg"))
            .unwrap();
        let config = FrontendConfig::local(&url, &url, root.path().into());
        let router = Frontend::build(&config).await.unwrap().router();
        Self {
            router,
            world,
            _root: root,
        }
    }

    /// The fakes' world as it is now: what they were asked to do.
    pub(crate) fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }
}
