//! Errors at the engine's public boundary. Each has a stable code (`ERR_…`) that the Node
//! binding puts on the JS error, so programs can match on it rather than on the message.

use ramus_core::{DagError, DefinitionError, MachineError};

/// Why the engine refused or failed something.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A DAG definition is not valid.
    #[error(transparent)]
    Dag(#[from] DagError),
    /// A machine definition is not valid, or a snapshot does not fit it.
    #[error(transparent)]
    Machine(#[from] MachineError),
    /// A definition is not valid (a field of the wrong type, an unknown field, a graph
    /// that does not hold).
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    /// A definition cannot be used this way (stored with inline functions…).
    #[error("{0}")]
    DefinitionUse(String),
    /// A run's input does not match its definition's `inputSchema`.
    #[error("{0}")]
    InputSchema(String),
    /// A value a durable run must store is not JSON (the message names its path).
    #[error("{0}")]
    Storage(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ramus_store::Error),
    /// Writing a run failed.
    #[error("Could not store run {run}: {source}")]
    Write {
        /// The run.
        run: String,
        /// What the store said.
        source: ramus_store::Error,
    },
    /// A run that is not in the database.
    #[error("No run '{0}' in {1}")]
    NoRun(String, String),
    /// A stored definition that is not in the database.
    #[error("{0}")]
    NoDefinition(String),
    /// A run that cannot be resumed or take events (ended, nested, inline runners…).
    #[error("{0}")]
    NotResumable(String),
    /// A step that is not in the database, or not in the run named with it.
    #[error("{0}")]
    NoStep(String),
    /// A run that cannot be forked (nested, inline runners, recorded before steps kept
    /// what a fork needs).
    #[error("{0}")]
    NotForkable(String),
    /// A runner key a definition names is not registered.
    #[error("{0}")]
    UnknownRunner(String),
    /// A handle to a run that ended and was released, or never existed.
    #[error("the run is no longer live in this process")]
    StaleRun,
    /// A driver reported steps it ran by itself that the core would not have run (see
    /// [`Runtime::apply_local`](crate::Runtime::apply_local)): a bug, not a user error.
    #[error("steps run outside the core went where the core would not have")]
    LocalSteps,
    /// An argument the caller got wrong.
    #[error("{0}")]
    Invalid(String),
    /// Tracing could not be configured or flushed.
    #[error("Tracing: {0}")]
    Tracing(String),
    /// The engine was closed.
    #[error("The engine on {0} is closed")]
    Closed(String),
    /// Another live engine holds the run's lease.
    #[error("Run {run_id} is held by {holder} until {} (its lease); it can be taken over once that passes", crate::error::iso_time(*expires_at))]
    LeaseHeld {
        /// The run.
        run_id: String,
        /// The engine that holds it.
        holder: String,
        /// When its lease expires (ms since the epoch).
        expires_at: i64,
    },
}

impl EngineError {
    /// The stable code of the error, for programs to match on.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Machine(MachineError::Restore { .. }) => "ERR_RESTORE",
            EngineError::Definition(e) => e.code(),
            EngineError::Dag(e) => DefinitionError::Dag(e.clone()).code(),
            EngineError::Machine(e) => DefinitionError::Machine(e.clone()).code(),
            EngineError::DefinitionUse(_) => "ERR_DEFINITION_NOT_STORABLE",
            EngineError::InputSchema(_) => "ERR_INPUT_SCHEMA",
            EngineError::Storage(_) => "ERR_STORAGE",
            EngineError::Store(ramus_store::Error::LeaseLost { .. })
            | EngineError::Write {
                source: ramus_store::Error::LeaseLost { .. },
                ..
            } => "ERR_LEASE_LOST",
            EngineError::Store(_) | EngineError::Write { .. } => "ERR_STORE",
            EngineError::NoRun(..) => "ERR_NO_RUN",
            EngineError::NoDefinition(_) => "ERR_NO_DEFINITION",
            EngineError::NotResumable(_) => "ERR_NOT_RESUMABLE",
            EngineError::NoStep(_) => "ERR_NO_STEP",
            EngineError::NotForkable(_) => "ERR_NOT_FORKABLE",
            EngineError::UnknownRunner(_) => "ERR_UNKNOWN_RUNNER",
            EngineError::StaleRun => "ERR_STALE_RUN",
            EngineError::LocalSteps => "ERR_INTERNAL",
            EngineError::Invalid(_) => "ERR_INVALID_ARGUMENT",
            EngineError::Tracing(_) => "ERR_TRACING",
            EngineError::Closed(_) => "ERR_CLOSED",
            EngineError::LeaseHeld { .. } => "ERR_LEASE_HELD",
        }
    }
}

/// A time in ms since the epoch as `2026-01-01T00:00:00.000Z`.
pub(crate) fn iso_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_print_as_iso_8601() {
        assert_eq!(super::iso_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::iso_time(1_767_225_600_123),
            "2026-01-01T00:00:00.123Z"
        );
        assert_eq!(super::iso_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
