//! The `weir` command's subcommands as a library, so tests drive them in-process.

pub mod bench;
pub mod cars;
pub mod check;
pub mod client;
pub mod conformance;
pub mod demo;
pub mod progress;
pub mod render;
pub mod repl;
pub mod run;
pub mod scaffold;
