//! Checking a blob against the descriptor that names it, while it streams.

use sha2::{Digest, Sha256};

/// How a blob differs from its descriptor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// More bytes than the descriptor's size; reading stopped there.
    #[error("is longer than the {expected} bytes the manifest says")]
    Longer {
        /// Size from the descriptor.
        expected: u64,
    },
    /// Fewer bytes than the descriptor's size.
    #[error("is {actual} bytes, but the manifest says {expected}")]
    Shorter {
        /// Size from the descriptor.
        expected: u64,
        /// Bytes there were.
        actual: u64,
    },
    /// The bytes hash to another digest.
    #[error("does not match its digest (the bytes hash to {actual})")]
    Digest {
        /// What the bytes hash to.
        actual: String,
    },
}

/// Hashes and counts a blob's chunks; a lying size is caught at the first
/// chunk past it, so nothing unbounded is buffered or written.
pub struct Verifier {
    digest: String,
    size: u64,
    seen: u64,
    hasher: Sha256,
}

impl Verifier {
    /// Expects `size` bytes that hash to `digest` (`sha256:<hex>`).
    pub fn new(digest: &str, size: u64) -> Self {
        Self {
            digest: digest.to_owned(),
            size,
            seen: 0,
            hasher: Sha256::new(),
        }
    }

    /// Takes the next chunk.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), Mismatch> {
        self.seen += chunk.len() as u64;
        if self.seen > self.size {
            return Err(Mismatch::Longer {
                expected: self.size,
            });
        }
        self.hasher.update(chunk);
        Ok(())
    }

    /// Bytes taken so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Checks the whole blob.
    pub fn finish(self) -> Result<(), Mismatch> {
        if self.seen != self.size {
            return Err(Mismatch::Shorter {
                expected: self.size,
                actual: self.seen,
            });
        }
        let actual = format!("sha256:{:x}", self.hasher.finalize());
        if actual != self.digest {
            return Err(Mismatch::Digest { actual });
        }
        Ok(())
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WASM: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn accepts_the_described_bytes_in_chunks() {
        let mut v = Verifier::new(&sha256_digest(WASM), 8);
        v.update(b"\0asm").expect("chunk");
        v.update(b"\x01\0\0\0").expect("chunk");
        assert_eq!(v.seen(), 8);
        v.finish().expect("verified");
    }

    #[test]
    fn catches_a_lying_descriptor() {
        let digest = sha256_digest(WASM);
        let mut longer = Verifier::new(&digest, 8);
        let err = longer.update(b"\0asm\x01\0\0\0\0").expect_err("too long");
        assert_eq!(err, Mismatch::Longer { expected: 8 });

        let mut shorter = Verifier::new(&digest, 8);
        shorter.update(b"\0asm").expect("chunk");
        assert_eq!(
            shorter.finish(),
            Err(Mismatch::Shorter {
                expected: 8,
                actual: 4
            })
        );

        let mut swapped = Verifier::new(&digest, 8);
        swapped.update(b"\0asm\x0d\0\x01\0").expect("chunk");
        let err = swapped.finish().expect_err("other bytes");
        assert!(matches!(err, Mismatch::Digest { .. }), "{err}");
    }
}
