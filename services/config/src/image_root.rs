//! Confinement of client-supplied image paths to the configured image root.

use std::{
    io,
    path::{Component, Path, PathBuf},
};

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Empty, too long, with a NUL byte or a `..` component.
    #[error("invalid path: {0}")]
    Invalid(String),
    /// Absolute outside the root, or resolves (through a symlink) outside it.
    #[error("{0} is outside the image root")]
    OutsideRoot(String),
    /// No such file.
    #[error("{0} does not exist")]
    NotFound(String),
    /// A directory or other non-regular file.
    #[error("{0} is not a regular file")]
    NotAFile(String),
    /// Zero bytes.
    #[error("{0} is empty (0 bytes)")]
    Empty(String),
    /// Over the size limit.
    #[error("{path} is {size} bytes; the limit is {limit} bytes (FACEWIRE_MAX_IMAGE_BYTES)")]
    TooLarge {
        /// The path.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Could not be inspected.
    #[error("{path} cannot be read: {reason}")]
    Unreadable {
        /// The path.
        path: String,
        /// The OS error.
        reason: String,
    },
}

/// A file inside the image root that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedPath {
    /// The path relative to the root, normalised (no `.` components), as stored.
    pub relative: String,
    /// The resolved absolute path (symlinks followed) to open.
    pub resolved: PathBuf,
    /// Size in bytes.
    pub size: u64,
}

/// The directory images are read from; every path a client names must stay inside it.
#[derive(Debug, Clone)]
pub struct ImageRoot {
    root: PathBuf,
    max_bytes: u64,
}

const MAX_PATH_LEN: usize = 4096;

impl ImageRoot {
    /// Confines paths to `root` (which must exist), refusing files over `max_bytes`.
    pub fn new(root: impl AsRef<Path>, max_bytes: u64) -> io::Result<Self> {
        let root = root.as_ref().canonicalize().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("image root {}: {e}", root.as_ref().display()),
            )
        })?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("image root {} is not a directory", root.display()),
            ));
        }
        Ok(Self { root, max_bytes })
    }

    /// The canonical root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The size limit in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Checks a client-supplied path: not empty, no `..`, absolute only inside the root,
    /// no symlink leading outside, an existing non-empty regular file within the limit.
    pub fn check(&self, raw: &str) -> Result<CheckedPath, PathError> {
        if raw.trim().is_empty() {
            return Err(PathError::Invalid("path is empty".into()));
        }
        if raw.len() > MAX_PATH_LEN {
            return Err(PathError::Invalid(format!(
                "path is {} bytes; the limit is {MAX_PATH_LEN}",
                raw.len()
            )));
        }
        if raw.contains('\0') {
            return Err(PathError::Invalid("path contains a NUL byte".into()));
        }
        let given = Path::new(raw);
        if given.components().any(|c| c == Component::ParentDir) {
            return Err(PathError::Invalid(format!(
                "{raw}: '..' components are not allowed"
            )));
        }
        let relative: PathBuf = if given.is_absolute() {
            match given.strip_prefix(&self.root) {
                Ok(rel) => rel.to_path_buf(),
                Err(_) => return Err(PathError::OutsideRoot(raw.to_string())),
            }
        } else {
            given.to_path_buf()
        };
        let relative: PathBuf = relative
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        if relative.as_os_str().is_empty() {
            return Err(PathError::NotAFile(raw.to_string()));
        }
        let joined = self.root.join(&relative);
        let resolved = match joined.canonicalize() {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(PathError::NotFound(raw.to_string()))
            }
            Err(e) => {
                return Err(PathError::Unreadable {
                    path: raw.to_string(),
                    reason: e.to_string(),
                })
            }
        };
        if !resolved.starts_with(&self.root) {
            return Err(PathError::OutsideRoot(raw.to_string()));
        }
        let meta = std::fs::metadata(&resolved).map_err(|e| PathError::Unreadable {
            path: raw.to_string(),
            reason: e.to_string(),
        })?;
        if !meta.is_file() {
            return Err(PathError::NotAFile(raw.to_string()));
        }
        if meta.len() == 0 {
            return Err(PathError::Empty(raw.to_string()));
        }
        if meta.len() > self.max_bytes {
            return Err(PathError::TooLarge {
                path: raw.to_string(),
                size: meta.len(),
                limit: self.max_bytes,
            });
        }
        Ok(CheckedPath {
            relative: relative.to_string_lossy().into_owned(),
            resolved,
            size: meta.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, ImageRoot) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.jpg"), b"jpeg").unwrap();
        std::fs::write(dir.path().join("empty.jpg"), b"").unwrap();
        std::fs::write(dir.path().join("big.jpg"), vec![0u8; 100]).unwrap();
        let r = ImageRoot::new(dir.path(), 50).unwrap();
        (dir, r)
    }

    #[test]
    fn accepts_files_inside_root() {
        let (dir, r) = root();
        assert_eq!(r.check("sub/a.jpg").unwrap().relative, "sub/a.jpg");
        assert_eq!(r.check("./sub/./a.jpg").unwrap().relative, "sub/a.jpg");
        let abs = dir.path().canonicalize().unwrap().join("sub/a.jpg");
        assert_eq!(
            r.check(abs.to_str().unwrap()).unwrap().relative,
            "sub/a.jpg"
        );
    }

    #[test]
    fn refuses_escapes_and_bad_files() {
        let (dir, r) = root();
        assert!(matches!(r.check(""), Err(PathError::Invalid(_))));
        assert!(matches!(
            r.check("../../etc/passwd"),
            Err(PathError::Invalid(_))
        ));
        assert!(matches!(
            r.check("sub/../sub/a.jpg"),
            Err(PathError::Invalid(_))
        ));
        assert!(matches!(
            r.check("/etc/passwd"),
            Err(PathError::OutsideRoot(_))
        ));
        assert!(matches!(r.check("nope.jpg"), Err(PathError::NotFound(_))));
        assert!(matches!(r.check("sub"), Err(PathError::NotAFile(_))));
        assert!(matches!(r.check("."), Err(PathError::NotAFile(_))));
        assert!(matches!(r.check("empty.jpg"), Err(PathError::Empty(_))));
        assert!(matches!(
            r.check("big.jpg"),
            Err(PathError::TooLarge { size: 100, .. })
        ));
        assert!(matches!(r.check("a\0b"), Err(PathError::Invalid(_))));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link.jpg")).unwrap();
            assert!(matches!(
                r.check("link.jpg"),
                Err(PathError::OutsideRoot(_))
            ));
            std::os::unix::fs::symlink("sub/a.jpg", dir.path().join("inside.jpg")).unwrap();
            assert!(r.check("inside.jpg").is_ok());
        }
    }
}
