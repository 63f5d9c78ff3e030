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
//! **A backlog.** A pass over many faces (a library nobody grouped yet, found at start-up
//! and grouped by the first retry pass) works every neighbour list out first, on every
//! core — from [`JOIN_FROM`] faces on by one similarity join over the whole index
//! ([`facewire_index::join`]) rather than a search per face — and then makes the same
//! decisions in the same order from those lists, writing joins a thousand to a
//! transaction. A core face is remembered as one, so a later face that finds it needs no
//! second search.
//!
//! **One writer.** Several recognition replicas may run: the one holding the database
//! lease `grouping` writes (taken when free or expired, renewed every poll, released on a
//! clean stop); the others only follow. Writes are also conditional on the face being
//! still unassigned, so a change of leader cannot double-assign. The decisions are
//! deterministic: faces in id order, ties by lower id.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use facewire_index::{Auto, AutoConfig, Neighbour, VectorIndex};
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
    /// Below this many faces the face index searches exactly; from it on, it keeps an
    /// HNSW graph (which `--face-index-snapshot` saves).
    #[arg(
        long = "face-index-exact-below",
        env = "FACEWIRE_FACE_INDEX_EXACT_BELOW",
        default_value_t = AutoConfig::default().threshold
    )]
    pub exact_below: usize,
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
            exact_below: AutoConfig::default().threshold,
        }
    }
}

impl GroupingConfig {
    /// The settings the environment gives (`FACEWIRE_GROUPING_*`, as the service reads
    /// them), for a command that is not the service but must act as it does.
    pub fn from_env() -> Result<Self, clap::Error> {
        #[derive(clap::Parser)]
        struct FromEnv {
            #[command(flatten)]
            grouping: GroupingConfig,
        }
        <FromEnv as clap::Parser>::try_parse_from(["facewire"]).map(|f| f.grouping)
    }

    /// The face index's settings.
    pub fn index(&self) -> AutoConfig {
        AutoConfig {
            threshold: self.exact_below.max(1),
            ..AutoConfig::default()
        }
    }
}

/// Most neighbours read per face.
const NEIGHBOURS: usize = 64;

/// How [`FaceIndex::load_from`] got its vectors.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Loaded {
    /// Faces whose vector the snapshot held as the database has it.
    pub restored: usize,
    /// Faces put in from the database: every one without a snapshot, else the faces new
    /// since it or changed in it.
    pub indexed: usize,
    /// Snapshot entries whose face is no longer in the database, dropped.
    pub removed: usize,
    /// Why a snapshot that was there could not be used (the index was rebuilt).
    pub snapshot_refused: Option<String>,
}

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
    /// Known to be a core face. Faces are only added, so a core face stays one (a deleted
    /// neighbour can leave it one face short; the rule tolerates that): remembering it
    /// spares a search for every later face that finds it a neighbour.
    pub core: bool,
}

/// What the index knows of every face, packed: 24 bytes a face where [`FaceMeta`] takes
/// 40, so the table of a million faces holds ~66 MiB rather than ~98 (the map's buckets
/// come in powers of two: 2²¹ of them from 918 000 faces on).
#[derive(Debug, Default)]
struct MetaTable(HashMap<i64, Packed>);

/// A [`FaceMeta`] in 24 bytes: the ids as they are, what is present and the rest in flags.
#[derive(Debug, Clone, Copy)]
struct Packed {
    person: i64,
    image: i64,
    flags: u8,
}

impl Packed {
    const PERSON: u8 = 1;
    const IMAGE: u8 = 1 << 1;
    const TRUSTED: u8 = 1 << 2;
    const CORE: u8 = 1 << 3;
    /// Two bits from here: none, enrolled, auto, manual.
    const ASSIGNED: u8 = 4;
}

impl From<FaceMeta> for Packed {
    fn from(m: FaceMeta) -> Self {
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        let assigned: u8 = match m.assigned {
            None => 0,
            Some(Assigned::Enrolled) => 1,
            Some(Assigned::Auto) => 2,
            Some(Assigned::Manual) => 3,
        };
        Packed {
            person: m.person_id.unwrap_or_default(),
            image: m.image_id.unwrap_or_default(),
            flags: flag(m.person_id.is_some(), Self::PERSON)
                | flag(m.image_id.is_some(), Self::IMAGE)
                | flag(m.trusted, Self::TRUSTED)
                | flag(m.core, Self::CORE)
                | assigned << Self::ASSIGNED,
        }
    }
}

impl From<Packed> for FaceMeta {
    fn from(p: Packed) -> Self {
        let on = |bit: u8| p.flags & bit != 0;
        FaceMeta {
            person_id: on(Packed::PERSON).then_some(p.person),
            assigned: match (p.flags >> Packed::ASSIGNED) & 3 {
                1 => Some(Assigned::Enrolled),
                2 => Some(Assigned::Auto),
                3 => Some(Assigned::Manual),
                _ => None,
            },
            image_id: on(Packed::IMAGE).then_some(p.image),
            trusted: on(Packed::TRUSTED),
            core: on(Packed::CORE),
        }
    }
}

impl MetaTable {
    fn get(&self, id: i64) -> Option<FaceMeta> {
        self.0.get(&id).map(|&p| p.into())
    }

    /// Sets what is known of `id`; whether it is new.
    fn insert(&mut self, id: i64, meta: FaceMeta) -> bool {
        self.0.insert(id, meta.into()).is_none()
    }

    /// Changes what is known of `id`, if it is known.
    fn update(&mut self, id: i64, change: impl FnOnce(&mut FaceMeta)) {
        if let Some(packed) = self.0.get_mut(&id) {
            let mut meta = FaceMeta::from(*packed);
            change(&mut meta);
            *packed = meta.into();
        }
    }

    fn remove(&mut self, id: i64) {
        self.0.remove(&id);
    }

    fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.0.keys().copied()
    }

    fn iter(&self) -> impl Iterator<Item = (i64, FaceMeta)> + '_ {
        self.0.iter().map(|(&id, &p)| (id, p.into()))
    }
}

/// Every stored face's embedding, following the database.
pub struct FaceIndex {
    vectors: Arc<Auto>,
    meta: RwLock<MetaTable>,
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

/// Neighbour lists worked out ahead, on every core, for a pass over many faces: each
/// face's neighbours as (id, similarity), best first. Persons are looked up when a
/// decision is made, so decisions earlier in the pass are seen by later ones.
#[derive(Debug)]
pub struct Neighbourhoods(Held);

/// How [`Neighbourhoods`] holds its lists.
#[derive(Debug)]
enum Held {
    /// A list per face, searched one by one (a pass over fewer faces).
    Searched(HashMap<i64, NeighbourList>),
    /// One join's flat lists, row `i` face `ids[i]`; `by_id` orders the rows by id when
    /// `ids` is not ascending.
    Joined {
        ids: Vec<i64>,
        by_id: Option<Vec<u32>>,
        lists: facewire_index::join::Lists,
    },
}

impl Default for Neighbourhoods {
    fn default() -> Self {
        Neighbourhoods(Held::Searched(HashMap::new()))
    }
}

/// A face's neighbours, best first.
type NeighbourList = Vec<Neighbour>;

impl Neighbourhoods {
    /// Every face's neighbours at `min_similarity` or more among `vectors` (row `i` is face
    /// `ids[i]`, unit length), by one similarity join on every core.
    pub fn joined(ids: &[i64], vectors: &[f32], min_similarity: f32) -> Self {
        Self::joined_with(
            ids,
            &facewire_index::join::Dense::new(vectors, EMBEDDING_DIM),
            min_similarity,
            &facewire_index::join::JoinConfig::default(),
        )
    }

    /// [`Neighbourhoods::joined`] over any rows (the face index's own, read in place; row
    /// `i` is face `ids[i]`), the join tuned by `join` (the bench's trials). The lists
    /// stay as flat as the join makes them; a face's becomes a list when asked for.
    pub fn joined_with<R: facewire_index::join::Rows + ?Sized>(
        ids: &[i64],
        rows: &R,
        min_similarity: f32,
        join: &facewire_index::join::JoinConfig,
    ) -> Self {
        assert_eq!(rows.len(), ids.len(), "one row per id");
        let lists = facewire_index::join::neighbours_within(rows, min_similarity, NEIGHBOURS, join);
        Self::of_join(ids.to_vec(), lists)
    }

    /// A join's lists, row `i` face `ids[i]`.
    fn of_join(ids: Vec<i64>, lists: facewire_index::join::Lists) -> Self {
        let by_id = (!ids.is_sorted()).then(|| {
            let mut rows: Vec<u32> = (0..ids.len() as u32).collect();
            rows.sort_unstable_by_key(|&r| ids[r as usize]);
            rows
        });
        Neighbourhoods(Held::Joined { ids, by_id, lists })
    }

    /// The neighbours of `face_id`, if it has a list.
    fn get(&self, face_id: i64) -> Option<NeighbourList> {
        match &self.0 {
            Held::Searched(lists) => lists.get(&face_id).cloned(),
            Held::Joined { ids, by_id, lists } => {
                let row = match by_id {
                    None => ids.binary_search(&face_id).ok()?,
                    Some(by_id) => {
                        let k = by_id
                            .binary_search_by_key(&face_id, |&r| ids[r as usize])
                            .ok()?;
                        by_id[k] as usize
                    }
                };
                Some(lists.neighbours(row, ids))
            }
        }
    }

    /// Faces with a list.
    pub fn len(&self) -> usize {
        match &self.0 {
            Held::Searched(lists) => lists.len(),
            Held::Joined { lists, .. } => lists.len(),
        }
    }

    /// Whether no face has a list.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A pass over at least this many faces works their neighbour lists out ahead, in
/// parallel ([`FaceIndex::neighbourhoods`]), rather than one search per decision.
pub const AHEAD_FROM: usize = 128;

/// From this many faces in a pass, their lists come from one similarity join over the
/// whole index rather than a search each (the join costs about as much as ~20 000
/// searches at a million faces, and less per face the more faces it serves).
pub const JOIN_FROM: usize = 20_000;

const PAGE: i64 = 10_000;

impl FaceIndex {
    /// An empty index.
    pub fn new(config: GroupingConfig) -> Self {
        Self::with_index(config, config.index())
    }

    /// An empty index whose vector index is tuned by `index` (the bench's trials).
    pub fn with_index(config: GroupingConfig, index: AutoConfig) -> Self {
        Self::with_vectors(config, Auto::with_config(EMBEDDING_DIM, index))
    }

    fn with_vectors(config: GroupingConfig, vectors: Auto) -> Self {
        Self {
            vectors: Arc::new(vectors),
            meta: RwLock::new(MetaTable::default()),
            cursor: RwLock::new((0, 0)),
            config,
        }
    }

    /// Builds the index from every stored face.
    pub async fn load(store: &Store, config: GroupingConfig) -> Result<Self, StoreError> {
        Ok(Self::load_from(store, config, None).await?.0)
    }

    /// [`FaceIndex::load_from`], logged: how many faces came from the snapshot and how
    /// many from the database, and why a snapshot was refused. What the service does at
    /// start, and a command working on the database directly before it searches.
    pub async fn load_logged(
        store: &Store,
        config: GroupingConfig,
        snapshot: Option<&Path>,
    ) -> Result<(Self, Loaded), StoreError> {
        let started = std::time::Instant::now();
        let (index, loaded) = Self::load_from(store, config, snapshot).await?;
        if let (Some(path), Some(why)) = (snapshot, &loaded.snapshot_refused) {
            tracing::warn!(path = %path.display(), "face index snapshot not used ({why}); built from the database");
        }
        tracing::info!(
            faces = index.len(),
            from_snapshot = loaded.restored,
            from_database = loaded.indexed,
            dropped = loaded.removed,
            seconds = started.elapsed().as_secs_f64(),
            "face index loaded"
        );
        Ok((index, loaded))
    }

    /// Builds the index from every stored face, starting from the snapshot at `snapshot`
    /// when there is a usable one (saved by [`FaceIndex::save`]). The snapshot is checked
    /// against the database face by face: a vector is kept where the database holds the
    /// same one, replaced where it holds another, dropped where the face is gone.
    pub async fn load_from(
        store: &Store,
        config: GroupingConfig,
        snapshot: Option<&Path>,
    ) -> Result<(Self, Loaded), StoreError> {
        let mut loaded = Loaded::default();
        let tuning = config.index();
        let vectors = match snapshot.filter(|path| path.exists()) {
            Some(path) => Auto::restore(EMBEDDING_DIM, tuning.clone(), path).unwrap_or_else(|e| {
                loaded.snapshot_refused = Some(e.to_string());
                Auto::with_config(EMBEDDING_DIM, tuning)
            }),
            None => Auto::with_config(EMBEDDING_DIM, tuning),
        };
        let mut unchecked: HashSet<i64> = vectors.ids().into_iter().collect();
        let index = Self::with_vectors(config, vectors);
        // Following starts a little before the load began, so nothing written during
        // it is missed; a change seen twice is applied twice, harmlessly.
        let started = facewire_storage::now_millis() - 5_000;
        let mut after = 0;
        loop {
            let mut page = store.index_faces(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for face in &mut page {
                if !unchecked.remove(&face.id) {
                    continue;
                }
                if index.vectors.holds(face.id, &face.embedding) {
                    // Held as the database has it: nothing to put in.
                    face.embedding = Vec::new();
                    loaded.restored += 1;
                } else {
                    let _ = index.vectors.remove(face.id);
                }
            }
            index.apply_page(page);
        }
        for id in unchecked {
            let _ = index.vectors.remove(id);
            loaded.removed += 1;
        }
        loaded.indexed = index.len() - loaded.restored;
        *index.write_cursor() = (started, 0);
        Ok((index, loaded))
    }

    /// Saves the vectors to `path` for the next start ([`FaceIndex::load_from`]) when the
    /// index is large enough to be approximate, and returns whether it did (a small one
    /// rebuilds faster than it would load; see [`Auto::save`]).
    pub fn save(&self, path: &Path) -> Result<bool, facewire_index::IndexError> {
        self.vectors.save(path)
    }

    fn write_cursor(&self) -> std::sync::RwLockWriteGuard<'_, (i64, i64)> {
        self.cursor.write().unwrap_or_else(|p| p.into_inner())
    }

    fn meta_read(&self) -> std::sync::RwLockReadGuard<'_, MetaTable> {
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
                    core: meta.get(face.id).is_some_and(|m| m.core),
                };
                let new = meta.insert(face.id, m);
                if new {
                    fresh.push(face.id);
                }
                // A face detected again (the image re-run) may bring another vector.
                if face.embedding.len() == EMBEDDING_DIM
                    && (new || !self.vectors.holds(face.id, &face.embedding))
                {
                    entries.push((face.id, face.embedding));
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
            .ids()
            .filter(|id| !stored.contains(id))
            .collect();
        let mut meta = self.meta.write().unwrap_or_else(|p| p.into_inner());
        for id in &gone {
            meta.remove(*id);
            let _ = self.vectors.remove(*id);
        }
        Ok(gone.len())
    }

    /// The vectors, for the gallery to search its faces among ([`crate::Gallery::share`]).
    pub fn vectors(&self) -> Arc<Auto> {
        self.vectors.clone()
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
        self.meta_read().get(face_id)
    }

    /// Up to `limit` faces of `person_id` (lowest ids first).
    pub fn faces_of(&self, person_id: i64, limit: usize) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .meta_read()
            .iter()
            .filter(|(_, m)| m.person_id == Some(person_id))
            .map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        ids.truncate(limit);
        ids
    }

    /// Records a new person for faces the grouping writer just assigned (the next sync
    /// confirms it from the database).
    fn assume_person(&self, faces: &[(i64, f32)], person_id: i64) {
        let mut meta = self.meta.write().unwrap_or_else(|p| p.into_inner());
        for &(face, _) in faces {
            meta.update(face, |m| {
                if m.person_id.is_none() {
                    m.person_id = Some(person_id);
                    m.assigned = Some(Assigned::Auto);
                }
            });
        }
    }

    /// Undoes [`Self::assume_person`] for (face, person) pairs the database did not take.
    fn forget_person(&self, faces: impl IntoIterator<Item = (i64, i64)>) {
        let mut meta = self.meta.write().unwrap_or_else(|p| p.into_inner());
        for (face, person) in faces {
            meta.update(face, |m| {
                if m.person_id == Some(person) && m.assigned == Some(Assigned::Auto) {
                    m.person_id = None;
                    m.assigned = None;
                }
            });
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
                    meta: meta.get(n.id)?,
                })
            })
            .collect()
    }

    fn search_neighbours(&self, face_id: i64, embedding: &[f32]) -> NeighbourList {
        self.vectors
            .within(embedding, self.config.min_similarity, NEIGHBOURS + 1)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.id != face_id)
            .collect()
    }

    /// The neighbours of `face_id` with what the index knows of them now: from `ahead`
    /// when it has the face's list, else by a search. `None` when the face is unknown.
    fn neighbours(&self, face_id: i64, ahead: Option<&Neighbourhoods>) -> Option<Vec<Similar>> {
        let found = match ahead.and_then(|a| a.get(face_id)) {
            Some(list) => list,
            None => self.search_neighbours(face_id, &self.embedding(face_id)?),
        };
        Some(self.described(found))
    }

    /// The neighbour lists of `faces` (those in the index), worked out on every core: the
    /// first half of a pass over many faces, whose decisions then need no search at all.
    /// Lists depend only on the vectors, not on who belongs to whom, so they stay right
    /// for the whole pass (a face that arrives during it is grouped by the next step).
    ///
    /// From [`JOIN_FROM`] faces on, every face's list comes from one similarity join over
    /// the whole index ([`facewire_index::join`]), reading the index's vectors in place
    /// (no copy of a million of them beside it); fewer faces are searched one by one.
    pub fn neighbourhoods(&self, faces: &[i64]) -> Neighbourhoods {
        if faces.len() >= JOIN_FROM {
            let mut ids: Vec<i64> = self.meta_read().ids().collect();
            ids.retain(|&id| self.vectors.contains(id));
            ids.sort_unstable();
            let lists = facewire_index::join::neighbours_within(
                &facewire_index::join::Stored::new(&self.vectors, &ids),
                self.config.min_similarity,
                NEIGHBOURS,
                &facewire_index::join::JoinConfig::default(),
            );
            return Neighbourhoods::of_join(ids, lists);
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let lists = facewire_index::parallel_map(faces.len(), threads, |i, _: &mut ()| {
            let face = faces[i];
            let embedding = self.embedding(face)?;
            Some((face, self.search_neighbours(face, &embedding)))
        });
        Neighbourhoods(Held::Searched(lists.into_iter().flatten().collect()))
    }

    fn is_core(&self, face_id: i64, meta: &FaceMeta, ahead: Option<&Neighbourhoods>) -> bool {
        if meta.core {
            return true;
        }
        let core = meta.trusted
            && self
                .neighbours(face_id, ahead)
                .is_some_and(|n| n.len() >= self.config.min_faces);
        if core {
            self.mark_core(face_id);
        }
        core
    }

    fn mark_core(&self, face_id: i64) {
        let mut meta = self.meta.write().unwrap_or_else(|p| p.into_inner());
        meta.update(face_id, |m| m.core = true);
    }

    /// The grouping decision for an unassigned face (see the module docs). `rejected`
    /// lists the people it was taken away from.
    pub fn decide(&self, face_id: i64, rejected: &[i64]) -> Decision {
        self.decide_among(face_id, rejected, None)
    }

    /// [`Self::decide`], reading neighbour lists from `ahead` where it has them.
    pub fn decide_among(
        &self,
        face_id: i64,
        rejected: &[i64],
        ahead: Option<&Neighbourhoods>,
    ) -> Decision {
        self.decide_noting(face_id, rejected, ahead).0
    }

    /// [`Self::decide_among`], and the neighbours without a person it saw: the faces a
    /// new face may have made groupable.
    fn decide_noting(
        &self,
        face_id: i64,
        rejected: &[i64],
        ahead: Option<&Neighbourhoods>,
    ) -> (Decision, Vec<i64>) {
        let Some(meta) = self.meta(face_id) else {
            return (Decision::Wait, Vec::new());
        };
        if meta.person_id.is_some() {
            return (Decision::Wait, Vec::new());
        }
        let Some(neighbours) = self.neighbours(face_id, ahead) else {
            return (Decision::Wait, Vec::new());
        };
        let unassigned = neighbours
            .iter()
            .filter(|n| n.meta.person_id.is_none())
            .map(|n| n.face_id)
            .collect();
        (
            self.decide_from(face_id, &meta, rejected, &neighbours, ahead),
            unassigned,
        )
    }

    fn decide_from(
        &self,
        face_id: i64,
        meta: &FaceMeta,
        rejected: &[i64],
        neighbours: &[Similar],
        ahead: Option<&Neighbourhoods>,
    ) -> Decision {
        let core = meta.trusted && neighbours.len() >= self.config.min_faces;
        if core && !meta.core {
            self.mark_core(face_id);
        }
        // The most similar core neighbour with a person this face may join.
        for n in neighbours {
            let Some(person) = n.meta.person_id else {
                continue;
            };
            if rejected.contains(&person) {
                continue;
            }
            if self.is_core(n.face_id, &n.meta, ahead) {
                return Decision::Join(person, n.similarity);
            }
        }
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
    snapshot: Option<Snapshot>,
    retries: Arc<Mutex<Retries>>,
}

/// What the next retry pass looks at. A waiting face can only become groupable when a
/// face near it changes, so a pass re-tries the faces without a person that new faces
/// found as neighbours — and every waiting face only when that is cheap, at the first
/// pass, or once the index has grown by a tenth since the last such pass (a safety net
/// for changes further away, whose cost per new face stays bounded: a pass over every
/// waiting face of a million-face library is a similarity join of a minute or two).
#[derive(Debug, Default)]
struct Retries {
    /// Waiting faces some new face found as a neighbour since the last pass.
    touched: BTreeSet<i64>,
    /// Faces the index held at the last pass over every waiting face; none yet: due.
    full_pass_at: Option<usize>,
}

/// Up to this many waiting faces, a retry pass looks at all of them (a search each).
pub const RETRY_ALL_BELOW: usize = 1_000;

/// Where the index is saved for the next start, and whether it is due at this one.
#[derive(Debug, Clone)]
struct Snapshot {
    path: PathBuf,
    at_start: bool,
}

/// Face ids per query of `face_rejections` (SQLite binds each id as its own parameter and
/// allows 32 766 of them).
const REJECTIONS_PER_QUERY: usize = 10_000;

/// Joins written per transaction.
const JOINS_PER_WRITE: usize = 1_000;

/// The lease name of the grouping writer.
pub const LEASE: &str = "grouping";
const LEASE_MS: i64 = 15_000;

/// What one grouping step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GroupingReport {
    /// Faces looked at.
    pub considered: usize,
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
            snapshot: None,
            retries: Arc::default(),
        }
    }

    /// Saves the index to `path` when it stops cleanly and, with `at_start` (the start
    /// had to build much of it), once when it starts running too.
    pub fn with_snapshot(mut self, path: PathBuf, at_start: bool) -> Self {
        self.snapshot = Some(Snapshot { path, at_start });
        self
    }

    /// Saves the index to its snapshot path, off the async threads (searches go on;
    /// changes wait for the write).
    async fn save_snapshot(&self) {
        let Some(snapshot) = &self.snapshot else {
            return;
        };
        let (index, path) = (self.index.clone(), snapshot.path.clone());
        let started = std::time::Instant::now();
        let saved = tokio::task::spawn_blocking(move || index.save(&path)).await;
        let path = snapshot.path.display();
        match saved {
            Ok(Ok(true)) => tracing::info!(
                %path,
                faces = self.index.len(),
                seconds = started.elapsed().as_secs_f64(),
                "face index saved"
            ),
            Ok(Ok(false)) => {
                tracing::debug!(%path, "face index small enough to rebuild; not saved")
            }
            Ok(Err(e)) => tracing::warn!(%path, "face index not saved: {e}"),
            Err(e) => tracing::warn!(%path, "face index not saved: {e}"),
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
    pub async fn group(&self, faces: Vec<i64>) -> Result<GroupingReport, StoreError> {
        self.group_noting(faces, false).await
    }

    /// [`Self::group`]; with `note`, the waiting neighbours each face saw are kept for
    /// the next retry pass (new faces are what make waiting faces groupable).
    async fn group_noting(
        &self,
        mut faces: Vec<i64>,
        note: bool,
    ) -> Result<GroupingReport, StoreError> {
        faces.sort_unstable();
        let mut report = GroupingReport {
            considered: faces.len(),
            ..GroupingReport::default()
        };
        let mut rejections: HashMap<i64, Vec<i64>> = HashMap::new();
        for part in faces.chunks(REJECTIONS_PER_QUERY) {
            for (face, person) in self.store.rejections(part.to_vec()).await? {
                rejections.entry(face).or_default().push(person);
            }
        }
        // Many faces (a retry pass over a large backlog): every neighbour list first, on
        // every core; then the decisions, in id order as always, without a search each.
        let ahead = if faces.len() >= AHEAD_FROM {
            let index = self.index.clone();
            let ids = faces.clone();
            let started = std::time::Instant::now();
            let ahead = tokio::task::spawn_blocking(move || index.neighbourhoods(&ids))
                .await
                .unwrap_or_default();
            tracing::info!(
                faces = faces.len(),
                seconds = started.elapsed().as_secs_f64(),
                "grouping: neighbour lists worked out ahead"
            );
            Some(Arc::new(ahead))
        } else {
            None
        };
        // Joins are written in batches (one transaction each); the index assumes them at
        // once, so later decisions in the pass see them, and forgets any the database
        // refused (a face assigned meanwhile by hand, a person merged away).
        let mut joins: Vec<(i64, i64, f32)> = Vec::new();
        for face in faces {
            let rejected = rejections.remove(&face).unwrap_or_default();
            // A neighbour outside the pass may still need a search: off the runtime.
            let (index, ahead) = (self.index.clone(), ahead.clone());
            let (decision, unassigned) = tokio::task::spawn_blocking(move || {
                index.decide_noting(face, &rejected, ahead.as_deref())
            })
            .await
            .unwrap_or((Decision::Wait, Vec::new()));
            if note {
                self.retries_lock().touched.extend(unassigned);
            }
            match decision {
                Decision::Join(person, similarity) => {
                    self.index.assume_person(&[(face, similarity)], person);
                    joins.push((person, face, similarity));
                    if joins.len() >= JOINS_PER_WRITE {
                        report.joined += self.write_joins(std::mem::take(&mut joins)).await?;
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
        report.joined += self.write_joins(joins).await?;
        Ok(report)
    }

    /// Writes joins the index already assumed; forgets those the database refused.
    async fn write_joins(&self, joins: Vec<(i64, i64, f32)>) -> Result<usize, StoreError> {
        if joins.is_empty() {
            return Ok(0);
        }
        let added: std::collections::HashSet<i64> = match self.store.group_many(joins.clone()).await
        {
            Ok(added) => added.into_iter().collect(),
            Err(e) => {
                self.index
                    .forget_person(joins.iter().map(|&(person, face, _)| (face, person)));
                return Err(e);
            }
        };
        self.index.forget_person(
            joins
                .iter()
                .filter(|(_, face, _)| !added.contains(face))
                .map(|&(person, face, _)| (face, person)),
        );
        Ok(added.len())
    }

    /// Every face in the index still without a person, ascending.
    fn waiting(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .index
            .meta_read()
            .iter()
            .filter(|(_, m)| m.person_id.is_none() && m.image_id.is_some())
            .map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    fn retries_lock(&self) -> std::sync::MutexGuard<'_, Retries> {
        self.retries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The faces a retry pass looks at now (see [`Retries`]), ascending.
    fn to_retry(&self) -> Vec<i64> {
        let waiting = self.waiting();
        let size = self.index.len();
        let mut retries = self.retries_lock();
        let all = waiting.len() < RETRY_ALL_BELOW
            || retries
                .full_pass_at
                .is_none_or(|at| size >= at.saturating_add(at / 10).max(at + 1));
        let touched = std::mem::take(&mut retries.touched);
        if all {
            retries.full_pass_at = Some(size);
            return waiting;
        }
        waiting
            .into_iter()
            .filter(|id| touched.contains(id))
            .collect()
    }

    /// One round: follow the database; as leader, group what is new (and, when `retry`,
    /// the waiting faces that may have become groupable: see [`Retries`]).
    pub async fn step(&self, retry: bool) -> Result<Option<GroupingReport>, StoreError> {
        let fresh = self.index.sync(&self.store).await?;
        if !self.config.enabled || !self.lead().await? {
            return Ok(None);
        }
        let todo = if retry {
            self.to_retry()
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
        let report = self.group_noting(todo, !retry).await?;
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
    /// `retry_seconds`, deleted faces dropped every minute; the lease is given up and the
    /// index saved (with a snapshot path) at the end.
    pub async fn run(self, poll: Duration, shutdown: CancellationToken) {
        if self.snapshot.as_ref().is_some_and(|s| s.at_start) {
            self.save_snapshot().await;
        }
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
        self.save_snapshot().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use facewire_index::synthetic::{FaceGenerator, Params};

    /// Whatever the index knows of a face comes back as it went in from 24 bytes, and the
    /// table changes one face's knowledge without touching another's.
    #[test]
    fn what_is_known_of_a_face_packs_into_24_bytes_and_back() {
        assert_eq!(std::mem::size_of::<Packed>(), 24);
        let mut seen = 0;
        for person_id in [None, Some(0), Some(7), Some(i64::MAX)] {
            for image_id in [None, Some(0), Some(3), Some(i64::MAX)] {
                for assigned in [
                    None,
                    Some(Assigned::Enrolled),
                    Some(Assigned::Auto),
                    Some(Assigned::Manual),
                ] {
                    for (trusted, core) in
                        [(false, false), (false, true), (true, false), (true, true)]
                    {
                        let meta = FaceMeta {
                            person_id,
                            assigned,
                            image_id,
                            trusted,
                            core,
                        };
                        assert_eq!(FaceMeta::from(Packed::from(meta)), meta);
                        seen += 1;
                    }
                }
            }
        }
        assert_eq!(seen, 256);
        let mut table = MetaTable::default();
        let meta = FaceMeta {
            person_id: None,
            assigned: None,
            image_id: Some(4),
            trusted: true,
            core: false,
        };
        assert!(table.insert(1, meta));
        assert!(table.insert(2, meta));
        assert!(!table.insert(2, meta));
        table.update(1, |m| {
            m.person_id = Some(9);
            m.assigned = Some(Assigned::Manual);
        });
        table.update(3, |m| m.core = true);
        assert_eq!(table.get(1).and_then(|m| m.person_id), Some(9));
        assert_eq!(
            table.get(1).and_then(|m| m.assigned),
            Some(Assigned::Manual)
        );
        assert_eq!(table.get(2), Some(meta));
        assert_eq!(table.get(3), None);
        table.remove(2);
        assert_eq!(table.ids().collect::<Vec<_>>(), vec![1]);
    }

    fn face(id: i64, person_id: Option<i64>, embedding: Vec<f32>) -> IndexedFace {
        IndexedFace {
            id,
            person_id,
            assigned: person_id.map(|_| Assigned::Auto),
            image_id: Some(id),
            size: 120.0,
            detection_score: Some(0.95),
            embedding,
            updated_at: 0,
        }
    }

    /// Groups every face of `index` in id order, as a retry pass does, with or without
    /// the neighbour lists worked out ahead; returns face → person.
    fn pass(index: &FaceIndex, n: i64, lists: Option<Neighbourhoods>) -> HashMap<i64, i64> {
        let ids: Vec<i64> = (0..n).collect();
        assert_eq!(lists.as_ref().map_or(n as usize, |l| l.len()), n as usize);
        let mut person_of = HashMap::new();
        let mut next = 0;
        for id in ids {
            match index.decide_among(id, &[], lists.as_ref()) {
                Decision::Join(person, similarity) => {
                    index.assume_person(&[(id, similarity)], person);
                    person_of.insert(id, person);
                }
                Decision::Start(members) => {
                    next += 1;
                    index.assume_person(&members, next);
                    person_of.extend(members.iter().map(|m| (m.0, next)));
                }
                Decision::Wait => {}
            }
        }
        person_of
    }

    fn synthetic_index(n: usize) -> FaceIndex {
        let generator = FaceGenerator::new(Params::sface_like(n / 8, 7));
        let index = FaceIndex::new(GroupingConfig::default());
        index.apply_page(
            (0..n)
                .map(|i| face(i as i64, None, generator.face(i)))
                .collect(),
        );
        index
    }

    /// Below the exact index's threshold searches are exact, and so is a join of a
    /// small set: all three ways must decide identically.
    #[test]
    fn lists_worked_out_ahead_decide_exactly_as_searching_each_time() {
        let n = 1_600;
        let ids: Vec<i64> = (0..n as i64).collect();
        let searched = pass(&synthetic_index(n), n as i64, None);
        let index = synthetic_index(n);
        let lists = index.neighbourhoods(&ids);
        let ahead = pass(&index, n as i64, Some(lists));
        let index = synthetic_index(n);
        let vectors: Vec<f32> = ids
            .iter()
            .flat_map(|&id| index.embedding(id).unwrap())
            .collect();
        let joined = pass(
            &index,
            n as i64,
            Some(Neighbourhoods::joined(&ids, &vectors, 0.5)),
        );
        // What the service's pass over a large backlog does: the join reading the face
        // index's vectors in place.
        let index = synthetic_index(n);
        let vectors = index.vectors();
        let in_place = pass(
            &index,
            n as i64,
            Some(Neighbourhoods::joined_with(
                &ids,
                &facewire_index::join::Stored::new(&vectors, &ids),
                0.5,
                &facewire_index::join::JoinConfig::default(),
            )),
        );
        assert!(
            searched.len() > n / 2,
            "most faces grouped: {}",
            searched.len()
        );
        assert_eq!(searched, ahead);
        assert_eq!(searched, joined);
        assert_eq!(searched, in_place);
    }

    #[test]
    fn a_refused_join_is_forgotten_but_a_manual_assignment_is_not() {
        let index = synthetic_index(16);
        index.assume_person(&[(1, 0.9), (2, 0.8)], 7);
        index.apply_page(vec![IndexedFace {
            assigned: Some(Assigned::Manual),
            ..face(3, Some(7), Vec::new())
        }]);
        index.forget_person([(1, 7), (2, 8), (3, 7)]);
        assert_eq!(index.meta(1).unwrap().person_id, None);
        assert_eq!(index.meta(2).unwrap().person_id, Some(7), "another person");
        assert_eq!(index.meta(3).unwrap().person_id, Some(7), "manual stays");
    }
}
