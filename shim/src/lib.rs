//! containerd shim v2 that runs WebAssembly under Wasmtime in place of a
//! Linux container.
//!
//! Data flows one way: containerd's request ([`service`]) -> the bundle's
//! spec ([`spec`]) -> what the guest may do ([`capabilities`]) -> compiled
//! code ([`engine`], [`cache`]) -> what each container runs ([`pod`],
//! [`workload`], [`guest`]) -> its life ([`task`]) -> events back to
//! containerd.

pub mod cache;
pub mod capabilities;
pub mod cgroup;
pub mod compiler;
pub mod daemon;
pub mod engine;
pub mod epochs;
pub mod error;
pub mod guest;
pub mod http;
pub mod http_grants;
pub mod limits;
pub mod linux;
pub mod logging;
pub mod pod;
pub mod sandbox;
pub mod service;
pub mod shim;
pub mod signal;
pub mod sockets;
pub mod source;
pub mod spec;
pub mod stdio;
pub mod sys;
pub mod syscalls;
pub mod task;
pub mod usage;
pub mod workload;
