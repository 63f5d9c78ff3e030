//! People: named (enrolled or named by hand) or unnamed (suggested), made of faces.
//!
//! Edits bump the person's `version`; an update may quote the version it read, so two
//! clients editing the same person never lose an update silently. A merge moves faces
//! and empties the merged people without deleting them, and records exactly what it
//! moved, so it can be undone while nothing it touched has changed since.

use std::collections::HashMap;

use diesel::prelude::*;

use crate::{
    faces::{bump_gallery, live_person, EditError},
    now_millis,
    schema::{faces, gallery_version, merge_faces, merge_people, merges, people},
    Store, StoreError,
};

/// A person with their counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonRecord {
    /// Id.
    pub id: i64,
    /// Name; `None` for a suggested (unnamed) person.
    pub name: Option<String>,
    /// Left off default lists.
    pub hidden: bool,
    /// The face shown for them: the one set, or else their first face with a crop.
    pub feature_face_id: Option<i64>,
    /// Faces assigned to them.
    pub face_count: i64,
    /// Distinct submitted images those faces are in.
    pub image_count: i64,
    /// Bumped by every edit.
    pub version: i64,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Milliseconds since the epoch.
    pub updated_at: i64,
}

/// Which people to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PersonFilter {
    /// Everyone.
    #[default]
    All,
    /// People with a name.
    Named,
    /// People without a name.
    Suggested,
}

/// A change to a person; `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonUpdate {
    /// A new (already validated) name.
    pub name: Option<String>,
    /// Hide or unhide.
    pub hidden: Option<bool>,
    /// One of their faces to show for them.
    pub feature_face_id: Option<i64>,
    /// Apply only at this version.
    pub expected_version: Option<i64>,
}

/// What deleting a person did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Erased {
    /// Enrolment faces deleted (embeddings and crops gone).
    pub faces_erased: i64,
    /// Detected or drawn faces that lost the name.
    pub faces_unassigned: i64,
}

/// What a merge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merged {
    /// The merge's id, for undoing it.
    pub merge_id: i64,
    /// Faces moved.
    pub faces_moved: i64,
}

type PersonRow = (i64, Option<String>, bool, Option<i64>, i64, i64, i64);

macro_rules! person_columns {
    () => {
        (
            people::id,
            people::name,
            people::hidden,
            people::feature_face_id,
            people::version,
            people::created_at,
            people::updated_at,
        )
    };
}

/// Fills in counts and feature faces for `rows`, keeping their order.
macro_rules! with_counts {
    ($conn:expr, $rows:expr) => {{
        let rows: Vec<PersonRow> = $rows;
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let counts: Vec<(Option<i64>, i64, i64)> = faces::table
            .filter(faces::person_id.eq_any(&ids))
            .group_by(faces::person_id)
            .select((
                faces::person_id,
                diesel::dsl::count_star(),
                diesel::dsl::count(faces::image_id).aggregate_distinct(),
            ))
            .load($conn)?;
        let counts: HashMap<i64, (i64, i64)> = counts
            .into_iter()
            .filter_map(|(p, f, i)| p.map(|p| (p, (f, i))))
            .collect();
        let firsts: Vec<(Option<i64>, Option<i64>)> = faces::table
            .filter(faces::person_id.eq_any(&ids))
            .filter(faces::crop.is_not_null())
            .group_by(faces::person_id)
            .select((faces::person_id, diesel::dsl::min(faces::id)))
            .load($conn)?;
        let firsts: HashMap<i64, i64> = firsts
            .into_iter()
            .filter_map(|(p, f)| Some((p?, f?)))
            .collect();
        rows.into_iter()
            .map(
                |(id, name, hidden, feature, version, created_at, updated_at)| {
                    let (face_count, image_count) = counts.get(&id).copied().unwrap_or((0, 0));
                    PersonRecord {
                        id,
                        name,
                        hidden,
                        feature_face_id: feature.or_else(|| firsts.get(&id).copied()),
                        face_count,
                        image_count,
                        version,
                        created_at,
                        updated_at,
                    }
                },
            )
            .collect::<Vec<PersonRecord>>()
    }};
}

impl Store {
    /// People, named ones first by name, then unnamed ones by id; merged-away people
    /// never, hidden ones only when asked. `offset`/`limit` page through the list.
    pub async fn list_persons(
        &self,
        filter: PersonFilter,
        include_hidden: bool,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<PersonRecord>, StoreError> {
        self.list_persons_min(filter, include_hidden, 0, offset, limit)
            .await
    }

    /// Like [`Store::list_persons`], leaving out suggested (unnamed) people with fewer
    /// than `min_faces` faces: one-off strangers do not flood the list.
    pub async fn list_persons_min(
        &self,
        filter: PersonFilter,
        include_hidden: bool,
        min_faces: i64,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<PersonRecord>, StoreError> {
        with_conn!(self, |conn| {
            let mut q = people::table
                .filter(people::merged_into.is_null())
                .select(person_columns!())
                .into_boxed();
            if !include_hidden {
                q = q.filter(people::hidden.eq(false));
            }
            if min_faces > 1 {
                let big_enough = faces::table
                    .filter(faces::person_id.is_not_null())
                    .group_by(faces::person_id)
                    .having(diesel::dsl::count_star().ge(min_faces))
                    .select(faces::person_id);
                q = q.filter(
                    people::name
                        .is_not_null()
                        .or(people::id.nullable().eq_any(big_enough)),
                );
            }
            q = match filter {
                PersonFilter::All => q,
                PersonFilter::Named => q.filter(people::name.is_not_null()),
                PersonFilter::Suggested => q.filter(people::name.is_null()),
            };
            // NULL names sort last on both backends with this two-key order.
            let rows: Vec<PersonRow> = q
                .order((
                    people::name.is_null().asc(),
                    people::name.asc(),
                    people::id.asc(),
                ))
                .offset(offset)
                .limit(limit)
                .load(conn)?;
            Ok(with_counts!(conn, rows))
        })
    }

    /// One live person by id.
    pub async fn person(&self, id: i64) -> Result<Option<PersonRecord>, StoreError> {
        with_conn!(self, |conn| {
            let rows: Vec<PersonRow> = people::table
                .filter(people::id.eq(id))
                .filter(people::merged_into.is_null())
                .select(person_columns!())
                .load(conn)?;
            Ok(with_counts!(conn, rows).into_iter().next())
        })
    }

    /// One person by name, normalised as names are when given
    /// ([`crate::names::normalize_name`]): "John " finds "John". Names stored before
    /// normalisation existed are not rewritten, so the name as given (trimmed) is tried
    /// too, after the normalised one.
    pub async fn person_by_name(&self, name: &str) -> Result<Option<PersonRecord>, StoreError> {
        let normalized = crate::names::normalize_name(name).ok();
        let mut candidates: Vec<String> = normalized.iter().cloned().collect();
        if !candidates.iter().any(|c| c == name.trim()) {
            candidates.push(name.trim().to_string());
        }
        with_conn!(self, |conn| {
            let mut rows: Vec<PersonRow> = people::table
                .filter(people::name.eq_any(&candidates))
                .select(person_columns!())
                .load(conn)?;
            // Names are unique, so at most one row per candidate: the normalised first.
            rows.sort_by_key(|r| r.1 != normalized);
            rows.truncate(1);
            Ok(with_counts!(conn, rows).into_iter().next())
        })
    }

    /// The id of the person named `name` (already validated), created when new.
    /// Returns the id and whether it was created.
    pub async fn person_for_name(&self, name: &str) -> Result<(i64, bool), StoreError> {
        let name = name.to_string();
        with_conn!(self, |conn| {
            conn.transaction(|conn| {
                let now = now_millis();
                let created = diesel::insert_into(people::table)
                    .values((
                        people::name.eq(&name),
                        people::created_at.eq(now),
                        people::updated_at.eq(now),
                    ))
                    .on_conflict(people::name)
                    .do_nothing()
                    .execute(conn)?
                    == 1;
                let id = people::table
                    .filter(people::name.eq(&name))
                    .select(people::id)
                    .first(conn)?;
                Ok::<_, StoreError>((id, created))
            })
        })
    }

    /// Creates an unnamed (suggested) person.
    pub async fn create_unnamed_person(&self) -> Result<i64, StoreError> {
        with_conn!(self, |conn| {
            let now = now_millis();
            Ok(diesel::insert_into(people::table)
                .values((
                    people::name.eq(None::<String>),
                    people::created_at.eq(now),
                    people::updated_at.eq(now),
                ))
                .returning(people::id)
                .get_result(conn)?)
        })
    }

    /// Renames, hides / unhides, or sets the feature face of a person, in one
    /// conditional update (see [`PersonUpdate::expected_version`]).
    pub async fn update_person(
        &self,
        id: i64,
        update: PersonUpdate,
    ) -> Result<PersonRecord, EditError> {
        let store = self.clone();
        let result: Result<(), EditError> = with_conn!(self, |conn| {
            conn.transaction(|conn| {
                let now = now_millis();
                // A write first so SQLite takes its write lock at once.
                diesel::update(people::table.filter(people::id.eq(id)))
                    .set(people::updated_at.eq(now))
                    .execute(conn)?;
                live_person!(conn, id)?;
                let version: i64 = people::table.find(id).select(people::version).first(conn)?;
                if let Some(expected) = update.expected_version {
                    if expected != version {
                        return Err(EditError::Stale(format!(
                            "person {id} changed since it was read (version {version}, not \
                             {expected}): reload and try again"
                        )));
                    }
                }
                if let Some(name) = &update.name {
                    let holder: Option<i64> = people::table
                        .filter(people::name.eq(name))
                        .filter(people::id.ne(id))
                        .select(people::id)
                        .first(conn)
                        .optional()?;
                    if let Some(other) = holder {
                        return Err(EditError::Conflict(format!(
                            "{name:?} is already the name of person {other}: merge them instead"
                        )));
                    }
                    let was_suggested: bool = people::table
                        .find(id)
                        .select(people::name.is_null())
                        .first(conn)?;
                    diesel::update(people::table.filter(people::id.eq(id)))
                        .set(people::name.eq(name))
                        .execute(conn)?;
                    // Naming a suggested person confirms its faces: grouping put them
                    // together and a person named the group, so they are that person's
                    // faces from now on (in the gallery; no re-match moves them).
                    if was_suggested {
                        diesel::update(
                            faces::table
                                .filter(faces::person_id.eq(id))
                                .filter(faces::assigned.eq("auto")),
                        )
                        .set((faces::assigned.eq("manual"), faces::updated_at.eq(now)))
                        .execute(conn)?;
                    }
                }
                if let Some(hidden) = update.hidden {
                    diesel::update(people::table.filter(people::id.eq(id)))
                        .set(people::hidden.eq(hidden))
                        .execute(conn)?;
                }
                if let Some(face) = update.feature_face_id {
                    let owner: Option<Option<i64>> = faces::table
                        .find(face)
                        .select(faces::person_id)
                        .first(conn)
                        .optional()?;
                    if owner != Some(Some(id)) {
                        return Err(EditError::Invalid(format!(
                            "face {face} is not one of person {id}'s faces"
                        )));
                    }
                    diesel::update(people::table.filter(people::id.eq(id)))
                        .set(people::feature_face_id.eq(face))
                        .execute(conn)?;
                }
                diesel::update(people::table.filter(people::id.eq(id)))
                    .set(people::version.eq(version + 1))
                    .execute(conn)?;
                if update.name.is_some() {
                    bump_gallery!(conn)?;
                }
                Ok(())
            })
        });
        result?;
        store.person(id).await?.ok_or(EditError::NoPerson(id))
    }

    /// Erases a person: their enrolment faces (embeddings and crops) are deleted, their
    /// other faces lose the name, and the person is gone. The photos stay.
    pub async fn delete_person(&self, id: i64) -> Result<Erased, EditError> {
        with_conn!(self, |conn| {
            conn.transaction(|conn| {
                let now = now_millis();
                let faces_erased = diesel::delete(
                    faces::table
                        .filter(faces::person_id.eq(id))
                        .filter(faces::source.eq("enrolled")),
                )
                .execute(conn)? as i64;
                live_person!(conn, id)?;
                let faces_unassigned = diesel::update(faces::table.filter(faces::person_id.eq(id)))
                    .set((
                        faces::person_id.eq(None::<i64>),
                        faces::assigned.eq(None::<&str>),
                        faces::similarity.eq(None::<f32>),
                        faces::updated_at.eq(now),
                    ))
                    .execute(conn)? as i64;
                // People merged into this one go with it: their faces are unassigned now.
                diesel::delete(people::table.filter(people::merged_into.eq(id))).execute(conn)?;
                diesel::delete(people::table.filter(people::id.eq(id))).execute(conn)?;
                bump_gallery!(conn)?;
                Ok(Erased {
                    faces_erased,
                    faces_unassigned,
                })
            })
        })
    }

    /// Merges `from` people into `into`: their faces move, they are emptied and marked
    /// merged. `into` keeps its name, or takes the first merged person's name when it had
    /// none. Recorded for [`Store::undo_merge`].
    pub async fn merge_people(&self, into: i64, from: Vec<i64>) -> Result<Merged, EditError> {
        if from.is_empty() {
            return Err(EditError::Invalid(
                "name at least one person to merge".into(),
            ));
        }
        if from.contains(&into) {
            return Err(EditError::Invalid(format!(
                "person {into} cannot be merged into themselves"
            )));
        }
        let mut distinct = from.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != from.len() {
            return Err(EditError::Invalid(
                "a person is named twice in the merge".into(),
            ));
        }
        with_conn!(self, |conn| {
            conn.transaction(|conn| {
                let now = now_millis();
                diesel::update(people::table.filter(people::id.eq(into)))
                    .set((
                        people::updated_at.eq(now),
                        people::version.eq(people::version + 1i64),
                    ))
                    .execute(conn)?;
                live_person!(conn, into)?;
                let into_name: Option<String> =
                    people::table.find(into).select(people::name).first(conn)?;
                let merge_id: i64 = diesel::insert_into(merges::table)
                    .values((
                        merges::into_person_id.eq(into),
                        merges::into_name.eq(&into_name),
                        merges::created_at.eq(now),
                    ))
                    .returning(merges::id)
                    .get_result(conn)?;
                let mut faces_moved = 0;
                let mut adopted: Option<String> = None;
                for &pid in &from {
                    live_person!(conn, pid)?;
                    let (name, hidden, feature): (Option<String>, bool, Option<i64>) =
                        people::table
                            .find(pid)
                            .select((people::name, people::hidden, people::feature_face_id))
                            .first(conn)?;
                    diesel::insert_into(merge_people::table)
                        .values((
                            merge_people::merge_id.eq(merge_id),
                            merge_people::person_id.eq(pid),
                            merge_people::name.eq(&name),
                            merge_people::hidden.eq(hidden),
                            merge_people::feature_face_id.eq(feature),
                        ))
                        .execute(conn)?;
                    let moved: Vec<i64> = faces::table
                        .filter(faces::person_id.eq(pid))
                        .select(faces::id)
                        .load(conn)?;
                    for face in &moved {
                        diesel::insert_into(merge_faces::table)
                            .values((
                                merge_faces::merge_id.eq(merge_id),
                                merge_faces::face_id.eq(face),
                                merge_faces::from_person_id.eq(pid),
                                merge_faces::moved_at.eq(now),
                            ))
                            .execute(conn)?;
                    }
                    faces_moved += diesel::update(faces::table.filter(faces::person_id.eq(pid)))
                        .set((faces::person_id.eq(into), faces::updated_at.eq(now)))
                        .execute(conn)? as i64;
                    diesel::update(people::table.filter(people::id.eq(pid)))
                        .set((
                            people::name.eq(None::<String>),
                            people::feature_face_id.eq(None::<i64>),
                            people::merged_into.eq(into),
                            people::version.eq(people::version + 1i64),
                            people::updated_at.eq(now),
                        ))
                        .execute(conn)?;
                    if adopted.is_none() {
                        adopted = name;
                    }
                }
                if into_name.is_none() {
                    if let Some(name) = adopted {
                        diesel::update(people::table.filter(people::id.eq(into)))
                            .set(people::name.eq(name))
                            .execute(conn)?;
                    }
                }
                bump_gallery!(conn)?;
                Ok(Merged {
                    merge_id,
                    faces_moved,
                })
            })
        })
    }

    /// Undoes a merge exactly: the merged people come back with their names, hidden
    /// flags, feature faces and exactly the faces the merge moved. Refused (a conflict)
    /// when it was undone already, or when anything it touched changed since: a moved
    /// face edited or gone, a merged person reused, `into` merged or deleted.
    /// Returns the ids of `into` and the restored people.
    pub async fn undo_merge(&self, merge_id: i64) -> Result<Vec<i64>, EditError> {
        with_conn!(self, |conn| {
            conn.transaction(|conn| {
                let now = now_millis();
                let updated = diesel::update(
                    merges::table
                        .filter(merges::id.eq(merge_id))
                        .filter(merges::undone_at.is_null()),
                )
                .set(merges::undone_at.eq(now))
                .execute(conn)?;
                let merge: Option<(i64, Option<String>, Option<i64>)> = merges::table
                    .find(merge_id)
                    .select((merges::into_person_id, merges::into_name, merges::undone_at))
                    .first(conn)
                    .optional()?;
                let Some((into, into_name, _)) = merge else {
                    return Err(EditError::Invalid(format!("no merge with id {merge_id}")));
                };
                if updated == 0 {
                    return Err(EditError::Conflict(format!(
                        "merge {merge_id} was undone already"
                    )));
                }
                live_person!(conn, into).map_err(|_| {
                    EditError::Conflict(format!(
                        "person {into} was merged or deleted since merge {merge_id}"
                    ))
                })?;
                let restored: Vec<(i64, Option<String>, bool, Option<i64>)> = merge_people::table
                    .filter(merge_people::merge_id.eq(merge_id))
                    .select((
                        merge_people::person_id,
                        merge_people::name,
                        merge_people::hidden,
                        merge_people::feature_face_id,
                    ))
                    .load(conn)?;
                let moved: Vec<(i64, i64, i64)> = merge_faces::table
                    .filter(merge_faces::merge_id.eq(merge_id))
                    .select((
                        merge_faces::face_id,
                        merge_faces::from_person_id,
                        merge_faces::moved_at,
                    ))
                    .load(conn)?;
                for (face, _, moved_at) in &moved {
                    let now_at: Option<(Option<i64>, i64)> = faces::table
                        .find(face)
                        .select((faces::person_id, faces::updated_at))
                        .first(conn)
                        .optional()?;
                    if now_at != Some((Some(into), *moved_at)) {
                        return Err(EditError::Conflict(format!(
                            "face {face} moved by merge {merge_id} was edited since; \
                             the merge can no longer be undone exactly"
                        )));
                    }
                }
                for (pid, _, _, _) in &restored {
                    let merged_into: Option<Option<i64>> = people::table
                        .find(pid)
                        .select(people::merged_into)
                        .first(conn)
                        .optional()?;
                    if merged_into != Some(Some(into)) {
                        return Err(EditError::Conflict(format!(
                            "person {pid} changed since merge {merge_id}"
                        )));
                    }
                }
                diesel::update(people::table.filter(people::id.eq(into)))
                    .set((
                        people::name.eq(&into_name),
                        people::version.eq(people::version + 1i64),
                        people::updated_at.eq(now),
                    ))
                    .execute(conn)?;
                for (pid, name, hidden, feature) in &restored {
                    if let Some(name) = name {
                        let holder: Option<i64> = people::table
                            .filter(people::name.eq(name))
                            .select(people::id)
                            .first(conn)
                            .optional()?;
                        if let Some(other) = holder {
                            return Err(EditError::Conflict(format!(
                                "{name:?} is now the name of person {other}; rename them first"
                            )));
                        }
                    }
                    diesel::update(people::table.filter(people::id.eq(pid)))
                        .set((
                            people::name.eq(name),
                            people::hidden.eq(hidden),
                            people::feature_face_id.eq(feature),
                            people::merged_into.eq(None::<i64>),
                            people::version.eq(people::version + 1i64),
                            people::updated_at.eq(now),
                        ))
                        .execute(conn)?;
                }
                for (face, from, _) in &moved {
                    diesel::update(faces::table.filter(faces::id.eq(face)))
                        .set((faces::person_id.eq(from), faces::updated_at.eq(now)))
                        .execute(conn)?;
                }
                bump_gallery!(conn)?;
                let mut ids = vec![into];
                ids.extend(restored.iter().map(|r| r.0));
                Ok(ids)
            })
        })
    }
}
