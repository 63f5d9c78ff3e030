//! Unknown faces grouped into suggested people, and the face index every replica keeps.
//!
//! **The face index.** Every replica holds every stored face's embedding in a
//! [`facewire_index::Auto`] (exact while small, HNSW once large) plus, per face, its
//! person and how it got there. It is built from the database at start and then follows
//! it: every second it reads the faces changed since its cursor `(updated_at, id)` (new
//! faces, new assignments) and moves one entry per change; now and then it compares ids
//! to drop faces deleted elsewhere. The database stays the truth. Search by face and
//! grouping read it.
//!
//! **The rule** (incremental and density-based, like DBSCAN): a face with at least
//! `min_faces` neighbours at a cosine similarity of `min_similarity` or more is a *core*
//! face, if it is big and sharp enough to be trusted (`min_face_size`,
//! `min_detection_score`). A face joins the person of its most similar core neighbour
//! that has one (never a person it was taken away from); failing that, a core face with
//! no person nearby starts a suggested (unnamed) person together with its unassigned
//! neighbours; otherwise it waits. New faces are grouped as they arrive, and a slower
//! pass re-tries the waiting ones (a later face may have made a neighbour core).
//! Only unassigned faces are ever touched, so `manual` and `enrolled` assignments, named
//! matches and must-not-link pairs (`face_rejections`) hold. Named people win: the
//! gallery names a face before grouping sees it, and a re-match moves a grouped face to
//! a named person.
//!
//! **One writer.** Several recognition replicas may run: the one holding the database
//! lease `grouping` writes (taken when free or expired, renewed every poll, released on a
//! clean stop); the others only follow. Writes are also conditional on the face being
//! still unassigned, so a change of leader cannot double-assign. The decisions are
//! deterministic: faces in id order, ties by lower id.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, RwLock},
    time::Duration,
};

use facewire_index::{Auto, Neighbour, VectorIndex};
use facewire_server::CancellationToken;
use facewire_storage::{grouping::IndexedFace, Assigned, Store, StoreError};

use crate::EMBEDDING_DIM;

/// Grouping settings (flags of `facewire recognition` and `facewire up`).
#[derive(Debug, Clone, Copy, PartialEq, clap::Args)]
pub struct GroupingConfig {
    /// Group unknown faces into suggested people.
    #[arg(
        long = "grouping",
        env = "FACEWIRE_GROUPING",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub enabled: bool,
    /// Neighbours a face needs to be a core face (and faces a suggested person needs
    /// to be listed by default).
    #[arg(long, env = "FACEWIRE_GROUPING_MIN_FACES", default_value_t = 2)]
    pub min_faces: usize,
    /// Cosine similarity at which two faces are neighbours.
    #[arg(long, env = "FACEWIRE_GROUPING_MIN_SIMILARITY", default_value_t = 0.5)]
    pub min_similarity: f32,
    /// Faces smaller than this (shorter side of the box, pixels) never start a person.
    #[arg(long, env = "FACEWIRE_GROUPING_MIN_FACE_SIZE", default_value_t = 40.0)]
    pub min_face_size: f32,
    /// Detections weaker than this never start a person.
    #[arg(
        long,
        env = "FACEWIRE_GROUPING_MIN_DETECTION_SCORE",
        default_value_t = 0.8
    )]
    pub min_detection_score: f32,
    /// Seconds between passes over the waiting faces.
    #[arg(long, env = "FACEWIRE_GROUPING_RETRY_SECONDS", default_value_t = 30.0)]
    pub retry_seconds: f64,
}

impl Default for GroupingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_faces: 2,
            min_similarity: 0.5,
            min_face_size: 40.0,
            min_detection_score: 0.8,
            retry_seconds: 30.0,
        }
    }
}

/// Most neighbours read per face.
const NEIGHBOURS: usize = 64;

/// What the index knows of a face besides its vector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceMeta {
    /// Its person.
    pub person_id: Option<i64>,
    /// How it got that person.
    pub assigned: Option<Assigned>,
    /// The image it is in.
    pub image_id: Option<i64>,
    /// May start a person (big and sharp enough).
    pub trusted: bool,
}

/// Every stored face's embedding, following the database.
pub struct FaceIndex {
    vectors: Auto,
    meta: RwLock<HashMap<i64, FaceMeta>>,
    cursor: RwLock<(i64, i64)>,
    config: GroupingConfig,
}

impl std::fmt::Debug for FaceIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceIndex")
            .field("faces", &self.vectors.len())
            .finish_non_exhaustive()
    }
}

/// A face found by search: the face, how alike, and what the index knows of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similar {
    /// Face id.
    pub face_id: i64,
    /// Cosine similarity to the query.
    pub similarity: f32,
    /// Its person and image.
    pub meta: FaceMeta,
}

/// One grouping decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Join this person (similarity to the core neighbour that has them).
    Join(i64, f32),
    /// Start a suggested person with these faces (the face first), each with its
    /// similarity to the face.
    Start(Vec<(i64, f32)>),
    /// Not enough around it yet.
    Wait,
}

const PAGE: i64 = 10_000;

impl FaceIndex {
    /// An empty index.
    pub fn new(config: GroupingConfig) -> Self {
        Self {
            vectors: Auto::new(EMBEDDING_DIM),
            meta: RwLock::new(HashMap::new()),
            cursor: RwLock::new((0, 0)),
            config,
        }
    }

    /// Builds the index from every stored face.
    pub async fn load(store: &Store, config: GroupingConfig) -> Result<Self, StoreError> {
        let index = Self::new(config);
        // Following starts a little before the load began, so nothing written during
        // it is missed; a change seen twice is applied twice, harmlessly.
        let started = facewire_storage::now_millis() - 5_000;
        let mut after = 0;
        loop {
            let page = store.index_faces(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            index.apply_page(page);
        }
        *index.write_cursor() = (started, 0);
        Ok(index)
    }

    fn write_cursor(&self) -> std::sync::RwLockWriteGuard<'_, (i64, i64)> {
        self.cursor.write().unwrap_or_else(|p| p.into_inner())
    }

    fn meta_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<i64, FaceMeta>> {
        self.meta.read().unwrap_or_else(|p| p.into_inner())
    }

    fn trusted(&self, face: &IndexedFace) -> bool {
        face.size >= self.config.min_face_size
            && face
                .detection_score
                .is_none_or(|s| s >= self.config.min_detection_score)
    }

    /// Puts faces in (or updates them); returns the ids that are new to the index.
    pub fn apply_page(&self, faces: Vec<IndexedFace>) -> Vec<i64> {
        let mut fresh = Vec::new();
        let mut entries = Vec::with_capacity(faces.len());
        {
            let mut meta = self.meta.write().unwrap_or_else(|p| p.into_inner());
            for face in faces {
                let m = FaceMeta {
                    person_id: face.person_id,
                    assigned: face.assigned,
                    image_id: face.image_id,
                    trusted: self.trusted(&face),
                };
                if meta.insert(face.id, m).is_none() {
                    fresh.push(face.id);
                    if face.embedding.len() == EMBEDDING_DIM {
                        entries.push((face.id, face.embedding));
                    }
                }
            }
        }
        if let Err(e) = self.vectors.extend(entries) {
            tracing::warn!("face index: {e}");
        }
        fresh
    }

    /// Reads what changed in the database since the last call and applies it; returns
    /// the faces that are new to the index.
    pub async fn sync(&self, store: &Store) -> Result<Vec<i64>, StoreError> {
        let mut fresh = Vec::new();
        loop {
            let cursor = *self.cursor.read().unwrap_or_else(|p| p.into_inner());
            let page = store.faces_changed_since(cursor, PAGE).await?;
            let Some(last) = page.last() else { break };
            let next = (last.updated_at, last.id);
            let full = page.len() as i64 == PAGE;
            fresh.extend(self.apply_page(page));
            *self.write_cursor() = next;
            if !full {
                break;
            }
        }
        Ok(fresh)
    }

    /// Drops faces deleted from the database (compares ids page by page).
    pub async fn drop_deleted(&self, store: &Store) -> Result<usize, StoreError> {
        let mut stored = BTreeSet::new();
        let mut after = 0;
        loop {
            let ids = store.face_ids(after, 100_000).await?;
            let Some(&last) = ids.last() else { break };
            after = last;
            stored.extend(ids);
        }
        let gone: Vec<i64> = self
            .meta_read()
            .keys()
            .filter(|id| !stored.contains(id))
            .copied()
            .collect();
        let mut meta = self.meta.write().unwrap_or_else(|p| p.into_inner());
        for id in &gone {
            meta.remove(id);
            let _ = self.vectors.remove(*id);
        }
        Ok(gone.len())
    }

    /// Faces in the index.
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    /// Whether it holds no face.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the index knows of `face_id`.
    pub fn meta(&self, face_id: i64) -> Option<FaceMeta> {
        self.meta_read().get(&face_id).copied()
    }

    /// Up to `limit` faces of `person_id` (lowest ids first).
    pub fn faces_of(&self, person_id: i64, limit: usize) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .meta_read()
            .iter()
            .filter(|(_, m)| m.person_id == Some(person_id))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.truncate(limit);
        ids
    }

    /// Records a new person for faces the grouping writer just assigned (the next sync
    /// confirms it from the database).
    fn assume_person(&self, faces: &[(i64, f32)], person_id: i64) {
        let mut meta = self.meta.write().unwrap_or_else(|p| p.into_inner());
        for (face, _) in faces {
            if let Some(m) = meta.get_mut(face) {
                if m.person_id.is_none() {
                    m.person_id = Some(person_id);
                    m.assigned = Some(Assigned::Auto);
                }
            }
        }
    }

    /// The `k` faces most like `embedding`, best first.
    pub fn search(&self, embedding: &[f32], k: usize) -> Vec<Similar> {
        let found = self.vectors.search(embedding, k).unwrap_or_default();
        self.described(found)
    }

    /// The stored embedding of `face_id`, when the index holds it.
    pub fn embedding(&self, face_id: i64) -> Option<Vec<f32>> {
        self.vectors.vector(face_id)
    }

    fn described(&self, found: Vec<Neighbour>) -> Vec<Similar> {
        let meta = self.meta_read();
        found
            .into_iter()
            .filter_map(|n| {
                Some(Similar {
                    face_id: n.id,
                    similarity: n.similarity,
                    meta: *meta.get(&n.id)?,
                })
            })
            .collect()
    }

    fn neighbours(&self, face_id: i64, embedding: &[f32]) -> Vec<Similar> {
        let found = self
            .vectors
            .within(embedding, self.config.min_similarity, NEIGHBOURS + 1)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.id != face_id)
            .collect();
        self.described(found)
    }

    fn is_core(&self, face_id: i64, meta: &FaceMeta, embedding: &[f32]) -> bool {
        meta.trusted && self.neighbours(face_id, embedding).len() >= self.config.min_faces
    }

    /// The grouping decision for an unassigned face (see the module docs). `rejected`
    /// lists the people it was taken away from.
    pub fn decide(&self, face_id: i64, rejected: &[i64]) -> Decision {
        let (Some(meta), Some(embedding)) = (self.meta(face_id), self.embedding(face_id)) else {
            return Decision::Wait;
        };
        if meta.person_id.is_some() {
            return Decision::Wait;
        }
        let neighbours = self.neighbours(face_id, &embedding);
        // The most similar core neighbour with a person this face may join.
        for n in &neighbours {
            let Some(person) = n.meta.person_id else {
                continue;
            };
            if rejected.contains(&person) {
                continue;
            }
            let Some(their) = self.embedding(n.face_id) else {
                continue;
            };
            if self.is_core(n.face_id, &n.meta, &their) {
                return Decision::Join(person, n.similarity);
            }
        }
        let core = meta.trusted && neighbours.len() >= self.config.min_faces;
        let free: Vec<(i64, f32)> = neighbours
            .iter()
            .filter(|n| n.meta.person_id.is_none())
            .map(|n| (n.face_id, n.similarity))
            .collect();
        // A person nearby that this face may not join, or neighbours already taken:
        // starting a person here would split someone. Wait.
        if core && neighbours.iter().all(|n| n.meta.person_id.is_none()) {
            let mut members = vec![(face_id, 1.0)];
            members.extend(free);
            return Decision::Start(members);
        }
        Decision::Wait
    }
}

/// The grouping writer's loop: follows the database, and while holding the lease,
/// groups new faces as they arrive and re-tries waiting ones now and then.
#[derive(Debug, Clone)]
pub struct Grouper {
    store: Store,
    index: Arc<FaceIndex>,
    config: GroupingConfig,
    holder: String,
}

/// The lease name of the grouping writer.
pub const LEASE: &str = "grouping";
const LEASE_MS: i64 = 15_000;

/// What one grouping step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GroupingReport {
    /// Faces that joined a person.
    pub joined: usize,
    /// Suggested people started.
    pub started: usize,
    /// Faces put into the people started.
    pub started_faces: usize,
    /// Faces left waiting.
    pub waiting: usize,
}

impl Grouper {
    /// A writer named `holder` (unique per process) over `index`.
    pub fn new(
        store: Store,
        index: Arc<FaceIndex>,
        config: GroupingConfig,
        holder: String,
    ) -> Self {
        Self {
            store,
            index,
            config,
            holder,
        }
    }

    /// The index it follows.
    pub fn index(&self) -> &Arc<FaceIndex> {
        &self.index
    }

    /// Takes or renews the writer's lease.
    pub async fn lead(&self) -> Result<bool, StoreError> {
        self.store
            .acquire_lease(LEASE, &self.holder, LEASE_MS)
            .await
    }

    /// Groups `faces` (ascending id), each still unassigned at the time.
    pub async fn group(&self, mut faces: Vec<i64>) -> Result<GroupingReport, StoreError> {
        faces.sort_unstable();
        let mut report = GroupingReport::default();
        let rejections = self.store.rejections(faces.clone()).await?;
        for face in faces {
            let rejected: Vec<i64> = rejections
                .iter()
                .filter(|(f, _)| *f == face)
                .map(|(_, p)| *p)
                .collect();
            let index = self.index.clone();
            let decision = tokio::task::spawn_blocking(move || index.decide(face, &rejected))
                .await
                .unwrap_or(Decision::Wait);
            match decision {
                Decision::Join(person, similarity) => {
                    let added = self
                        .store
                        .group_faces(person, vec![(face, similarity)])
                        .await?;
                    if added > 0 {
                        self.index.assume_person(&[(face, similarity)], person);
                        report.joined += added;
                    }
                }
                Decision::Start(members) => {
                    if let Some((person, n)) = self
                        .store
                        .start_suggested_person(members.clone(), self.config.min_faces)
                        .await?
                    {
                        self.index.assume_person(&members, person);
                        report.started += 1;
                        report.started_faces += n;
                    }
                }
                Decision::Wait => report.waiting += 1,
            }
        }
        Ok(report)
    }

    /// Every face in the index still without a person, ascending.
    fn waiting(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .index
            .meta_read()
            .iter()
            .filter(|(_, m)| m.person_id.is_none() && m.image_id.is_some())
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// One round: follow the database; as leader, group what is new (and everything
    /// waiting when `retry`).
    pub async fn step(&self, retry: bool) -> Result<Option<GroupingReport>, StoreError> {
        let fresh = self.index.sync(&self.store).await?;
        if !self.config.enabled || !self.lead().await? {
            return Ok(None);
        }
        let todo = if retry {
            self.waiting()
        } else {
            fresh
                .into_iter()
                .filter(|id| {
                    self.index
                        .meta(*id)
                        .is_some_and(|m| m.person_id.is_none() && m.image_id.is_some())
                })
                .collect()
        };
        if todo.is_empty() {
            return Ok(Some(GroupingReport::default()));
        }
        let report = self.group(todo).await?;
        if report.joined + report.started > 0 {
            tracing::info!(
                joined = report.joined,
                started = report.started,
                started_faces = report.started_faces,
                waiting = report.waiting,
                "grouped unknown faces"
            );
        }
        Ok(Some(report))
    }

    /// Runs until `shutdown`: a step every `poll`, a retry pass every
    /// `retry_seconds`, deleted faces dropped every minute; the lease is given up at
    /// the end.
    pub async fn run(self, poll: Duration, shutdown: CancellationToken) {
        let retry_every = Duration::from_secs_f64(self.config.retry_seconds.max(1.0));
        let mut last_retry = tokio::time::Instant::now();
        let mut last_sweep = tokio::time::Instant::now();
        loop {
            let retry = last_retry.elapsed() >= retry_every;
            if retry {
                last_retry = tokio::time::Instant::now();
            }
            if let Err(e) = self.step(retry).await {
                tracing::warn!("grouping: {e}");
            }
            if last_sweep.elapsed() >= Duration::from_secs(60) {
                last_sweep = tokio::time::Instant::now();
                if let Err(e) = self.index.drop_deleted(&self.store).await {
                    tracing::warn!("face index: {e}");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(poll) => {}
            }
        }
        let _ = self.store.release_lease(LEASE, &self.holder).await;
    }
}
