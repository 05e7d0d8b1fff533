//! Message family `artifact`: content-addressed release artifacts.
//!
//! Upload: `PUT /v1/artifacts/<sha256>` with header `x-golive-size: N` and
//! the raw bytes as the body. The agent hashes while it writes to a temporary
//! file, checks size and digest, then renames into `artifacts/<sha256>`. The
//! answer is a framed [`super::Response::Artifact`] or an error.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HasArtifactRequest {
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    pub sha256: String,
    pub size: u64,
    /// True when the agent already had it and nothing was written.
    pub already_present: bool,
}
