//! People and their faces: corrections, merges, re-matching and re-run jobs, on top of
//! the [`Roster`]. The gRPC `PeopleService` and the CLI's embedded mode both call these.
//!
//! Re-matching works from stored embeddings: no image is decoded again. It runs after
//! every enrolment and manual assignment (over unassigned faces), and as a
//! `recognition` job (`missing`: unassigned faces; `all`: every face not named by hand
//! or enrolment).

use std::{future::Future, sync::Arc, time::Duration};

use facewire_config::{ImageRoot, PathError};
use facewire_server::CancellationToken;
use facewire_storage::{
    faces::Rematch, now_millis, DetectedFace, EditError, FaceRecord, JobKind, JobState,
    PersonRecord, StoreError,
};

use crate::{
    detect::Detection,
    embed::EMBEDDING_DIM,
    grouping::{FaceIndex, GroupingConfig, Similar},
    roster::validate_name,
    ImageError, Roster, RosterError,
};

/// Faces read per re-match step (and progress report).
const REMATCH_PAGE: i64 = 2000;

/// Errors of people operations, each mapped once to a gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum PeopleError {
    /// An edit was refused (bad input, a conflict, a stale version) or the database
    /// failed.
    #[error(transparent)]
    Edit(#[from] EditError),
    /// A name is not acceptable.
    #[error(transparent)]
    Roster(#[from] RosterError),
    /// A drawn face could not be used.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The service cannot do this here (e.g. read images without an image root).
    #[error("{0}")]
    Unsupported(String),
    /// An image was not admitted to decoding (over the decode budget, or still waiting).
    #[error(transparent)]
    Admission(#[from] crate::image::AdmissionError),
}

impl From<StoreError> for PeopleError {
    fn from(e: StoreError) -> Self {
        PeopleError::Edit(EditError::Store(e))
    }
}

/// The image file `raw` names under `root`, read from the handle [`ImageRoot::open`]
/// checked (opened without blocking or following a final symlink, then checked to be a
/// regular file inside the root), never reopened by path: a file swapped for a FIFO
/// after a check by path would block the read, and so the call, for ever.
async fn read_image(root: Arc<ImageRoot>, raw: String) -> Result<Vec<u8>, PathError> {
    tokio::task::spawn_blocking(move || {
        let (checked, mut file) = root.open(&raw)?;
        let mut bytes = Vec::with_capacity(checked.size as usize);
        std::io::Read::read_to_end(&mut file, &mut bytes).map_err(|e| PathError::Unreadable {
            path: raw.clone(),
            reason: e.to_string(),
        })?;
        Ok(bytes)
    })
    .await
    .unwrap_or_else(|e| {
        Err(PathError::Unreadable {
            path: String::new(),
            reason: format!("read task failed: {e}"),
        })
    })
}

/// What a re-match did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RematchReport {
    /// Faces looked at.
    pub checked: i64,
    /// Faces whose person changed.
    pub changed: i64,
    /// Whether it stopped early (cancelled).
    pub cancelled: bool,
}

/// What to search with.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchQuery {
    /// The strongest face in an encoded image.
    Image(Vec<u8>),
    /// A stored face.
    Face(i64),
}

/// Who to assign faces to: an existing person, or one by name (created when new).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersonRef {
    /// By id.
    Id(i64),
    /// By name.
    Name(String),
}

/// People operations over a roster.
#[derive(Debug, Clone)]
pub struct People {
    roster: Arc<Roster>,
    image_root: Option<Arc<ImageRoot>>,
    faces: Option<Arc<FaceIndex>>,
    grouping: GroupingConfig,
}

/// A face found by search, with its person and image.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundFace {
    /// The face and how alike it is.
    pub face: Similar,
    /// Its person's name (`None`: unnamed or no person).
    pub person_name: Option<String>,
    /// Its image's path.
    pub image_path: Option<String>,
}

/// Another person whose faces look like one's.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeSuggestion {
    /// Them.
    pub person: PersonRecord,
    /// The best similarity between a face of each.
    pub similarity: f32,
    /// How many of the person's faces found them among their nearest faces.
    pub votes: u32,
}

impl People {
    /// Operations over `roster`; drawn faces read images under `image_root`.
    pub fn new(roster: Arc<Roster>, image_root: Option<ImageRoot>) -> Self {
        Self {
            roster,
            image_root: image_root.map(Arc::new),
            faces: None,
            grouping: GroupingConfig::default(),
        }
    }

    /// Adds the face index (search by face, merge suggestions) and the grouping
    /// settings (the default list's minimum faces).
    pub fn with_face_index(mut self, faces: Arc<FaceIndex>, grouping: GroupingConfig) -> Self {
        self.faces = Some(faces);
        self.grouping = grouping;
        self
    }

    /// Faces a suggested person needs to be on the default people list.
    pub fn min_faces(&self) -> usize {
        self.grouping.min_faces
    }

    fn face_index(&self) -> Result<&Arc<FaceIndex>, PeopleError> {
        self.faces
            .as_ref()
            .ok_or_else(|| PeopleError::Unsupported("this service keeps no face index".into()))
    }

    /// The faces most like the strongest face in `image` (with that face's box), or
    /// like the stored face `face_id`: best first, at least `min_similarity` alike.
    pub async fn search_faces(
        &self,
        query: SearchQuery,
        limit: usize,
        min_similarity: f32,
    ) -> Result<(Vec<FoundFace>, Option<Detection>), PeopleError> {
        let index = self.face_index()?.clone();
        let (embedding, detection, exclude) = match query {
            SearchQuery::Image(bytes) => {
                let recognizer = self.roster.recognizer().clone();
                // A search photo is decoded like any other: within the decode budget.
                let _permit = recognizer.decode_budget().admit(&bytes).await?;
                let faces = tokio::task::spawn_blocking(move || recognizer.analyze(&bytes))
                    .await
                    .map_err(|e| ImageError::Analysis(e.to_string()))??;
                let face = faces.into_iter().next().ok_or(ImageError::FaceCount(0))?;
                (face.embedding.to_vec(), Some(face.detection), None)
            }
            SearchQuery::Face(id) => {
                let embedding = index.embedding(id).ok_or_else(|| {
                    PeopleError::Edit(EditError::Invalid(format!(
                        "face {id} has no embedding to search with"
                    )))
                })?;
                (embedding, None, Some(id))
            }
        };
        let found: Vec<Similar> = tokio::task::spawn_blocking(move || {
            index.search(&embedding, limit + usize::from(exclude.is_some()))
        })
        .await
        .map_err(|e| ImageError::Analysis(e.to_string()))?
        .into_iter()
        .filter(|s| Some(s.face_id) != exclude && s.similarity >= min_similarity)
        .take(limit)
        .collect();
        let store = self.roster.store();
        let mut names = std::collections::HashMap::new();
        for person in found.iter().filter_map(|f| f.meta.person_id) {
            if let std::collections::hash_map::Entry::Vacant(slot) = names.entry(person) {
                slot.insert(store.person(person).await?.and_then(|p| p.name));
            }
        }
        let image_ids: Vec<i64> = found.iter().filter_map(|f| f.meta.image_id).collect();
        let paths: std::collections::HashMap<i64, String> = store
            .get_many(image_ids)
            .await?
            .into_iter()
            .map(|r| (r.id, r.path))
            .collect();
        Ok((
            found
                .into_iter()
                .map(|face| FoundFace {
                    person_name: face
                        .meta
                        .person_id
                        .and_then(|p| names.get(&p).cloned().flatten()),
                    image_path: face.meta.image_id.and_then(|i| paths.get(&i).cloned()),
                    face,
                })
                .collect(),
            detection,
        ))
    }

    /// People whose faces are close to `person_id`'s ("same person?"): each of up to 20
    /// of their faces looks at its 10 nearest faces; every other live person found at
    /// the grouping similarity or more gets a vote. Declined pairs are left out.
    pub async fn merge_suggestions(
        &self,
        person_id: i64,
        limit: usize,
    ) -> Result<Vec<MergeSuggestion>, PeopleError> {
        let index = self.face_index()?.clone();
        let store = self.roster.store();
        if store.person(person_id).await?.is_none() {
            return Err(EditError::NoPerson(person_id).into());
        }
        let declined = store.declined_merges(person_id).await?;
        let threshold = self.grouping.min_similarity;
        let votes = tokio::task::spawn_blocking(move || {
            let mut votes: std::collections::HashMap<i64, (u32, f32)> = Default::default();
            for face in index.faces_of(person_id, 20) {
                let Some(embedding) = index.embedding(face) else {
                    continue;
                };
                let mut seen = std::collections::HashSet::new();
                for near in index.search(&embedding, 10) {
                    let Some(other) = near.meta.person_id else {
                        continue;
                    };
                    if other == person_id || near.similarity < threshold {
                        continue;
                    }
                    let entry = votes.entry(other).or_insert((0, f32::MIN));
                    if seen.insert(other) {
                        entry.0 += 1;
                    }
                    entry.1 = entry.1.max(near.similarity);
                }
            }
            votes
        })
        .await
        .map_err(|e| ImageError::Analysis(e.to_string()))?;
        let mut ranked: Vec<(i64, (u32, f32))> = votes
            .into_iter()
            .filter(|(p, _)| !declined.contains(p))
            .collect();
        ranked.sort_by(|a, b| {
            b.1 .0
                .cmp(&a.1 .0)
                .then(b.1 .1.total_cmp(&a.1 .1))
                .then(a.0.cmp(&b.0))
        });
        let mut out = Vec::new();
        for (other, (votes, similarity)) in ranked {
            if out.len() >= limit {
                break;
            }
            if let Some(person) = store.person(other).await? {
                out.push(MergeSuggestion {
                    person,
                    similarity: similarity.clamp(-1.0, 1.0),
                    votes,
                });
            }
        }
        Ok(out)
    }

    /// Remembers that two people are not the same; they are never suggested again.
    pub async fn decline_merge(&self, a: i64, b: i64) -> Result<(), PeopleError> {
        if a == b {
            return Err(
                EditError::Invalid("a person cannot be declined as themselves".into()).into(),
            );
        }
        Ok(self.roster.store().decline_merge(a, b).await?)
    }

    /// The roster underneath.
    pub fn roster(&self) -> &Arc<Roster> {
        &self.roster
    }

    /// The id of the person `who` names; a new name creates them.
    pub async fn resolve(&self, who: &PersonRef) -> Result<i64, PeopleError> {
        match who {
            PersonRef::Id(id) => Ok(*id),
            PersonRef::Name(name) => {
                let name = validate_name(name)?;
                Ok(self.roster.store().person_for_name(&name).await?.0)
            }
        }
    }

    /// Names faces by hand, then re-checks unassigned faces against the updated gallery.
    /// Returns the person and how many other faces the re-check named.
    pub async fn assign(
        &self,
        face_ids: Vec<i64>,
        who: &PersonRef,
    ) -> Result<(PersonRecord, i64), PeopleError> {
        let person = self.resolve(who).await?;
        self.roster.store().assign_faces(face_ids, person).await?;
        let report = self.rematch(false, |_, _| async { true }).await?;
        let record = self
            .roster
            .store()
            .person(person)
            .await?
            .ok_or(EditError::NoPerson(person))?;
        Ok((record, report.changed))
    }

    /// Takes faces away from their people by hand (never given back automatically).
    pub async fn unassign(&self, face_ids: Vec<i64>) -> Result<Vec<FaceRecord>, PeopleError> {
        self.roster.store().unassign_faces(face_ids.clone()).await?;
        self.roster.refresh().await?;
        Ok(self.roster.store().faces_by_id(face_ids).await?)
    }

    /// Renames (the name is checked and normalised like an enrolment name), hides or
    /// sets the feature face of a person.
    pub async fn update(
        &self,
        id: i64,
        mut update: facewire_storage::PersonUpdate,
    ) -> Result<PersonRecord, PeopleError> {
        if let Some(name) = &update.name {
            update.name = Some(validate_name(name)?);
        }
        let record = self.roster.store().update_person(id, update).await?;
        self.roster.refresh().await?;
        Ok(record)
    }

    /// Erases a person (see `Store::delete_person`), then reloads the gallery.
    pub async fn delete(&self, id: i64) -> Result<facewire_storage::people::Erased, PeopleError> {
        let erased = self.roster.store().delete_person(id).await?;
        self.roster.refresh().await?;
        Ok(erased)
    }

    /// Merges `from` into `into` (recorded for undo), then reloads the gallery.
    pub async fn merge(
        &self,
        into: i64,
        from: Vec<i64>,
    ) -> Result<facewire_storage::people::Merged, PeopleError> {
        let merged = self.roster.store().merge_people(into, from).await?;
        self.roster.refresh().await?;
        Ok(merged)
    }

    /// Undoes a merge exactly, then reloads the gallery. Returns the people involved.
    pub async fn undo_merge(&self, merge_id: i64) -> Result<Vec<i64>, PeopleError> {
        let ids = self.roster.store().undo_merge(merge_id).await?;
        self.roster.refresh().await?;
        Ok(ids)
    }

    /// Adds a face a person drew on an image: embedded from that box, named when `who`
    /// is given.
    pub async fn add_face(
        &self,
        image_id: i64,
        bbox: [f32; 4],
        who: Option<&PersonRef>,
    ) -> Result<FaceRecord, PeopleError> {
        let Some(root) = &self.image_root else {
            return Err(PeopleError::Unsupported(
                "this service has no image root (FACEWIRE_IMAGE_ROOT) to read images from".into(),
            ));
        };
        let store = self.roster.store();
        let image = store
            .get(image_id)
            .await?
            .ok_or(EditError::NoImage(image_id))?;
        let bytes = read_image(root.clone(), image.path)
            .await
            .map_err(|e| PeopleError::Unsupported(format!("image {image_id}: {e}")))?;
        let recognizer = self.roster.recognizer().clone();
        let face = tokio::task::spawn_blocking(move || recognizer.drawn_face(&bytes, bbox))
            .await
            .map_err(|e| ImageError::Analysis(e.to_string()))??;
        let person = match who {
            Some(who) => Some(self.resolve(who).await?),
            None => None,
        };
        let id = store
            .add_drawn_face(
                image_id,
                DetectedFace {
                    bbox: face.detection.bbox,
                    landmarks: face.detection.landmarks.to_vec(),
                    score: face.detection.score,
                    embedding: face.embedding.to_vec(),
                    crop: Some(face.crop_jpeg),
                    matched: None,
                },
                person,
            )
            .await?;
        if person.is_some() {
            self.roster.refresh().await?;
        } else {
            // An unnamed drawn face may match someone already known.
            self.rematch(false, |_, _| async { true }).await?;
        }
        Ok(store.face(id).await?.ok_or(EditError::NoFace(id))?)
    }

    /// Matches stored faces against the current gallery again: unassigned ones, or with
    /// `all` every face not named by hand or enrolment. Never assigns a face to a
    /// person it was taken from by hand. `progress(done, total)` is awaited after each
    /// step; returning false stops the run.
    pub async fn rematch<F, Fut>(
        &self,
        all: bool,
        mut progress: F,
    ) -> Result<RematchReport, PeopleError>
    where
        F: FnMut(i64, i64) -> Fut,
        Fut: Future<Output = bool>,
    {
        self.roster.refresh().await?;
        let store = self.roster.store();
        let recognizer = self.roster.recognizer().clone();
        let gallery = recognizer.gallery();
        let total = store.count_rematch_candidates(all).await?;
        let mut report = RematchReport::default();
        if gallery.is_empty() && !all {
            // Nobody to match against: nothing can change.
            progress(total, total).await;
            report.checked = total;
            return Ok(report);
        }
        let mut after = 0;
        loop {
            let page = store.rematch_candidates(all, after, REMATCH_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            let checked = page.len() as i64;
            let recognizer = recognizer.clone();
            let gallery = gallery.clone();
            let decisions = tokio::task::spawn_blocking(move || {
                page.into_iter()
                    .filter_map(|face| {
                        let embedding: [f32; EMBEDDING_DIM] =
                            face.embedding.as_slice().try_into().ok()?;
                        let (matched, similarity) =
                            recognizer.identify_in(&gallery, &embedding, &face.rejected);
                        let matched = matched.map(|(_, id)| (id, similarity));
                        // A face grouped into a suggested person stays there unless a
                        // named person claims it: only named people win over grouping.
                        let in_suggestion = face.person_id.is_some_and(|p| !gallery.has_person(p));
                        if matched.is_none() && in_suggestion {
                            return None;
                        }
                        (matched.map(|m| m.0) != face.person_id).then_some(Rematch {
                            face_id: face.id,
                            matched,
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| ImageError::Analysis(e.to_string()))?;
            report.changed += store.apply_rematches(decisions).await? as i64;
            report.checked += checked;
            if !progress(report.checked, total).await {
                report.cancelled = true;
                break;
            }
        }
        Ok(report)
    }

    /// Runs queued recognition jobs until `shutdown`: polls every `interval`, takes one
    /// job at a time (exactly one replica gets each), reports progress as it goes and
    /// stops a job that was cancelled. A job whose runner stopped reporting for a minute
    /// is taken over.
    pub async fn run_jobs(self, owner: String, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match self.run_next_job(&owner).await {
                Ok(_) => {}
                Err(e) => tracing::warn!("recognition job failed to run (will retry): {e}"),
            }
        }
    }

    /// Takes and runs one queued recognition job, if there is one. Returns its id.
    pub async fn run_next_job(&self, owner: &str) -> Result<Option<i64>, PeopleError> {
        let store = self.roster.store().clone();
        let stale = now_millis() - 60_000;
        let Some(job) = store.take_job(JobKind::Recognition, owner, stale).await? else {
            return Ok(None);
        };
        let all = job.scope == facewire_storage::JobScope::All;
        tracing::info!(job = job.id, scope = %job.scope, "recognition job started");
        let result = self
            .rematch(all, |done, total| {
                let store = store.clone();
                async move {
                    matches!(
                        store.job_progress(job.id, owner, done, total).await,
                        Ok(JobState::Running)
                    )
                }
            })
            .await;
        match result {
            Ok(report) if !report.cancelled => {
                store.finish_job(job.id, owner, None).await?;
                tracing::info!(
                    job = job.id,
                    checked = report.checked,
                    changed = report.changed,
                    "recognition job done"
                );
            }
            Ok(_) => tracing::info!(job = job.id, "recognition job cancelled"),
            Err(e) => {
                store
                    .finish_job(job.id, owner, Some("re-matching failed".into()))
                    .await?;
                return Err(e);
            }
        }
        Ok(Some(job.id))
    }
}

#[cfg(test)]
mod tests {
    use facewire_config::testing::{mkfifo, release_readers, FifoSwap};

    use super::*;

    async fn read_within(root: &Arc<ImageRoot>, raw: &str) -> Option<Result<Vec<u8>, PathError>> {
        tokio::time::timeout(Duration::from_secs(5), read_image(root.clone(), raw.into()))
            .await
            .ok()
    }

    #[tokio::test]
    async fn drawn_faces_read_only_regular_files_inside_the_root() {
        let (dir, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(dir.path().join("a.jpg"), b"jpeg bytes").unwrap();
        mkfifo(&outside.path().join("pipe.jpg"));
        std::fs::write(outside.path().join("secret.jpg"), b"secret").unwrap();
        std::os::unix::fs::symlink(outside.path().join("pipe.jpg"), dir.path().join("pipe.jpg"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.jpg"), dir.path().join("s.jpg"))
            .unwrap();
        let root = Arc::new(ImageRoot::new(dir.path(), 1 << 20).unwrap());
        assert_eq!(
            read_within(&root, "a.jpg").await.unwrap().unwrap(),
            b"jpeg bytes"
        );
        for raw in ["pipe.jpg", "s.jpg"] {
            let got = read_within(&root, raw).await;
            if got.is_none() {
                release_readers(&outside.path().join("pipe.jpg"));
            }
            assert!(
                matches!(got, Some(Err(PathError::OutsideRoot(_)))),
                "{raw}: {got:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_swapped_for_a_fifo_never_blocks_a_drawn_face() {
        let dir = tempfile::tempdir().unwrap();
        let dir_path = dir.path().to_path_buf();
        let root = Arc::new(ImageRoot::new(&dir_path, 1 << 20).unwrap());
        // Swap photo.jpg between a regular file and a FIFO as fast as rename allows.
        let swap = FifoSwap::start(&dir_path, "photo.jpg", b"jpeg");
        let (mut read, mut refused, mut hung) = (0, 0, false);
        let until = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < until {
            match read_within(&root, "photo.jpg").await {
                Some(Ok(bytes)) => {
                    assert_eq!(bytes, b"jpeg");
                    read += 1;
                }
                Some(Err(PathError::NotAFile(_) | PathError::NotFound(_))) => refused += 1,
                Some(Err(e)) => panic!("unexpected refusal {e:?}"),
                None => {
                    hung = true;
                    break;
                }
            }
        }
        swap.stop(hung);
        assert!(
            !hung,
            "a read blocked on the FIFO (after {read} read, {refused} refused)"
        );
        assert!(read > 0 && refused > 0, "{read} read, {refused} refused");
    }
}
