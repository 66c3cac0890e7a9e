//! A container's memory limit, enforced by Wasmtime on the guest's linear
//! memories: a `memory.grow` past the limit fails (returns -1) as `malloc`
//! would under a cgroup limit, and the guest decides what to do about it.

use wasmtime::ResourceLimiter;

use crate::usage::Usage;

/// Linear memory one guest may hold in all its memories together (a
/// component has several: the program's, the WASI adapter's, ...).
#[derive(Debug, Default)]
pub struct MemoryLimit {
    max: Option<usize>,
    denied: Option<usize>,
    /// Also the count of what the guest holds: this limiter is its only writer.
    usage: Usage,
}

impl MemoryLimit {
    /// At most `max` bytes; `None` for no limit. What the guest holds is
    /// counted in `usage`, where `Stats` reads it.
    pub fn new(max: Option<u64>, usage: Usage) -> Self {
        Self {
            max: max.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
            denied: None,
            usage,
        }
    }

    /// The limit in bytes, if there is one.
    pub fn max(&self) -> Option<usize> {
        self.max
    }

    /// The total the guest asked for when a grow was refused, if one was.
    pub fn denied(&self) -> Option<usize> {
        self.denied
    }

    /// Bytes of linear memory the guest holds now.
    pub fn used(&self) -> usize {
        usize::try_from(self.usage.memory()).unwrap_or(usize::MAX)
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
        // sum of every grow's delta is what the guest holds.
        let total = self.used().saturating_add(desired.saturating_sub(current));
        match self.max {
            Some(max) if total > max => {
                self.denied = Some(total);
                Ok(false)
            }
            _ => {
                self.usage.set_memory(total);
                Ok(true)
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn counts_every_memory_against_one_limit() {
        let usage = Usage::default();
        let mut limit = MemoryLimit::new(Some(4 * MIB as u64), usage.clone());
        assert!(limit.memory_growing(0, 2 * MIB, None).expect("grow"));
        assert!(limit.memory_growing(0, MIB, None).expect("second memory"));
        assert!(limit.memory_growing(2 * MIB, 3 * MIB, None).expect("grow"));
        assert_eq!(limit.used(), 4 * MIB);
        assert_eq!(usage.memory(), 4 * MIB as u64, "published for Stats");
        assert_eq!(limit.denied(), None);
        assert!(
            !limit
                .memory_growing(3 * MIB, 3 * MIB + 1, None)
                .expect("refused")
        );
        assert_eq!(limit.denied(), Some(4 * MIB + 1));
        assert_eq!(limit.used(), 4 * MIB, "a refused grow takes nothing");
    }

    #[test]
    fn no_limit_allows_everything() {
        let mut limit = MemoryLimit::new(None, Usage::default());
        assert!(limit.memory_growing(0, usize::MAX / 2, None).expect("grow"));
        assert_eq!(limit.denied(), None);
    }
}
