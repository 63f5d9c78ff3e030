//! The facewire.v1 API.
//!
//! This is the only crate that names generated code paths: everything else uses the
//! re-exports here. Besides the generated messages, clients and servers it holds the
//! typed [`FacewireClient`], which falls back from the batch RPC to the legacy
//! single-image RPC when it meets an old server.

/// Generated code for the `facewire.v1` protobuf package.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("facewire.v1");

    /// The encoded file descriptor set of every facewire.v1 proto, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("facewire_v1_descriptor");
}

pub mod client;
mod status;

pub use client::{BearerAuth, ClientError, ClientOptions, FacewireClient};
pub use status::{submit_error_code_from_status, SUBMIT_ERROR_CODE_METADATA};
