//! A container's memory limit, enforced by Wasmtime on the guest's linear
//! memories: a `memory.grow` past the limit fails (returns -1) as `malloc`
//! would under a cgroup limit, and the guest decides what to do about it.

use wasmtime::ResourceLimiter;

use crate::usage::Usage;

/// Linear memory one guest may hold in all its memories together (a
/// component has several: the program's, the WASI adapter's, ...). One
/// limiter per store; the stores of a container (an HTTP server's instances)
/// share the count in their [`Usage`], so the limit is the container's.
#[derive(Debug, Default)]
pub struct MemoryLimit {
    max: Option<u64>,
    denied: Option<u64>,
    /// What this store's memories hold, given back to `usage` on drop.
    held: u64,
    usage: Usage,
}

impl MemoryLimit {
    /// At most `max` bytes; `None` for no limit. What the guest holds is
    /// counted in `usage`, where `Stats` reads it.
    pub fn new(max: Option<u64>, usage: Usage) -> Self {
        Self {
            max,
            denied: None,
            held: 0,
            usage,
        }
    }

    /// The limit in bytes, if there is one.
    pub fn max(&self) -> Option<u64> {
        self.max
    }

    /// The container's total when one of this store's grows was refused.
    pub fn denied(&self) -> Option<u64> {
        self.denied
    }

    /// Bytes of linear memory this store's memories hold.
    pub fn held(&self) -> u64 {
        self.held
    }
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Memories are created with `current == 0` and never shrink, so the
        // sum of every grow's delta is what the store holds.
        let delta = u64::try_from(desired.saturating_sub(current)).unwrap_or(u64::MAX);
        match self.usage.grow_memory(delta, self.max) {
            Ok(_) => {
                self.held = self.held.saturating_add(delta);
                Ok(true)
            }
            Err(total) => {
                self.denied = Some(total);
                Ok(false)
            }
        }
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

impl Drop for MemoryLimit {
    /// The store and its memories are gone: so is what they held.
    fn drop(&mut self) {
        self.usage.release_memory(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn counts_every_memory_against_one_limit() {
        let usage = Usage::default();
        let mut limit = MemoryLimit::new(Some(4 * MIB), usage.clone());
        assert!(
            limit
                .memory_growing(0, 2 * MIB as usize, None)
                .expect("grow")
        );
        assert!(
            limit
                .memory_growing(0, MIB as usize, None)
                .expect("second memory")
        );
        assert!(
            limit
                .memory_growing(2 * MIB as usize, 3 * MIB as usize, None)
                .expect("grow")
        );
        assert_eq!(limit.held(), 4 * MIB);
        assert_eq!(usage.memory(), 4 * MIB, "published for Stats");
        assert_eq!(limit.denied(), None);
        assert!(
            !limit
                .memory_growing(3 * MIB as usize, 3 * MIB as usize + 1, None)
                .expect("refused")
        );
        assert_eq!(limit.denied(), Some(4 * MIB + 1));
        assert_eq!(limit.held(), 4 * MIB, "a refused grow takes nothing");
        drop(limit);
        assert_eq!(usage.memory(), 0, "given back with the store");
    }

    #[test]
    fn instances_of_one_container_share_its_limit_and_give_back_on_drop() {
        let usage = Usage::default();
        let mut first = MemoryLimit::new(Some(3 * MIB), usage.clone());
        let mut second = MemoryLimit::new(Some(3 * MIB), usage.clone());
        assert!(
            first
                .memory_growing(0, 2 * MIB as usize, None)
                .expect("grow")
        );
        assert!(
            !second
                .memory_growing(0, 2 * MIB as usize, None)
                .expect("refused"),
            "two instances together are over the limit"
        );
        assert_eq!(second.denied(), Some(4 * MIB));
        drop(first);
        // A thousand requests later the limit is still the container's.
        for _ in 0..1000 {
            let mut next = MemoryLimit::new(Some(3 * MIB), usage.clone());
            assert!(next.memory_growing(0, MIB as usize, None).expect("grow"));
        }
        assert!(
            second
                .memory_growing(0, 2 * MIB as usize, None)
                .expect("grow")
        );
        assert_eq!(usage.memory(), 2 * MIB);
    }

    #[test]
    fn no_limit_allows_everything() {
        let mut limit = MemoryLimit::new(None, Usage::default());
        assert!(limit.memory_growing(0, usize::MAX / 2, None).expect("grow"));
        assert_eq!(limit.denied(), None);
    }
}
