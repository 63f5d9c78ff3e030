//! The subcommands; each module parses nothing itself and calls library code.

pub mod migrate;
pub mod recognition;
pub mod serve;
pub mod up;
