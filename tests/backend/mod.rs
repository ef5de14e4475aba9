//! The two storage backends the store-level scenarios run on: the real file system and the
//! deterministic simulated one ([`SimStorage`]).
//!
//! A scenario is a function generic over [`Backend`]: it asks the backend for directories
//! and for [`Options`] on its storage, and damages or inspects files through it.
//! [`on_both_backends!`] turns each scenario into two tests, `on_files::<scenario>` and
//! `on_sim::<scenario>`. The real backend touches files with `std::fs`, independently of
//! the engine's own file code; the simulated one goes through the `Storage` trait (open,
//! read_at, write_at, truncate, …), as the engine does.
// Each of tests/store.rs and tests/recovery.rs uses a part of this module.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use streamlog::io::Storage;
use streamlog::io::sim::SimStorage;
use streamlog::{Options, VerifyReport};

/// A file system a store can live on, with the file-level tools tests need.
///
/// Every method panics on an I/O error: a test helper that fails is a failed test.
pub trait Backend {
    /// A fresh file system of this kind (for the simulator, a new empty machine).
    fn new() -> Self;

    /// `Options::default()` on this backend's storage.
    fn options(&self) -> Options;

    /// A new empty directory; it is removed, with everything in it, when dropped.
    fn tempdir(&self) -> TestDir;

    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> bool;

    /// The length of the file at `path`.
    fn len(&self, path: &Path) -> u64;

    /// The whole content of the file at `path`.
    fn read(&self, path: &Path) -> Vec<u8>;

    /// Overwrites bytes of an existing file at `offset`, as another program might.
    fn write_at(&self, path: &Path, offset: u64, bytes: &[u8]);

    /// Creates a new file holding `bytes`.
    fn create(&self, path: &Path, bytes: &[u8]);

    /// Cuts or extends a file to `len` bytes, as a crash or another program might.
    fn set_len(&self, path: &Path, len: u64);

    /// The names of the entries of `dir`, sorted.
    fn list(&self, dir: &Path) -> Vec<String>;

    /// Removes a file.
    fn remove(&self, path: &Path);

    /// Creates a directory and its missing parents.
    fn create_dir_all(&self, path: &Path);

    /// `streamlog::inspect::verify_dir` of `dir`, where this backend can run it: it takes
    /// a path and no `Options`, so it reads the real file system only.
    fn verify_dir(&self, dir: &Path) -> Option<VerifyReport>;

    /// Flips bit `bit` of the byte at `offset` of the file at `path`.
    fn flip(&self, path: &Path, offset: u64, bit: u8) {
        let byte = self.read(path)[usize::try_from(offset).unwrap()];
        self.write_at(path, offset, &[byte ^ (1 << bit)]);
    }
}

/// A directory made by [`Backend::tempdir`], removed when dropped.
pub struct TestDir {
    path: PathBuf,
    owner: Owner,
}

enum Owner {
    Files(tempfile::TempDir),
    Sim(SimStorage),
}

impl TestDir {
    /// The directory's path on its backend.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        // A real temporary directory removes itself; a simulated one is removed here so
        // that a scenario making hundreds of copies keeps the simulated machine small.
        if let Owner::Sim(sim) = &self.owner {
            remove_tree(sim, &self.path);
        }
    }
}

fn remove_tree(sim: &SimStorage, dir: &Path) {
    for name in sim.list(dir).unwrap_or_default() {
        let path = dir.join(name);
        if sim.remove(&path).is_err() {
            remove_tree(sim, &path);
        }
    }
    // Best effort: the directory may be gone already, and a failure here fails no test.
    let _ = sim.remove_dir(dir);
}

/// The real file system, under a fresh temporary directory for each [`Backend::tempdir`].
pub struct Files;

impl Backend for Files {
    fn new() -> Self {
        Files
    }

    fn options(&self) -> Options {
        Options::default()
    }

    fn tempdir(&self) -> TestDir {
        let tmp = tempfile::tempdir().unwrap();
        TestDir {
            path: tmp.path().to_path_buf(),
            owner: Owner::Files(tmp),
        }
    }

    fn exists(&self, path: &Path) -> bool {
        path.try_exists().unwrap()
    }

    fn len(&self, path: &Path) -> u64 {
        fs::metadata(path).unwrap().len()
    }

    fn read(&self, path: &Path) -> Vec<u8> {
        fs::read(path).unwrap()
    }

    fn write_at(&self, path: &Path, offset: u64, bytes: &[u8]) {
        fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .write_all_at(bytes, offset)
            .unwrap();
    }

    fn create(&self, path: &Path, bytes: &[u8]) {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .unwrap()
            .write_all_at(bytes, 0)
            .unwrap();
    }

    fn set_len(&self, path: &Path, len: u64) {
        fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len)
            .unwrap();
    }

    fn list(&self, dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn remove(&self, path: &Path) {
        fs::remove_file(path).unwrap();
    }

    fn create_dir_all(&self, path: &Path) {
        fs::create_dir_all(path).unwrap();
    }

    fn verify_dir(&self, dir: &Path) -> Option<VerifyReport> {
        Some(streamlog::inspect::verify_dir(dir, |_| {}).unwrap())
    }
}

/// A simulated machine ([`SimStorage`] with a fixed seed; the scenarios never crash it, so
/// nothing depends on the seed). Directories are `SIM_TMP/0`, `SIM_TMP/1`, … on it.
pub struct Sim {
    sim: SimStorage,
    next_dir: AtomicU64,
}

/// Where the simulated directories live: a path that cannot exist on the real file system
/// (`/dev/null` is a file there), so that a scenario which forgets the backend's options
/// fails instead of quietly writing real files.
const SIM_TMP: &str = "/dev/null/streamlog-sim";

impl Backend for Sim {
    fn new() -> Self {
        let sim = SimStorage::new(0);
        let root = Path::new(SIM_TMP);
        sim.create_dir_all(root).unwrap();
        for dir in root.ancestors().skip(1) {
            sim.sync_dir(dir).unwrap();
        }
        Sim {
            sim,
            next_dir: AtomicU64::new(0),
        }
    }

    fn options(&self) -> Options {
        Options::default().with_storage(Arc::new(self.sim.clone()))
    }

    fn tempdir(&self) -> TestDir {
        let n = self.next_dir.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(SIM_TMP).join(n.to_string());
        self.sim.create_dir_all(&path).unwrap();
        self.sim.sync_dir(Path::new(SIM_TMP)).unwrap();
        TestDir {
            path,
            owner: Owner::Sim(self.sim.clone()),
        }
    }

    fn exists(&self, path: &Path) -> bool {
        self.sim.exists(path).unwrap()
    }

    fn len(&self, path: &Path) -> u64 {
        self.sim.open_read_only(path).unwrap().len().unwrap()
    }

    fn read(&self, path: &Path) -> Vec<u8> {
        let file = self.sim.open_read_only(path).unwrap();
        let mut bytes = vec![0u8; usize::try_from(file.len().unwrap()).unwrap()];
        let mut at = 0;
        while at < bytes.len() {
            let n = file.read_at(&mut bytes[at..], at as u64).unwrap();
            assert!(n > 0, "{} shrank while read", path.display());
            at += n;
        }
        bytes
    }

    fn write_at(&self, path: &Path, offset: u64, bytes: &[u8]) {
        self.sim
            .open(path)
            .unwrap()
            .write_at(bytes, offset)
            .unwrap();
    }

    fn create(&self, path: &Path, bytes: &[u8]) {
        self.sim.create(path).unwrap().write_at(bytes, 0).unwrap();
    }

    fn set_len(&self, path: &Path, len: u64) {
        self.sim.open(path).unwrap().truncate(len).unwrap();
    }

    fn list(&self, dir: &Path) -> Vec<String> {
        let mut names = self.sim.list(dir).unwrap();
        names.sort();
        names
    }

    fn remove(&self, path: &Path) {
        self.sim.remove(path).unwrap();
    }

    fn create_dir_all(&self, path: &Path) {
        self.sim.create_dir_all(path).unwrap();
    }

    fn verify_dir(&self, _dir: &Path) -> Option<VerifyReport> {
        None
    }
}

/// For each scenario `fn name<B: Backend>()` of the calling test file, two tests:
/// `on_files::name` on the real file system and `on_sim::name` on the simulator.
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {
        mod on_files {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario::<crate::backend::Files>();
                }
            )+
        }
        mod on_sim {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario::<crate::backend::Sim>();
                }
            )+
        }
    };
}

pub(crate) use on_both_backends;
