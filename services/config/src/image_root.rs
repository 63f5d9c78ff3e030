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
    /// Never blocks on a FIFO or a device (see [`ImageRoot::open`]); to read the file,
    /// use [`ImageRoot::open`], which hands over the very file it checked.
    pub fn check(&self, raw: &str) -> Result<CheckedPath, PathError> {
        self.open(raw).map(|(checked, _file)| checked)
    }

    /// Checks a client-supplied path like [`ImageRoot::check`] and opens it for reading.
    ///
    /// The checks apply to the file opened, not to whatever the path named a moment
    /// earlier: the file is opened first — without blocking (a FIFO would otherwise block
    /// `open()` until a writer came, for ever) and without following a symlink in its
    /// last component — and then the opened file is checked: its real path must still be
    /// inside the root, and it must be a non-empty regular file within the limit. So a
    /// file swapped for a FIFO, a device or a symlink after the path was resolved is
    /// refused rather than read.
    pub fn open(&self, raw: &str) -> Result<(CheckedPath, std::fs::File), PathError> {
        let (relative, resolved) = self.resolve(raw)?;
        let unreadable = |e: io::Error| PathError::Unreadable {
            path: raw.to_string(),
            reason: e.to_string(),
        };
        // Cheap early refusal of what is already no regular file (so that a device is
        // not even opened); the authoritative check is on the opened file below.
        let meta = std::fs::metadata(&resolved).map_err(unreadable)?;
        if !meta.is_file() {
            return Err(PathError::NotAFile(raw.to_string()));
        }
        let file = open_nonblocking(&resolved).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => PathError::NotFound(raw.to_string()),
            _ if is_symlink_refusal(&e) => PathError::Unreadable {
                path: raw.to_string(),
                reason: "it was replaced by a symlink while being opened".to_string(),
            },
            _ => unreadable(e),
        })?;
        if !self.opened_inside_root(&file) {
            return Err(PathError::OutsideRoot(raw.to_string()));
        }
        let meta = file.metadata().map_err(unreadable)?;
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
        let checked = CheckedPath {
            relative: relative.to_string_lossy().into_owned(),
            resolved,
            size: meta.len(),
        };
        Ok((checked, file))
    }

    /// The path relative to the root (normalised) and resolved (symlinks followed,
    /// inside the root), or why the path is refused.
    fn resolve(&self, raw: &str) -> Result<(PathBuf, PathBuf), PathError> {
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
        Ok((relative, resolved))
    }

    /// Whether the file actually opened is inside the root: a directory on the way may
    /// have been swapped for a symlink leading out after the path was resolved. Linux
    /// names an open file's real path in /proc; elsewhere the resolved path must do.
    fn opened_inside_root(&self, file: &std::fs::File) -> bool {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
                return real.starts_with(&self.root);
            }
        }
        let _ = file;
        true
    }
}

/// Opens `path` read-only without blocking (O_NONBLOCK: opening a FIFO returns at once
/// instead of waiting for a writer) and without following a symlink in the last
/// component (O_NOFOLLOW: the path was resolved already, so a symlink there now is a
/// swap). O_NONBLOCK has no effect on reading a regular file, the only kind kept.
fn open_nonblocking(path: &Path) -> io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOFOLLOW);
    }
    options.open(path)
}

/// Whether `open` failed because O_NOFOLLOW met a symlink.
fn is_symlink_refusal(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(nix::libc::ELOOP)
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
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

    #[cfg(unix)]
    #[test]
    fn refuses_a_fifo_without_blocking_and_reads_what_it_checked() {
        let (dir, r) = root();
        let status = std::process::Command::new("mkfifo")
            .arg(dir.path().join("pipe.jpg"))
            .status()
            .unwrap();
        assert!(status.success());
        assert!(matches!(r.check("pipe.jpg"), Err(PathError::NotAFile(_))));
        assert!(matches!(r.open("pipe.jpg"), Err(PathError::NotAFile(_))));
        let (checked, mut file) = r.open("sub/a.jpg").unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
        assert_eq!((checked.size, bytes.as_slice()), (4, &b"jpeg"[..]));
    }
}
