//! Faces as records: every face detected in a submitted image, every enrolment photo
//! and every face a user drew is a row, with its box, landmarks, detection score,
//! quality (the face's size in pixels), embedding, a small crop, and its person with how
//! it got there: `enrolled`, `auto` (with the similarity) or `manual`.
//!
//! Rules every writer here follows:
//! - Manual and enrolled assignments are never overwritten by automation (conditional
//!   updates on `assigned`).
//! - A face taken away from a person by hand is recorded in `face_rejections` and never
//!   assigned to that person again automatically.
//! - Re-writing an image's detected faces (a redelivered message, a detection re-run)
//!   matches the new faces to the stored ones by box overlap and updates them in place:
//!   no duplicates, and the decisions people made stay on their faces.

use std::collections::{HashMap, HashSet};

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{
    gallery::{embedding_from_bytes, embedding_to_bytes},
    now_millis,
    schema::{face_rejections, faces, gallery_version, images, people},
    Store, StoreError,
};

/// How a face got its person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assigned {
    /// From an enrolment photo.
    Enrolled,
    /// Matched automatically.
    Auto,
    /// Decided by a person.
    Manual,
}

impl Assigned {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Assigned::Enrolled => "enrolled",
            Assigned::Auto => "auto",
            Assigned::Manual => "manual",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "enrolled" => Ok(Assigned::Enrolled),
            "auto" => Ok(Assigned::Auto),
            "manual" => Ok(Assigned::Manual),
            other => Err(StoreError::Corrupt(format!("unknown assignment {other:?}"))),
        }
    }
}

/// Where a face record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaceSource {
    /// Found by the detector in a submitted image.
    Detected,
    /// An enrolment photo.
    Enrolled,
    /// Drawn by a user.
    Drawn,
    /// Carried over from a release that kept only names per image.
    Legacy,
}

impl FaceSource {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FaceSource::Detected => "detected",
            FaceSource::Enrolled => "enrolled",
            FaceSource::Drawn => "drawn",
            FaceSource::Legacy => "legacy",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "detected" => Ok(FaceSource::Detected),
            "enrolled" => Ok(FaceSource::Enrolled),
            "drawn" => Ok(FaceSource::Drawn),
            "legacy" => Ok(FaceSource::Legacy),
            other => Err(StoreError::Corrupt(format!(
                "unknown face source {other:?}"
            ))),
        }
    }
}

/// A face found by recognition, to be stored with its image.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DetectedFace {
    /// Left, top, width, height in pixels of the image.
    pub bbox: [f32; 4],
    /// Right eye, left eye, nose tip, right and left mouth corners.
    pub landmarks: Vec<[f32; 2]>,
    /// Detection score.
    pub score: f32,
    /// Unit-length embedding (empty when recognition sent none).
    pub embedding: Vec<f32>,
    /// The aligned face as a small JPEG.
    pub crop: Option<Vec<u8>>,
    /// The gallery's answer: person id and cosine similarity, when above the threshold.
    pub matched: Option<(i64, f32)>,
}

/// A face as shown with its image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFace {
    /// Face id.
    pub id: i64,
    /// Left, top, width, height; `None` for legacy faces.
    pub bbox: Option<[f32; 4]>,
    /// Person id, if assigned.
    pub person_id: Option<i64>,
    /// The person's name, if assigned to a named person.
    pub person_name: Option<String>,
    /// How the person was assigned.
    pub assigned: Option<Assigned>,
    /// For auto assignments, the similarity.
    pub similarity: Option<f32>,
    /// Detection score.
    pub detection_score: Option<f32>,
}

/// A face record with everything but its image bytes and embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceRecord {
    /// Face id.
    pub id: i64,
    /// The image it is in (`None` for enrolment photos).
    pub image_id: Option<i64>,
    /// The image's path.
    pub image_path: Option<String>,
    /// Person id, if assigned.
    pub person_id: Option<i64>,
    /// The person's name, if assigned to a named person.
    pub person_name: Option<String>,
    /// How the person was assigned.
    pub assigned: Option<Assigned>,
    /// For auto assignments, the similarity.
    pub similarity: Option<f32>,
    /// Left, top, width, height; `None` for legacy faces.
    pub bbox: Option<[f32; 4]>,
    /// Five landmarks.
    pub landmarks: Vec<[f32; 2]>,
    /// Detection score.
    pub detection_score: Option<f32>,
    /// The shorter side of the box, in pixels.
    pub quality: Option<f32>,
    /// Where the record came from.
    pub source: FaceSource,
    /// Whether a crop is stored.
    pub has_crop: bool,
}

/// Which faces to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceScope {
    /// The faces of one image.
    Image(i64),
    /// The faces of one person.
    Person(i64),
    /// Faces with no person.
    Unassigned,
}

/// A face's stored embedding, for matching again without decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEmbedding {
    /// Face id.
    pub id: i64,
    /// Current person.
    pub person_id: Option<i64>,
    /// The embedding.
    pub embedding: Vec<f32>,
    /// People this face must never be assigned to automatically.
    pub rejected: Vec<i64>,
}

/// A re-match decision for one face.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rematch {
    /// Face id.
    pub face_id: i64,
    /// The new person and similarity, or `None` to leave the face unassigned.
    pub matched: Option<(i64, f32)>,
}

/// Errors of face and people edits that a caller should see (bad input, conflicts).
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// No face with that id.
    #[error("no face with id {0}")]
    NoFace(i64),
    /// No person with that id (or it was merged away).
    #[error("no person with id {0}")]
    NoPerson(i64),
    /// No person with that name.
    #[error("nobody is named {0:?}")]
    NoName(String),
    /// No image with that id.
    #[error("no image with id {0}")]
    NoImage(i64),
    /// The request is not acceptable, with why.
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the current state, with why.
    #[error("{0}")]
    Conflict(String),
    /// The record changed since the caller read it.
    #[error("{0}")]
    Stale(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<diesel::r2d2::PoolError> for EditError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        EditError::Store(StoreError::from(e))
    }
}

impl From<diesel::result::Error> for EditError {
    fn from(e: diesel::result::Error) -> Self {
        EditError::Store(StoreError::Query(e))
    }
}

/// Intersection over union of two `[x, y, w, h]` boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let x1 = a[0].max(b[0]);
    let y1 = a[1].max(b[1]);
    let x2 = (a[0] + a[2]).min(b[0] + b[2]);
    let y2 = (a[1] + a[3]).min(b[1] + b[3]);
    let inter = (x2 - x1).max(0.0) * (y2 - y1).max(0.0);
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Overlap above which a newly detected face is the same face as a stored one.
pub const SAME_FACE_IOU: f32 = 0.5;

pub(crate) fn landmarks_to_bytes(points: &[[f32; 2]]) -> Vec<u8> {
    points
        .iter()
        .flat_map(|p| p.iter().flat_map(|v| v.to_le_bytes()))
        .collect()
}

fn landmarks_from_bytes(bytes: Option<&[u8]>) -> Vec<[f32; 2]> {
    let Some(bytes) = bytes else {
        return Vec::new();
    };
    embedding_from_bytes(bytes)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|c| [c[0], c[1]])
        .collect()
}

fn bbox_of(x: Option<f32>, y: Option<f32>, w: Option<f32>, h: Option<f32>) -> Option<[f32; 4]> {
    Some([x?, y?, w?, h?])
}

fn parse_assigned(s: Option<String>) -> Result<Option<Assigned>, StoreError> {
    s.as_deref().map(Assigned::parse).transpose()
}

/// The columns of a listed face.
type FaceRow = (
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<f32>,
    (Option<f32>, Option<f32>, Option<f32>, Option<f32>),
    Option<Vec<u8>>,
    Option<f32>,
    Option<f32>,
    String,
    bool,
);

macro_rules! face_columns {
    () => {
        (
            faces::id,
            faces::image_id,
            faces::person_id,
            faces::assigned,
            faces::similarity,
            (
                faces::box_x,
                faces::box_y,
                faces::box_width,
                faces::box_height,
            ),
            faces::landmarks,
            faces::detection_score,
            faces::quality,
            faces::source,
            faces::crop.is_not_null(),
        )
    };
}

/// Bumps the gallery version inside the caller's transaction.
macro_rules! bump_gallery {
    ($conn:expr) => {
        diesel::update(gallery_version::table.filter(gallery_version::id.eq(1)))
            .set(gallery_version::version.eq(gallery_version::version + 1i64))
            .execute($conn)
    };
}
pub(crate) use bump_gallery;

/// Names of people by id (only named people appear), inside `with_conn!`.
macro_rules! names_of {
    ($conn:expr, $ids:expr) => {{
        let rows: Vec<(i64, Option<String>)> = people::table
            .select((people::id, people::name))
            .filter(people::id.eq_any($ids))
            .load($conn)?;
        rows.into_iter()
            .filter_map(|(id, n)| n.map(|n| (id, n)))
            .collect::<HashMap<i64, String>>()
    }};
}

/// The names of the people and the paths of the images `rows` refer to.
macro_rules! names_and_paths {
    ($conn:expr, $rows:expr) => {{
        let rows: &[FaceRow] = $rows;
        let person_ids: Vec<i64> = rows.iter().filter_map(|r| r.2).collect();
        let image_ids: Vec<i64> = rows.iter().filter_map(|r| r.1).collect();
        let names = names_of!($conn, &person_ids);
        let paths: HashMap<i64, String> = images::table
            .filter(images::id.eq_any(&image_ids))
            .select((images::id, images::path))
            .load::<(i64, String)>($conn)?
            .into_iter()
            .collect();
        (names, paths)
    }};
}

fn records_from_rows(
    rows: Vec<FaceRow>,
    names: &HashMap<i64, String>,
    paths: &HashMap<i64, String>,
) -> Result<Vec<FaceRecord>, StoreError> {
    rows.into_iter()
        .map(
            |(
                id,
                image_id,
                person_id,
                assigned,
                similarity,
                b,
                lm,
                score,
                quality,
                source,
                has_crop,
            )| {
                Ok(FaceRecord {
                    id,
                    image_id,
                    image_path: image_id.and_then(|i| paths.get(&i).cloned()),
                    person_id,
                    person_name: person_id.and_then(|p| names.get(&p).cloned()),
                    assigned: parse_assigned(assigned)?,
                    similarity,
                    bbox: bbox_of(b.0, b.1, b.2, b.3),
                    landmarks: landmarks_from_bytes(lm.as_deref()),
                    detection_score: score,
                    quality,
                    source: FaceSource::parse(&source)?,
                    has_crop,
                })
            },
        )
        .collect()
}

/// Replaces the detected faces of one image inside the caller's transaction (see the
/// module docs for the rules). A macro because `with_conn!` compiles its body per backend.
macro_rules! write_image_faces {
    ($conn:expr, $image_id:expr, $faces:expr, $now:expr) => {{
        let conn = &mut *$conn;
        let image_id: i64 = $image_id;
        let new_faces: &[$crate::faces::DetectedFace] = $faces;
        let now: i64 = $now;
        type Old = (
            i64,
            String,
            Option<String>,
            (Option<f32>, Option<f32>, Option<f32>, Option<f32>),
        );
        let old: Vec<Old> = faces::table
            .filter(faces::image_id.eq(image_id))
            .order(faces::id.asc())
            .select((
                faces::id,
                faces::source,
                faces::assigned,
                (
                    faces::box_x,
                    faces::box_y,
                    faces::box_width,
                    faces::box_height,
                ),
            ))
            .load(conn)?;
        let old_ids: Vec<i64> = old.iter().map(|o| o.0).collect();
        let rejections: Vec<(i64, i64)> = face_rejections::table
            .filter(face_rejections::face_id.eq_any(&old_ids))
            .select((face_rejections::face_id, face_rejections::person_id))
            .load(conn)?;
        let mut taken = vec![false; old.len()];
        for face in new_faces {
            // The stored face this one overlaps most, if any overlaps enough.
            let mut best: Option<(usize, f32)> = None;
            for (i, o) in old.iter().enumerate() {
                let Some(b) = $crate::faces::bbox_of_tuple(&o.3) else {
                    continue;
                };
                let overlap = $crate::faces::iou(&face.bbox, &b);
                if !taken[i]
                    && overlap >= $crate::faces::SAME_FACE_IOU
                    && best.is_none_or(|(_, s)| overlap > s)
                {
                    best = Some((i, overlap));
                }
            }
            let embedding = (!face.embedding.is_empty())
                .then(|| $crate::gallery::embedding_to_bytes(&face.embedding));
            let landmarks = $crate::faces::landmarks_to_bytes(&face.landmarks);
            let quality = face.bbox[2].min(face.bbox[3]);
            match best {
                Some((i, _)) => {
                    taken[i] = true;
                    let (id, _, assigned, _) = &old[i];
                    diesel::update(faces::table.filter(faces::id.eq(*id)))
                        .set((
                            faces::box_x.eq(face.bbox[0]),
                            faces::box_y.eq(face.bbox[1]),
                            faces::box_width.eq(face.bbox[2]),
                            faces::box_height.eq(face.bbox[3]),
                            faces::landmarks.eq(&landmarks),
                            faces::detection_score.eq(face.score),
                            faces::quality.eq(quality),
                            faces::embedding.eq(&embedding),
                            faces::crop.eq(face.crop.as_deref()),
                            faces::updated_at.eq(now),
                        ))
                        .execute(conn)?;
                    let decided = matches!(assigned.as_deref(), Some("manual") | Some("enrolled"));
                    if !decided {
                        let matched = face
                            .matched
                            .filter(|(p, _)| !rejections.iter().any(|(f, r)| f == id && r == p));
                        diesel::update(faces::table.filter(faces::id.eq(*id)))
                            .set((
                                faces::person_id.eq(matched.map(|m| m.0)),
                                faces::assigned.eq(matched.map(|_| "auto")),
                                faces::similarity.eq(matched.map(|m| m.1)),
                            ))
                            .execute(conn)?;
                    }
                }
                None => {
                    diesel::insert_into(faces::table)
                        .values((
                            faces::image_id.eq(image_id),
                            faces::source.eq("detected"),
                            faces::person_id.eq(face.matched.map(|m| m.0)),
                            faces::assigned.eq(face.matched.map(|_| "auto")),
                            faces::similarity.eq(face.matched.map(|m| m.1)),
                            faces::box_x.eq(face.bbox[0]),
                            faces::box_y.eq(face.bbox[1]),
                            faces::box_width.eq(face.bbox[2]),
                            faces::box_height.eq(face.bbox[3]),
                            faces::landmarks.eq(&landmarks),
                            faces::detection_score.eq(face.score),
                            faces::quality.eq(quality),
                            faces::embedding.eq(&embedding),
                            faces::crop.eq(face.crop.as_deref()),
                            faces::created_at.eq(now),
                            faces::updated_at.eq(now),
                        ))
                        .execute(conn)?;
                }
            }
        }
        // Stored faces the detector no longer finds go, unless a person decided about
        // them or drew them.
        let gone: Vec<i64> = old
            .iter()
            .zip(&taken)
            .filter(|((_, source, assigned, _), taken)| {
                !**taken
                    && source != "drawn"
                    && !matches!(assigned.as_deref(), Some("manual") | Some("enrolled"))
            })
            .map(|(o, _)| o.0)
            .collect();
        if !gone.is_empty() {
            diesel::delete(faces::table.filter(faces::id.eq_any(&gone))).execute(conn)?;
        }
        Ok::<(), diesel::result::Error>(())
    }};
}
pub(crate) use write_image_faces;

pub(crate) fn bbox_of_tuple(
    t: &(Option<f32>, Option<f32>, Option<f32>, Option<f32>),
) -> Option<[f32; 4]> {
    bbox_of(t.0, t.1, t.2, t.3)
}

/// Loads the faces of `image_ids` (with their people's names), grouped by image.
macro_rules! load_image_faces {
    ($conn:expr, $image_ids:expr) => {{
        let conn = &mut *$conn;
        let ids: &[i64] = $image_ids;
        type Row = (
            i64,
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<f32>,
            (Option<f32>, Option<f32>, Option<f32>, Option<f32>),
            Option<f32>,
            Option<String>,
        );
        let rows: Vec<Row> = faces::table
            .left_join(people::table.on(people::id.nullable().eq(faces::person_id)))
            .filter(faces::image_id.eq_any(ids))
            .order((faces::image_id.asc(), faces::id.asc()))
            .select((
                faces::id,
                faces::image_id,
                faces::person_id,
                faces::assigned,
                faces::similarity,
                (
                    faces::box_x,
                    faces::box_y,
                    faces::box_width,
                    faces::box_height,
                ),
                faces::detection_score,
                people::name.nullable(),
            ))
            .load(conn)?;
        let mut by_image: std::collections::HashMap<i64, Vec<$crate::faces::ImageFace>> =
            std::collections::HashMap::new();
        for (id, image_id, person_id, assigned, similarity, b, score, name) in rows {
            let Some(image_id) = image_id else { continue };
            by_image
                .entry(image_id)
                .or_default()
                .push($crate::faces::ImageFace {
                    id,
                    bbox: $crate::faces::bbox_of_tuple(&b),
                    person_id,
                    person_name: name,
                    assigned: $crate::faces::parse_assigned_lossy(assigned.as_deref()),
                    similarity,
                    detection_score: score,
                });
        }
        by_image
    }};
}
pub(crate) use load_image_faces;

pub(crate) fn parse_assigned_lossy(s: Option<&str>) -> Option<Assigned> {
    s.and_then(|s| Assigned::parse(s).ok())
}

/// Checks that `person_id` is a live person (not merged away), inside a transaction.
macro_rules! live_person {
    ($conn:expr, $person_id:expr) => {{
        let pid: i64 = $person_id;
        let found: Option<(bool, Option<i64>)> = people::table
            .find(pid)
            .select((people::hidden, people::merged_into))
            .first($conn)
            .optional()?;
        match found {
            Some((hidden, None)) => Ok(hidden),
            _ => Err(EditError::NoPerson(pid)),
        }
    }};
}
pub(crate) use live_person;

/// Faces without a *named* person: unassigned, or grouped automatically into a
/// suggested (unnamed) person. What `rerun recognition --missing` covers.
macro_rules! without_named_person {
    () => {
        faces::person_id
            .is_null()
            .or(faces::assigned.eq("auto").and(
                faces::person_id.eq_any(
                    people::table
                        .filter(people::name.is_null())
                        .select(people::id.nullable()),
                ),
            ))
    };
}

impl Store {
    /// Faces of one image, one person, or unassigned, by id, at most `limit` after
    /// `after_id`.
    pub async fn list_faces(
        &self,
        scope: FaceScope,
        after_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<FaceRecord>, StoreError> {
        with_conn!(self, |conn| {
            let mut q = faces::table
                .select(face_columns!())
                .order(faces::id.asc())
                .limit(limit)
                .into_boxed();
            q = match scope {
                FaceScope::Image(id) => q.filter(faces::image_id.eq(id)),
                FaceScope::Person(id) => q.filter(faces::person_id.eq(id)),
                FaceScope::Unassigned => q
                    .filter(faces::person_id.is_null())
                    .filter(faces::image_id.is_not_null()),
            };
            if let Some(after) = after_id {
                q = q.filter(faces::id.gt(after));
            }
            let rows: Vec<FaceRow> = q.load(conn)?;
            let (names, paths) = names_and_paths!(conn, &rows);
            records_from_rows(rows, &names, &paths)
        })
    }

    /// One face record.
    pub async fn face(&self, id: i64) -> Result<Option<FaceRecord>, StoreError> {
        Ok(self.faces_by_id(vec![id]).await?.into_iter().next())
    }

    /// Several face records, by id (missing ids skipped).
    pub async fn faces_by_id(&self, ids: Vec<i64>) -> Result<Vec<FaceRecord>, StoreError> {
        with_conn!(self, |conn| {
            let rows: Vec<FaceRow> = faces::table
                .filter(faces::id.eq_any(&ids))
                .order(faces::id.asc())
                .select(face_columns!())
                .load(conn)?;
            let (names, paths) = names_and_paths!(conn, &rows);
            records_from_rows(rows, &names, &paths)
        })
    }

    /// The stored crop of a face (`None` when the face or its crop does not exist).
    pub async fn face_crop(&self, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        with_conn!(self, |conn| {
            Ok(faces::table
                .find(id)
                .select(faces::crop)
                .first::<Option<Vec<u8>>>(conn)
                .optional()?
                .flatten())
        })
    }

    /// Assigns faces to a person by hand (`manual`). The person must be live. Faces in
    /// `face_ids` that do not exist fail the whole call. Any rejection of that person
    /// for these faces is lifted: a person said so.
    pub async fn assign_faces(&self, face_ids: Vec<i64>, person_id: i64) -> Result<(), EditError> {
        if face_ids.is_empty() {
            return Err(EditError::Invalid("no faces to assign".into()));
        }
        with_conn!(self, |conn| {
            conn.transaction(|conn| {
                let now = now_millis();
                // A write first so SQLite takes its write lock at once.
                diesel::update(people::table.filter(people::id.eq(person_id)))
                    .set((
                        people::updated_at.eq(now),
                        people::version.eq(people::version + 1i64),
                    ))
                    .execute(conn)?;
                if live_person!(conn, person_id)? {
                    return Err(EditError::Conflict(format!(
                        "person {person_id} is hidden: unhide them before assigning faces"
                    )));
                }
                let found: Vec<i64> = faces::table
                    .filter(faces::id.eq_any(&face_ids))
                    .select(faces::id)
                    .load(conn)?;
                if let Some(missing) = face_ids.iter().find(|id| !found.contains(id)) {
                    return Err(EditError::NoFace(*missing));
                }
                let enrolled: Option<i64> = faces::table
                    .filter(faces::id.eq_any(&face_ids))
                    .filter(faces::source.eq("enrolled"))
                    .select(faces::id)
                    .first(conn)
                    .optional()?;
                if let Some(id) = enrolled {
                    return Err(EditError::Invalid(format!(
                        "face {id} is an enrolment photo: enrol or delete the person instead"
                    )));
                }
                diesel::update(faces::table.filter(faces::id.eq_any(&face_ids)))
                    .set((
                        faces::person_id.eq(Some(person_id)),
                        faces::assigned.eq(Some("manual")),
                        faces::similarity.eq(None::<f32>),
                        faces::updated_at.eq(now),
                    ))
                    .execute(conn)?;
                diesel::delete(
                    face_rejections::table
                        .filter(face_rejections::face_id.eq_any(&face_ids))
                        .filter(face_rejections::person_id.eq(person_id)),
                )
                .execute(conn)?;
                bump_gallery!(conn)?;
                Ok(())
            })
        })
    }

    /// Takes faces away from their people by hand. Each face is remembered as "not that
    /// person", so automation never gives it back to them. The face stays unassigned
    /// (`assigned` is cleared), so matching may still name it as someone else.
    pub async fn unassign_faces(&self, face_ids: Vec<i64>) -> Result<(), EditError> {
        if face_ids.is_empty() {
            return Err(EditError::Invalid("no faces to unassign".into()));
        }
        with_conn!(self, |conn| {
            conn.transaction(|conn| {
                let now = now_millis();
                let rows: Vec<(i64, Option<i64>, String)> = faces::table
                    .filter(faces::id.eq_any(&face_ids))
                    .select((faces::id, faces::person_id, faces::source))
                    .load(conn)?;
                if let Some(missing) = face_ids.iter().find(|id| !rows.iter().any(|r| r.0 == **id))
                {
                    return Err(EditError::NoFace(*missing));
                }
                if let Some(r) = rows.iter().find(|r| r.2 == "enrolled") {
                    return Err(EditError::Invalid(format!(
                        "face {} is an enrolment photo: delete the person to forget it",
                        r.0
                    )));
                }
                for (face_id, person_id, _) in &rows {
                    if let Some(person_id) = person_id {
                        diesel::insert_into(face_rejections::table)
                            .values((
                                face_rejections::face_id.eq(face_id),
                                face_rejections::person_id.eq(person_id),
                                face_rejections::created_at.eq(now),
                            ))
                            .on_conflict_do_nothing()
                            .execute(conn)?;
                    }
                }
                diesel::update(faces::table.filter(faces::id.eq_any(&face_ids)))
                    .set((
                        faces::person_id.eq(None::<i64>),
                        faces::assigned.eq(None::<&str>),
                        faces::similarity.eq(None::<f32>),
                        faces::updated_at.eq(now),
                    ))
                    .execute(conn)?;
                // A feature face that left its person is no longer theirs to show.
                diesel::update(people::table.filter(people::feature_face_id.eq_any(&face_ids)))
                    .set(people::feature_face_id.eq(None::<i64>))
                    .execute(conn)?;
                bump_gallery!(conn)?;
                Ok(())
            })
        })
    }

    /// Adds a face a user drew on an image, with its embedding and crop, optionally
    /// assigned by hand to `person_id`.
    pub async fn add_drawn_face(
        &self,
        image_id: i64,
        face: DetectedFace,
        person_id: Option<i64>,
    ) -> Result<i64, EditError> {
        with_conn!(self, |conn| {
            conn.transaction(|conn| {
                let now = now_millis();
                let exists: Option<i64> = images::table
                    .find(image_id)
                    .select(images::id)
                    .first(conn)
                    .optional()?;
                if exists.is_none() {
                    return Err(EditError::NoImage(image_id));
                }
                if let Some(pid) = person_id {
                    live_person!(conn, pid)?;
                }
                let id: i64 = diesel::insert_into(faces::table)
                    .values((
                        faces::image_id.eq(image_id),
                        faces::source.eq("drawn"),
                        faces::person_id.eq(person_id),
                        faces::assigned.eq(person_id.map(|_| "manual")),
                        faces::box_x.eq(face.bbox[0]),
                        faces::box_y.eq(face.bbox[1]),
                        faces::box_width.eq(face.bbox[2]),
                        faces::box_height.eq(face.bbox[3]),
                        faces::landmarks.eq(landmarks_to_bytes(&face.landmarks)),
                        faces::detection_score.eq(face.score),
                        faces::quality.eq(face.bbox[2].min(face.bbox[3])),
                        faces::embedding.eq(embedding_to_bytes(&face.embedding)),
                        faces::crop.eq(face.crop.as_deref()),
                        faces::created_at.eq(now),
                        faces::updated_at.eq(now),
                    ))
                    .returning(faces::id)
                    .get_result(conn)?;
                if person_id.is_some() {
                    bump_gallery!(conn)?;
                }
                Ok(id)
            })
        })
    }

    /// A page of faces whose person a re-match may change, with their embeddings and
    /// rejected people: `all` = every face assigned automatically or not at all;
    /// otherwise only faces without a named person (unassigned, or grouped into a suggestion). Faces without an embedding are skipped.
    pub async fn rematch_candidates(
        &self,
        all: bool,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredEmbedding>, StoreError> {
        with_conn!(self, |conn| {
            let mut q = faces::table
                .filter(faces::id.gt(after_id))
                .filter(faces::embedding.is_not_null())
                .filter(faces::image_id.is_not_null())
                .order(faces::id.asc())
                .limit(limit)
                .select((faces::id, faces::person_id, faces::embedding))
                .into_boxed();
            q = if all {
                q.filter(faces::assigned.is_null().or(faces::assigned.eq("auto")))
            } else {
                q.filter(without_named_person!())
            };
            let rows: Vec<(i64, Option<i64>, Option<Vec<u8>>)> = q.load(conn)?;
            let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
            let mut rejected: HashMap<i64, Vec<i64>> = HashMap::new();
            for (f, p) in face_rejections::table
                .filter(face_rejections::face_id.eq_any(&ids))
                .select((face_rejections::face_id, face_rejections::person_id))
                .load::<(i64, i64)>(conn)?
            {
                rejected.entry(f).or_default().push(p);
            }
            rows.into_iter()
                .map(|(id, person_id, bytes)| {
                    Ok(StoredEmbedding {
                        id,
                        person_id,
                        embedding: embedding_from_bytes(bytes.as_deref().unwrap_or_default())?,
                        rejected: rejected.remove(&id).unwrap_or_default(),
                    })
                })
                .collect()
        })
    }

    /// How many faces [`Store::rematch_candidates`] would page through.
    pub async fn count_rematch_candidates(&self, all: bool) -> Result<i64, StoreError> {
        with_conn!(self, |conn| {
            let mut q = faces::table
                .filter(faces::embedding.is_not_null())
                .filter(faces::image_id.is_not_null())
                .into_boxed();
            q = if all {
                q.filter(faces::assigned.is_null().or(faces::assigned.eq("auto")))
            } else {
                q.filter(without_named_person!())
            };
            Ok(q.count().get_result(conn)?)
        })
    }

    /// Applies re-match decisions in one transaction. Each applies only while its face
    /// is still automatic or unassigned (a concurrent manual edit wins) and never to a
    /// rejected person. Returns how many faces changed.
    pub async fn apply_rematches(&self, decisions: Vec<Rematch>) -> Result<usize, StoreError> {
        if decisions.is_empty() {
            return Ok(0);
        }
        with_conn!(self, |conn| {
            conn.transaction(|conn| {
                let now = now_millis();
                let ids: Vec<i64> = decisions.iter().map(|d| d.face_id).collect();
                let rejected: HashSet<(i64, i64)> = face_rejections::table
                    .filter(face_rejections::face_id.eq_any(&ids))
                    .select((face_rejections::face_id, face_rejections::person_id))
                    .load::<(i64, i64)>(conn)?
                    .into_iter()
                    .collect();
                let mut changed = 0;
                for d in &decisions {
                    let matched = d
                        .matched
                        .filter(|(p, _)| !rejected.contains(&(d.face_id, *p)));
                    changed += diesel::update(
                        faces::table
                            .filter(faces::id.eq(d.face_id))
                            .filter(faces::assigned.is_null().or(faces::assigned.eq("auto"))),
                    )
                    .set((
                        faces::person_id.eq(matched.map(|m| m.0)),
                        faces::assigned.eq(matched.map(|_| "auto")),
                        faces::similarity.eq(matched.map(|m| m.1)),
                        faces::updated_at.eq(now),
                    ))
                    .execute(conn)?;
                }
                Ok::<_, StoreError>(changed)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_boxes() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert!((iou(&a, &a) - 1.0).abs() < 1e-6);
        assert_eq!(iou(&a, &[20.0, 20.0, 5.0, 5.0]), 0.0);
        let half = iou(&a, &[5.0, 0.0, 10.0, 10.0]);
        assert!((half - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(iou(&[0.0; 4], &[0.0; 4]), 0.0);
    }

    #[test]
    fn landmarks_round_trip() {
        let points = vec![[1.0, 2.0], [3.5, -4.0]];
        assert_eq!(
            landmarks_from_bytes(Some(&landmarks_to_bytes(&points))),
            points
        );
        assert!(landmarks_from_bytes(None).is_empty());
    }
}
