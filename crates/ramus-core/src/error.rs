//! Typed errors at the core's public boundary.

use thiserror::Error;

/// Why a DAG definition was rejected. The messages are part of the public contract
/// (API.md) and are asserted verbatim by the JS tests.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DagError {
    /// A node names a parent that is not a node of the DAG.
    #[error("Node '{node}' has unknown parent '{parent}'")]
    UnknownParent {
        /// The node whose `parents` holds the unknown name.
        node: String,
        /// The unknown name.
        parent: String,
    },
    /// Following parents from some node returns to a node already on the path.
    #[error("Cycle detected: {}", path.join(" -> "))]
    Cycle {
        /// The path walked, starting at the start node and ending with the repeated node.
        path: Vec<String>,
    },
    /// The DAG declares no nodes.
    #[error("DAG has no nodes")]
    Empty,
    /// Two nodes share a name (possible from Rust; JS object keys are unique).
    #[error("Node '{0}' is declared twice")]
    DuplicateNode(String),
}
