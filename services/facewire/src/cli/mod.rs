//! The subcommands; each module parses nothing itself and calls library code.

pub mod frontend;
pub mod migrate;
pub mod recognition;
pub mod serve;
pub mod submit;
pub mod up;
