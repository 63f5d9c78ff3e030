//! What grouping unknown faces into suggested people needs from the database: the faces
//! for a replica's vector index (all of them at start, then what changed), the writes of
//! the grouping writer (start a suggested person, add faces to one), the lease that makes
//! one process that writer, and the "same person?" suggestions a user declined.
//!
//! Every grouping write is conditional: it only takes faces that are still unassigned
//! and never puts a face into a person it was taken away from (`face_rejections`), so a
//! manual or enrolled assignment, or a concurrent edit, always wins.

use diesel::prelude::*;

use crate::{
    faces::Assigned,
    gallery::embedding_from_bytes,
    now_millis,
    schema::{face_rejections, faces, people},
    Store, StoreError,
};

diesel::table! {
    leases (name) {
        name -> Text,
        holder -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    merge_declines (person_a, person_b) {
        person_a -> BigInt,
        person_b -> BigInt,
        created_at -> BigInt,
    }
}

/// A face as a vector index holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedFace {
    /// Face id.
    pub id: i64,
    /// Its person, if any.
    pub person_id: Option<i64>,
    /// How it got that person.
    pub assigned: Option<Assigned>,
    /// The image it is in (none for an enrolment photo).
    pub image_id: Option<i64>,
    /// The shorter side of its box, in pixels (0 when unknown).
    pub size: f32,
    /// Detector confidence, when detected.
    pub detection_score: Option<f32>,
    /// Unit embedding.
    pub embedding: Vec<f32>,
    /// Last change, milliseconds since the epoch.
    pub updated_at: i64,
}

/// A person as grouping sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonState {
    /// Id.
    pub id: i64,
    /// Has a name (a suggestion has none).
    pub named: bool,
    /// Left off default lists.
    pub hidden: bool,
    /// Merged into another person (gone).
    pub merged: bool,
    /// Last change.
    pub updated_at: i64,
}

type FaceRow = (
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<f32>,
    Option<f32>,
    Option<f32>,
    Option<Vec<u8>>,
    i64,
);

type PersonStateRow = (i64, Option<String>, bool, Option<i64>, i64);

macro_rules! face_columns {
    () => {
        (
            faces::id,
            faces::person_id,
            faces::assigned,
            faces::image_id,
            faces::box_width,
            faces::box_height,
            faces::detection_score,
            faces::embedding,
            faces::updated_at,
        )
    };
}

fn indexed(rows: Vec<FaceRow>) -> Result<Vec<IndexedFace>, StoreError> {
    rows.into_iter()
        .map(
            |(id, person_id, assigned, image_id, w, h, score, bytes, updated_at)| {
                Ok(IndexedFace {
                    id,
                    person_id,
                    assigned: assigned.as_deref().map(Assigned::parse).transpose()?,
                    image_id,
                    size: w.unwrap_or(0.0).min(h.unwrap_or(0.0)).max(0.0),
                    detection_score: score,
                    embedding: embedding_from_bytes(bytes.as_deref().unwrap_or_default())?,
                    updated_at,
                })
            },
        )
        .collect()
}

impl Store {
    /// A page of faces with embeddings, by id after `after_id`: a replica builds its
    /// index from these at start.
    pub async fn index_faces(
        &self,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<IndexedFace>, StoreError> {
        with_conn!(self, |conn| {
            let rows: Vec<FaceRow> = faces::table
                .filter(faces::id.gt(after_id))
                .filter(faces::embedding.is_not_null())
                .order(faces::id.asc())
                .limit(limit)
                .select(face_columns!())
                .load(conn)?;
            indexed(rows)
        })
    }

    /// Faces changed after the cursor `(updated_at, id)`, in that order: new faces and
    /// new assignments, for a replica to follow.
    pub async fn faces_changed_since(
        &self,
        cursor: (i64, i64),
        limit: i64,
    ) -> Result<Vec<IndexedFace>, StoreError> {
        let (at, id) = cursor;
        with_conn!(self, |conn| {
            let rows: Vec<FaceRow> = faces::table
                .filter(
                    faces::updated_at
                        .gt(at)
                        .or(faces::updated_at.eq(at).and(faces::id.gt(id))),
                )
                .filter(faces::embedding.is_not_null())
                .order((faces::updated_at.asc(), faces::id.asc()))
                .limit(limit)
                .select(face_columns!())
                .load(conn)?;
            indexed(rows)
        })
    }

    /// Ids of faces with embeddings after `after_id` (ascending): a replica compares
    /// them with its index to drop faces deleted elsewhere.
    pub async fn face_ids(&self, after_id: i64, limit: i64) -> Result<Vec<i64>, StoreError> {
        with_conn!(self, |conn| {
            Ok(faces::table
                .filter(faces::id.gt(after_id))
                .filter(faces::embedding.is_not_null())
                .order(faces::id.asc())
                .limit(limit)
                .select(faces::id)
                .load(conn)?)
        })
    }

    /// People changed after `since` (all of them for 0).
    pub async fn person_states(&self, since: i64) -> Result<Vec<PersonState>, StoreError> {
        with_conn!(self, |conn| {
            let rows: Vec<PersonStateRow> = people::table
                .filter(people::updated_at.gt(since))
                .order(people::updated_at.asc())
                .select((
                    people::id,
                    people::name,
                    people::hidden,
                    people::merged_into,
                    people::updated_at,
                ))
                .load(conn)?;
            Ok(rows
                .into_iter()
                .map(|(id, name, hidden, merged, updated_at)| PersonState {
                    id,
                    named: name.is_some(),
                    hidden,
                    merged: merged.is_some(),
                    updated_at,
                })
                .collect())
        })
    }

    /// Starts a suggested (unnamed) person with those of `faces` (id, similarity) still
    /// unassigned, in one transaction. Returns the person and how many faces it got;
    /// `None` (and no person) when fewer than `min_faces` were still free.
    pub async fn start_suggested_person(
        &self,
        faces_in: Vec<(i64, f32)>,
        min_faces: usize,
    ) -> Result<Option<(i64, usize)>, StoreError> {
        with_conn!(self, |conn| {
            conn.transaction(|conn| {
                let now = now_millis();
                let ids: Vec<i64> = faces_in.iter().map(|f| f.0).collect();
                let free: Vec<i64> = faces::table
                    .filter(faces::id.eq_any(&ids))
                    .filter(faces::person_id.is_null())
                    .select(faces::id)
                    .load(conn)?;
                if free.len() < min_faces.max(1) {
                    return Ok(None);
                }
                let person: i64 = diesel::insert_into(people::table)
                    .values((
                        people::name.eq(None::<String>),
                        people::created_at.eq(now),
                        people::updated_at.eq(now),
                    ))
                    .returning(people::id)
                    .get_result(conn)?;
                let mut assigned = 0;
                for (face, similarity) in faces_in.iter().filter(|f| free.contains(&f.0)) {
                    assigned += diesel::update(
                        faces::table
                            .filter(faces::id.eq(face))
                            .filter(faces::person_id.is_null()),
                    )
                    .set((
                        faces::person_id.eq(person),
                        faces::assigned.eq(Assigned::Auto.as_str()),
                        faces::similarity.eq(similarity),
                        faces::updated_at.eq(now),
                    ))
                    .execute(conn)?;
                }
                Ok::<_, StoreError>(Some((person, assigned)))
            })
        })
    }

    /// Adds faces to people in one transaction: each (person, face, similarity) adds the
    /// face to the person if the face is still unassigned, was never taken away from that
    /// person, and the person is live (not merged away). Returns the faces added. Meant for
    /// batches of up to a few thousand (a grouping pass writes its joins that way).
    pub async fn group_many(&self, joins: Vec<(i64, i64, f32)>) -> Result<Vec<i64>, StoreError> {
        if joins.is_empty() {
            return Ok(Vec::new());
        }
        with_conn!(self, |conn| {
            conn.transaction(|conn| {
                let mut persons: Vec<i64> = joins.iter().map(|j| j.0).collect();
                persons.sort_unstable();
                persons.dedup();
                let live: std::collections::HashSet<i64> = people::table
                    .filter(people::id.eq_any(&persons))
                    .filter(people::merged_into.is_null())
                    .select(people::id)
                    .load::<i64>(conn)?
                    .into_iter()
                    .collect();
                let face_ids: Vec<i64> = joins.iter().map(|j| j.1).collect();
                let rejected: std::collections::HashSet<(i64, i64)> = face_rejections::table
                    .filter(face_rejections::face_id.eq_any(&face_ids))
                    .select((face_rejections::face_id, face_rejections::person_id))
                    .load::<(i64, i64)>(conn)?
                    .into_iter()
                    .collect();
                let now = now_millis();
                let mut added = Vec::new();
                for &(person, face, similarity) in &joins {
                    if !live.contains(&person) || rejected.contains(&(face, person)) {
                        continue;
                    }
                    let changed = diesel::update(
                        faces::table
                            .filter(faces::id.eq(face))
                            .filter(faces::person_id.is_null()),
                    )
                    .set((
                        faces::person_id.eq(person),
                        faces::assigned.eq(Assigned::Auto.as_str()),
                        faces::similarity.eq(similarity),
                        faces::updated_at.eq(now),
                    ))
                    .execute(conn)?;
                    if changed > 0 {
                        added.push(face);
                    }
                }
                Ok::<_, StoreError>(added)
            })
        })
    }

    /// The people each of `face_ids` was taken away from by hand (face, person).
    pub async fn rejections(&self, face_ids: Vec<i64>) -> Result<Vec<(i64, i64)>, StoreError> {
        with_conn!(self, |conn| {
            Ok(face_rejections::table
                .filter(face_rejections::face_id.eq_any(&face_ids))
                .select((face_rejections::face_id, face_rejections::person_id))
                .load(conn)?)
        })
    }

    /// Takes or renews the lease `name` for `holder` for `ttl_ms`: true when `holder`
    /// holds it now (it was free, expired, or already theirs).
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        with_conn!(self, |conn| {
            conn.transaction(|conn| {
                let now = now_millis();
                let taken = diesel::update(
                    leases::table
                        .filter(leases::name.eq(&name))
                        .filter(leases::holder.eq(&holder).or(leases::expires_at.lt(now))),
                )
                .set((
                    leases::holder.eq(&holder),
                    leases::expires_at.eq(now + ttl_ms),
                ))
                .execute(conn)?;
                if taken == 1 {
                    return Ok(true);
                }
                let inserted = diesel::insert_into(leases::table)
                    .values((
                        leases::name.eq(&name),
                        leases::holder.eq(&holder),
                        leases::expires_at.eq(now + ttl_ms),
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn)?;
                Ok::<_, StoreError>(inserted == 1)
            })
        })
    }

    /// Gives the lease up (a clean stop), so another process takes over at once.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        with_conn!(self, |conn| {
            diesel::delete(
                leases::table
                    .filter(leases::name.eq(&name))
                    .filter(leases::holder.eq(&holder)),
            )
            .execute(conn)?;
            Ok(())
        })
    }

    /// Remembers that the user said `a` and `b` are not the same person.
    pub async fn decline_merge(&self, a: i64, b: i64) -> Result<(), StoreError> {
        let (lo, hi) = (a.min(b), a.max(b));
        with_conn!(self, |conn| {
            diesel::insert_into(merge_declines::table)
                .values((
                    merge_declines::person_a.eq(lo),
                    merge_declines::person_b.eq(hi),
                    merge_declines::created_at.eq(now_millis()),
                ))
                .on_conflict_do_nothing()
                .execute(conn)?;
            Ok(())
        })
    }

    /// The people `person` was declined as a merge with.
    pub async fn declined_merges(&self, person: i64) -> Result<Vec<i64>, StoreError> {
        with_conn!(self, |conn| {
            let rows: Vec<(i64, i64)> = merge_declines::table
                .filter(
                    merge_declines::person_a
                        .eq(person)
                        .or(merge_declines::person_b.eq(person)),
                )
                .select((merge_declines::person_a, merge_declines::person_b))
                .load(conn)?;
            Ok(rows
                .into_iter()
                .map(|(a, b)| if a == person { b } else { a })
                .collect())
        })
    }
}
