//! Helpers for the containerd integration tests live in `tests/`.
