//! wasmpod's node installer: puts the shim and its runtime into a node's
//! containerd, checks that containerd still works, and takes both out again.

pub mod canary;
pub mod config;
pub mod health;
pub mod image;
pub mod layout;
pub mod node;
pub mod plan;
pub mod restart;
pub mod shim_file;
pub mod state;
pub mod template;
