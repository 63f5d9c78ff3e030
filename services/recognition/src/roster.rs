//! [`Roster`]: the gallery of enrolled people, stored in the database and mirrored in
//! the [`Recognizer`]'s in-memory matrix. Used by the gRPC service and by the CLI's
//! embedded mode alike.
//!
//! Replicas share the database; each polls the gallery version (a single-row read) and
//! reloads its matrix when another replica enrolled or forgot someone. A replica's own
//! changes are reloaded at once, so it reads its writes.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use facewire_server::CancellationToken;
use facewire_storage::{
    gallery::{FaceCrop, NewFace, PersonSummary},
    Store, StoreError,
};
use sha2::{Digest, Sha256};

use crate::{GalleryFace, ImageError, RecognizedFace, Recognizer};

/// Errors of gallery operations as a whole (per-image problems are [`ImageError`]s in
/// the per-image results instead).
#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    /// The person's name is not acceptable.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong and what is allowed.
        reason: facewire_storage::names::NameError,
    },
    /// Nobody by that name is enrolled.
    #[error("nobody named {0:?} is enrolled")]
    UnknownPerson(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking task died.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Longest accepted name, in characters.
pub use facewire_storage::names::MAX_NAME_CHARS;

/// Checks and normalises a person's name ([`facewire_storage::names::normalize_name`]:
/// NFKC, trimmed, inner white space collapsed; 1–100 letters, digits, spaces, `-`, `_`,
/// `.`, `'`, not starting with `.`, letters of one script), so it is safe as a file
/// name and in logs and never a look-alike of another name. Returns the normalised name.
pub fn validate_name(name: &str) -> Result<String, RosterError> {
    facewire_storage::names::normalize_name(name).map_err(|reason| RosterError::InvalidName {
        name: name.to_string(),
        reason,
    })
}

/// A face stored by [`Roster::enroll`].
#[derive(Debug, Clone, PartialEq)]
pub struct EnrolledFace {
    /// Storage id.
    pub id: i64,
    /// Hex SHA-256 of the image.
    pub content_hash: String,
    /// The face's box in the image: left, top, width, height.
    pub bbox: [f32; 4],
    /// False when this image was already enrolled for this person.
    pub created: bool,
}

/// The outcome of enrolling one image.
pub type EnrollResult = Result<EnrolledFace, ImageError>;

/// What a known-people directory contributed at start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BootstrapReport {
    /// Faces newly stored.
    pub enrolled: usize,
    /// Photos already enrolled (same content).
    pub unchanged: usize,
    /// Photos that could not be used, with why.
    pub rejected: Vec<(PathBuf, String)>,
}

/// The person a known-people file is of, by the tutorial's convention
/// `<name>_<n>.<ext>` (or `<name>.<ext>`): `hannibal_2.jpg` → `hannibal`.
pub fn person_from_file_name(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    let name = match stem.rsplit_once('_') {
        Some((name, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => name,
        _ => stem,
    };
    Some(name.to_string())
}

/// The gallery: database truth plus the recognizer's in-memory copy.
#[derive(Debug)]
pub struct Roster {
    recognizer: Arc<Recognizer>,
    store: Store,
    // Serialises reloads so two concurrent refreshes do not both rebuild the matrix; holds
    // each gallery face's row change time as of the embedding read (see `reload`).
    reload: tokio::sync::Mutex<HashMap<i64, i64>>,
}

/// What a gallery reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Faces in the gallery now.
    pub faces: usize,
    /// Embeddings read from the database (every face at start; afterwards only faces new
    /// to the gallery or changed since the last reload).
    pub embeddings_read: usize,
}

impl Roster {
    /// Loads the stored gallery into `recognizer`.
    pub async fn open(recognizer: Arc<Recognizer>, store: Store) -> Result<Self, RosterError> {
        let roster = Self {
            recognizer,
            store,
            reload: tokio::sync::Mutex::new(HashMap::new()),
        };
        roster.reload().await?;
        Ok(roster)
    }

    /// The recognizer, with the current gallery.
    pub fn recognizer(&self) -> &Arc<Recognizer> {
        &self.recognizer
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reloads the gallery from the database if its version changed; returns whether it did.
    pub async fn refresh(&self) -> Result<bool, RosterError> {
        let version = self.store.gallery_version().await?;
        if version == self.recognizer.gallery().version() {
            return Ok(false);
        }
        self.reload().await?;
        Ok(true)
    }

    /// Brings the gallery in step with the database. It lists the gallery's faces without
    /// their embeddings (ids, people, names, change times: tens of bytes a face) and reads
    /// embeddings only of faces it does not hold or whose row changed since its
    /// embedding was read (a change time other than the one recorded then: no clock
    /// comparison, so a row committed late is not missed); renames, re-assignments and
    /// removals need no embedding at all. At start, every embedding is read once.
    pub async fn reload(&self) -> Result<ReloadReport, RosterError> {
        let mut read_at = self.reload.lock().await;
        let (version, members) = self.store.gallery_members().await?;
        let gallery = self.recognizer.gallery();
        let wanted: Vec<i64> = members
            .iter()
            .filter(|m| {
                (!gallery.contains(m.face_id) || read_at.get(&m.face_id) != Some(&m.updated_at))
                    && !gallery.borrows(m.face_id)
            })
            .map(|m| m.face_id)
            .collect();
        let mut embeddings: HashMap<i64, Vec<f32>> = self
            .store
            .face_embeddings(wanted)
            .await?
            .into_iter()
            .collect();
        let embeddings_read = embeddings.len();
        let changed_at: HashMap<i64, i64> =
            members.iter().map(|m| (m.face_id, m.updated_at)).collect();
        let rows: Vec<GalleryFace> = members
            .into_iter()
            .map(|m| GalleryFace {
                embedding: embeddings.remove(&m.face_id).unwrap_or_default(),
                face_id: m.face_id,
                person_id: m.person_id,
                person: m.person,
            })
            .collect();
        let recognizer = self.recognizer.clone();
        // The index moves only the faces that differ (the first load builds it in bulk,
        // minutes at a million faces): keep it off the async threads.
        let faces = tokio::task::spawn_blocking(move || {
            let gallery = recognizer.gallery();
            let report = gallery.sync(rows, version);
            if report.skipped > 0 {
                tracing::warn!(
                    skipped = report.skipped,
                    "gallery faces with an unusable embedding ignored"
                );
            }
            tracing::info!(
                version,
                faces = gallery.len(),
                people = gallery.people_count(),
                added = report.added,
                reembedded = report.reembedded,
                moved = report.moved,
                removed = report.removed,
                embeddings_read,
                "gallery in step"
            );
            gallery.len()
        })
        .await
        .map_err(|e| RosterError::Internal(e.to_string()))?;
        *read_at = changed_at;
        Ok(ReloadReport {
            faces,
            embeddings_read,
        })
    }

    /// Polls the gallery version every `interval` until `shutdown`, reloading on change,
    /// so enrolments made through other replicas become visible here.
    pub async fn watch(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if let Err(e) = self.refresh().await {
                tracing::warn!("gallery refresh failed (will retry): {e}");
            }
        }
    }

    /// Finds every face in an image and names the enrolled ones.
    pub async fn recognize(&self, image: Vec<u8>) -> Result<Vec<RecognizedFace>, ImageError> {
        let recognizer = self.recognizer.clone();
        tokio::task::spawn_blocking(move || recognizer.recognize(&image))
            .await
            .unwrap_or_else(|e| Err(ImageError::Analysis(format!("analysis task failed: {e}"))))
    }

    /// Enrols `images` as `name`, one result per image in order. Each image must hold
    /// exactly one face. The name is checked first; a bad name fails the whole request.
    pub async fn enroll(
        &self,
        name: &str,
        images: Vec<Vec<u8>>,
    ) -> Result<Vec<EnrollResult>, RosterError> {
        let name = validate_name(name)?;
        let analyses = futures::future::join_all(images.into_iter().map(|bytes| {
            let recognizer = self.recognizer.clone();
            tokio::task::spawn_blocking(move || {
                let hash = hex::encode(Sha256::digest(&bytes));
                recognizer.enrolment_face(&bytes).map(|face| (hash, face))
            })
        }))
        .await;
        let mut results = Vec::with_capacity(analyses.len());
        let mut changed = false;
        for analysis in analyses {
            let analysis = analysis.unwrap_or_else(|e| {
                Err(ImageError::Analysis(format!("analysis task failed: {e}")))
            });
            let result = match analysis {
                Ok((content_hash, face)) => {
                    let stored = self
                        .store
                        .enroll_face(NewFace {
                            person: name.clone(),
                            content_hash: content_hash.clone(),
                            embedding: face.embedding.to_vec(),
                            bbox: face.detection.bbox,
                            crop: Some(face.crop_jpeg),
                        })
                        .await?;
                    changed |= stored.created;
                    Ok(EnrolledFace {
                        id: stored.id,
                        content_hash,
                        bbox: face.detection.bbox,
                        created: stored.created,
                    })
                }
                Err(e) => Err(e),
            };
            results.push(result);
        }
        if changed {
            self.refresh().await?;
        }
        Ok(results)
    }

    /// Enrolled people and their face counts, by name.
    pub async fn people(&self) -> Result<Vec<PersonSummary>, RosterError> {
        Ok(self.store.people().await?)
    }

    /// A person's enrolled faces with their crops, oldest first.
    pub async fn faces(&self, name: &str) -> Result<Vec<FaceCrop>, RosterError> {
        self.store
            .person_faces(name.trim())
            .await?
            .ok_or_else(|| RosterError::UnknownPerson(name.to_string()))
    }

    /// Forgets a person; returns how many faces were removed.
    pub async fn forget(&self, name: &str) -> Result<i64, RosterError> {
        let removed = self
            .store
            .remove_person(name.trim())
            .await?
            .ok_or_else(|| RosterError::UnknownPerson(name.to_string()))?;
        self.refresh().await?;
        Ok(removed)
    }

    /// Enrols every image of a known-people directory (`<name>_<n>.jpg`), skipping
    /// photos already enrolled. Files that are not images, or hold no or several faces,
    /// are reported and skipped: one bad photo does not stop the service.
    pub async fn enroll_directory(&self, dir: &Path) -> Result<BootstrapReport, RosterError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| RosterError::Internal(format!("cannot read {}: {e}", dir.display())))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let mut report = BootstrapReport::default();
        for path in files {
            let Some(person) = person_from_file_name(&path) else {
                report
                    .rejected
                    .push((path, "file name is not valid UTF-8".into()));
                continue;
            };
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    report.rejected.push((path, e.to_string()));
                    continue;
                }
            };
            match self.enroll(&person, vec![bytes]).await {
                Ok(mut results) => match results.pop() {
                    Some(Ok(face)) if face.created => report.enrolled += 1,
                    Some(Ok(_)) => report.unchanged += 1,
                    Some(Err(e)) => report.rejected.push((path, e.to_string())),
                    None => {}
                },
                Err(RosterError::InvalidName { name, reason }) => report
                    .rejected
                    .push((path, format!("invalid name {name:?}: {reason}"))),
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(validate_name("  Ada Lovelace ").unwrap(), "Ada Lovelace");
        assert!(validate_name("Zoë O'Neil-Smith_2.0").is_ok());
        for bad in [
            "",
            "   ",
            "../etc/passwd",
            "a/b",
            "a\\b",
            ".hidden",
            "tab\there",
            "nul\0",
        ] {
            assert!(
                matches!(validate_name(bad), Err(RosterError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
        assert!(validate_name(&"x".repeat(101)).is_err());
        assert!(validate_name(&"x".repeat(100)).is_ok());
        // Look-alike letters from another script are a different name: refused.
        assert!(matches!(
            validate_name("J\u{43e}hn"),
            Err(RosterError::InvalidName {
                reason: facewire_storage::names::NameError::MixedScripts,
                ..
            })
        ));
        assert_eq!(validate_name("John  Smith ").unwrap(), "John Smith");
    }

    #[test]
    fn tutorial_file_names_give_people() {
        let p = |s: &str| person_from_file_name(Path::new(s));
        assert_eq!(p("known/hannibal_1.jpg").as_deref(), Some("hannibal"));
        assert_eq!(p("known/john_doe_12.png").as_deref(), Some("john_doe"));
        assert_eq!(p("known/mary.jpg").as_deref(), Some("mary"));
        assert_eq!(p("known/mary_x.jpg").as_deref(), Some("mary_x"));
    }
}
