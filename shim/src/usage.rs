//! What a guest uses, for `Stats` (and so for the CRI's ContainerStats):
//! its linear memory, counted by its [`MemoryLimit`](crate::limits), and
//! the CPU time of the thread it runs on.
//!
//! All guests of a pod share one shim process and so one memory cgroup;
//! memory per guest comes from Wasmtime. CPU comes from the guest's own
//! cgroup where its thread has one (cgroup v1), else from its thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use crate::cgroup::Cgroup;

/// What a container uses, in the terms of containerd's Stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// CPU time, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory charged to it, in bytes.
    pub memory: u64,
    /// Of that, anonymous memory.
    pub rss: u64,
    /// Of that, page cache the kernel may take back (the CRI subtracts it
    /// for the working set).
    pub inactive_file: u64,
    /// Its memory limit, if it has one.
    pub limit: Option<u64>,
}

/// A guest's usage, shared between its thread and the task service.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    memory: Arc<AtomicU64>,
    thread: Arc<AtomicI32>,
    cpu_at_exit: Arc<AtomicU64>,
    cgroup: Option<Arc<Cgroup>>,
}

impl Usage {
    /// Usage whose thread joins `cgroup` (the container's, with its CPU
    /// limits) when it attaches.
    pub fn in_cgroup(cgroup: Cgroup) -> Self {
        Self {
            cgroup: Some(Arc::new(cgroup)),
            ..Self::default()
        }
    }

    /// The container's cgroup, if its thread has one.
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_deref()
    }

    /// Counts `bytes` more of linear memory if the total stays within
    /// `max`: the new total, or the total that was refused. Atomic, so that
    /// the instances serving concurrent requests share one limit exactly.
    pub fn grow_memory(&self, bytes: u64, max: Option<u64>) -> Result<u64, u64> {
        let mut refused = 0;
        self.memory
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                let total = held.saturating_add(bytes);
                if max.is_some_and(|m| total > m) {
                    refused = total;
                    None
                } else {
                    Some(total)
                }
            })
            .map(|held| held.saturating_add(bytes))
            .map_err(|_| refused)
    }

    /// Uncounts `bytes` of linear memory that an instance held when it was
    /// dropped.
    pub fn release_memory(&self, bytes: u64) {
        let _ = self
            .memory
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                Some(held.saturating_sub(bytes))
            });
    }

    /// Bytes of linear memory the guest holds.
    pub fn memory(&self) -> u64 {
        self.memory.load(Ordering::Relaxed)
    }

    /// Called on the guest's thread before it runs; the thread joins the
    /// container's cgroup, if it has one.
    pub fn attach_current_thread(&self) {
        let tid = nix::unistd::gettid().as_raw();
        if let Some(cgroup) = &self.cgroup
            && let Err(e) = cgroup.add_current_thread()
        {
            tracing::warn!(error = %e, "the guest runs outside its container's cgroup: its CPU limit is not applied");
        }
        self.thread.store(tid, Ordering::Relaxed);
    }

    /// Called on the guest's thread once it has run: keeps its final CPU
    /// time, and forgets the thread id, which the kernel may reuse.
    pub fn detach_current_thread(&self) {
        if let Some(ns) = self.cpu_ns() {
            self.cpu_at_exit.store(ns, Ordering::Relaxed);
        }
        self.thread.store(0, Ordering::Relaxed);
    }

    /// Nanoseconds the guest has run: its cgroup's CPU accounting (which
    /// counts threads it started too), else its thread's CPU clock; `None`
    /// before it starts.
    pub fn cpu_ns(&self) -> Option<u64> {
        if let Some(ns) = self.cgroup.as_ref().and_then(|c| c.cpu_ns()) {
            return (ns > 0).then_some(ns);
        }
        let tid = self.thread.load(Ordering::Relaxed);
        if tid == 0 {
            let ended = self.cpu_at_exit.load(Ordering::Relaxed);
            return (ended > 0).then_some(ended);
        }
        thread_cpu_ns(tid)
    }
}

/// CPU time of thread `tid` of this process. The thread's CPU clock is
/// exact, where `/proc/.../schedstat` lags by up to a scheduler tick and
/// reads 0 for a guest that ran for less than one.
fn thread_cpu_ns(tid: i32) -> Option<u64> {
    // The kernel's id for a thread's scheduler CPU clock, built as glibc's
    // pthread_getcpuclockid builds it: !tid << 3 | CPUCLOCK_PERTHREAD | CPUCLOCK_SCHED.
    let clock = nix::time::ClockId::from_raw(((!tid) << 3) | 4 | 2);
    // A thread that has gone makes this fail with EINVAL, nothing else.
    let now = nix::time::clock_gettime(clock).ok()?;
    let secs = u64::try_from(now.tv_sec()).ok()?;
    let nanos = u64::try_from(now.tv_nsec()).ok()?;
    Some(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cpu_time_of_the_attached_thread() {
        let usage = Usage::default();
        assert_eq!(usage.cpu_ns(), None);
        let seen = usage.clone();
        std::thread::spawn(move || {
            seen.attach_current_thread();
            let before = seen.cpu_ns().expect("the thread's CPU clock");
            let mut x = 0u64;
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_add(i));
            }
            let after = seen.cpu_ns().expect("the thread's CPU clock");
            assert!(after > before, "{before} -> {after}");
            seen.detach_current_thread();
        })
        .join()
        .expect("thread");
        assert!(usage.cpu_ns().is_some_and(|ns| ns > 0), "kept after exit");
        assert_eq!(thread_cpu_ns(1), None, "init is no thread of ours");
        assert_eq!(usage.grow_memory(3 << 16, None), Ok(3 << 16));
        assert_eq!(usage.grow_memory(1 << 16, Some(3 << 16)), Err(4 << 16));
        usage.release_memory(1 << 16);
        assert_eq!(usage.memory(), 2 << 16);
        usage.release_memory(u64::MAX);
        assert_eq!(usage.memory(), 0);
    }
}
