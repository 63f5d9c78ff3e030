//! Image records and their state machine.
//!
//! ```text
//! pending ──claim──▶ processing ──finish──▶ done | no_face | failed
//!    ▲                   │
//!    └──── retry ────────┘   (transient error; the reconciler also re-queues stale rows)
//! ```
//! Every transition is a conditional UPDATE keyed by id *and* attempt, so repeating one
//! (a redelivered message, a processor that lost its lease) changes nothing.

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{
    faces::{load_image_faces, write_image_faces, DetectedFace, ImageFace},
    now_millis,
    schema::{face_rejections, faces, images, people},
    Backend, Store, StoreError,
};

/// Where an image is in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageStatus {
    /// Recorded and queued.
    Pending,
    /// Claimed by a processor.
    Processing,
    /// Recognised.
    Done,
    /// Processed; nobody in it.
    NoFace,
    /// Given up.
    Failed,
}

impl ImageStatus {
    /// Every status, in pipeline order.
    pub const ALL: [ImageStatus; 5] = [
        ImageStatus::Pending,
        ImageStatus::Processing,
        ImageStatus::Done,
        ImageStatus::NoFace,
        ImageStatus::Failed,
    ];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageStatus::Pending => "pending",
            ImageStatus::Processing => "processing",
            ImageStatus::Done => "done",
            ImageStatus::NoFace => "no_face",
            ImageStatus::Failed => "failed",
        }
    }

    /// Whether the image will not change again by itself.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ImageStatus::Done | ImageStatus::NoFace | ImageStatus::Failed
        )
    }
}

impl std::str::FromStr for ImageStatus {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown image status {s:?}")))
    }
}

impl std::fmt::Display for ImageStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Someone found in an image, derived from its faces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonFound {
    /// The person's name; empty for a face with no (named) person.
    pub name: String,
    /// For automatic matches, the cosine similarity; 1 for faces named by hand or
    /// enrolment; 0 for faces with nobody.
    pub similarity: f32,
    /// The person's id, if the face has one.
    pub person_id: Option<i64>,
}

impl PersonFound {
    fn from_face(face: &ImageFace) -> Self {
        let similarity = match face.assigned {
            Some(crate::faces::Assigned::Auto) => face.similarity.unwrap_or(0.0),
            Some(_) => 1.0,
            None => 0.0,
        };
        PersonFound {
            name: face.person_name.clone().unwrap_or_default(),
            similarity: similarity.clamp(-1.0, 1.0),
            person_id: face.person_id,
        }
    }
}

diesel::alias!(faces as faces_alias: FacesAlias);

/// Which images to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFilter {
    /// Only in this status.
    pub status: Option<ImageStatus>,
    /// Only images showing every one of these people.
    pub person_ids: Vec<i64>,
    /// Only images with a face nobody is assigned to.
    pub has_unknown_faces: bool,
}

/// An image to record.
#[derive(Debug, Clone)]
pub struct NewImage {
    /// Path relative to the image root.
    pub path: String,
    /// Hex SHA-256 of the file.
    pub content_hash: String,
}

/// A stored image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    /// Database id.
    pub id: i64,
    /// Path relative to the image root.
    pub path: String,
    /// Hex SHA-256 of the file when submitted.
    pub content_hash: String,
    /// Current state.
    pub status: ImageStatus,
    /// People found, one entry per face (empty until done); derived from `faces`.
    pub people: Vec<PersonFound>,
    /// The faces found, with their people.
    pub faces: Vec<ImageFace>,
    /// Processing attempts so far.
    pub attempts: i32,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Milliseconds since the epoch.
    pub updated_at: i64,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = images)]
struct ImageRow {
    id: i64,
    path: String,
    content_hash: String,
    status: String,
    attempts: i32,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl ImageRecord {
    fn from_row(r: ImageRow, faces: Vec<ImageFace>) -> Result<Self, StoreError> {
        Ok(ImageRecord {
            id: r.id,
            path: r.path,
            content_hash: r.content_hash,
            status: r.status.parse()?,
            people: faces.iter().map(PersonFound::from_face).collect(),
            faces,
            attempts: r.attempts,
            last_error: r.last_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = images)]
struct ImageInsert<'a> {
    path: &'a str,
    content_hash: &'a str,
    status: &'a str,
    attempts: i32,
    created_at: i64,
    updated_at: i64,
}

/// An image a processor has claimed for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Image id.
    pub id: i64,
    /// Path relative to the image root.
    pub path: String,
    /// This attempt's number (1 for the first); finishing must quote it.
    pub attempt: i32,
    /// When the image was submitted, in milliseconds since the epoch.
    pub created_at: i64,
    /// Hex SHA-256 recorded for the file (at submission, or of the bytes last
    /// recognised): the processor compares it with what it reads.
    pub content_hash: String,
}

/// The result of one processing attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Faces found (matched or not).
    Done(Vec<DetectedFace>),
    /// No face in the image.
    NoFace,
    /// Permanent failure, with the reason.
    Failed(String),
    /// Transient failure: back to pending, with the reason.
    Retry(String),
}

impl Outcome {
    fn status(&self) -> ImageStatus {
        match self {
            Outcome::Done(_) => ImageStatus::Done,
            Outcome::NoFace => ImageStatus::NoFace,
            Outcome::Failed(_) => ImageStatus::Failed,
            Outcome::Retry(_) => ImageStatus::Pending,
        }
    }
}

/// Image rows with their faces, in the rows' order.
macro_rules! records {
    ($conn:expr, $rows:expr) => {{
        let rows: Vec<ImageRow> = $rows;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let mut faces = load_image_faces!($conn, &ids);
        rows.into_iter()
            .map(|r| {
                let f = faces.remove(&r.id).unwrap_or_default();
                ImageRecord::from_row(r, f)
            })
            .collect::<Result<Vec<ImageRecord>, StoreError>>()
    }};
}

impl Store {
    /// Records a batch of new images, all pending, in one transaction and one INSERT.
    /// Returns the records in input order.
    pub async fn insert_batch(&self, new: Vec<NewImage>) -> Result<Vec<ImageRecord>, StoreError> {
        if new.is_empty() {
            return Ok(Vec::new());
        }
        with_conn!(self, |conn| {
            let now = now_millis();
            let rows: Vec<ImageInsert<'_>> = new
                .iter()
                .map(|n| ImageInsert {
                    path: &n.path,
                    content_hash: &n.content_hash,
                    status: ImageStatus::Pending.as_str(),
                    attempts: 0,
                    created_at: now,
                    updated_at: now,
                })
                .collect();
            let mut inserted: Vec<ImageRow> = conn.transaction(|conn| {
                diesel::insert_into(images::table)
                    .values(&rows)
                    .returning(ImageRow::as_returning())
                    .get_results(conn)
            })?;
            // Ids are assigned in VALUES order on both backends; sort to be certain.
            inserted.sort_by_key(|r| r.id);
            inserted
                .into_iter()
                .map(|r| ImageRecord::from_row(r, Vec::new()))
                .collect()
        })
    }

    /// One image by id.
    pub async fn get(&self, id: i64) -> Result<Option<ImageRecord>, StoreError> {
        with_conn!(self, |conn| {
            let rows = images::table
                .filter(images::id.eq(id))
                .select(ImageRow::as_select())
                .load(conn)?;
            Ok(records!(conn, rows)?.into_iter().next())
        })
    }

    /// Several images by id (missing ids are skipped), ordered by id.
    pub async fn get_many(&self, ids: Vec<i64>) -> Result<Vec<ImageRecord>, StoreError> {
        with_conn!(self, |conn| {
            let rows = images::table
                .filter(images::id.eq_any(&ids))
                .order(images::id.asc())
                .select(ImageRow::as_select())
                .load(conn)?;
            records!(conn, rows)
        })
    }

    /// A page of images, newest first: at most `limit` with id below `before_id`,
    /// optionally only in `status`.
    pub async fn list(
        &self,
        status: Option<ImageStatus>,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<ImageRecord>, StoreError> {
        let filter = ImageFilter {
            status,
            ..ImageFilter::default()
        };
        self.list_filtered(filter, before_id, limit).await
    }

    /// A page of images matching `filter`, newest first: at most `limit` with id below
    /// `before_id`. People are an AND: each must have a face in the image.
    pub async fn list_filtered(
        &self,
        filter: ImageFilter,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<ImageRecord>, StoreError> {
        let Some((&first, others)) = filter.person_ids.split_first() else {
            return self
                .list_unfiltered_by_person(filter, before_id, limit)
                .await;
        };
        let others = others.to_vec();
        // Driven by the (person, image) index, newest image first: the page costs the
        // same however rare the person is among all images.
        with_conn!(self, |conn| {
            let mut q = faces::table
                .inner_join(images::table)
                .filter(faces::person_id.eq(first))
                .select(faces::image_id)
                .distinct()
                .order(faces::image_id.desc())
                .limit(limit)
                .into_boxed();
            if let Some(st) = filter.status {
                q = q.filter(images::status.eq(st.as_str()));
            }
            if let Some(before) = before_id {
                q = q.filter(faces::image_id.lt(before));
            }
            for person in &others {
                q = q.filter(
                    faces::image_id.eq_any(
                        faces_alias
                            .filter(faces_alias.field(faces::person_id).eq(*person))
                            .select(faces_alias.field(faces::image_id)),
                    ),
                );
            }
            if filter.has_unknown_faces {
                q = q.filter(
                    faces::image_id.eq_any(
                        faces_alias
                            .filter(faces_alias.field(faces::person_id).is_null())
                            .select(faces_alias.field(faces::image_id)),
                    ),
                );
            }
            let ids: Vec<Option<i64>> = q.load(conn)?;
            let ids: Vec<i64> = ids.into_iter().flatten().collect();
            let rows = images::table
                .filter(images::id.eq_any(&ids))
                .order(images::id.desc())
                .select(ImageRow::as_select())
                .load(conn)?;
            records!(conn, rows)
        })
    }

    async fn list_unfiltered_by_person(
        &self,
        filter: ImageFilter,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<ImageRecord>, StoreError> {
        with_conn!(self, |conn| {
            let mut q = images::table
                .select(ImageRow::as_select())
                .order(images::id.desc())
                .limit(limit)
                .into_boxed();
            if let Some(st) = filter.status {
                q = q.filter(images::status.eq(st.as_str()));
            }
            if let Some(before) = before_id {
                q = q.filter(images::id.lt(before));
            }
            if filter.has_unknown_faces {
                q = q.filter(
                    images::id.nullable().eq_any(
                        faces::table
                            .filter(faces::person_id.is_null())
                            .select(faces::image_id),
                    ),
                );
            }
            let rows = q.load(conn)?;
            records!(conn, rows)
        })
    }

    /// Images updated at or after `since_millis`, oldest change first, at most `limit`.
    pub async fn changed_since(
        &self,
        since_millis: i64,
        limit: i64,
    ) -> Result<Vec<ImageRecord>, StoreError> {
        with_conn!(self, |conn| {
            let rows = images::table
                .filter(images::updated_at.ge(since_millis))
                .order((images::updated_at.asc(), images::id.asc()))
                .limit(limit)
                .select(ImageRow::as_select())
                .load(conn)?;
            records!(conn, rows)
        })
    }

    /// Images whose change-feed position `(updated_at, id)` comes after
    /// `(after_updated_at, after_id)`, in that order, at most `limit`; only `ids` when
    /// given. `WatchImages` replays these to a client resuming from a cursor; page on
    /// with the last row's position.
    pub async fn changed_after(
        &self,
        after_updated_at: i64,
        after_id: i64,
        ids: Option<Vec<i64>>,
        limit: i64,
    ) -> Result<Vec<ImageRecord>, StoreError> {
        with_conn!(self, |conn| {
            let after = images::updated_at
                .gt(after_updated_at)
                .or(images::updated_at
                    .eq(after_updated_at)
                    .and(images::id.gt(after_id)));
            let order = (images::updated_at.asc(), images::id.asc());
            let rows = match &ids {
                Some(ids) => images::table
                    .filter(after)
                    .filter(images::id.eq_any(ids))
                    .order(order)
                    .limit(limit)
                    .select(ImageRow::as_select())
                    .load(conn)?,
                None => images::table
                    .filter(after)
                    .order(order)
                    .limit(limit)
                    .select(ImageRow::as_select())
                    .load(conn)?,
            };
            records!(conn, rows)
        })
    }

    /// How many images are in each status.
    pub async fn count_by_status(&self) -> Result<Vec<(ImageStatus, i64)>, StoreError> {
        with_conn!(self, |conn| {
            let rows: Vec<(String, i64)> = images::table
                .group_by(images::status)
                .select((images::status, diesel::dsl::count_star()))
                .load(conn)?;
            rows.into_iter().map(|(s, n)| Ok((s.parse()?, n))).collect()
        })
    }

    /// Claims images for a processing attempt: those still pending (or processing, when a
    /// message is redelivered after a crash) move to processing with attempts + 1.
    /// Images already in a terminal state, or gone, are not returned.
    pub async fn claim(&self, ids: Vec<i64>) -> Result<Vec<Claim>, StoreError> {
        with_conn!(self, |conn| {
            let now = now_millis();
            let claimed: Vec<(i64, String, i32, i64, String)> =
                diesel::update(images::table.filter(images::id.eq_any(&ids)).filter(
                    images::status.eq_any([
                        ImageStatus::Pending.as_str(),
                        ImageStatus::Processing.as_str(),
                    ]),
                ))
                .set((
                    images::status.eq(ImageStatus::Processing.as_str()),
                    images::attempts.eq(images::attempts + 1),
                    images::updated_at.eq(now),
                ))
                .returning((
                    images::id,
                    images::path,
                    images::attempts,
                    images::created_at,
                    images::content_hash,
                ))
                .get_results(conn)?;
            let mut claims: Vec<Claim> = claimed
                .into_iter()
                .map(|(id, path, attempt, created_at, content_hash)| Claim {
                    id,
                    path,
                    attempt,
                    created_at,
                    content_hash,
                })
                .collect();
            claims.sort_by_key(|c| c.id);
            Ok(claims)
        })
    }

    /// Records the outcomes of processing attempts in one transaction. An outcome applies
    /// only if its image is still processing under the same attempt; the returned flags
    /// say, per outcome, whether it applied (false = a repeat or a superseded attempt).
    pub async fn finish(&self, outcomes: Vec<(Claim, Outcome)>) -> Result<Vec<bool>, StoreError> {
        self.finish_recognised(outcomes.into_iter().map(|(c, o)| (c, o, None)).collect())
            .await
    }

    /// [`Store::finish`], also replacing an image's recorded content hash where one is
    /// given: the hash of the bytes actually recognised, when the file changed after
    /// submission. The hash is written only with an outcome that applies, in the same
    /// transaction.
    pub async fn finish_recognised(
        &self,
        outcomes: Vec<(Claim, Outcome, Option<String>)>,
    ) -> Result<Vec<bool>, StoreError> {
        with_conn!(self, |conn| {
            let now = now_millis();
            conn.transaction(|conn| {
                let mut applied = Vec::with_capacity(outcomes.len());
                for (claim, outcome, recognised_hash) in &outcomes {
                    let error = match outcome {
                        Outcome::Failed(e) | Outcome::Retry(e) => Some(e.as_str()),
                        _ => None,
                    };
                    let n = diesel::update(
                        images::table
                            .filter(images::id.eq(claim.id))
                            .filter(images::attempts.eq(claim.attempt))
                            .filter(images::status.eq(ImageStatus::Processing.as_str())),
                    )
                    .set((
                        images::status.eq(outcome.status().as_str()),
                        images::last_error.eq(error),
                        images::updated_at.eq(now),
                    ))
                    .execute(conn)?;
                    if let (1, Some(hash)) = (n, recognised_hash) {
                        diesel::update(images::table.filter(images::id.eq(claim.id)))
                            .set(images::content_hash.eq(hash))
                            .execute(conn)?;
                    }
                    if n == 1 {
                        // The faces go in the same transaction as the status.
                        match outcome {
                            Outcome::Done(found) => write_image_faces!(conn, claim.id, found, now)?,
                            Outcome::NoFace => write_image_faces!(conn, claim.id, &[], now)?,
                            Outcome::Failed(_) | Outcome::Retry(_) => {}
                        }
                    }
                    applied.push(n == 1);
                }
                Ok::<_, diesel::result::Error>(applied)
            })
            .map_err(StoreError::from)
        })
    }

    /// Sends finished images (done, no_face or failed) back to pending for a detection
    /// re-run, with their attempts reset. Images already pending or processing are left
    /// alone. Returns the ids that moved. Their faces stay until the re-run replaces them
    /// (see [`crate::faces`] for what a re-run keeps).
    pub async fn requeue_for_detection(&self, ids: Vec<i64>) -> Result<Vec<i64>, StoreError> {
        with_conn!(self, |conn| {
            Ok(diesel::update(
                images::table
                    .filter(images::id.eq_any(&ids))
                    .filter(images::status.eq_any(["done", "no_face", "failed"])),
            )
            .set((
                images::status.eq(ImageStatus::Pending.as_str()),
                images::attempts.eq(0),
                images::last_error.eq(None::<String>),
                images::updated_at.eq(now_millis()),
                // Pending again with no message yet: the caller publishes and confirms.
                images::published_at.eq(None::<i64>),
            ))
            .returning(images::id)
            .get_results(conn)?)
        })
    }

    /// A page of finished images a detection re-run covers, by id after `after_id`:
    /// `all` = every done or no_face image; otherwise those with no face that has an
    /// embedding (never processed by this release, or carried over from an older one).
    pub async fn detection_candidates(
        &self,
        all: bool,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<i64>, StoreError> {
        with_conn!(self, |conn| {
            let mut q = images::table
                .filter(images::id.gt(after_id))
                .filter(images::status.eq_any(["done", "no_face"]))
                .order(images::id.asc())
                .limit(limit)
                .select(images::id)
                .into_boxed();
            if !all {
                q = q.filter(diesel::dsl::not(
                    images::id.nullable().eq_any(
                        faces::table
                            .filter(faces::embedding.is_not_null())
                            // NOT IN with a NULL in the list matches nothing.
                            .filter(faces::image_id.is_not_null())
                            .select(faces::image_id),
                    ),
                ));
            }
            Ok(q.load(conn)?)
        })
    }

    /// Marks images failed whatever their state unless already terminal (poison
    /// messages, attempts exhausted). Returns how many changed.
    pub async fn fail(&self, ids: Vec<i64>, reason: String) -> Result<usize, StoreError> {
        with_conn!(self, |conn| {
            let n = diesel::update(images::table.filter(images::id.eq_any(&ids)).filter(
                images::status.eq_any([
                    ImageStatus::Pending.as_str(),
                    ImageStatus::Processing.as_str(),
                ]),
            ))
            .set((
                images::status.eq(ImageStatus::Failed.as_str()),
                images::last_error.eq(&reason),
                images::updated_at.eq(now_millis()),
            ))
            .execute(conn)?;
            Ok(n)
        })
    }

    /// Finds images stuck in pending or processing since before `cutoff_millis`, at most
    /// `limit`, and stamps them as just touched so the next sweep leaves them alone until
    /// their deadline passes again. On PostgreSQL rows are locked with
    /// `FOR UPDATE SKIP LOCKED`, so concurrent reconcilers never take the same row.
    pub async fn claim_stale(
        &self,
        cutoff_millis: i64,
        limit: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let stuck = [
            ImageStatus::Pending.as_str(),
            ImageStatus::Processing.as_str(),
        ];
        let store = self.clone();
        crate::run_blocking(move || {
            let now = now_millis();
            match &store.backend {
                Backend::Pg(pool) => {
                    let conn = &mut *pool.get()?;
                    conn.transaction(|conn| {
                        let ids: Vec<i64> = images::table
                            .filter(images::status.eq_any(stuck))
                            .filter(images::updated_at.lt(cutoff_millis))
                            .order(images::id.asc())
                            .limit(limit)
                            .select(images::id)
                            .for_update()
                            .skip_locked()
                            .load(conn)?;
                        diesel::update(images::table.filter(images::id.eq_any(&ids)))
                            .set(images::updated_at.eq(now))
                            .execute(conn)?;
                        Ok::<_, diesel::result::Error>(ids)
                    })
                    .map_err(StoreError::from)
                }
                Backend::Sqlite(pool) => {
                    let conn = &mut *pool.get()?;
                    // SQLite has one writer at a time; an immediate transaction is the lock.
                    conn.immediate_transaction(|conn| {
                        let ids: Vec<i64> = images::table
                            .filter(images::status.eq_any(stuck))
                            .filter(images::updated_at.lt(cutoff_millis))
                            .order(images::id.asc())
                            .limit(limit)
                            .select(images::id)
                            .load(conn)?;
                        diesel::update(images::table.filter(images::id.eq_any(&ids)))
                            .set(images::updated_at.eq(now))
                            .execute(conn)?;
                        Ok::<_, diesel::result::Error>(ids)
                    })
                    .map_err(StoreError::from)
                }
            }
        })
        .await
    }
}

/// Which images a reconciler sweep takes (see [`Store::take_for_requeue`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Pending, and no message for them was ever confirmed by the broker (the publish
    /// failed, or the process died before it was confirmed).
    Unconfirmed,
    /// Processing under a claim older than the cutoff: the processor's lease expired.
    LeaseExpired,
    /// Pending with a confirmed message, untouched since the cutoff: the message may
    /// have been lost (a purged queue). The slow safety net.
    Confirmed,
    /// Pending or processing, whatever their messages: an in-process queue that died
    /// with its process took every message along.
    Any,
}

impl Store {
    /// Takes up to `limit` images of kind `which` untouched since `cutoff_millis` for
    /// re-queueing: each goes back to pending, unconfirmed, stamped as just touched (so
    /// no other sweep takes it before its deadline passes again). The caller publishes
    /// them and then calls [`Store::mark_published`]. On PostgreSQL rows are locked with
    /// `FOR UPDATE SKIP LOCKED`, so concurrent reconcilers never take the same row.
    pub async fn take_for_requeue(
        &self,
        which: Requeue,
        cutoff_millis: i64,
        limit: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let (statuses, unconfirmed): (Vec<&'static str>, Vec<bool>) = match which {
            Requeue::Unconfirmed => (vec![ImageStatus::Pending.as_str()], vec![true]),
            Requeue::LeaseExpired => (vec![ImageStatus::Processing.as_str()], vec![true, false]),
            Requeue::Confirmed => (vec![ImageStatus::Pending.as_str()], vec![false]),
            Requeue::Any => (
                vec![
                    ImageStatus::Pending.as_str(),
                    ImageStatus::Processing.as_str(),
                ],
                vec![true, false],
            ),
        };
        let store = self.clone();
        crate::run_blocking(move || {
            let now = now_millis();
            let candidates = images::table
                .filter(images::status.eq_any(statuses))
                .filter(images::published_at.is_null().eq_any(unconfirmed))
                .filter(images::updated_at.lt(cutoff_millis))
                .order(images::id.asc())
                .limit(limit)
                .select(images::id);
            let release = (
                images::status.eq(ImageStatus::Pending.as_str()),
                images::published_at.eq(None::<i64>),
                images::updated_at.eq(now),
            );
            match &store.backend {
                Backend::Pg(pool) => {
                    let conn = &mut *pool.get()?;
                    conn.transaction(|conn| {
                        let ids: Vec<i64> = candidates.for_update().skip_locked().load(conn)?;
                        diesel::update(images::table.filter(images::id.eq_any(&ids)))
                            .set(release)
                            .execute(conn)?;
                        Ok::<_, diesel::result::Error>(ids)
                    })
                    .map_err(StoreError::from)
                }
                Backend::Sqlite(pool) => {
                    let conn = &mut *pool.get()?;
                    // SQLite has one writer at a time; an immediate transaction is the lock.
                    conn.immediate_transaction(|conn| {
                        let ids: Vec<i64> = candidates.load(conn)?;
                        diesel::update(images::table.filter(images::id.eq_any(&ids)))
                            .set(release)
                            .execute(conn)?;
                        Ok::<_, diesel::result::Error>(ids)
                    })
                    .map_err(StoreError::from)
                }
            }
        })
        .await
    }

    /// Records that the broker confirmed a message for each of `ids` (whatever their
    /// state: a processor may already have taken one). Leaves `updated_at` alone: this is
    /// no change a watcher needs to see.
    pub async fn mark_published(&self, ids: Vec<i64>) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        with_conn!(self, |conn| {
            Ok(
                diesel::update(images::table.filter(images::id.eq_any(&ids)))
                    .set(images::published_at.eq(Some(now_millis())))
                    .execute(conn)?,
            )
        })
    }

    /// Images pending with a confirmed message: how many messages the queue should hold
    /// for them, to compare with its depth.
    pub async fn count_confirmed_pending(&self) -> Result<i64, StoreError> {
        with_conn!(self, |conn| {
            Ok(images::table
                .filter(images::status.eq(ImageStatus::Pending.as_str()))
                .filter(images::published_at.is_not_null())
                .count()
                .get_result(conn)?)
        })
    }
}
