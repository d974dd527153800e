//! workspaced: one code-server workspace per student, on Docker. See ARCHITECTURE.md for the map.

pub mod config;
pub mod domain;
pub mod runtime;
