//! The inference engines that run the two networks, and where their files are found.
//!
//! Both networks are "one NCHW f32 tensor in, named f32 tensors out"; a [`Network`] runs
//! one on either engine:
//! - **ONNX Runtime** (the default when present): the shared library of the PyPI
//!   `onnxruntime` wheel, loaded at run time by the `ort` crate, running the model files
//!   `scripts/prepare-models.py` derives at setup (YuNet with a dynamic input size, SFace
//!   without initializers listed as inputs);
//! - **OpenCV's dnn module**, on the original model files: the fallback, and the baseline
//!   the benchmark prints beside it.
//!
//! OpenCV still decodes, resizes and aligns in both cases.
//!
//! Model files are found without configuration: an explicit `--model-dir` is the only
//! place looked in; otherwise [`model_search_path`] lists the candidates in order, and a
//! failure names every one of them.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use opencv::{
    core::{Mat, Scalar, Vector},
    dnn,
    prelude::*,
};

/// File name of the YuNet detection model (both engines can read it; OpenCV runs it).
pub const DETECTOR_MODEL: &str = "face_detection_yunet_2023mar.onnx";
/// File name of the SFace embedding model (OpenCV runs it).
pub const EMBEDDER_MODEL: &str = "face_recognition_sface_2021dec.onnx";
/// YuNet with a symbolic input height and width, for ONNX Runtime.
pub const DETECTOR_MODEL_ORT: &str = "face_detection_yunet_2023mar.dynamic.onnx";
/// SFace with its initializers removed from the graph inputs, for ONNX Runtime.
pub const EMBEDDER_MODEL_ORT: &str = "face_recognition_sface_2021dec.stripped.onnx";
/// The ONNX Runtime library `scripts/setup` copies beside the models.
pub const RUNTIME_LIBRARY: &str = "libonnxruntime.so";

/// Which engine runs the networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EngineKind {
    /// ONNX Runtime when its library and prepared models are found, else OpenCV.
    #[default]
    Auto,
    /// ONNX Runtime; an error when its library or prepared models are missing.
    Onnxruntime,
    /// OpenCV's dnn module.
    Opencv,
}

/// The engine a [`Models`] resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// ONNX Runtime.
    OnnxRuntime,
    /// OpenCV's dnn module.
    OpenCv,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::OnnxRuntime => "onnxruntime",
            Engine::OpenCv => "opencv",
        })
    }
}

/// How to find and run the networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// The engine asked for.
    pub kind: EngineKind,
    /// The model directory; `None` searches [`model_search_path`].
    pub model_dir: Option<PathBuf>,
    /// The ONNX Runtime library; `None` looks beside the models, then in the system's
    /// library directories.
    pub runtime_library: Option<PathBuf>,
    /// Threads one network uses for one inference (ONNX Runtime's intra-op threads;
    /// OpenCV shares one pool across the process and ignores this).
    pub threads: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            kind: EngineKind::Auto,
            model_dir: None,
            runtime_library: None,
            threads: 1,
        }
    }
}

/// Errors finding or running a network.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No directory holds the model files.
    #[error(
        "face models not found; looked in {}: install them (scripts/setup) or point \
         FACEWIRE_MODEL_DIR at the directory holding {DETECTOR_MODEL} and {EMBEDDER_MODEL}",
        list(.looked)
    )]
    ModelsNotFound {
        /// Every directory looked in, in order.
        looked: Vec<PathBuf>,
    },
    /// ONNX Runtime was asked for, and its library is nowhere.
    #[error(
        "the ONNX Runtime library was not found; looked for {}: install it (scripts/setup), \
         set FACEWIRE_ONNXRUNTIME_LIBRARY, or choose --engine opencv",
        list(.looked)
    )]
    RuntimeNotFound {
        /// Every file looked for, in order.
        looked: Vec<PathBuf>,
    },
    /// ONNX Runtime was asked for, and the prepared models are missing.
    #[error(
        "{path} not found: ONNX Runtime needs the models prepared by scripts/prepare-models.py \
         (scripts/setup runs it), or choose --engine opencv"
    )]
    PreparedModelMissing {
        /// The missing file.
        path: PathBuf,
    },
    /// The library exists but could not be loaded or initialised.
    #[error("cannot start ONNX Runtime from {path}: {message}")]
    Runtime {
        /// The library.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A model file could not be loaded.
    #[error("cannot load model {path}: {message}")]
    Load {
        /// The model file.
        path: PathBuf,
        /// The engine's complaint.
        message: String,
    },
    /// An inference failed.
    #[error("inference failed: {0}")]
    Run(String),
}

impl From<opencv::Error> for EngineError {
    fn from(e: opencv::Error) -> Self {
        EngineError::Run(e.to_string())
    }
}

impl From<ort::Error> for EngineError {
    fn from(e: ort::Error) -> Self {
        EngineError::Run(e.to_string())
    }
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The directories searched for models when none is configured, in order: the working
/// directory's `models/` (a checkout), the user's data directory (where `scripts/setup`
/// installs them), beside the binary, then the system-wide locations (the container
/// image uses `/opt/facewire/models`).
pub fn model_search_path() -> Vec<PathBuf> {
    let here = std::env::current_dir().unwrap_or_default();
    let mut dirs = vec![here.join("models")];
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(data).join("facewire/models"));
    } else if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(home).join(".local/share/facewire/models"));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("models"));
        dirs.push(exe_dir.join("../share/facewire/models"));
    }
    dirs.extend(
        [
            "/usr/local/share/facewire/models",
            "/usr/share/facewire/models",
            "/opt/facewire/models",
        ]
        .map(PathBuf::from),
    );
    dirs
}

/// The model files and the engine that will run them, resolved once per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Models {
    /// The directory the models were found in.
    pub dir: PathBuf,
    /// The engine chosen.
    pub engine: Engine,
    /// Threads per inference (ONNX Runtime).
    pub threads: usize,
    /// Why `auto` fell back to OpenCV, when it did.
    pub fallback_reason: Option<String>,
}

impl Models {
    /// Finds the model directory and decides the engine.
    pub fn resolve(options: &EngineOptions) -> Result<Self, EngineError> {
        let candidates = match &options.model_dir {
            Some(dir) => vec![dir.clone()],
            None => model_search_path(),
        };
        let dir = candidates
            .iter()
            .find(|dir| dir.join(DETECTOR_MODEL).is_file() && dir.join(EMBEDDER_MODEL).is_file())
            .cloned()
            .ok_or(EngineError::ModelsNotFound {
                looked: candidates.clone(),
            })?;
        let threads = options.threads.max(1);
        let resolved = |engine, fallback_reason| Models {
            dir: dir.clone(),
            engine,
            threads,
            fallback_reason,
        };
        match options.kind {
            EngineKind::Opencv => Ok(resolved(Engine::OpenCv, None)),
            EngineKind::Onnxruntime => {
                start_runtime(&dir, options.runtime_library.as_deref())?;
                prepared_models(&dir)?;
                Ok(resolved(Engine::OnnxRuntime, None))
            }
            EngineKind::Auto => {
                match start_runtime(&dir, options.runtime_library.as_deref())
                    .and_then(|()| prepared_models(&dir))
                {
                    Ok(_) => Ok(resolved(Engine::OnnxRuntime, None)),
                    Err(e) => Ok(resolved(Engine::OpenCv, Some(e.to_string()))),
                }
            }
        }
    }

    /// Loads one YuNet network.
    pub fn detector(&self) -> Result<Network, EngineError> {
        let outputs: Vec<String> = ["cls", "obj", "bbox", "kps"]
            .iter()
            .flat_map(|kind| [8, 16, 32].map(|stride| format!("{kind}_{stride}")))
            .collect();
        match self.engine {
            Engine::OpenCv => Network::opencv(&self.dir.join(DETECTOR_MODEL), outputs),
            Engine::OnnxRuntime => {
                Network::onnxruntime(&self.dir.join(DETECTOR_MODEL_ORT), outputs, self.threads)
            }
        }
    }

    /// Loads one SFace network.
    pub fn embedder(&self) -> Result<Network, EngineError> {
        let outputs = vec!["fc1".to_string()];
        match self.engine {
            Engine::OpenCv => Network::opencv(&self.dir.join(EMBEDDER_MODEL), outputs),
            Engine::OnnxRuntime => {
                Network::onnxruntime(&self.dir.join(EMBEDDER_MODEL_ORT), outputs, self.threads)
            }
        }
    }
}

fn prepared_models(dir: &Path) -> Result<(), EngineError> {
    for name in [DETECTOR_MODEL_ORT, EMBEDDER_MODEL_ORT] {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(EngineError::PreparedModelMissing { path });
        }
    }
    Ok(())
}

/// The places the ONNX Runtime library is looked for: an explicit path alone, else
/// beside the models, beside the binary, and the system library directories.
pub fn runtime_search_path(model_dir: &Path, explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(path) = explicit {
        return vec![path.to_path_buf()];
    }
    let mut files = vec![model_dir.join(RUNTIME_LIBRARY)];
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        files.push(exe_dir.join(RUNTIME_LIBRARY));
    }
    files.extend(
        ["/usr/local/lib", "/usr/lib", "/usr/lib/x86_64-linux-gnu"]
            .map(|dir| Path::new(dir).join(RUNTIME_LIBRARY)),
    );
    files
}

/// The process's one ONNX Runtime environment: the library can be loaded once, so the
/// first outcome (success, or why not) is kept for every later caller.
static RUNTIME: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

fn start_runtime(model_dir: &Path, explicit: Option<&Path>) -> Result<(), EngineError> {
    let looked = runtime_search_path(model_dir, explicit);
    let Some(path) = looked.iter().find(|p| p.is_file()).cloned() else {
        return Err(EngineError::RuntimeNotFound { looked });
    };
    let started = RUNTIME.get_or_init(|| {
        ort::init_from(&path)
            .map_err(|e| e.to_string())?
            .with_name("facewire")
            .build()
            .map_err(|e| e.to_string())
    });
    match started {
        Ok(_) => Ok(()),
        Err(message) => Err(EngineError::Runtime {
            path,
            message: message.clone(),
        }),
    }
}

/// One loaded network.
pub struct Network {
    inner: Inner,
    outputs: Vec<String>,
}

enum Inner {
    OpenCv {
        net: dnn::Net,
        names: Vector<String>,
    },
    OnnxRuntime {
        session: ort::session::Session,
        input: String,
    },
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("engine", &self.engine())
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl Network {
    fn opencv(path: &Path, outputs: Vec<String>) -> Result<Self, EngineError> {
        let net = dnn::read_net_from_onnx(path).map_err(|e| EngineError::Load {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let names = outputs.iter().map(String::as_str).collect();
        Ok(Self {
            inner: Inner::OpenCv { net, names },
            outputs,
        })
    }

    fn onnxruntime(path: &Path, outputs: Vec<String>, threads: usize) -> Result<Self, EngineError> {
        let load = |message: String| EngineError::Load {
            path: path.to_path_buf(),
            message,
        };
        let env = match RUNTIME.get() {
            Some(Ok(env)) => env,
            _ => return Err(load("ONNX Runtime is not started".into())),
        };
        let session = ort::session::Session::builder(env)
            .and_then(|b| {
                b.with_optimization_level(ort::session::builder::GraphOptimizationLevel::Level3)
                    .map_err(Into::into)
            })
            .and_then(|b| b.with_intra_threads(threads).map_err(Into::into))
            .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
            // Workers already keep every core busy: an idle intra-op thread must sleep,
            // not spin on a core another worker needs.
            .and_then(|b| b.with_intra_op_spinning(false).map_err(Into::into))
            .and_then(|mut b| b.commit_from_file(path))
            .map_err(|e| load(e.to_string()))?;
        let input = session
            .inputs()
            .first()
            .map(|i| i.name().to_string())
            .ok_or_else(|| load("the model has no input".into()))?;
        for name in &outputs {
            if !session.outputs().iter().any(|o| o.name() == name) {
                return Err(load(format!("the model has no output {name}")));
            }
        }
        Ok(Self {
            inner: Inner::OnnxRuntime { session, input },
            outputs,
        })
    }

    /// The engine running this network.
    pub fn engine(&self) -> Engine {
        match self.inner {
            Inner::OpenCv { .. } => Engine::OpenCv,
            Inner::OnnxRuntime { .. } => Engine::OnnxRuntime,
        }
    }

    /// Runs the network on `blob` (a continuous 4-d `CV_32F` NCHW tensor) and returns
    /// the outputs named at load, in that order, flattened row-major.
    pub fn run(&mut self, blob: &Mat) -> Result<Vec<Vec<f32>>, EngineError> {
        match &mut self.inner {
            Inner::OpenCv { net, names } => {
                net.set_input(blob, "", 1.0, Scalar::default())?;
                let mut out = Vector::<Mat>::new();
                net.forward(&mut out, names)?;
                // The outputs alias the network's buffers, which the next run
                // overwrites: copy them out.
                out.iter()
                    .map(|m| Ok(m.data_typed::<f32>()?.to_vec()))
                    .collect()
            }
            Inner::OnnxRuntime { session, input } => {
                let shape: Vec<i64> = blob.mat_size().iter().map(|&d| d as i64).collect();
                if shape.len() != 4 || !blob.is_continuous() {
                    return Err(EngineError::Run(format!(
                        "expected a continuous 4-d input, got shape {shape:?}"
                    )));
                }
                let data = blob.data_typed::<f32>()?;
                let tensor = ort::value::TensorRef::from_array_view((shape, data))?;
                let results = session.run(ort::inputs![input.as_str() => tensor])?;
                self.outputs
                    .iter()
                    .map(|name| {
                        let (_, values) = results[name.as_str()].try_extract_tensor::<f32>()?;
                        Ok(values.to_vec())
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_model_dir_is_the_only_place_looked_in_and_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = Models::resolve(&EngineOptions {
            model_dir: Some(dir.path().to_path_buf()),
            ..EngineOptions::default()
        })
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(message.contains("FACEWIRE_MODEL_DIR"), "{message}");
        assert!(matches!(err, EngineError::ModelsNotFound { looked } if looked.len() == 1));
    }

    #[test]
    fn the_search_path_covers_checkout_data_dir_binary_and_system() {
        let path = model_search_path();
        assert!(
            path[0].is_absolute() && path[0].ends_with("models"),
            "{path:?}"
        );
        let shown = list(&path);
        for expected in [
            "facewire/models",
            "/usr/share/facewire/models",
            "/opt/facewire/models",
        ] {
            assert!(shown.contains(expected), "{shown}");
        }
    }

    #[test]
    fn auto_falls_back_to_opencv_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        for name in [DETECTOR_MODEL, EMBEDDER_MODEL] {
            std::fs::write(dir.path().join(name), b"not a model").unwrap();
        }
        let options = EngineOptions {
            model_dir: Some(dir.path().to_path_buf()),
            runtime_library: Some(dir.path().join("nowhere.so")),
            ..EngineOptions::default()
        };
        let models = Models::resolve(&options).unwrap();
        assert_eq!(models.engine, Engine::OpenCv);
        assert!(models.fallback_reason.unwrap().contains("nowhere.so"));
        let strict = EngineOptions {
            kind: EngineKind::Onnxruntime,
            ..options
        };
        assert!(matches!(
            Models::resolve(&strict),
            Err(EngineError::RuntimeNotFound { .. })
        ));
    }
}
