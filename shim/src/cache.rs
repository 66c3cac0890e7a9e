//! Node-wide cache of compiled Wasm.
//!
//! An entry is keyed by the sha256 of the Wasm bytes and the engine's
//! precompile-compatibility fingerprint, so a Wasmtime upgrade or a config
//! change never loads stale code. Each entry is two files written by
//! temp-file + rename: `KEY.cwasm`, Wasmtime's compiled artifact, loaded by
//! mmap so that every shim on the node shares its pages, and `KEY.sum`, the
//! xxh3-128 of the artifact. The sum is checked before the mmap: Wasmtime
//! trusts the artifact, so a flipped bit must turn into a recompile, never
//! into running different code.
#![allow(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::hash::Hasher;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use xxhash_rust::xxh3::Xxh3;

/// Default cache directory; the shim's `WASMPOD_CACHE_DIR` overrides it.
pub const DEFAULT_DIR: &str = "/var/lib/wasmpod/cache";

/// Environment variable that moves the compiled-code cache.
pub const DIR_ENV: &str = "WASMPOD_CACHE_DIR";

/// The cache directory this process was given, or [`DEFAULT_DIR`].
pub fn dir_from_env() -> PathBuf {
    std::env::var_os(DIR_ENV).map_or_else(|| DEFAULT_DIR.into(), Into::into)
}

/// Creates `dir` (and its parents) for root alone, as the cache and its
/// records need.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The cache could not be used; callers compile in memory instead.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Creating the directory or writing an entry failed.
    #[error("cannot write compiled code to {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup<T> {
    /// A verified entry, deserialized.
    Hit(T),
    /// No entry.
    Miss,
    /// An entry that failed its checksum or could not be deserialized; it
    /// was removed and must be compiled again.
    Corrupt(String),
}

/// Counters a shim reports in its log.
#[derive(Debug, Default)]
pub struct Stats {
    /// Verified entries loaded.
    pub hits: AtomicU64,
    /// Lookups with no entry.
    pub misses: AtomicU64,
    /// Entries found corrupt and discarded.
    pub corrupt: AtomicU64,
}

/// The on-disk cache for one engine configuration.
#[derive(Debug)]
pub struct CodeCache {
    dir: PathBuf,
    fingerprint: String,
    /// Lookup counters since the shim started.
    pub stats: Stats,
}

/// Feeds `Hash` output into sha256, so the fingerprint is stable across Rust
/// releases (unlike `DefaultHasher`).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Not used for the fingerprint (which takes the whole digest), but
        // a correct answer all the same.
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// A stable hex fingerprint of everything that makes compiled code
/// compatible with `engine` (Wasmtime version, target, settings).
pub fn engine_fingerprint(engine: &Engine) -> String {
    let mut h = Sha256Hasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    format!("{:x}", h.0.finalize())[..16].to_owned()
}

impl CodeCache {
    /// A cache in `dir` for code compiled by `engine`. The directory is made
    /// (mode 0700) on first write, not here, so a read-only node still starts.
    pub fn new(dir: impl Into<PathBuf>, engine: &Engine) -> Self {
        Self {
            dir: dir.into(),
            fingerprint: engine_fingerprint(engine),
            stats: Stats::default(),
        }
    }

    /// The directory entries live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn key(&self, digest: &str) -> String {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        format!("{hex}-{}", self.fingerprint)
    }

    /// Path of the compiled artifact for `digest`.
    pub fn artifact_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{}.cwasm", self.key(digest)))
    }

    fn sum_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{}.sum", self.key(digest)))
    }

    /// Whether an entry for `digest` is there; a lookup verifies it.
    pub fn has(&self, digest: &str) -> bool {
        self.sum_path(digest).exists()
    }

    /// Waits for this shim's turn to fill the entry for `digest`: shims
    /// compiling the same program take turns on a lock file beside it, so
    /// the later ones load what the first stored. `None` when there is no
    /// lock to be had (a read-only cache): then each compiles on its own.
    pub fn lock(&self, digest: &str) -> Option<Flock<File>> {
        create_private_dir(&self.dir).ok()?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.dir.join(format!("{}.lock", self.key(digest))))
            .ok()?;
        Flock::lock(file, FlockArg::LockExclusive).ok()
    }

    /// Looks `digest` up and, if the entry verifies, hands its path to
    /// `load` (which mmaps it).
    pub fn lookup<T>(
        &self,
        digest: &str,
        load: impl FnOnce(&Path) -> wasmtime::Result<T>,
    ) -> Lookup<T> {
        let artifact = self.artifact_path(digest);
        let found = match fs::read_to_string(self.sum_path(digest)) {
            Ok(sum) => self.verify(&artifact, sum.trim()).and_then(|()| {
                load(&artifact).map_err(|e| format!("wasmtime refused the artifact: {e}"))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                return Lookup::Miss;
            }
            Err(e) => Err(format!("cannot read its checksum: {e}")),
        };
        match found {
            Ok(value) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                Lookup::Hit(value)
            }
            Err(reason) => {
                self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                // Best effort: the next store overwrites these anyway.
                let _ = fs::remove_file(self.sum_path(digest));
                let _ = fs::remove_file(&artifact);
                Lookup::Corrupt(reason)
            }
        }
    }

    fn verify(&self, artifact: &Path, want: &str) -> Result<(), String> {
        let got = checksum_file(artifact).map_err(|e| format!("cannot read it: {e}"))?;
        if got == want {
            Ok(())
        } else {
            Err(format!("checksum {got} does not match the recorded {want}"))
        }
    }

    /// Stores `artifact` (the output of `serialize`) for `digest`.
    pub fn store(&self, digest: &str, artifact: &[u8]) -> Result<(), CacheError> {
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Write { path, source }
        };
        create_private_dir(&self.dir).map_err(write_err(&self.dir))?;
        let sum = format!("{:032x}", xxh3(artifact));
        // The artifact first: a sum without its artifact reads as corrupt
        // and is repaired; an artifact without its sum reads as a miss.
        let artifact_path = self.artifact_path(digest);
        write_atomic(&artifact_path, artifact).map_err(write_err(&artifact_path))?;
        let sum_path = self.sum_path(digest);
        write_atomic(&sum_path, sum.as_bytes()).map_err(write_err(&sum_path))?;
        Ok(())
    }
}

fn xxh3(bytes: &[u8]) -> u128 {
    let mut h = Xxh3::new();
    h.update(bytes);
    h.digest128()
}

/// The xxh3 of the file at `path`, read through a mapping: the page cache
/// is hashed in place, several times faster than `read` into a buffer.
fn checksum_file(path: &Path) -> io::Result<String> {
    let file = File::open(path)?;
    // SAFETY: a private read-only mapping of an entry in a root-only
    // directory, which this cache replaces only by rename and never
    // truncates in place; it is hashed and dropped.
    let mapped = unsafe { memmap2::Mmap::map(&file)? };
    // An entry not in the page cache (after a reboot, or evicted) is read
    // ahead in small pages here rather than by the faults of the hash
    // below, whose readahead fills large folios; see `WRITE_CHUNK`.
    mapped.advise(memmap2::Advice::WillNeed)?;
    Ok(format!("{:032x}", xxh3(&mapped)))
}

/// How much of an entry one `write` hands the kernel. The page cache keeps
/// a file in folios sized by the writes (or the readahead) that filled it,
/// and a recent kernel (6.18 here) maps the whole folio on a fault: one
/// 35 MB write makes 2 MiB folios, and every shim that touches a function
/// maps the 2 MiB around it. Written in 64 KiB pieces, a shim maps about
/// the code it runs, and the kernel can reclaim the rest under pressure.
const WRITE_CHUNK: usize = 64 << 10;

/// Writes `bytes` to a unique temp file beside `path`, then renames it over
/// `path`, so readers see the old entry or the new one, never half of one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!(
        "tmp.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        for chunk in bytes.chunks(WRITE_CHUNK) {
            f.write_all(chunk)?;
        }
        f.sync_data()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Loads a compiled core module from a verified cache file by mmap.
pub fn load_module(engine: &Engine, path: &Path) -> wasmtime::Result<wasmtime::Module> {
    // SAFETY: the file was written by this cache from `Module::serialize`
    // with this engine's fingerprint, sits in a root-only directory, and its
    // checksum was verified just before this call.
    unsafe { wasmtime::Module::deserialize_file(engine, path) }
}

/// Loads a compiled component from a verified cache file by mmap.
pub fn load_component(
    engine: &Engine,
    path: &Path,
) -> wasmtime::Result<wasmtime::component::Component> {
    // SAFETY: as for `load_module`.
    unsafe { wasmtime::component::Component::deserialize_file(engine, path) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:00ff";

    fn cache(dir: &Path) -> CodeCache {
        CodeCache::new(dir.join("cache"), &Engine::default())
    }

    fn read(path: &Path) -> wasmtime::Result<Vec<u8>> {
        Ok(fs::read(path)?)
    }

    #[test]
    fn round_trips_and_counts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let c = cache(tmp.path());
        assert!(matches!(c.lookup(DIGEST, read), Lookup::Miss));
        c.store(DIGEST, b"compiled").expect("store");
        match c.lookup(DIGEST, read) {
            Lookup::Hit(bytes) => assert_eq!(bytes, b"compiled"),
            other => panic!("expected a hit, got {other:?}"),
        }
        assert_eq!(c.stats.misses.load(Ordering::Relaxed), 1);
        assert_eq!(c.stats.hits.load(Ordering::Relaxed), 1);
        let mode = fs::metadata(c.dir()).expect("dir").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
    }

    #[test]
    fn truncated_or_flipped_entries_are_discarded() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let c = cache(tmp.path());
        for damage in [
            |b: &mut Vec<u8>| b.truncate(3),
            |b: &mut Vec<u8>| b[0] ^= 1,
            |b: &mut Vec<u8>| b.clear(),
        ] {
            c.store(DIGEST, b"compiled code").expect("store");
            let path = c.artifact_path(DIGEST);
            let mut bytes = fs::read(&path).expect("read");
            damage(&mut bytes);
            fs::write(&path, bytes).expect("write");
            assert!(matches!(c.lookup(DIGEST, read), Lookup::Corrupt(_)));
            assert!(!path.exists(), "a corrupt entry is removed");
            assert!(matches!(c.lookup(DIGEST, read), Lookup::Miss));
        }
        assert_eq!(c.stats.corrupt.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn an_artifact_wasmtime_refuses_is_corrupt() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let c = cache(tmp.path());
        let engine = Engine::default();
        // A valid checksum over bytes that are no Wasmtime artifact.
        c.store(DIGEST, b"not an ELF file").expect("store");
        let got = c.lookup(DIGEST, |p| load_module(&engine, p));
        assert!(
            matches!(got, Lookup::Corrupt(ref why) if why.contains("refused")),
            "{got:?}"
        );
    }

    #[test]
    fn keys_differ_by_engine_configuration() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let other = Engine::new(&config).expect("engine");
        assert_ne!(
            engine_fingerprint(&Engine::default()),
            engine_fingerprint(&other)
        );
        assert_eq!(engine_fingerprint(&other), engine_fingerprint(&other));
    }

    #[test]
    fn unwritable_directory_is_reported() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("file");
        fs::write(&file, "").expect("write");
        let c = CodeCache::new(file.join("cache"), &Engine::default());
        assert!(matches!(
            c.store(DIGEST, b"x"),
            Err(CacheError::Write { .. })
        ));
    }

    /// Resident KiB of the mapping of this process that holds `addr`.
    fn resident_kib(addr: usize) -> u64 {
        let smaps = fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
            } else if inside && let Some(kib) = line.strip_prefix("Rss:") {
                return kib.trim().trim_end_matches(" kB").parse().expect("Rss");
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn touching_one_page_of_an_entry_maps_little_of_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let c = cache(tmp.path());
        let artifact: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        c.store(DIGEST, &artifact).expect("store");
        let resident = c.lookup(DIGEST, |path| {
            let file = File::open(path)?;
            // SAFETY: a read-only mapping of the entry this test just wrote.
            let mapped = unsafe { memmap2::Mmap::map(&file)? };
            let middle = mapped.len() / 2 + 100;
            assert_eq!(mapped[middle], artifact[middle]);
            Ok(resident_kib(mapped.as_ptr() as usize + middle))
        });
        // Written in one piece, the page cache would hold 2 MiB folios and
        // this read would map 2048 KiB on a 6.18 kernel.
        match resident {
            Lookup::Hit(kib) => assert!(kib <= 64, "{kib} KiB mapped for one byte"),
            other => panic!("expected a hit, got {other:?}"),
        }
    }
}
