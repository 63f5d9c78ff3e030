//! The in-memory gallery: every enrolled face embedding in one contiguous, row-major
//! matrix of unit vectors. Identifying a face is one matrix–vector product (cosine
//! similarities, since rows and query are unit length) and an arg-max — no loop over
//! people, no re-encoding of photos.

use crate::embed::{normalize, EMBEDDING_DIM};

/// One enrolled face, as loaded from storage.
#[derive(Debug, Clone, PartialEq)]
pub struct GalleryFace {
    /// Storage id of the face.
    pub face_id: i64,
    /// Storage id of its person.
    pub person_id: i64,
    /// The person it belongs to.
    pub person: String,
    /// Its embedding (normalised again on insertion, so any length is accepted).
    pub embedding: Vec<f32>,
}

/// The best gallery face for a query.
#[derive(Debug, Clone, PartialEq)]
pub struct BestMatch {
    /// The person whose face is most similar.
    pub person: String,
    /// That person's storage id.
    pub person_id: i64,
    /// Storage id of that face.
    pub face_id: i64,
    /// Cosine similarity in [-1, 1].
    pub similarity: f32,
}

/// An immutable snapshot of the enrolled faces.
#[derive(Debug, Clone, Default)]
pub struct Gallery {
    /// `len × EMBEDDING_DIM` unit vectors, row-major.
    matrix: Vec<f32>,
    /// For each row, an index into `people`.
    row_person: Vec<u32>,
    /// For each row, the storage id of the face.
    row_face: Vec<i64>,
    /// Distinct names.
    people: Vec<String>,
    /// Storage id of each of `people`.
    person_ids: Vec<i64>,
    /// The storage version this snapshot reflects.
    version: i64,
}

impl Gallery {
    /// Builds a snapshot from stored faces. Faces whose embedding is not
    /// [`EMBEDDING_DIM`] long are skipped (and counted in the returned number).
    pub fn build(faces: impl IntoIterator<Item = GalleryFace>, version: i64) -> (Self, usize) {
        let mut g = Gallery {
            version,
            ..Gallery::default()
        };
        let mut index = std::collections::HashMap::<i64, u32>::new();
        let mut skipped = 0;
        for face in faces {
            if face.embedding.len() != EMBEDDING_DIM {
                skipped += 1;
                continue;
            }
            let next = g.people.len() as u32;
            let person = *index.entry(face.person_id).or_insert_with(|| {
                g.people.push(face.person.clone());
                g.person_ids.push(face.person_id);
                next
            });
            let start = g.matrix.len();
            g.matrix.extend_from_slice(&face.embedding);
            normalize(&mut g.matrix[start..]);
            g.row_person.push(person);
            g.row_face.push(face.face_id);
        }
        (g, skipped)
    }

    /// Whether `person_id` has faces in the gallery (is a named person matching can find).
    pub fn has_person(&self, person_id: i64) -> bool {
        self.person_ids.contains(&person_id)
    }

    /// Number of faces.
    pub fn len(&self) -> usize {
        self.row_face.len()
    }

    /// Whether no face is enrolled.
    pub fn is_empty(&self) -> bool {
        self.row_face.is_empty()
    }

    /// Number of distinct people.
    pub fn people_count(&self) -> usize {
        self.people.len()
    }

    /// The storage version this snapshot reflects.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// Bytes held by the embedding matrix.
    pub fn matrix_bytes(&self) -> usize {
        self.matrix.len() * std::mem::size_of::<f32>()
    }

    /// The most similar enrolled face to the unit vector `query` (`None` when empty).
    pub fn best_match(&self, query: &[f32; EMBEDDING_DIM]) -> Option<BestMatch> {
        self.best_match_excluding(query, &[])
    }

    /// The most similar face whose person is not one of `excluded` (person ids): a
    /// face a user took away from someone is never matched to them again.
    pub fn best_match_excluding(
        &self,
        query: &[f32; EMBEDDING_DIM],
        excluded: &[i64],
    ) -> Option<BestMatch> {
        let mut best = (usize::MAX, f32::NEG_INFINITY);
        for (row, face) in self.matrix.chunks_exact(EMBEDDING_DIM).enumerate() {
            let s = dot(face, query);
            if s > best.1
                && (excluded.is_empty()
                    || !excluded.contains(&self.person_ids[self.row_person[row] as usize]))
            {
                best = (row, s);
            }
        }
        let (row, similarity) = best;
        (row != usize::MAX).then(|| {
            let person = self.row_person[row] as usize;
            BestMatch {
                person: self.people[person].clone(),
                person_id: self.person_ids[person],
                face_id: self.row_face[row],
                similarity: similarity.clamp(-1.0, 1.0),
            }
        })
    }
}

/// Dot product written as eight independent sums so the compiler vectorises it (a
/// single running sum is a serial dependency chain it may not reorder).
#[inline]
fn dot(a: &[f32], b: &[f32; EMBEDDING_DIM]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(i: usize, scale: f32) -> Vec<f32> {
        let mut v = vec![0.0; EMBEDDING_DIM];
        v[i] = scale;
        v
    }

    fn face(id: i64, person: &str, embedding: Vec<f32>) -> GalleryFace {
        GalleryFace {
            face_id: id,
            person_id: match person {
                "ada" => 1,
                "bob" => 2,
                _ => 3,
            },
            person: person.into(),
            embedding,
        }
    }

    #[test]
    fn empty_gallery_has_no_match() {
        let (g, _) = Gallery::build(Vec::new(), 0);
        assert!(g.best_match(&[0.0; EMBEDDING_DIM]).is_none());
    }

    #[test]
    fn finds_the_most_similar_face_and_its_person() {
        let mut near = axis(1, 1.0);
        near[2] = 0.2;
        let (g, skipped) = Gallery::build(
            vec![
                face(1, "ada", axis(0, 3.0)),
                face(2, "bob", near),
                face(3, "ada", axis(5, 1.0)),
                face(4, "bad", vec![1.0; 3]),
            ],
            7,
        );
        assert_eq!(
            (g.len(), g.people_count(), skipped, g.version()),
            (3, 2, 1, 7)
        );
        let mut q = [0.0; EMBEDDING_DIM];
        q[1] = 1.0;
        let m = g.best_match(&q).unwrap();
        assert_eq!((m.person.as_str(), m.face_id), ("bob", 2));
        assert!((m.similarity - 1.0 / 1.04f32.sqrt()).abs() < 1e-5);
        // Rows are normalised: a stored vector of length 3 still scores 1.
        q = [0.0; EMBEDDING_DIM];
        q[0] = 1.0;
        let m = g.best_match(&q).unwrap();
        assert_eq!(m.person, "ada");
        assert!((m.similarity - 1.0).abs() < 1e-6);
        // With ada excluded, the best face of anyone else.
        let m = g.best_match_excluding(&q, &[1]).unwrap();
        assert_eq!((m.person.as_str(), m.person_id), ("bob", 2));
        assert!(g.best_match_excluding(&q, &[1, 2]).is_none());
    }
}
