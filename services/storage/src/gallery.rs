//! The gallery of enrolled people (owned by the recognition service).
//!
//! People have names; faces belong to people and carry an embedding stored as
//! little-endian `f32` bytes, so both backends share one schema. Every change bumps the
//! single-row `gallery_version`, in the same transaction, so a replica that polls the
//! version reloads exactly when something changed.

use diesel::prelude::*;

use crate::{
    faces::{bump_gallery, EditError},
    now_millis,
    schema::{faces, gallery_version, people},
    Store, StoreError,
};

/// A face to add to the gallery.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFace {
    /// The person; created if new.
    pub person: String,
    /// Hex SHA-256 of the enrolled image (the same image twice is one face).
    pub content_hash: String,
    /// The embedding (unit length).
    pub embedding: Vec<f32>,
    /// Face box in the enrolled image: left, top, width, height.
    pub bbox: [f32; 4],
    /// A small JPEG of the face as it was embedded, for people to look at; `None` when
    /// the caller has none.
    pub crop: Option<Vec<u8>>,
}

/// The result of storing a face.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredFaceId {
    /// The face's id.
    pub id: i64,
    /// False when the same image was already enrolled for this person.
    pub created: bool,
}

/// A face as loaded to build the in-memory gallery: an enrolment photo or a face
/// named by hand, of a named person.
#[derive(Debug, Clone, PartialEq)]
pub struct GalleryRow {
    /// The face's id.
    pub face_id: i64,
    /// Its person's id.
    pub person_id: i64,
    /// Its person's name.
    pub person: String,
    /// Its embedding.
    pub embedding: Vec<f32>,
}

/// A face of the gallery without its embedding: what a reload compares with the faces
/// it already holds, so it reads embeddings only of faces new or changed since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GalleryMember {
    /// The face's id.
    pub face_id: i64,
    /// Its person's id.
    pub person_id: i64,
    /// Its person's name.
    pub person: String,
    /// When the face row last changed (a new embedding changes it), ms since the epoch.
    pub updated_at: i64,
}

/// Most ids per `IN (...)` list (SQLite allows 32 766 bound variables).
const IDS_PER_QUERY: usize = 10_000;

/// An enrolled person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonSummary {
    /// The name.
    pub name: String,
    /// How many faces are enrolled for them.
    pub face_count: i64,
}

/// One enrolled face of a person, as shown to people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaceCrop {
    /// The face's id.
    pub id: i64,
    /// Its JPEG crop; `None` for faces enrolled before crops were kept.
    pub crop: Option<Vec<u8>>,
}

/// `f32`s as little-endian bytes.
pub fn embedding_to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian bytes back to `f32`s.
pub fn embedding_from_bytes(bytes: &[u8]) -> Result<Vec<f32>, StoreError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(StoreError::Corrupt(format!(
            "embedding of {} bytes is not a whole number of f32 values",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

impl Store {
    /// Adds a face, creating its person if new. Idempotent by content hash: the same
    /// image enrolled twice for one person returns the existing face, `created: false`.
    pub async fn enroll_face(&self, face: NewFace) -> Result<StoredFaceId, StoreError> {
        with_conn!(self, |conn| {
            conn.transaction(|conn| {
                let now = now_millis();
                // A write first, so SQLite takes the write lock at once (waiting on the
                // busy timeout) instead of failing to upgrade a read transaction.
                diesel::insert_into(people::table)
                    .values((
                        people::name.eq(&face.person),
                        people::created_at.eq(now),
                        people::updated_at.eq(now),
                    ))
                    .on_conflict(people::name)
                    .do_nothing()
                    .execute(conn)?;
                let person_id: i64 = people::table
                    .filter(people::name.eq(&face.person))
                    .select(people::id)
                    .first(conn)?;
                // Any unique violation here is the enrolment index (person, photo).
                let inserted: Option<i64> = diesel::insert_into(faces::table)
                    .values((
                        faces::person_id.eq(person_id),
                        faces::source.eq("enrolled"),
                        faces::assigned.eq("enrolled"),
                        faces::content_hash.eq(&face.content_hash),
                        faces::embedding.eq(embedding_to_bytes(&face.embedding)),
                        faces::box_x.eq(face.bbox[0]),
                        faces::box_y.eq(face.bbox[1]),
                        faces::box_width.eq(face.bbox[2]),
                        faces::box_height.eq(face.bbox[3]),
                        faces::quality.eq(face.bbox[2].min(face.bbox[3])),
                        faces::crop.eq(face.crop.as_deref()),
                        faces::created_at.eq(now),
                        faces::updated_at.eq(now),
                    ))
                    .on_conflict_do_nothing()
                    .returning(faces::id)
                    .get_result(conn)
                    .optional()?;
                let stored = match inserted {
                    Some(id) => {
                        bump_gallery!(conn)?;
                        StoredFaceId { id, created: true }
                    }
                    None => StoredFaceId {
                        id: faces::table
                            .filter(faces::person_id.eq(person_id))
                            .filter(faces::source.eq("enrolled"))
                            .filter(faces::content_hash.eq(&face.content_hash))
                            .select(faces::id)
                            .first(conn)?,
                        created: false,
                    },
                };
                Ok::<_, StoreError>(stored)
            })
        })
    }

    /// The gallery's current version (changes whenever people or faces change).
    pub async fn gallery_version(&self) -> Result<i64, StoreError> {
        with_conn!(self, |conn| {
            Ok(gallery_version::table
                .filter(gallery_version::id.eq(1))
                .select(gallery_version::version)
                .first::<i64>(conn)?)
        })
    }

    /// Every gallery face with its person and embedding, and the version the list
    /// reflects: [`Store::gallery_members`] and then their embeddings (a face deleted in
    /// between is left out).
    pub async fn gallery_faces(&self) -> Result<(i64, Vec<GalleryRow>), StoreError> {
        let (version, members) = self.gallery_members().await?;
        let ids = members.iter().map(|m| m.face_id).collect();
        let mut embeddings: std::collections::HashMap<i64, Vec<f32>> =
            self.face_embeddings(ids).await?.into_iter().collect();
        let rows = members
            .into_iter()
            .filter_map(|m| {
                Some(GalleryRow {
                    embedding: embeddings.remove(&m.face_id)?,
                    face_id: m.face_id,
                    person_id: m.person_id,
                    person: m.person,
                })
            })
            .collect();
        Ok((version, rows))
    }

    /// Every face of the gallery without its embedding, and the version they reflect
    /// (one transaction).
    pub async fn gallery_members(&self) -> Result<(i64, Vec<GalleryMember>), StoreError> {
        with_conn!(self, |conn| {
            conn.transaction(|conn| {
                let version: i64 = gallery_version::table
                    .filter(gallery_version::id.eq(1))
                    .select(gallery_version::version)
                    .first(conn)?;
                let rows: Vec<(i64, i64, Option<String>, i64)> = faces::table
                    .inner_join(people::table.on(people::id.nullable().eq(faces::person_id)))
                    .filter(faces::embedding.is_not_null())
                    .filter(faces::assigned.eq_any(["enrolled", "manual"]))
                    .filter(people::name.is_not_null())
                    .filter(people::merged_into.is_null())
                    .order(faces::id.asc())
                    .select((faces::id, people::id, people::name, faces::updated_at))
                    .load(conn)?;
                let members = rows
                    .into_iter()
                    .map(|(face_id, person_id, person, updated_at)| GalleryMember {
                        face_id,
                        person_id,
                        person: person.unwrap_or_default(),
                        updated_at,
                    })
                    .collect();
                Ok::<_, StoreError>((version, members))
            })
        })
    }

    /// The embeddings of faces `ids` (those that have one), by face id.
    pub async fn face_embeddings(&self, ids: Vec<i64>) -> Result<Vec<(i64, Vec<f32>)>, StoreError> {
        with_conn!(self, |conn| {
            let mut out = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(IDS_PER_QUERY) {
                let rows: Vec<(i64, Option<Vec<u8>>)> = faces::table
                    .filter(faces::id.eq_any(chunk))
                    .filter(faces::embedding.is_not_null())
                    .select((faces::id, faces::embedding))
                    .load(conn)?;
                for (face_id, bytes) in rows {
                    let embedding = embedding_from_bytes(bytes.as_deref().unwrap_or_default())
                        .map_err(|e| StoreError::Corrupt(format!("face {face_id}: {e}")))?;
                    out.push((face_id, embedding));
                }
            }
            Ok::<_, StoreError>(out)
        })
    }

    /// Named people with their face counts, by name.
    pub async fn people(&self) -> Result<Vec<PersonSummary>, StoreError> {
        with_conn!(self, |conn| {
            let rows: Vec<(Option<String>, i64)> = people::table
                .left_join(faces::table.on(faces::person_id.eq(people::id.nullable())))
                .filter(people::name.is_not_null())
                .filter(people::merged_into.is_null())
                .group_by((people::id, people::name))
                .select((people::name, diesel::dsl::count(faces::id.nullable())))
                .order(people::name.asc())
                .load(conn)?;
            Ok(rows
                .into_iter()
                .map(|(name, face_count)| PersonSummary {
                    name: name.unwrap_or_default(),
                    face_count,
                })
                .collect())
        })
    }

    /// A person's faces with their crops, oldest first, or `None` when nobody has that
    /// name.
    pub async fn person_faces(&self, name: &str) -> Result<Option<Vec<FaceCrop>>, StoreError> {
        let name = name.to_string();
        with_conn!(self, |conn| {
            // One transaction, so a concurrent removal cannot leave a person without faces.
            conn.transaction(|conn| {
                let person_id: Option<i64> = people::table
                    .filter(people::name.eq(&name))
                    .select(people::id)
                    .first(conn)
                    .optional()?;
                let Some(person_id) = person_id else {
                    return Ok::<_, StoreError>(None);
                };
                let rows: Vec<(i64, Option<Vec<u8>>)> = faces::table
                    .filter(faces::person_id.eq(person_id))
                    .filter(faces::source.eq("enrolled"))
                    .order(faces::id.asc())
                    .select((faces::id, faces::crop))
                    .load(conn)?;
                Ok(Some(
                    rows.into_iter()
                        .map(|(id, crop)| FaceCrop { id, crop })
                        .collect(),
                ))
            })
        })
    }

    /// Forgets a person by name (see [`Store::delete_person`]). Returns how many
    /// enrolment faces were erased, or `None` when nobody has that name.
    pub async fn remove_person(&self, name: &str) -> Result<Option<i64>, StoreError> {
        let Some(person) = self.person_by_name(name).await? else {
            return Ok(None);
        };
        match self.delete_person(person.id).await {
            Ok(erased) => Ok(Some(erased.faces_erased)),
            Err(EditError::NoPerson(_)) => Ok(None),
            Err(EditError::Store(e)) => Err(e),
            Err(e) => Err(StoreError::Corrupt(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;

    #[test]
    fn embedding_bytes_round_trip_and_reject_ragged_lengths() {
        let v = vec![0.5f32, -1.25, 3.0e-7];
        assert_eq!(embedding_from_bytes(&embedding_to_bytes(&v)).unwrap(), v);
        assert!(embedding_from_bytes(&[0, 1, 2]).is_err());
    }

    fn face(person: &str, hash: &str, first: f32) -> NewFace {
        NewFace {
            person: person.into(),
            content_hash: hash.into(),
            embedding: vec![first, 0.0, 1.0],
            bbox: [1.0, 2.0, 3.0, 4.0],
            crop: None,
        }
    }

    async fn exercise(store: Store) {
        assert_eq!(store.gallery_version().await.unwrap(), 0);
        let a = store.enroll_face(face("ada", "h1", 0.1)).await.unwrap();
        assert!(a.created);
        let again = store.enroll_face(face("ada", "h1", 0.9)).await.unwrap();
        assert_eq!(
            again,
            StoredFaceId {
                id: a.id,
                created: false
            }
        );
        // A repeated enrolment changes nothing, so the version moved once.
        assert_eq!(store.gallery_version().await.unwrap(), 1);
        let with_crop = NewFace {
            crop: Some(vec![0xff, 0xd8, 0x00, 0xff, 0xd9]),
            ..face("ada", "h2", 0.2)
        };
        let cropped = store.enroll_face(with_crop).await.unwrap();
        store.enroll_face(face("bob", "h1", 0.3)).await.unwrap();
        // Faces come back in enrolment order; the one enrolled without a crop has none.
        assert_eq!(
            store.person_faces("ada").await.unwrap(),
            Some(vec![
                FaceCrop {
                    id: a.id,
                    crop: None
                },
                FaceCrop {
                    id: cropped.id,
                    crop: Some(vec![0xff, 0xd8, 0x00, 0xff, 0xd9])
                },
            ])
        );
        assert_eq!(store.person_faces("nobody").await.unwrap(), None);
        let (version, rows) = store.gallery_faces().await.unwrap();
        assert_eq!(version, 3);
        let summary: Vec<(String, f32)> = rows
            .iter()
            .map(|r| (r.person.clone(), r.embedding[0]))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("ada".into(), 0.1),
                ("ada".into(), 0.2),
                ("bob".into(), 0.3)
            ]
        );
        assert_eq!(
            store.people().await.unwrap(),
            vec![
                PersonSummary {
                    name: "ada".into(),
                    face_count: 2
                },
                PersonSummary {
                    name: "bob".into(),
                    face_count: 1
                },
            ]
        );
        assert_eq!(store.remove_person("ada").await.unwrap(), Some(2));
        assert_eq!(store.remove_person("ada").await.unwrap(), None);
        assert_eq!(store.person_faces("ada").await.unwrap(), None);
        assert_eq!(store.gallery_version().await.unwrap(), 4);
        let (_, rows) = store.gallery_faces().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(store.people().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn gallery_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/gallery.db", dir.path().display());
        exercise(Store::open(&url, StoreOptions::default()).await.unwrap()).await;
    }

    #[tokio::test]
    async fn gallery_on_postgres() {
        let db = crate::testing::TestDatabase::create();
        exercise(Store::open(&db.url, StoreOptions::default()).await.unwrap()).await;
    }
}
