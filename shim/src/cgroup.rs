//! The cgroups a runtime spec names (`linux.cgroupsPath`, cgroupfs style as
//! the CRI writes it under the kubelet's pod cgroup), for a shim that runs
//! a whole pod as one process.
//!
//! The shim joins its sandbox's cgroup, so the kubelet's pod cgroup bounds
//! and counts the memory the pod uses. A guest is a thread, and the kernel
//! charges memory to a process, not a thread, so per-container memory
//! limits stay with Wasmtime's limiter; CPU is per thread on cgroup v1,
//! where each guest's thread joins its container's `cpu` and `cpuacct`
//! cgroups with the container's quota and shares. Cgroup v2 allows threads
//! in separate cgroups only inside a threaded subtree, which the kubelet's
//! hierarchy is not, so there the pod's cgroup is the unit.
//!
//! On v1 the kernel charges a process's pages to the memory cgroup of its
//! main thread, the owner of its address space. The shim's main thread
//! alone joins the pod's cgroup, by writing `0`: moving a whole process
//! takes a node-wide lock per controller, 15 to 20 ms of a pod's start on
//! a small node. The server's other threads stay where the shim started,
//! as runc's shim does; guests' threads join their containers' cgroups.
//! Once the pod's first guest is created, the main thread moves on to that
//! container's memory cgroup (inside the pod's, so the pod's limit still
//! holds): the kubelet, through cAdvisor, reads a container's memory from
//! its own cgroup, and a Wasm container with none would show 0 bytes, which
//! `kubectl top` and autoscalers take for "no metrics". It moves back to
//! the sandbox's before that container's cgroup is removed.

use std::fs;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::spec::{ContainerRole, ContainerSpec, Limits};

/// Where the node's cgroups are mounted.
pub const ROOT: &str = "/sys/fs/cgroup";

/// Why a cgroup could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The spec names a cgroup the way the systemd driver does.
    #[error(
        "cgroupsPath {0:?} is in the systemd driver's slice:prefix:name form; wasmpod manages cgroupfs paths only (set the CRI's SystemdCgroup = false for the wasmpod runtime)"
    )]
    Systemd(String),
    /// The path leaves the hierarchy or is not absolute.
    #[error("cgroupsPath {0:?} is not an absolute path inside the cgroup hierarchy")]
    Path(String),
    /// A cgroup file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the kernel said.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The node's cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// Cgroup v1 (or hybrid): one mount per controller under the root.
    V1(PathBuf),
    /// The unified cgroup v2 hierarchy mounted at the root.
    V2(PathBuf),
}

/// v1 controllers a pod's process joins; v1 controllers a guest's thread
/// joins.
const PROCESS_CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory", "pids"];
const THREAD_CONTROLLERS: &[&str] = &["cpu", "cpuacct"];

impl Hierarchy {
    /// The hierarchy mounted at `root` (normally `/sys/fs/cgroup`), if any.
    pub fn detect(root: &Path) -> Option<Self> {
        if root.join("cgroup.controllers").exists() {
            Some(Self::V2(root.to_owned()))
        } else if root.join("cpu").join("tasks").exists() {
            Some(Self::V1(root.to_owned()))
        } else {
            None
        }
    }

    /// Creates (or opens) cgroup `path` for a pod's process (`threads`
    /// false) or for a guest's thread (`threads` true) and applies `limits`.
    /// `None` when this hierarchy cannot hold a thread on its own.
    pub fn create(
        &self,
        path: &str,
        threads: bool,
        limits: &Limits,
    ) -> Result<Option<Cgroup>, CgroupError> {
        if threads && matches!(self, Self::V2(_)) {
            return Ok(None);
        }
        let controllers = if threads {
            THREAD_CONTROLLERS
        } else {
            PROCESS_CONTROLLERS
        };
        let dirs = self.dirs(&relative(path)?, controllers);
        for dir in &dirs {
            fs::create_dir_all(&dir.path).map_err(io(&dir.path))?;
        }
        let cgroup = Cgroup {
            v2: matches!(self, Self::V2(_)),
            dirs,
        };
        cgroup.apply(limits, !threads)?;
        Ok(Some(cgroup))
    }

    /// `relative`'s directory in each of `controllers` (v1), or in the
    /// unified tree (v2).
    fn dirs(&self, relative: &Path, controllers: &[&str]) -> Vec<Dir> {
        match self {
            Self::V2(root) => vec![Dir::unified(root.join(relative))],
            Self::V1(root) => {
                let mut dirs = Vec::new();
                for c in controllers {
                    if let Some(dir) = Dir::v1(root, c, relative)
                        && !dirs.contains(&dir)
                    {
                        dirs.push(dir);
                    }
                }
                dirs
            }
        }
    }

    /// Removes what a shim that died left of cgroup `path`, in every
    /// controller a pod's process or a guest's thread may have joined. A
    /// directory still in use (its tasks were not the shim's) stays, and so
    /// does any after it: the error names it.
    pub fn remove_left(&self, path: &str) -> Result<(), CgroupError> {
        Cgroup {
            v2: matches!(self, Self::V2(_)),
            dirs: self.dirs(&relative(path)?, PROCESS_CONTROLLERS),
        }
        .remove()
    }

    /// Creates (or opens) cgroup `path` in the v1 `memory` hierarchy alone,
    /// with no limit of its own; `None` on v2 or without that hierarchy.
    fn create_memory(&self, path: &str) -> Result<Option<Cgroup>, CgroupError> {
        let Self::V1(root) = self else {
            return Ok(None);
        };
        let Some(dir) = Dir::v1(root, "memory", &relative(path)?) else {
            return Ok(None);
        };
        fs::create_dir_all(&dir.path).map_err(io(&dir.path))?;
        Ok(Some(Cgroup {
            v2: false,
            dirs: vec![dir],
        }))
    }
}

/// `path` relative to the hierarchy's root, refusing `..` and the
/// systemd driver's form.
fn relative(path: &str) -> Result<PathBuf, CgroupError> {
    if !path.starts_with('/') && path.contains(':') {
        return Err(CgroupError::Systemd(path.to_owned()));
    }
    let p = Path::new(path);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(part) => out.push(part),
            _ => return Err(CgroupError::Path(path.to_owned())),
        }
    }
    if !p.is_absolute() || out.as_os_str().is_empty() {
        return Err(CgroupError::Path(path.to_owned()));
    }
    Ok(out)
}

/// A cgroup's directory in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dir {
    /// The controllers mounted there (`cpu,cpuacct`); empty for v2.
    controllers: String,
    path: PathBuf,
}

impl Dir {
    fn unified(path: PathBuf) -> Self {
        Self {
            controllers: String::new(),
            path,
        }
    }

    /// `relative` in the v1 hierarchy of `controller`, if it is mounted.
    /// Co-mounted controllers (`cpu` -> `cpu,cpuacct`) share a directory.
    fn v1(root: &Path, controller: &str, relative: &Path) -> Option<Self> {
        let mount = fs::canonicalize(root.join(controller)).ok()?;
        let controllers = mount.file_name()?.to_str()?.to_owned();
        Some(Self {
            controllers,
            path: mount.join(relative),
        })
    }
}

/// One cgroup: its directory in each controller's hierarchy (v1), or its
/// one directory (v2).
#[derive(Debug, Clone)]
pub struct Cgroup {
    v2: bool,
    dirs: Vec<Dir>,
}

impl Cgroup {
    /// The same cgroup in the v1 `memory` hierarchy alone, if it has it.
    fn memory_only(&self) -> Option<Cgroup> {
        let dir = self
            .dirs
            .iter()
            .find(|d| d.controllers.split(',').any(|c| c == "memory"))?;
        (!self.v2).then(|| Cgroup {
            v2: false,
            dirs: vec![dir.clone()],
        })
    }

    /// The directory of `controller` (v1), or the cgroup's (v2).
    fn dir(&self, controller: &str) -> Option<&Path> {
        let dir = if self.v2 {
            self.dirs.first()
        } else {
            let mut dirs = self.dirs.iter();
            dirs.find(|d| d.controllers.split(',').any(|c| c == controller))
        };
        dir.map(|d| d.path.as_path())
    }

    fn write(&self, controller: &str, file: &str, value: &str) -> Result<(), CgroupError> {
        let Some(dir) = self.dir(controller) else {
            return Ok(());
        };
        let path = dir.join(file);
        fs::write(&path, value).map_err(io(&path))
    }

    fn apply(&self, limits: &Limits, memory: bool) -> Result<(), CgroupError> {
        let period = limits.cpu_period.filter(|&p| p > 0).unwrap_or(100_000);
        let quota = limits.cpu_quota.filter(|&q| q > 0);
        let mem = limits.memory.filter(|_| memory);
        if self.v2 {
            if limits.cpu_quota.is_some() || limits.cpu_period.is_some() {
                let max = quota.map_or("max".to_owned(), |q| q.to_string());
                self.write("cpu", "cpu.max", &format!("{max} {period}"))?;
            }
            if let Some(shares) = limits.cpu_shares {
                self.write("cpu", "cpu.weight", &weight(shares).to_string())?;
            }
            if let Some(bytes) = mem {
                self.write("memory", "memory.max", &bytes.to_string())?;
            }
            return Ok(());
        }
        if limits.cpu_quota.is_some() || limits.cpu_period.is_some() {
            self.write("cpu", "cpu.cfs_period_us", &period.to_string())?;
            let quota = quota.unwrap_or(-1);
            self.write("cpu", "cpu.cfs_quota_us", &quota.to_string())?;
        }
        if let Some(shares) = limits.cpu_shares {
            self.write("cpu", "cpu.shares", &shares.max(2).to_string())?;
        }
        if let Some(bytes) = mem {
            self.write("memory", "memory.limit_in_bytes", &bytes.to_string())?;
        }
        Ok(())
    }

    /// Moves the whole process `pid` into this cgroup.
    pub fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            let path = dir.path.join("cgroup.procs");
            fs::write(&path, pid.to_string()).map_err(io(&path))?;
        }
        Ok(())
    }

    /// Moves the calling thread into this cgroup (v1 only: see the
    /// module's notes). It writes `0`, "myself": the kernel then skips the
    /// node-wide lock a move by id takes, which costs several ms each time.
    pub fn add_current_thread(&self) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            let path = dir.path.join("tasks");
            fs::write(&path, "0").map_err(io(&path))?;
        }
        Ok(())
    }

    /// The v1 memory cgroup's usage and the file pages it may reclaim.
    fn memory_charge(&self) -> Option<MemoryCharge> {
        let dir = self.dir("memory")?;
        let usage = fs::read_to_string(dir.join("memory.usage_in_bytes")).ok()?;
        let stat = fs::read_to_string(dir.join("memory.stat")).ok()?;
        let field = |name: &str| {
            stat.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        Some(MemoryCharge {
            usage: usage.trim().parse().ok()?,
            rss: field("total_rss"),
            inactive_file: field("total_inactive_file"),
        })
    }

    /// CPU time used by everything in the cgroup, in nanoseconds.
    pub fn cpu_ns(&self) -> Option<u64> {
        if self.v2 {
            let stat = fs::read_to_string(self.dir("cpu")?.join("cpu.stat")).ok()?;
            let usec: u64 = stat
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))?
                .trim()
                .parse()
                .ok()?;
            return Some(usec * 1000);
        }
        let usage = fs::read_to_string(self.dir("cpuacct")?.join("cpuacct.usage")).ok()?;
        usage.trim().parse().ok()
    }

    /// Removes the cgroup's directories; they must hold no task any more.
    /// One already gone is not an error.
    pub fn remove(&self) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            match fs::remove_dir(&dir.path) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(io(&dir.path)(e)),
                _ => {}
            }
        }
        Ok(())
    }
}

/// cgroup v1 shares (2..262144) as a v2 weight (1..10000), as runc maps them.
fn weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// The cgroup this process was in when it started, in each hierarchy: where
/// it goes back to before its pod's cgroup is removed.
pub fn current(hierarchy: &Hierarchy) -> Option<Cgroup> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut dirs = Vec::new();
    let v2 = matches!(hierarchy, Hierarchy::V2(_));
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let relative = path.trim_start_matches('/');
        match hierarchy {
            Hierarchy::V2(root) if controllers.is_empty() => {
                dirs.push(Dir::unified(root.join(relative)));
            }
            Hierarchy::V1(root) => {
                let wanted = PROCESS_CONTROLLERS
                    .iter()
                    .find(|c| controllers.split(',').any(|have| have == **c));
                if let Some(dir) = wanted.and_then(|c| Dir::v1(root, c, Path::new(relative)))
                    && !dirs.contains(&dir)
                {
                    dirs.push(dir);
                }
            }
            Hierarchy::V2(_) => {}
        }
    }
    Some(Cgroup { v2, dirs })
}

/// Work for the process's main thread.
pub type Job = Box<dyn FnOnce() + Send>;

/// Runs jobs on the process's main thread, which [`MainThreadJobs`] serves:
/// on cgroup v1 where that thread is decides where the kernel charges the
/// whole process's memory.
#[derive(Debug, Clone)]
pub struct MainThread(tokio::sync::mpsc::UnboundedSender<Job>);

/// The main thread's end of [`MainThread`].
#[derive(Debug)]
pub struct MainThreadJobs(tokio::sync::mpsc::UnboundedReceiver<Job>);

impl MainThread {
    /// A handle, and the jobs the main thread must take and run.
    pub fn new() -> (Self, MainThreadJobs) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Self(tx), MainThreadJobs(rx))
    }

    /// Runs `job` on the main thread and waits for its result; call it
    /// from a blocking thread. `None` if the main thread takes no more
    /// jobs.
    fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = tx.send(job());
        });
        self.0.send(job).ok()?;
        rx.recv().ok()
    }
}

impl MainThreadJobs {
    /// The next job; `None` once every [`MainThread`] is gone.
    pub async fn next(&mut self) -> Option<Job> {
        self.0.recv().await
    }
}

/// The node's hierarchy as one shim uses it: where its containers' cgroups
/// are, and the cgroup the shim started in, which it returns to before its
/// pod's cgroup is removed.
#[derive(Debug, Clone)]
pub struct Cgroups {
    hierarchy: Option<Hierarchy>,
    home: Option<Cgroup>,
    main_thread: Option<MainThread>,
    memory: Arc<Mutex<MemoryOwner>>,
}

/// A memory cgroup's numbers, in bytes, as cgroup v1 gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryCharge {
    /// `memory.usage_in_bytes`.
    pub usage: u64,
    /// `total_rss` of `memory.stat`.
    pub rss: u64,
    /// `total_inactive_file` of `memory.stat`: what the CRI takes off the
    /// usage for the working set.
    pub inactive_file: u64,
}

/// Where the main thread is in the v1 memory hierarchy (see the module's
/// notes): the sandbox's memory cgroup, and the guest's it moved on to.
#[derive(Debug, Default)]
struct MemoryOwner {
    sandbox: Option<Cgroup>,
    guest: Option<(String, Cgroup)>,
}

impl Cgroups {
    /// The hierarchy mounted at `root` and this process's place in it.
    pub fn detect(root: &Path) -> Self {
        let hierarchy = Hierarchy::detect(root);
        let home = hierarchy.as_ref().and_then(current);
        Self {
            hierarchy,
            home,
            main_thread: None,
            memory: Arc::default(),
        }
    }

    /// The same, moving the shim into a pod's cgroup by its main thread.
    pub fn with_main_thread(&self, main: MainThread) -> Self {
        Self {
            main_thread: Some(main),
            ..self.clone()
        }
    }

    /// The cgroup `spec` names, with its limits applied; a sandbox's takes
    /// the shim. Without one (no cgroupsPath, no usable hierarchy) the
    /// guest still has its Wasmtime limits; why is logged.
    pub fn join(&self, id: &str, spec: &ContainerSpec, pid: u32) -> Option<Cgroup> {
        let path = spec.cgroups_path.as_deref()?;
        let hierarchy = self.hierarchy.as_ref()?;
        let sandbox = spec.role == ContainerRole::Sandbox;
        let joined =
            hierarchy
                .create(path, !sandbox, &spec.limits)
                .and_then(|cgroup| match cgroup {
                    Some(c) if sandbox => self.add_shim(&c, pid).map(|()| Some(c)),
                    other => Ok(other),
                });
        match joined {
            Ok(cgroup) => {
                tracing::debug!(%id, path, joined = cgroup.is_some(), "cgroup");
                if sandbox {
                    let mut memory = self.lock_memory();
                    memory.sandbox = cgroup.as_ref().and_then(Cgroup::memory_only);
                    memory.guest = None;
                } else {
                    self.charge_memory_to(id, hierarchy, path);
                }
                cgroup
            }
            Err(e) => {
                tracing::warn!(%id, error = %e, "the container's cgroup is not applied; its Wasmtime limits still are");
                None
            }
        }
    }

    fn lock_memory(&self) -> std::sync::MutexGuard<'_, MemoryOwner> {
        // The state is two fields set whole; a panic elsewhere leaves it usable.
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the main thread from the sandbox's memory cgroup to that of
    /// guest `id` (cgroupsPath `path`), if no guest of the pod has it yet.
    fn charge_memory_to(&self, id: &str, hierarchy: &Hierarchy, path: &str) {
        let Some(main) = &self.main_thread else {
            return;
        };
        let mut memory = self.lock_memory();
        if memory.sandbox.is_none() || memory.guest.is_some() {
            return;
        }
        let moved = hierarchy.create_memory(path).and_then(|cgroup| {
            let Some(cgroup) = cgroup else {
                return Ok(None);
            };
            let target = cgroup.clone();
            match main.run(move || target.add_current_thread()) {
                Some(Ok(())) => Ok(Some(cgroup)),
                Some(Err(e)) => {
                    let _ = cgroup.remove();
                    Err(e)
                }
                None => {
                    let _ = cgroup.remove();
                    Ok(None)
                }
            }
        });
        match moved {
            Ok(Some(cgroup)) => {
                tracing::debug!(%id, "the pod's memory is charged to this container's cgroup");
                memory.guest = Some((id.to_owned(), cgroup));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%id, error = %e, "the pod's memory stays charged to its sandbox: the kubelet shows 0 bytes for this container");
            }
        }
    }

    /// What guest `id`'s memory cgroup holds, if it has the pod's charge:
    /// the whole shim's memory as the kernel counts it, which the CRI
    /// reports for the container in place of its linear memory.
    pub fn memory_charged(&self, id: &str) -> Option<MemoryCharge> {
        let memory = self.lock_memory();
        let (owner, cgroup) = memory.guest.as_ref()?;
        (owner == id).then(|| cgroup.memory_charge())?
    }

    /// Moves the main thread back to the sandbox's memory cgroup and removes
    /// guest `id`'s, if that guest has it.
    fn uncharge_memory_from(&self, id: &str) {
        let mut memory = self.lock_memory();
        let Some((_, guest)) = memory.guest.take_if(|(owner, _)| owner == id) else {
            return;
        };
        if let (Some(main), Some(sandbox)) = (&self.main_thread, memory.sandbox.clone()) {
            match main.run(move || sandbox.add_current_thread()) {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::warn!(%id, error = %e, "cannot move the shim back to its sandbox's memory cgroup")
                }
                None => {
                    tracing::warn!(%id, "the main thread is gone: the shim stays in this container's memory cgroup")
                }
            }
        }
        if let Err(e) = guest.remove() {
            tracing::warn!(%id, error = %e, "the container's memory cgroup is left behind");
        }
    }

    /// Moves the shim into a pod's cgroup: its main thread on v1 (see the
    /// module's notes), else the whole process `pid`.
    fn add_shim(&self, cgroup: &Cgroup, pid: u32) -> Result<(), CgroupError> {
        if let Some(main) = self.main_thread.as_ref().filter(|_| !cgroup.v2) {
            let pod = cgroup.clone();
            if let Some(moved) = main.run(move || pod.add_current_thread()) {
                return moved;
            }
        }
        cgroup.add_process(pid)
    }

    /// Removes the cgroup of a deleted container; the shim leaves a
    /// sandbox's first, every thread of it. A guest's thread may take a
    /// moment to be gone.
    pub fn leave(&self, id: &str, cgroup: &Cgroup, sandbox: bool, pid: u32) {
        if sandbox {
            if let Some(home) = &self.home
                && let Err(e) = home.add_process(pid)
            {
                tracing::warn!(%id, error = %e, "cannot leave the pod's cgroup");
            }
            // Home holds the whole process now: a guest's memory cgroup
            // left over is empty and goes.
            let left = std::mem::take(&mut *self.lock_memory());
            if let Some((_, guest)) = left.guest
                && let Err(e) = guest.remove()
            {
                tracing::warn!(%id, error = %e, "a container's memory cgroup is left behind");
            }
        } else {
            self.uncharge_memory_from(id);
        }
        let mut tries = 0;
        while let Err(e) = cgroup.remove() {
            tries += 1;
            if tries == 50 {
                tracing::warn!(%id, error = %e, "the container's cgroup is left behind");
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_tree() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        for c in ["cpu", "cpuacct", "memory", "pids"] {
            fs::create_dir_all(root.path().join(c)).expect("mkdir");
            fs::write(root.path().join(c).join("tasks"), "").expect("tasks");
        }
        root
    }

    #[test]
    fn detects_the_hierarchy() {
        let v1 = v1_tree();
        assert_eq!(
            Hierarchy::detect(v1.path()),
            Some(Hierarchy::V1(v1.path().to_owned()))
        );
        let v2 = tempfile::tempdir().expect("tempdir");
        fs::write(v2.path().join("cgroup.controllers"), "cpu memory").expect("write");
        assert_eq!(
            Hierarchy::detect(v2.path()),
            Some(Hierarchy::V2(v2.path().to_owned()))
        );
        let none = tempfile::tempdir().expect("tempdir");
        assert_eq!(Hierarchy::detect(none.path()), None);
    }

    #[test]
    fn refuses_paths_outside_the_hierarchy_and_systemd_slices() {
        assert!(matches!(
            relative("kubepods-pod1.slice:cri-containerd:abc"),
            Err(CgroupError::Systemd(_))
        ));
        for bad in ["/kubepods/../../etc", "relative/path", "/"] {
            assert!(matches!(relative(bad), Err(CgroupError::Path(_))), "{bad}");
        }
        assert_eq!(
            relative("/kubepods/burstable/pod1/abc").expect("ok"),
            Path::new("kubepods/burstable/pod1/abc")
        );
    }

    #[test]
    fn a_dead_shims_cgroups_are_removed_in_every_controller() {
        let root = v1_tree();
        let h = Hierarchy::V1(root.path().to_owned());
        let path = "/kubepods/pod1/c1";
        h.create(path, false, &Limits::default())
            .expect("create")
            .expect("a cgroup");
        let dirs = ["cpu", "cpuacct", "memory", "pids"]
            .map(|c| root.path().join(c).join("kubepods/pod1/c1"));
        assert!(dirs.iter().all(|d| d.is_dir()), "{dirs:?}");
        h.remove_left(path).expect("removed");
        assert!(!dirs.iter().any(|d| d.exists()), "{dirs:?}");
        assert!(
            root.path().join("cpu/kubepods/pod1").is_dir(),
            "the pod's stays"
        );
        // Gone already is fine; a path outside the hierarchy is refused.
        h.remove_left(path).expect("nothing left to remove");
        assert!(h.remove_left("/../etc").is_err());
    }

    #[test]
    fn v1_writes_limits_per_controller_and_threads_join_cpu_only() {
        let root = v1_tree();
        let h = Hierarchy::V1(root.path().to_owned());
        let limits = Limits {
            cpu_quota: Some(20_000),
            cpu_period: Some(100_000),
            cpu_shares: Some(204),
            memory: Some(64 << 20),
        };
        let pod = h
            .create("/kubepods/pod1/sandbox", false, &limits)
            .expect("create")
            .expect("a cgroup");
        let read = |c: &str, f: &str| {
            fs::read_to_string(root.path().join(c).join("kubepods/pod1/sandbox").join(f))
                .expect("written")
        };
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "20000");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(read("cpu", "cpu.shares"), "204");
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        pod.add_process(42).expect("procs");
        assert_eq!(read("pids", "cgroup.procs"), "42");

        let guest = h
            .create("/kubepods/pod1/guest", true, &limits)
            .expect("create")
            .expect("a cgroup");
        assert_eq!(
            guest.dirs.len(),
            2,
            "cpu and cpuacct only: {:?}",
            guest.dirs
        );
        assert!(!root.path().join("memory/kubepods/pod1/guest").exists());
        guest.add_current_thread().expect("tasks");
        let tasks = root.path().join("cpuacct/kubepods/pod1/guest/tasks");
        assert_eq!(fs::read_to_string(tasks).expect("tasks"), "0");
        fs::write(
            root.path()
                .join("cpuacct/kubepods/pod1/guest/cpuacct.usage"),
            "123456\n",
        )
        .expect("write");
        assert_eq!(guest.cpu_ns(), Some(123_456));
    }

    fn sandbox_spec(cgroups_path: &str) -> ContainerSpec {
        ContainerSpec {
            role: ContainerRole::Sandbox,
            args: Vec::new(),
            export: None,
            env: Vec::new(),
            cwd: "/".into(),
            rootfs: "/bundle/rootfs".into(),
            rootfs_readonly: false,
            mounts: Vec::new(),
            annotations: Default::default(),
            cgroups_path: Some(cgroups_path.into()),
            limits: Limits::default(),
            network: crate::spec::Network::Host,
            hostname: None,
        }
    }

    /// A thread that stands in for the daemon's main thread: it runs the
    /// jobs sent to `MainThread` until every handle is gone, and counts them.
    fn main_thread() -> (MainThread, std::thread::JoinHandle<usize>) {
        let (main, mut jobs) = MainThread::new();
        let server = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut ran = 0;
                while let Some(job) = jobs.next().await {
                    job();
                    ran += 1;
                }
                ran
            })
        });
        (main, server)
    }

    #[test]
    fn on_v1_the_main_thread_alone_joins_the_pod() {
        let root = v1_tree();
        let (main, server) = main_thread();
        let cgroups = Cgroups::detect(root.path()).with_main_thread(main);
        let pod = cgroups
            .join("sb", &sandbox_spec("/kubepods/pod1/sb"), 42)
            .expect("joined");
        for c in ["cpu", "cpuacct", "memory", "pids"] {
            let dir = root.path().join(c).join("kubepods/pod1/sb");
            let tasks = fs::read_to_string(dir.join("tasks")).expect("tasks");
            assert_eq!(tasks, "0", "{c}: the main thread moved itself");
            assert!(!dir.join("cgroup.procs").exists(), "{c}: no process move");
        }
        drop((cgroups, pod));
        assert_eq!(server.join().expect("server"), 1, "one job, on that thread");

        // Without a main thread (or with one that stopped) the process moves.
        let cgroups = Cgroups::detect(root.path());
        cgroups
            .join("sb2", &sandbox_spec("/kubepods/pod1/sb2"), 42)
            .expect("joined");
        let procs = root.path().join("memory/kubepods/pod1/sb2/cgroup.procs");
        assert_eq!(fs::read_to_string(procs).expect("procs"), "42");
    }

    #[test]
    fn on_v1_the_first_guest_gets_the_pods_memory_charge_until_it_goes() {
        let root = v1_tree();
        let (main, server) = main_thread();
        let cgroups = Cgroups::detect(root.path()).with_main_thread(main);
        let guest_spec = |path: &str| ContainerSpec {
            role: ContainerRole::Guest,
            ..sandbox_spec(path)
        };
        let memory = |path: &str| root.path().join("memory").join(path);
        cgroups
            .join("sb", &sandbox_spec("/kubepods/pod1/sb"), 42)
            .expect("sandbox joined");
        let first = cgroups
            .join("c1", &guest_spec("/kubepods/pod1/c1"), 42)
            .expect("first guest");
        assert_eq!(
            fs::read_to_string(memory("kubepods/pod1/c1/tasks")).expect("tasks"),
            "0",
            "the main thread moved to the first guest's memory cgroup"
        );
        let second = cgroups
            .join("c2", &guest_spec("/kubepods/pod1/c2"), 42)
            .expect("second guest");
        assert!(
            !memory("kubepods/pod1/c2").exists(),
            "one memory cgroup holds the charge"
        );
        fs::write(
            memory("kubepods/pod1/c1/memory.usage_in_bytes"),
            "12288000\n",
        )
        .expect("write");
        fs::write(
            memory("kubepods/pod1/c1/memory.stat"),
            "cache 1000\nrss 5\ntotal_rss 9000000\ntotal_inactive_file 288000\n",
        )
        .expect("write");
        assert_eq!(
            cgroups.memory_charged("c1"),
            Some(MemoryCharge {
                usage: 12_288_000,
                rss: 9_000_000,
                inactive_file: 288_000
            })
        );
        assert_eq!(cgroups.memory_charged("c2"), None, "not the charged one");
        fs::remove_file(memory("kubepods/pod1/c1/memory.usage_in_bytes")).expect("rm");
        fs::remove_file(memory("kubepods/pod1/c1/memory.stat")).expect("rm");
        // What the kernel would show: the thread has left the sandbox's.
        fs::write(memory("kubepods/pod1/sb/tasks"), "").expect("write");
        fs::remove_file(memory("kubepods/pod1/c1/tasks")).expect("rm");
        cgroups.leave("c1", &first, false, 42);
        assert_eq!(
            fs::read_to_string(memory("kubepods/pod1/sb/tasks")).expect("tasks"),
            "0",
            "back to the sandbox's before the container's cgroup goes"
        );
        assert!(
            !memory("kubepods/pod1/c1").exists(),
            "its memory cgroup is removed"
        );
        // The second guest does not take it over: the charge stays put.
        cgroups.leave("c2", &second, false, 42);
        assert!(!memory("kubepods/pod1/c2").exists());
        drop(cgroups);
        // Into c1, back to the sandbox's, and the sandbox's own join.
        assert_eq!(
            server.join().expect("server"),
            3,
            "each move on the main thread"
        );
    }

    #[test]
    fn v2_keeps_threads_with_the_pod_and_writes_unified_files() {
        let root = tempfile::tempdir().expect("tempdir");
        fs::write(root.path().join("cgroup.controllers"), "cpu memory").expect("write");
        let h = Hierarchy::V2(root.path().to_owned());
        let limits = Limits {
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            cpu_shares: Some(1024),
            memory: Some(1 << 30),
        };
        assert!(
            h.create("/kubepods/pod1/guest", true, &limits)
                .expect("ok")
                .is_none()
        );
        let pod = h
            .create("/kubepods/pod1/sandbox", false, &limits)
            .expect("create")
            .expect("a cgroup");
        let dir = root.path().join("kubepods/pod1/sandbox");
        let read = |f: &str| fs::read_to_string(dir.join(f)).expect("written");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("memory.max"), (1u64 << 30).to_string());
        fs::write(dir.join("cpu.stat"), "usage_usec 250\nuser_usec 200\n").expect("write");
        assert_eq!(pod.cpu_ns(), Some(250_000));
        fs::remove_file(dir.join("cpu.stat")).expect("rm");
        for f in ["cpu.max", "cpu.weight", "memory.max"] {
            fs::remove_file(dir.join(f)).expect("rm");
        }
        pod.remove().expect("removed");
        assert!(!dir.exists());
        pod.remove().expect("a second removal is fine");
    }
}
