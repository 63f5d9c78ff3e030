//! Test support for code that opens files under an [`ImageRoot`](crate::ImageRoot): FIFOs
//! and a file swapped for a FIFO under the reader's feet (the race `ImageRoot::open`
//! closes). Enabled by the `testing` feature; used by the receiver's, the frontend's and
//! recognition's tests.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Lets any `open()` blocked on the FIFO `fifo` return (a writer arrives), so a test
/// that found a reader hung can still end.
pub fn release_readers(fifo: &Path) {
    let fifo = fifo.to_path_buf();
    std::thread::spawn(move || {
        for _ in 0..100 {
            let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
        }
    });
}

/// Swaps one name between a regular file and a FIFO as fast as `rename` allows, on a
/// thread of its own, until [`FifoSwap::stop`].
pub struct FifoSwap {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    fifo: PathBuf,
    _keep: tempfile::TempDir,
}

impl FifoSwap {
    /// Starts swapping `dir/name` between a file holding `contents` and a FIFO. The FIFO
    /// lives under a name of its own outside `dir`, so readers stuck on it can be let go.
    pub fn start(dir: &Path, name: &str, contents: &[u8]) -> Self {
        let keep = tempfile::tempdir().expect("a directory for the FIFO");
        let fifo = keep.path().join("keep.fifo");
        mkfifo(&fifo);
        let target = dir.join(name);
        std::fs::write(&target, contents).unwrap();
        let file = dir.join(".swap.file");
        std::fs::write(&file, contents).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, fifo, dir) = (stop.clone(), fifo.clone(), dir.to_path_buf());
            std::thread::spawn(move || {
                let (file_tmp, fifo_tmp) = (dir.join(".swap.file.tmp"), dir.join(".swap.fifo.tmp"));
                while !stop.load(Ordering::Relaxed) {
                    std::fs::hard_link(&file, &file_tmp).unwrap();
                    std::fs::rename(&file_tmp, &target).unwrap();
                    std::fs::hard_link(&fifo, &fifo_tmp).unwrap();
                    std::fs::rename(&fifo_tmp, &target).unwrap();
                }
            })
        };
        Self {
            stop,
            thread: Some(thread),
            fifo,
            _keep: keep,
        }
    }

    /// Stops swapping; when a reader `hung`, lets it go first.
    pub fn stop(mut self, hung: bool) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        if hung {
            release_readers(&self.fifo);
        }
    }
}

impl Drop for FifoSwap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
