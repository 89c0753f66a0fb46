//! Definitions as users write them: a DAG or a state machine config, sent by the JS face as
//! JSON, parsed, validated strictly and turned into the specs the compilers take.
//!
//! The face calls `JSON.stringify(config, replacer)` with a replacer that turns what JSON
//! cannot hold into marker strings ([`FN_MARKER`], [`NAN_MARKER`], [`BIGINT_MARKER_PREFIX`],
//! [`SYMBOL_MARKER`], …), so a function is seen as a function rather than dropped, and a
//! `NaN` is reported as `NaN` rather than as `null`.
//!
//! The parse walks the text once, field by field, without building a `serde_json::Value`
//! tree: each field's value is taken as a [`RawValue`] slice of the input and read by what
//! the field expects. Unknown fields are caught by the same walk (a field is either
//! recognised or reported), so a valid config costs nothing extra for strictness.
//!
//! Graph checks (unknown parents, cycles, missing states) stay in
//! [`CompiledDag::compile`] and [`CompiledMachine::compile`]; their errors come out of
//! [`Definition::compile`] unchanged, wrapped in [`DefinitionError`].

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer as _, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use thiserror::Error;

use crate::dag::{Analysis, CompiledDag, DagGraph, NodeSpec};
use crate::error::DagError;
use crate::machine::{
    parse_duration, CompiledMachine, MachineError, MachineSpec, StateSpec, TransitionSpec,
    MAX_DURATION_MS,
};
use crate::retry::{Backoff, RetryOn, RetryPolicy, StepPolicy, MAX_ATTEMPTS};

// ---- markers ----

/// What the face's replacer puts in place of a function.
pub const FN_MARKER: &str = "\u{0}fn";
/// What the face's replacer puts in place of a symbol.
pub const SYMBOL_MARKER: &str = "\u{0}symbol";
/// How the replacer's marker for a non-finite number starts; the number follows as JS
/// prints it.
pub const NUMBER_MARKER_PREFIX: &str = "\u{0}num:";
/// The replacer's marker for `NaN`.
pub const NAN_MARKER: &str = "\u{0}num:NaN";
/// The replacer's marker for `Infinity`.
pub const INFINITY_MARKER: &str = "\u{0}num:Infinity";
/// The replacer's marker for `-Infinity`.
pub const NEG_INFINITY_MARKER: &str = "\u{0}num:-Infinity";
/// How the replacer's marker for a BigInt starts; its decimal digits follow.
pub const BIGINT_MARKER_PREFIX: &str = "\u{0}bigint:";

/// A machine's `maxSteps` when it gives none: a loop with no bound must not run forever.
pub const DEFAULT_MAX_STEPS: u32 = 10_000;

/// [`FN_MARKER`] as `JSON.stringify` writes it. Every inline `run` is this, so it is
/// recognised from the text without decoding the string.
const FN_MARKER_JSON: &str = "\"\\u0000fn\"";
/// JSON always escapes NUL, so text without this holds no marker.
const MARKER_ESCAPE: &str = "\\u0000";

/// A value JSON cannot hold, as the face's replacer encodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker<'a> {
    /// A function.
    Function,
    /// A symbol.
    Symbol,
    /// `NaN`, `Infinity` or `-Infinity`, as JS prints it.
    NonFinite(&'a str),
    /// A BigInt's decimal digits.
    BigInt(&'a str),
}

impl<'a> Marker<'a> {
    /// The marker `text` is, if it is one. Other strings, even ones starting with NUL, are
    /// plain strings.
    pub fn parse(text: &'a str) -> Option<Marker<'a>> {
        match text {
            FN_MARKER => Some(Marker::Function),
            SYMBOL_MARKER => Some(Marker::Symbol),
            _ => {
                if let Some(n) = text.strip_prefix(NUMBER_MARKER_PREFIX) {
                    Some(Marker::NonFinite(n))
                } else {
                    text.strip_prefix(BIGINT_MARKER_PREFIX).map(Marker::BigInt)
                }
            }
        }
    }

    /// The value as messages name it: `a function`, `a symbol`, `NaN`, `5n`.
    pub fn describe(&self) -> String {
        match self {
            Marker::Function => "a function".into(),
            Marker::Symbol => "a symbol".into(),
            Marker::NonFinite(n) => (*n).into(),
            Marker::BigInt(digits) => format!("{digits}n"),
        }
    }

    /// Why it cannot be part of a definition, worded as the engine words values it cannot
    /// store (`functions cannot be stored`).
    pub fn reason(&self) -> String {
        match self {
            Marker::Function => "functions cannot be stored".into(),
            Marker::Symbol => "symbols cannot be stored".into(),
            Marker::NonFinite(n) => format!("{n} cannot be stored (JSON numbers are finite)"),
            Marker::BigInt(_) => "BigInt values cannot be stored".into(),
        }
    }
}

/// How a message names the value behind a marker string (`NaN`, `5n`, `a function`), or
/// `None` when `text` is not a marker.
pub fn describe_marker(text: &str) -> Option<String> {
    Marker::parse(text).map(|m| m.describe())
}

// ---- errors ----

/// Where in a definition a problem is. Fields are JS property paths (`args.limit`,
/// `tags[1]`, `maxSteps`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    /// The node (DAG) or state (machine) at fault; `None` for the definition itself.
    pub node: Option<String>,
    /// The transition's event type, for a problem inside a transition.
    pub event: Option<String>,
    /// The field at fault, as a property path from the node (or from the root).
    pub field: Option<String>,
}

/// What kind of problem the parser found; each has a stable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InvalidKind {
    /// The text is not JSON.
    Json,
    /// A value has the wrong type or shape.
    Type,
    /// A value has the right type but is out of range or malformed (a duration, a count).
    Value,
    /// Something required is missing (a name, nodes, a runner).
    Missing,
    /// Fields that exclude each other (`run` with `runner`, `args` without `runner`).
    Conflict,
    /// A field the definition does not have.
    UnknownField,
    /// A field given twice (only possible in hand-written JSON).
    DuplicateField,
    /// A field planned but not implemented yet (`retry`, `cache`, …).
    Unsupported,
    /// An inline function in a definition that is to be stored.
    NotStorable,
    /// A function, non-finite number, BigInt or symbol where only JSON data may be.
    NotJson,
}

impl InvalidKind {
    /// The stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            InvalidKind::Json => "ERR_DEFINITION_JSON",
            InvalidKind::Type => "ERR_DEFINITION_TYPE",
            InvalidKind::Value => "ERR_DEFINITION_VALUE",
            InvalidKind::Missing => "ERR_DEFINITION_MISSING",
            InvalidKind::Conflict => "ERR_DEFINITION_CONFLICT",
            InvalidKind::UnknownField => "ERR_DEFINITION_UNKNOWN_FIELD",
            InvalidKind::DuplicateField => "ERR_DEFINITION_DUPLICATE_FIELD",
            InvalidKind::Unsupported => "ERR_DEFINITION_UNSUPPORTED",
            InvalidKind::NotStorable => "ERR_DEFINITION_NOT_STORABLE",
            InvalidKind::NotJson => "ERR_DEFINITION_NOT_JSON",
        }
    }
}

/// Why a definition was rejected. `Display` is the user-facing message (part of the public
/// contract); [`code`](DefinitionError::code) is stable for programs to match on.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DefinitionError {
    /// Rejected by the parser.
    #[error("{message}")]
    Invalid {
        /// What kind of problem.
        kind: InvalidKind,
        /// Where it is.
        location: Location,
        /// The message.
        message: String,
    },
    /// Rejected by the DAG compiler (unknown parent, cycle, no nodes).
    #[error(transparent)]
    Dag(#[from] DagError),
    /// Rejected by the machine compiler (missing initial, error or target state).
    #[error(transparent)]
    Machine(#[from] MachineError),
}

impl DefinitionError {
    /// The stable machine-readable code: `ERR_DEFINITION_*`.
    pub fn code(&self) -> &'static str {
        match self {
            DefinitionError::Invalid { kind, .. } => kind.code(),
            DefinitionError::Dag(e) => match e {
                DagError::UnknownParent { .. } => "ERR_DEFINITION_UNKNOWN_PARENT",
                DagError::Cycle { .. } => "ERR_DEFINITION_CYCLE",
                DagError::Empty => "ERR_DEFINITION_NO_NODES",
                DagError::DuplicateNode(_) => "ERR_DEFINITION_DUPLICATE_NODE",
            },
            DefinitionError::Machine(e) => match e {
                MachineError::NoStates(_) => "ERR_DEFINITION_NO_NODES",
                MachineError::NoInitial => "ERR_DEFINITION_NO_INITIAL",
                MachineError::InitialMissing(_)
                | MachineError::ErrorStateMissing(_)
                | MachineError::TargetMissing { .. }
                | MachineError::TimeoutTargetMissing { .. } => "ERR_DEFINITION_UNKNOWN_STATE",
                MachineError::DuplicateState(_) => "ERR_DEFINITION_DUPLICATE_NODE",
                // Run-time errors: not raised while compiling a definition.
                _ => "ERR_MACHINE",
            },
        }
    }

    /// Where the problem is, as far as the error knows.
    pub fn location(&self) -> Location {
        let at = |node: &str, field: Option<&str>| Location {
            node: Some(node.to_string()),
            event: None,
            field: field.map(str::to_string),
        };
        let field = |field: &str| Location {
            field: Some(field.to_string()),
            ..Location::default()
        };
        match self {
            DefinitionError::Invalid { location, .. } => location.clone(),
            DefinitionError::Dag(e) => match e {
                DagError::UnknownParent { node, .. } => at(node, Some("parents")),
                DagError::Cycle { path } => {
                    path.first().map_or_else(Location::default, |n| at(n, None))
                }
                DagError::Empty => Location::default(),
                DagError::DuplicateNode(node) => at(node, None),
            },
            DefinitionError::Machine(e) => match e {
                MachineError::InitialMissing(_) => field("initial"),
                MachineError::ErrorStateMissing(_) => field("errorState"),
                MachineError::TargetMissing { state, .. } => at(state, Some("transition")),
                MachineError::TimeoutTargetMissing { state, .. } => at(state, Some("timeout")),
                MachineError::DuplicateState(state) => at(state, None),
                _ => Location::default(),
            },
        }
    }
}

fn invalid(kind: InvalidKind, location: Location, message: impl Into<String>) -> DefinitionError {
    DefinitionError::Invalid {
        kind,
        location,
        message: message.into(),
    }
}

fn json_error(e: serde_json::Error) -> DefinitionError {
    invalid(
        InvalidKind::Json,
        Location::default(),
        format!("A definition must be JSON: {e}"),
    )
}

// ---- the definition types ----

/// Which kind of definition to expect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExpectKind {
    /// A config with an `initial` key is a machine, any other a DAG (as the engine decides).
    #[default]
    Detect,
    /// A DAG.
    Dag,
    /// A state machine.
    Machine,
}

/// How to parse.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParseOptions {
    /// The kind expected.
    pub expect: ExpectKind,
    /// A definition to store (`engine.define`): no function anywhere, runners and
    /// conditions named by registry key.
    pub stored: bool,
    /// A machine's initial state, supplied by the caller: used when the config has none and
    /// instead of the config's when given (`new StateMachineRunner({ config, initial })`).
    pub initial: Option<String>,
    /// DAG nodes may have no runner: for checking a graph alone (`analyzeDag`, diagrams).
    pub runners_optional: bool,
}

impl ParseOptions {
    /// Options expecting `expect`, inline, with no initial override.
    pub fn new(expect: ExpectKind) -> Self {
        ParseOptions {
            expect,
            ..Default::default()
        }
    }

    /// Set whether the definition is to be stored.
    pub fn stored(mut self, stored: bool) -> Self {
        self.stored = stored;
        self
    }

    /// Supply (or override) a machine's initial state.
    pub fn initial(mut self, initial: impl Into<String>) -> Self {
        self.initial = Some(initial.into());
        self
    }

    /// Let DAG nodes have no runner.
    pub fn runners_optional(mut self, optional: bool) -> Self {
        self.runners_optional = optional;
        self
    }
}

/// A parsed definition.
// One per parse, moved a few times before it is compiled: boxing the DAG's tables would
// cost an allocation to save a copy of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Definition {
    /// A DAG.
    Dag(DagDef),
    /// A state machine.
    Machine(MachineDef),
}

/// Who runs a node or a state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunnerDef {
    /// The config's own `run` function (the face keeps it).
    Inline,
    /// A runner registered in the engine under `key`.
    Registered {
        /// The registry key (`runner: 'key'`).
        key: String,
        /// The raw JSON text of `args`, handed to the runner; `None` when absent.
        args: Option<String>,
    },
}

/// A definition's default context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContextDef {
    /// A function returning it (inline definitions only).
    Inline,
    /// A JSON object, copied for each run: its raw text.
    Json(String),
}

/// A DAG definition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DagDef {
    /// The name (`''` when an inline config gives none).
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Keep running what can run when a node fails.
    pub tolerate_failures: bool,
    /// Tags of the DAG's runs.
    pub tags: Vec<String>,
    /// Raw JSON text of `info` (an object).
    pub info: Option<String>,
    /// The default context.
    pub context: Option<ContextDef>,
    /// Raw JSON text of `inputSchema` (an object; checked as a schema by the engine).
    pub input_schema: Option<String>,
    /// The nodes' graph, in declaration order, as [`CompiledDag::from_graph`] takes it:
    /// each node's name, parents, `tolerateParentErrors` and `semaphoreKey`. Kept in that
    /// form so compiling copies nothing.
    pub graph: DagGraph,
    /// The rest of each node, at its index in `graph`.
    pub nodes: Vec<DagNodeDef>,
}

/// What a DAG node declares besides its place in the graph (see [`DagDef::graph`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DagNodeDef {
    /// Tags.
    pub tags: Vec<String>,
    /// Raw JSON text of `info` (an object).
    pub info: Option<String>,
    /// Who runs it; `None` only with [`ParseOptions::runners_optional`].
    pub runner: Option<RunnerDef>,
    /// Its `cache`.
    pub cache: Option<CacheDef>,
    /// The root-input keys it reads (`uses`): `updateInput` reruns it when one changes.
    pub uses: Vec<String>,
    /// `expand`: a function (inline) or a registered runner's key (stored) that returns the
    /// definition this node runs, nested in its step.
    pub expand: Option<RunnerDef>,
    /// `map`: a DAG run once per item of a parent's output.
    pub map: Option<MapDef>,
}

/// A node's `map: { over, dag }`: `dag` runs once per item of parent `over`'s output (an
/// array), each run nested in the node's step with the item as its input; the node's
/// output is their outputs in item order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapDef {
    /// The parent whose output is the list.
    pub over: String,
    /// The DAG's config, raw JSON text (validated as a DAG).
    pub dag: String,
}

/// A state machine definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineDef {
    /// The name (`''` when an inline config gives none).
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The state it starts in: [`ParseOptions::initial`] if given, else the config's;
    /// `None` (an error when compiling) if neither names one.
    pub initial: Option<String>,
    /// Where any state goes when its run fails.
    pub error_state: Option<String>,
    /// How many state runs one machine run may make ([`DEFAULT_MAX_STEPS`] by default).
    pub max_steps: u32,
    /// Tags of the machine's runs.
    pub tags: Vec<String>,
    /// Raw JSON text of `info` (an object).
    pub info: Option<String>,
    /// The default context.
    pub context: Option<ContextDef>,
    /// Raw JSON text of `inputSchema` (an object).
    pub input_schema: Option<String>,
    /// The states, in declaration order.
    pub states: Vec<StateDef>,
}

/// A machine state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateDef {
    /// The state's name.
    pub name: String,
    /// Who runs it; without one, a state passes its input on as its output.
    pub runner: Option<RunnerDef>,
    /// Its transitions, flattened in declaration order (the order conditions are tried in).
    pub transitions: Vec<TransitionDef>,
    /// Resting here finishes the machine.
    pub is_final: bool,
    /// Where it goes when its run fails (overrides the machine's).
    pub error_state: Option<String>,
    /// Rate-limiting key.
    pub semaphore_key: Option<String>,
    /// How often it may run in one machine run.
    pub max_visits: Option<u32>,
    /// `(after_ms, state)`: move to `state` when the run or the wait lasts longer.
    pub timeout: Option<(u64, String)>,
    /// How the timeout's `after` was written (`5s`, `40ms`), for its error's message.
    pub timeout_label: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Raw JSON text of `info` (an object).
    pub info: Option<String>,
    /// Run again after a failure.
    pub retry: Option<RetryPolicy>,
    /// Its `cache`.
    pub cache: Option<CacheDef>,
}

/// A step's `cache`: `false` never caches it; otherwise how its entries are keyed and kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheDef {
    /// `cache: false`.
    Off,
    /// `cache: true` or `{ key?, ttl?, version? }`.
    On {
        /// Replaces the default key: a fixed key, or the config's own function.
        key: Option<CacheKey>,
        /// How long an entry lives, in ms.
        ttl_ms: Option<u64>,
        /// Part of the key: a new version leaves the old entries behind.
        version: Option<String>,
    },
}

/// A `cache.key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheKey {
    /// A string: every run of the step shares the one entry.
    Fixed(String),
    /// The config's function of `{ input, rootInput, args, context }` (the face keeps it).
    Inline,
}

/// A transition's condition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ConditionDef {
    /// None: the transition is always taken.
    #[default]
    None,
    /// The config's own function (the face keeps it).
    Inline,
    /// A condition registered in the engine under this key.
    Registered(String),
}

/// One transition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransitionDef {
    /// The event type that fires it; `""` fires without an event.
    pub event: String,
    /// The state it leads to.
    pub target: String,
    /// Its condition.
    pub condition: ConditionDef,
    /// Its position in the array of its event's transitions, when they are an array (with
    /// `state` and `event`, where the face finds an inline condition in the config).
    pub index: Option<usize>,
    /// Wait this long (ms) before moving.
    pub delay_ms: Option<u64>,
}

/// A compiled definition.
#[derive(Debug)]
pub enum CompiledDefinition {
    /// A DAG.
    Dag(CompiledDag),
    /// A state machine.
    Machine(CompiledMachine),
}

impl Definition {
    /// The definition's name.
    pub fn name(&self) -> &str {
        match self {
            Definition::Dag(d) => &d.name,
            Definition::Machine(m) => &m.name,
        }
    }

    /// Whether it is a state machine.
    pub fn is_machine(&self) -> bool {
        matches!(self, Definition::Machine(_))
    }

    /// Compile: the graph checks, with the compilers' messages.
    pub fn compile(&self) -> Result<CompiledDefinition, DefinitionError> {
        Ok(match self {
            Definition::Dag(d) => CompiledDefinition::Dag(d.compile()?),
            Definition::Machine(m) => CompiledDefinition::Machine(m.compile()?),
        })
    }
}

impl DagDef {
    /// The nodes as [`CompiledDag::compile`] takes them.
    pub fn node_specs(&self) -> Vec<NodeSpec> {
        self.graph.to_specs()
    }

    /// A node's name.
    pub fn node_name(&self, node: usize) -> &str {
        self.graph.name(node as u32)
    }

    /// Compile (a copy of the graph: [`CompiledDag::from_graph`] takes the graph itself).
    pub fn compile(&self) -> Result<CompiledDag, DefinitionError> {
        Ok(CompiledDag::from_graph(
            self.name.clone(),
            self.graph.clone(),
        )?)
    }

    /// Roots and leaves, checking the graph without compiling it.
    pub fn analyze(&self) -> Result<Analysis, DefinitionError> {
        Ok(self.graph.analyze()?)
    }
}

impl From<&DagDef> for Vec<NodeSpec> {
    fn from(d: &DagDef) -> Vec<NodeSpec> {
        d.graph.to_specs()
    }
}

impl From<DagDef> for Vec<NodeSpec> {
    fn from(d: DagDef) -> Vec<NodeSpec> {
        d.graph.to_specs()
    }
}

impl MachineDef {
    /// The machine as [`CompiledMachine::compile`] takes it.
    pub fn spec(&self) -> MachineSpec {
        MachineSpec {
            name: self.name.clone(),
            initial: self.initial.clone(),
            error_state: self.error_state.clone(),
            max_steps: Some(self.max_steps),
            states: self.states.iter().map(StateSpec::from).collect(),
        }
    }

    /// Compile.
    pub fn compile(&self) -> Result<CompiledMachine, DefinitionError> {
        Ok(CompiledMachine::compile(&self.spec())?)
    }
}

impl From<&StateDef> for StateSpec {
    fn from(s: &StateDef) -> StateSpec {
        StateSpec {
            name: s.name.clone(),
            has_run: s.runner.is_some(),
            is_final: s.is_final,
            error_state: s.error_state.clone(),
            max_visits: s.max_visits,
            timeout: s.timeout.clone(),
            timeout_label: s.timeout_label.clone(),
            semaphore_key: s.semaphore_key.clone(),
            retry: s.retry.clone(),
            transitions: s
                .transitions
                .iter()
                .map(|t| TransitionSpec {
                    event: t.event.clone(),
                    target: t.target.clone(),
                    guarded: t.condition != ConditionDef::None,
                    delay_ms: t.delay_ms,
                })
                .collect(),
        }
    }
}

impl From<&MachineDef> for MachineSpec {
    fn from(m: &MachineDef) -> MachineSpec {
        m.spec()
    }
}

// ---- walking JSON text without building values ----

/// An object key, borrowed from the input unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Runs a callback per entry or item. A callback's error cannot travel through serde's
/// error type, so it is parked in `failed` and serde is stopped with a placeholder.
struct Walk<'f, 'de, F> {
    f: &'f mut F,
    failed: &'f mut Option<DefinitionError>,
    _input: PhantomData<&'de str>,
}

impl<'de, F> Visitor<'de> for Walk<'_, 'de, F>
where
    F: FnMut(Cow<'de, str>, &'de RawValue) -> Result<(), DefinitionError>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            let value: &'de RawValue = map.next_value()?;
            if let Err(e) = (self.f)(key, value) {
                *self.failed = Some(e);
                return Err(de::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

struct Items<'f, 'de, F> {
    f: &'f mut F,
    failed: &'f mut Option<DefinitionError>,
    _input: PhantomData<&'de str>,
}

impl<'de, F> Visitor<'de> for Items<'_, 'de, F>
where
    F: FnMut(usize, &'de RawValue) -> Result<(), DefinitionError>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while let Some(value) = seq.next_element::<&'de RawValue>()? {
            if let Err(e) = (self.f)(i, value) {
                *self.failed = Some(e);
                return Err(de::Error::custom("stopped"));
            }
            i += 1;
        }
        Ok(())
    }
}

fn finish(
    result: Result<(), serde_json::Error>,
    failed: Option<DefinitionError>,
) -> Result<(), DefinitionError> {
    match (failed, result) {
        (Some(e), _) => Err(e),
        (None, Err(e)) => Err(json_error(e)),
        (None, Ok(())) => Ok(()),
    }
}

/// Calls `f` with each entry of the JSON object `text`, in order.
fn for_each_entry<'a>(
    text: &'a str,
    mut f: impl FnMut(Cow<'a, str>, &'a RawValue) -> Result<(), DefinitionError>,
) -> Result<(), DefinitionError> {
    let mut failed = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let result = de
        .deserialize_map(Walk {
            f: &mut f,
            failed: &mut failed,
            _input: PhantomData,
        })
        .and_then(|()| de.end());
    finish(result, failed)
}

/// Calls `f` with each item of the JSON array `text`, in order.
fn for_each_item<'a>(
    text: &'a str,
    mut f: impl FnMut(usize, &'a RawValue) -> Result<(), DefinitionError>,
) -> Result<(), DefinitionError> {
    let mut failed = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let result = de
        .deserialize_seq(Items {
            f: &mut f,
            failed: &mut failed,
            _input: PhantomData,
        })
        .and_then(|()| de.end());
    finish(result, failed)
}

/// Receives a map of named objects (the nodes of a definition) field by field.
trait ObjectSink<'a> {
    /// An entry starts; its value follows.
    fn begin(&mut self, name: Cow<'a, str>) -> Result<(), DefinitionError>;
    /// A field of the current entry's object.
    fn field(&mut self, key: Cow<'a, str>, value: &'a RawValue) -> Result<(), DefinitionError>;
    /// The current entry's object is complete.
    fn end(&mut self) -> Result<(), DefinitionError>;
    /// The current entry's value is not an object.
    fn not_an_object(&self) -> DefinitionError;
}

struct Objects<'f, 'de, S> {
    sink: &'f mut S,
    failed: &'f mut Option<DefinitionError>,
    _input: PhantomData<&'de str>,
}

impl<'de, S: ObjectSink<'de>> Visitor<'de> for Objects<'_, 'de, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of objects")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(name)) = map.next_key()? {
            if let Err(e) = self.sink.begin(name) {
                *self.failed = Some(e);
                return Err(de::Error::custom("stopped"));
            }
            let entry = Entry {
                sink: &mut *self.sink,
                failed: &mut *self.failed,
                _input: PhantomData,
            };
            if let Err(e) = map.next_value_seed(entry) {
                // The text was checked when `nodes` was read, so a serde error here can
                // only be serde refusing a non-object as a map.
                if self.failed.is_none() {
                    *self.failed = Some(self.sink.not_an_object());
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

/// One entry's object, read straight from the stream rather than captured and read again.
struct Entry<'f, 'de, S> {
    sink: &'f mut S,
    failed: &'f mut Option<DefinitionError>,
    _input: PhantomData<&'de str>,
}

impl<'de, S: ObjectSink<'de>> de::DeserializeSeed<'de> for Entry<'_, 'de, S> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, S: ObjectSink<'de>> Visitor<'de> for Entry<'_, 'de, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            let value: &'de RawValue = map.next_value()?;
            if let Err(e) = self.sink.field(key, value) {
                *self.failed = Some(e);
                return Err(de::Error::custom("stopped"));
            }
        }
        if let Err(e) = self.sink.end() {
            *self.failed = Some(e);
            return Err(de::Error::custom("stopped"));
        }
        Ok(())
    }
}

/// Feeds the object of objects `text` to `sink`, scanning each inner object once.
fn for_each_object<'a>(
    text: &'a str,
    sink: &mut impl ObjectSink<'a>,
) -> Result<(), DefinitionError> {
    let mut failed = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let result = de
        .deserialize_map(Objects {
            sink,
            failed: &mut failed,
            _input: PhantomData,
        })
        .and_then(|()| de.end());
    finish(result, failed)
}

/// A JSON value seen from its text: scalars read, containers left as text.
enum Val<'a> {
    Null,
    Bool(bool),
    /// The number as written, which for `JSON.stringify` output is as JS prints it.
    Num(&'a str),
    Str(Cow<'a, str>),
    /// A marker string (see [`Marker`]).
    Marker(Cow<'a, str>),
    Array(&'a str),
    Object(&'a str),
}

fn classify(raw: &RawValue) -> Val<'_> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => Val::Null,
        Some(b't') => Val::Bool(true),
        Some(b'f') => Val::Bool(false),
        Some(b'[') => Val::Array(text),
        Some(b'{') => Val::Object(text),
        Some(b'"') if text == FN_MARKER_JSON => Val::Marker(Cow::Borrowed(FN_MARKER)),
        Some(b'"') => {
            let inner = &text[1..text.len() - 1];
            let s = if inner.contains('\\') {
                // serde_json checked the text already; decoding cannot fail.
                Cow::Owned(serde_json::from_str::<String>(text).unwrap_or_default())
            } else {
                Cow::Borrowed(inner)
            };
            if s.starts_with('\0') && Marker::parse(&s).is_some() {
                Val::Marker(s)
            } else {
                Val::Str(s)
            }
        }
        _ => Val::Num(text),
    }
}

/// A value as messages show it: numbers as JS prints them, strings quoted, markers named,
/// containers as (shortened) JSON.
fn describe(v: &Val) -> String {
    match v {
        Val::Null => "null".into(),
        Val::Bool(b) => b.to_string(),
        Val::Num(n) => (*n).into(),
        Val::Str(s) => serde_json::to_string(s.as_ref()).unwrap_or_default(),
        Val::Marker(m) => describe_marker(m).unwrap_or_default(),
        Val::Array(t) | Val::Object(t) => shorten(t),
    }
}

fn shorten(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() <= MAX {
        return text.to_string();
    }
    let mut s: String = text.chars().take(MAX).collect();
    s.push('…');
    s
}

/// The first marker inside `raw`, with its path (`.limit`, `[2]`, `["a b"]`), depth first
/// in declaration order like `JSON.stringify`. Iterative: JSON nests arbitrarily deep.
fn find_marker(raw: &RawValue) -> Result<Option<(String, String)>, DefinitionError> {
    if !raw.get().contains(MARKER_ESCAPE) {
        return Ok(None);
    }
    enum Seg<'a> {
        Root,
        Key(Cow<'a, str>),
        Index(usize),
    }
    // Only values whose text holds a marker escape are visited; each remembers its parent
    // so the path is built only for the one reported.
    let mut arena: Vec<(&RawValue, usize, Seg)> = vec![(raw, 0, Seg::Root)];
    let mut stack = vec![0usize];
    while let Some(i) = stack.pop() {
        let start = arena.len();
        match classify(arena[i].0) {
            Val::Marker(m) => {
                let mut segs = Vec::new();
                let mut at = i;
                while at != 0 {
                    segs.push(at);
                    at = arena[at].1;
                }
                let mut path = String::new();
                for &s in segs.iter().rev() {
                    match &arena[s].2 {
                        Seg::Key(k) => push_segment(&mut path, k),
                        Seg::Index(n) => path.push_str(&format!("[{n}]")),
                        Seg::Root => {}
                    }
                }
                return Ok(Some((path, m.into_owned())));
            }
            Val::Object(text) => for_each_entry(text, |k, v| {
                if v.get().contains(MARKER_ESCAPE) {
                    arena.push((v, i, Seg::Key(k)));
                }
                Ok(())
            })?,
            Val::Array(text) => for_each_item(text, |n, v| {
                if v.get().contains(MARKER_ESCAPE) {
                    arena.push((v, i, Seg::Index(n)));
                }
                Ok(())
            })?,
            _ => {}
        }
        stack.extend((start..arena.len()).rev());
    }
    Ok(None)
}

/// A property path segment as the engine writes paths: `.name` for identifiers,
/// `["a b"]` otherwise.
fn push_segment(path: &mut String, key: &str) {
    let mut chars = key.chars();
    let ident = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if ident {
        path.push('.');
        path.push_str(key);
    } else {
        path.push('[');
        path.push_str(&serde_json::to_string(key).unwrap_or_default());
        path.push(']');
    }
}

// ---- field names ----

const DAG_ROOT: &[&str] = &[
    "name",
    "description",
    "context",
    "inputSchema",
    "tolerateFailures",
    "tags",
    "info",
    "nodes",
];
const MACHINE_ROOT: &[&str] = &[
    "name",
    "description",
    "initial",
    "context",
    "errorState",
    "maxSteps",
    "tags",
    "info",
    "inputSchema",
    "nodes",
];
const DAG_NODE: &[&str] = &[
    "parents",
    "run",
    "runner",
    "args",
    "semaphoreKey",
    "tolerateParentErrors",
    "tags",
    "info",
    "retry",
    "timeout",
    "cache",
    "category",
    "uses",
    "expand",
    "map",
];
const STATE: &[&str] = &[
    "run",
    "runner",
    "args",
    "transition",
    "final",
    "errorState",
    "semaphoreKey",
    "maxVisits",
    "timeout",
    "tags",
    "info",
    "retry",
    "cache",
    "category",
];
const TRANSITION: &[&str] = &["state", "condition", "delay"];
const TIMEOUT: &[&str] = &["after", "state"];
const RETRY: &[&str] = &["attempts", "backoff", "initial", "max", "jitter", "retryOn"];
const CACHE: &[&str] = &["key", "ttl", "version"];
/// Planned node fields: refused rather than ignored, so a config relying on one does not
/// silently run without it.
const NOT_YET_NODE: &[&str] = &[];
const NOT_YET_STATE: &[&str] = &["uses", "expand", "map"];

/// Where a field sits, for messages.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Dag(&'a str),
    Machine(&'a str),
    Node(&'a str),
    State(&'a str),
    Transition(&'a str, &'a str),
    Timeout(&'a str),
    Retry(Who<'a>),
    Cache(Who<'a>),
}

impl Scope<'_> {
    fn known(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Scope::Dag(_) => (DAG_ROOT, &[]),
            Scope::Machine(_) => (MACHINE_ROOT, &[]),
            Scope::Node(_) => (DAG_NODE, NOT_YET_NODE),
            Scope::State(_) => (STATE, NOT_YET_STATE),
            Scope::Transition(..) => (TRANSITION, &[]),
            Scope::Timeout(_) => (TIMEOUT, &[]),
            Scope::Retry(_) => (RETRY, &[]),
            Scope::Cache(_) => (CACHE, &[]),
        }
    }

    /// The same place in the other kind of definition, to explain a field that belongs there.
    fn other_kind(self) -> Option<(&'static [&'static str], &'static str)> {
        match self {
            Scope::Dag(_) => Some((MACHINE_ROOT, "a state machine field")),
            Scope::Node(_) => Some((STATE, "a state machine field")),
            Scope::Machine(_) => Some((DAG_ROOT, "a DAG field")),
            Scope::State(_) => Some((DAG_NODE, "a DAG node field")),
            _ => None,
        }
    }

    fn location(self, field: &str) -> Location {
        let (node, event) = match self {
            Scope::Dag(_) | Scope::Machine(_) => (None, None),
            Scope::Node(n) | Scope::State(n) | Scope::Timeout(n) => (Some(n), None),
            Scope::Retry(Who::Node(n) | Who::State(n))
            | Scope::Cache(Who::Node(n) | Who::State(n)) => (Some(n), None),
            Scope::Retry(_) | Scope::Cache(_) => (None, None),
            Scope::Transition(n, e) => (Some(n), Some(e)),
        };
        let field = match self {
            Scope::Transition(..) => format!("transition.{field}"),
            Scope::Timeout(_) => format!("timeout.{field}"),
            Scope::Retry(_) => format!("retry.{field}"),
            Scope::Cache(_) => format!("cache.{field}"),
            _ => field.to_string(),
        };
        Location {
            node: node.map(str::to_string),
            event: event.map(str::to_string),
            field: Some(field),
        }
    }
}

impl fmt::Display for Scope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Scope::Dag("") | Scope::Machine("") => write!(f, "the definition"),
            Scope::Dag(n) | Scope::Machine(n) => write!(f, "definition '{n}'"),
            Scope::Node(n) => write!(f, "node '{n}'"),
            Scope::State(n) => write!(f, "state '{n}'"),
            Scope::Transition(s, e) => write!(f, "transition of state '{s}' for event '{e}'"),
            Scope::Timeout(s) => write!(f, "timeout of state '{s}'"),
            Scope::Retry(Who::Node(n)) => write!(f, "retry of node '{n}'"),
            Scope::Retry(Who::State(n)) => write!(f, "retry of state '{n}'"),
            Scope::Retry(_) => write!(f, "retry"),
            Scope::Cache(Who::Node(n)) => write!(f, "cache of node '{n}'"),
            Scope::Cache(Who::State(n)) => write!(f, "cache of state '{n}'"),
            Scope::Cache(_) => write!(f, "cache"),
        }
    }
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions), ignoring
/// case: `retyr` is one edit from `retry`, `semaphorekey` none from `semaphoreKey`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().flat_map(char::to_lowercase).collect();
    let b: Vec<char> = b.chars().flat_map(char::to_lowercase).collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for (i, row) in d.chunks_mut(w).enumerate() {
        row[0] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = best;
        }
    }
    d[a.len() * w + b.len()]
}

/// The known name closest to `key`, if it is close enough to be a likely typo.
///
/// ```
/// assert_eq!(ramus_core::suggest("serch", ["search", "merge"].into_iter()), Some("search"));
/// assert_eq!(ramus_core::suggest("zzz", ["search"].into_iter()), None);
/// ```
pub fn suggest<'k>(key: &str, names: impl Iterator<Item = &'k str>) -> Option<&'k str> {
    let limit = ((key.chars().count() + 2) / 4).clamp(1, 3);
    names
        .map(|n| (edit_distance(key, n), n))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, n)| n)
}

/// Refuses unknown, planned and repeated fields of one object, in the same walk that reads
/// the known ones: `seen` has a bit per known field of `scope`. `detected`: a DAG read
/// because the config had no `initial`, so a machine field means the user meant a machine.
fn check_field(
    scope: Scope,
    seen: &mut u32,
    detected: bool,
    key: &str,
) -> Result<(), DefinitionError> {
    let (known, not_yet) = scope.known();
    if let Some(i) = known.iter().position(|k| *k == key) {
        if *seen & (1 << i) != 0 {
            return Err(invalid(
                InvalidKind::DuplicateField,
                scope.location(key),
                format!("duplicate field '{key}' on {scope}"),
            ));
        }
        *seen |= 1 << i;
        return Ok(());
    }
    if not_yet.contains(&key) {
        return Err(invalid(
            InvalidKind::Unsupported,
            scope.location(key),
            format!("field '{key}' on {scope} is not supported yet"),
        ));
    }
    let mut message = format!("unknown field '{key}' on {scope}");
    match scope.other_kind().filter(|(names, _)| names.contains(&key)) {
        Some((_, what)) if detected && matches!(scope, Scope::Dag(_) | Scope::Node(_)) => {
            message.push_str(&format!(
                " ({what}: a config without 'initial' is read as a DAG)"
            ));
        }
        Some((_, what)) => message.push_str(&format!(" ({what})")),
        None => {
            if let Some(s) = suggest(key, known.iter().chain(not_yet).copied()) {
                message.push_str(&format!(" (did you mean '{s}'?)"));
            }
        }
    }
    Err(invalid(
        InvalidKind::UnknownField,
        scope.location(key),
        message,
    ))
}

/// [`check_field`] for an object read in one go.
struct Fields<'s> {
    scope: Scope<'s>,
    seen: u32,
    detected: bool,
}

impl<'s> Fields<'s> {
    fn new(scope: Scope<'s>, detected: bool) -> Self {
        Fields {
            scope,
            seen: 0,
            detected,
        }
    }

    fn check(&mut self, key: &str) -> Result<(), DefinitionError> {
        check_field(self.scope, &mut self.seen, self.detected, key)
    }
}

// ---- reading fields ----

/// The subject of a message: `DAG 'd'`, `Machine m`, `Node 'x'`, `State x` (the wording of
/// the existing messages: DAG names quoted, machine names bare).
#[derive(Clone, Copy)]
enum Who<'a> {
    Dag(&'a str),
    Machine(&'a str),
    Node(&'a str),
    State(&'a str),
}

impl Who<'_> {
    fn location(self, field: Option<&str>) -> Location {
        let node = match self {
            Who::Node(n) | Who::State(n) => Some(n.to_string()),
            Who::Dag(_) | Who::Machine(_) => None,
        };
        Location {
            node,
            event: None,
            field: field.map(str::to_string),
        }
    }
}

impl fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Who::Dag("") => write!(f, "DAG"),
            Who::Dag(n) => write!(f, "DAG '{n}'"),
            Who::Machine("") => write!(f, "Machine"),
            Who::Machine(n) => write!(f, "Machine {n}"),
            Who::Node(n) => write!(f, "Node '{n}'"),
            Who::State(n) => write!(f, "State {n}"),
        }
    }
}

/// `{who} {field} must be {expected}, got {value}`.
fn wrong_type(who: Who, field: &str, expected: &str, got: &Val) -> DefinitionError {
    invalid(
        InvalidKind::Type,
        who.location(Some(field)),
        format!("{who} {field} must be {expected}, got {}", describe(got)),
    )
}

fn string(who: Who, field: &str, raw: &RawValue) -> Result<String, DefinitionError> {
    match classify(raw) {
        Val::Str(s) => Ok(s.into_owned()),
        v => Err(wrong_type(who, field, "a string", &v)),
    }
}

fn boolean(who: Who, field: &str, raw: &RawValue) -> Result<bool, DefinitionError> {
    match classify(raw) {
        Val::Bool(b) => Ok(b),
        v => Err(wrong_type(who, field, "a boolean", &v)),
    }
}

/// A state name, or `None` for `null` (as the engine always read it).
fn state_name(who: Who, field: &str, raw: &RawValue) -> Result<Option<String>, DefinitionError> {
    match classify(raw) {
        Val::Null => Ok(None),
        Val::Str(s) => Ok(Some(s.into_owned())),
        v => Err(wrong_type(who, field, "a state name", &v)),
    }
}

/// `semaphoreKey`, or its alias `category` (`field`): the key a step's limits are kept
/// under. `prev` is the one the other field gave, if any: both may be given only alike.
fn semaphore_key(
    who: Who,
    field: &str,
    raw: &RawValue,
    prev: Option<&str>,
) -> Result<String, DefinitionError> {
    let key = match classify(raw) {
        Val::Str(s) => s.into_owned(),
        _ => {
            return Err(invalid(
                InvalidKind::Type,
                who.location(Some(field)),
                format!("{who} {field} must be a string"),
            ))
        }
    };
    match prev {
        Some(p) if p != key => Err(invalid(
            InvalidKind::Type,
            who.location(Some(field)),
            format!(
                "{who} has {other} '{p}' and {field} '{key}'; category is another name for semaphoreKey: give one, or the same key",
                other = if field == "category" { "semaphoreKey" } else { "category" }
            ),
        )),
        _ => Ok(key),
    }
}

fn string_list(who: Who, field: &str, raw: &RawValue) -> Result<Vec<String>, DefinitionError> {
    let text = match classify(raw) {
        Val::Array(text) => text,
        v => return Err(wrong_type(who, field, "an array of strings", &v)),
    };
    let mut out = Vec::new();
    for_each_item(text, |i, item| {
        match classify(item) {
            Val::Str(s) => out.push(s.into_owned()),
            v => return Err(wrong_type(who, &format!("{field}[{i}]"), "a string", &v)),
        }
        Ok(())
    })?;
    Ok(out)
}

/// A positive integer that fits a `u32`, or `None` for `null`.
fn positive_int(who: Who, field: &str, raw: &RawValue) -> Result<Option<u32>, DefinitionError> {
    let v = classify(raw);
    match &v {
        Val::Null => return Ok(None),
        Val::Num(text) => {
            if let Ok(n) = text.parse::<f64>() {
                if n.fract() == 0.0 && n >= 1.0 && n <= f64::from(u32::MAX) {
                    return Ok(Some(n as u32));
                }
                if n.fract() == 0.0 && n > f64::from(u32::MAX) {
                    return Err(invalid(
                        InvalidKind::Value,
                        who.location(Some(field)),
                        format!("{who} {field} must be at most {}, got {text}", u32::MAX),
                    ));
                }
            }
        }
        _ => return Err(wrong_type(who, field, "a positive integer", &v)),
    }
    Err(invalid(
        InvalidKind::Value,
        who.location(Some(field)),
        format!(
            "{who} {field} must be a positive integer, got {}",
            describe(&v)
        ),
    ))
}

/// Milliseconds of a duration: a non-negative number of ms or a duration string.
/// Refused as `{who} has an invalid {what}: …` at `field`.
fn duration_at(who: Who, what: &str, field: &str, raw: &RawValue) -> Result<u64, DefinitionError> {
    let v = classify(raw);
    let ms = match &v {
        Val::Num(text) => text
            .parse::<f64>()
            .ok()
            .filter(|n| *n >= 0.0 && *n <= MAX_DURATION_MS as f64)
            .map(|n| n.round() as u64),
        Val::Str(s) => parse_duration(s),
        _ => None,
    };
    ms.ok_or_else(|| {
        // Strings are shown bare, as the engine always showed them (`invalid delay: soon`).
        let shown = match &v {
            Val::Str(s) => s.to_string(),
            other => describe(other),
        };
        let kind = match v {
            Val::Num(_) | Val::Str(_) | Val::Marker(_) => InvalidKind::Value,
            _ => InvalidKind::Type,
        };
        invalid(
            kind,
            who.location(Some(field)),
            format!("{who} has an invalid {what}: {shown}"),
        )
    })
}

/// A state's duration field (`delay`, `timeout.after`).
fn duration(state: &str, what: &str, field: &str, raw: &RawValue) -> Result<u64, DefinitionError> {
    duration_at(Who::State(state), what, field, raw)
}

/// A node's or state's duration field named as it is written (`timeout`, `retry.initial`).
fn duration_of(who: Who, field: &str, raw: &RawValue) -> Result<u64, DefinitionError> {
    duration_at(who, field, field, raw)
}

/// How a duration was written, for messages (`5s`, `40ms`).
fn duration_label(v: &Val, raw: &RawValue) -> String {
    match v {
        Val::Str(s) => s.to_string(),
        _ => format!("{}ms", raw.get().trim()),
    }
}

/// A node's or state's `cache`: a boolean or `{ key?, ttl?, version? }`.
fn cache(cx: &Cx, who: Who, raw: &RawValue) -> Result<Option<CacheDef>, DefinitionError> {
    let text = match classify(raw) {
        Val::Null => return Ok(None),
        Val::Bool(false) => return Ok(Some(CacheDef::Off)),
        Val::Bool(true) => {
            return Ok(Some(CacheDef::On {
                key: None,
                ttl_ms: None,
                version: None,
            }))
        }
        Val::Object(text) => text,
        v => {
            return Err(wrong_type(
                who,
                "cache",
                "a boolean or an object { key?, ttl?, version? }",
                &v,
            ))
        }
    };
    let mut fields = Fields::new(Scope::Cache(who), false);
    let (mut key, mut ttl_ms, mut version) = (None, None, None);
    for_each_entry(text, |k, raw| {
        fields.check(&k)?;
        let field = format!("cache.{k}");
        match (k.as_ref(), classify(raw)) {
            (_, Val::Null) => {}
            ("key", Val::Str(s)) if !s.is_empty() => key = Some(CacheKey::Fixed(s.into_owned())),
            ("key", Val::Marker(m)) if m == FN_MARKER => {
                if cx.opts.stored {
                    return Err(cx.not_storable(
                        who.location(Some(&field)),
                        &format!("{who} has an inline cache.key function"),
                        "give a fixed key, or leave the default key",
                    ));
                }
                key = Some(CacheKey::Inline);
            }
            ("key", v) => return Err(wrong_type(who, &field, "a string or a function", &v)),
            ("ttl", _) => ttl_ms = Some(duration_of(who, &field, raw)?),
            ("version", Val::Str(s)) => version = Some(s.into_owned()),
            ("version", Val::Num(n)) => version = Some(n.to_owned()),
            (_, v) => return Err(wrong_type(who, &field, "a string", &v)),
        }
        Ok(())
    })?;
    Ok(Some(CacheDef::On {
        key,
        ttl_ms,
        version,
    }))
}

/// A node's or state's `retry`: `{ attempts, backoff?, initial?, max?, jitter?, retryOn? }`,
/// or `null` for none.
fn retry(cx: &Cx, who: Who, raw: &RawValue) -> Result<Option<RetryPolicy>, DefinitionError> {
    let text = match classify(raw) {
        Val::Null => return Ok(None),
        Val::Object(text) => text,
        v => {
            return Err(wrong_type(
                who,
                "retry",
                "an object { attempts, backoff?, initial?, max?, jitter?, retryOn? }",
                &v,
            ))
        }
    };
    let mut fields = Fields::new(Scope::Retry(who), false);
    let mut p = RetryPolicy::default();
    let mut attempts = None;
    for_each_entry(text, |key, raw| {
        fields.check(&key)?;
        let field = format!("retry.{key}");
        match key.as_ref() {
            "attempts" => {
                let n = positive_int(who, &field, raw)?;
                if n.is_some_and(|n| n > MAX_ATTEMPTS) {
                    return Err(invalid(
                        InvalidKind::Value,
                        who.location(Some(&field)),
                        format!(
                            "{who} {field} must be at most {MAX_ATTEMPTS}, got {}",
                            raw.get().trim()
                        ),
                    ));
                }
                attempts = n;
            }
            "backoff" => {
                p.backoff = match classify(raw) {
                    Val::Null => Backoff::Exponential,
                    Val::Str(s) if s == "exponential" => Backoff::Exponential,
                    Val::Str(s) if s == "fixed" => Backoff::Fixed,
                    v => return Err(wrong_type(who, &field, "'fixed' or 'exponential'", &v)),
                }
            }
            "initial" => {
                if !matches!(classify(raw), Val::Null) {
                    p.initial_ms = duration_of(who, &field, raw)?;
                }
            }
            "max" => {
                if !matches!(classify(raw), Val::Null) {
                    p.max_ms = Some(duration_of(who, &field, raw)?);
                }
            }
            "jitter" => p.jitter = boolean(who, &field, raw)?,
            _ => {
                p.retry_on = match classify(raw) {
                    Val::Null => None,
                    Val::Marker(m) if m == FN_MARKER => {
                        if cx.opts.stored {
                            return Err(cx.not_storable(
                                who.location(Some(&field)),
                                &format!("{who} has an inline retryOn function"),
                                "name a registered predicate instead (retryOn: 'key')",
                            ));
                        }
                        Some(RetryOn::Inline)
                    }
                    Val::Str(k) if !k.is_empty() => Some(RetryOn::Registered(k.into_owned())),
                    v => {
                        return Err(wrong_type(
                            who,
                            &field,
                            "a function or a registered key",
                            &v,
                        ))
                    }
                }
            }
        }
        Ok(())
    })?;
    let Some(attempts) = attempts else {
        return Err(invalid(
            InvalidKind::Missing,
            who.location(Some("retry.attempts")),
            format!("{who} retry needs attempts (how many attempts in all, the first included)"),
        ));
    };
    p.attempts = attempts;
    Ok(Some(p))
}

/// Data the definition carries (`args`): any JSON, but no marker anywhere in it.
fn data(who: Who, field: &str, raw: &RawValue) -> Result<String, DefinitionError> {
    if let Some((path, marker)) = find_marker(raw)? {
        let reason = Marker::parse(&marker)
            .map(|m| m.reason())
            .unwrap_or_default();
        return Err(invalid(
            InvalidKind::NotJson,
            who.location(Some(&format!("{field}{path}"))),
            format!("{who} {field}{path}: {reason}"),
        ));
    }
    Ok(raw.get().to_string())
}

/// An object the definition carries (`info`, `inputSchema`, a JSON context).
fn object(who: Who, field: &str, raw: &RawValue) -> Result<String, DefinitionError> {
    match classify(raw) {
        Val::Object(_) => data(who, field, raw),
        v => Err(wrong_type(who, field, "an object", &v)),
    }
}

struct Cx<'o> {
    opts: &'o ParseOptions,
    /// The definition's name, for messages about storing it.
    name: String,
    /// The kind was detected rather than asked for.
    detected: bool,
}

impl Cx<'_> {
    fn not_storable(&self, location: Location, what: &str, instead: &str) -> DefinitionError {
        invalid(
            InvalidKind::NotStorable,
            location,
            format!(
                "Definition '{}' cannot be stored: {what}; {instead}",
                self.name
            ),
        )
    }

    fn context(&self, who: Who, raw: &RawValue) -> Result<Option<ContextDef>, DefinitionError> {
        match classify(raw) {
            // `context?.()` always let null mean none.
            Val::Null => Ok(None),
            Val::Marker(m) if m == FN_MARKER => {
                if self.opts.stored {
                    Err(self.not_storable(
                        who.location(Some("context")),
                        "its context is a function",
                        "give the initial context as a JSON object",
                    ))
                } else {
                    Ok(Some(ContextDef::Inline))
                }
            }
            Val::Object(_) => Ok(Some(ContextDef::Json(data(who, "context", raw)?))),
            v => {
                let expected = if self.opts.stored {
                    "an object"
                } else {
                    "a function or an object"
                };
                Err(wrong_type(who, "context", expected, &v))
            }
        }
    }
}

/// `run`, `runner` and `args`, shared by nodes and states and settled once all are read.
/// A node's `expand`: a function, or in a stored definition a registered runner's key.
fn expand(cx: &Cx, who: Who, raw: &RawValue) -> Result<RunnerDef, DefinitionError> {
    match classify(raw) {
        Val::Marker(m) if m == FN_MARKER => {
            if cx.opts.stored {
                let (Who::Node(n) | Who::State(n) | Who::Dag(n) | Who::Machine(n)) = who;
                return Err(cx.not_storable(
                    who.location(Some("expand")),
                    &format!("node '{n}' has an inline expand function"),
                    "name a registered runner that returns the definition instead (expand: 'key')",
                ));
            }
            Ok(RunnerDef::Inline)
        }
        Val::Str(s) if !s.is_empty() => Ok(RunnerDef::Registered {
            key: s.into_owned(),
            args: None,
        }),
        v => Err(wrong_type(
            who,
            "expand",
            "a function that returns a DAG or machine config (or a registered runner's key)",
            &v,
        )),
    }
}

/// A node's `map: { over, dag }`, its DAG checked as a definition of its own.
fn map(cx: &Cx, who: Who, raw: &RawValue) -> Result<MapDef, DefinitionError> {
    let v = classify(raw);
    let Val::Object(_) = v else {
        return Err(wrong_type(who, "map", "an object { over, dag }", &v));
    };
    let mut over = None;
    let mut dag = None;
    for_each_entry(raw.get(), |k, value| {
        match k.as_ref() {
            "over" => over = Some(string(who, "map.over", value)?),
            // Its runners are checked by parsing it below (functions are fine inline).
            "dag" => match classify(value) {
                Val::Object(_) => dag = Some(value.get().to_owned()),
                v => {
                    return Err(wrong_type(
                        who,
                        "map.dag",
                        "a DAG config { name, nodes }",
                        &v,
                    ))
                }
            },
            other => {
                return Err(invalid(
                    InvalidKind::UnknownField,
                    who.location(Some("map")),
                    format!("unknown field '{other}' on map of {who} (map takes over and dag)"),
                ))
            }
        }
        Ok(())
    })?;
    let (Some(over), Some(dag)) = (over, dag) else {
        return Err(invalid(
            InvalidKind::Missing,
            who.location(Some("map")),
            format!("{who} map needs over (the parent whose output is the list) and dag (what runs per item)"),
        ));
    };
    let opts = ParseOptions::new(ExpectKind::Dag).stored(cx.opts.stored);
    parse(&dag, &opts).map_err(|e| {
        invalid(
            InvalidKind::Type,
            who.location(Some("map")),
            format!("{who} map.dag: {e}"),
        )
    })?;
    Ok(MapDef { over, dag })
}

#[derive(Default)]
struct RunFields {
    inline: bool,
    key: Option<String>,
    args: Option<String>,
}

impl RunFields {
    fn read(
        &mut self,
        cx: &Cx,
        who: Who,
        key: &str,
        raw: &RawValue,
    ) -> Result<(), DefinitionError> {
        match key {
            "run" => {
                let is_fn = matches!(classify(raw), Val::Marker(m) if m == FN_MARKER);
                if !is_fn {
                    let message = match who {
                        Who::Node(_) => format!("{who} has no run function"),
                        _ => format!("{who} run must be a function"),
                    };
                    return Err(invalid(
                        InvalidKind::Type,
                        who.location(Some("run")),
                        message,
                    ));
                }
                if cx.opts.stored {
                    let (Who::Node(n) | Who::State(n) | Who::Dag(n) | Who::Machine(n)) = who;
                    return Err(cx.not_storable(
                        who.location(Some("run")),
                        &format!("node '{n}' has an inline run function"),
                        "name a registered runner instead (runner: 'key', args: {…})",
                    ));
                }
                self.inline = true;
            }
            "runner" => match classify(raw) {
                Val::Str(s) if !s.is_empty() => self.key = Some(s.into_owned()),
                v => {
                    return Err(wrong_type(
                        who,
                        "runner",
                        "the key of a registered runner (a non-empty string)",
                        &v,
                    ))
                }
            },
            _ => self.args = Some(data(who, "args", raw)?),
        }
        Ok(())
    }

    fn settle(self, cx: &Cx, who: Who) -> Result<Option<RunnerDef>, DefinitionError> {
        if self.inline && self.key.is_some() {
            return Err(invalid(
                InvalidKind::Conflict,
                who.location(Some("runner")),
                format!("{who} has both run and runner; give one"),
            ));
        }
        if self.args.is_some() && self.key.is_none() {
            return Err(invalid(
                InvalidKind::Conflict,
                who.location(Some("args")),
                format!("{who} has args but no runner: args are passed to a registered runner (runner: 'key')"),
            ));
        }
        if let Some(key) = self.key {
            return Ok(Some(RunnerDef::Registered {
                key,
                args: self.args,
            }));
        }
        if self.inline {
            return Ok(Some(RunnerDef::Inline));
        }
        match who {
            Who::Node(_) if !cx.opts.runners_optional => {
                let message = if cx.opts.stored {
                    format!("{who} has no runner; a stored definition names a registered runner (runner: 'key', args: {{…}})")
                } else {
                    format!("{who} has no run function")
                };
                Err(invalid(
                    InvalidKind::Missing,
                    who.location(Some("run")),
                    message,
                ))
            }
            _ => Ok(None),
        }
    }
}

// ---- the parser ----

/// Parse, validate and return a definition: see the [module](self) for the encoding.
///
/// Checks every field (types, known names, markers) but not the graph: unknown parents,
/// cycles and missing states are found by [`Definition::compile`].
///
/// ```
/// use ramus_core::definition::{parse, Definition, ParseOptions, RunnerDef};
///
/// // What `JSON.stringify(config, replacer)` sends: functions are "\u0000fn".
/// let json = r#"{"name":"research","nodes":{
///     "search":{"run":"\u0000fn"},
///     "summarize":{"parents":["search"],"runner":"llm","args":{"words":50}}}}"#;
/// let def = parse(json, &ParseOptions::default())?;
/// let Definition::Dag(dag) = &def else { panic!("a config without initial is a DAG") };
/// assert_eq!(dag.graph.parent_names(1).collect::<Vec<_>>(), ["search"]);
/// assert_eq!(
///     dag.nodes[1].runner,
///     Some(RunnerDef::Registered { key: "llm".into(), args: Some(r#"{"words":50}"#.into()) })
/// );
/// def.compile()?;
///
/// let err = parse(
///     r#"{"name":"d","nodes":{"search":{"run":"\u0000fn","retyr":3}}}"#,
///     &ParseOptions::default(),
/// )
/// .unwrap_err();
/// assert_eq!(err.to_string(), "unknown field 'retyr' on node 'search' (did you mean 'retry'?)");
/// assert_eq!(err.code(), "ERR_DEFINITION_UNKNOWN_FIELD");
/// # Ok::<(), ramus_core::definition::DefinitionError>(())
/// ```
pub fn parse(json: &str, options: &ParseOptions) -> Result<Definition, DefinitionError> {
    let body = json.trim_start_matches([' ', '\t', '\n', '\r']);
    if !body.starts_with('{') {
        serde_json::from_str::<&RawValue>(json).map_err(json_error)?;
        let message = match (options.stored, options.expect) {
            (false, ExpectKind::Dag) => "A DAG must be an object with a name and nodes",
            (false, ExpectKind::Machine) => "A state machine config must be an object",
            _ => "A definition must be an object with a name and nodes",
        };
        return Err(invalid(InvalidKind::Type, Location::default(), message));
    }
    // The root is read whole first: `name` and `initial` (which decides the kind) may come
    // after `nodes`, and messages about nodes need both.
    let mut root: Vec<(Cow<str>, &RawValue)> = Vec::with_capacity(12);
    for_each_entry(json, |k, v| {
        root.push((k, v));
        Ok(())
    })?;
    let field = |name: &str| root.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let machine = match options.expect {
        ExpectKind::Detect => field("initial").is_some(),
        ExpectKind::Dag => false,
        ExpectKind::Machine => true,
    };
    let unnamed = if machine {
        Who::Machine("")
    } else {
        Who::Dag("")
    };

    let name = match field("name").map(classify) {
        Some(Val::Str(s)) if !(options.stored && s.is_empty()) => s.into_owned(),
        got if options.stored => {
            let kind = if got.is_none() || matches!(got, Some(Val::Str(_))) {
                InvalidKind::Missing
            } else {
                InvalidKind::Type
            };
            return Err(invalid(
                kind,
                unnamed.location(Some("name")),
                "A definition needs a name",
            ));
        }
        None => String::new(),
        Some(v) => return Err(wrong_type(unnamed, "name", "a string", &v)),
    };

    let nodes = match field("nodes").map(classify) {
        Some(Val::Object(text)) => text,
        None | Some(Val::Null | Val::Bool(_) | Val::Num(_) | Val::Str(_) | Val::Marker(_))
            if options.stored =>
        {
            return Err(invalid(
                InvalidKind::Missing,
                unnamed.location(Some("nodes")),
                format!("Definition '{name}' has no nodes"),
            ))
        }
        _ => {
            let message = if machine {
                "State machine nodes must be an object of named states"
            } else {
                "DAG nodes must be an object of named nodes"
            };
            return Err(invalid(
                InvalidKind::Type,
                unnamed.location(Some("nodes")),
                message,
            ));
        }
    };

    let cx = Cx {
        opts: options,
        name,
        detected: options.expect == ExpectKind::Detect,
    };
    if machine {
        machine_def(&cx, &root, nodes).map(Definition::Machine)
    } else {
        dag_def(&cx, &root, nodes).map(Definition::Dag)
    }
}

/// [`parse`] and [`Definition::compile`] in one call, for callers that only need to know
/// whether a definition is valid, or only need the compiled form.
pub fn compile(json: &str, options: &ParseOptions) -> Result<CompiledDefinition, DefinitionError> {
    parse(json, options)?.compile()
}

fn dag_def(
    cx: &Cx,
    root: &[(Cow<str>, &RawValue)],
    nodes: &str,
) -> Result<DagDef, DefinitionError> {
    let who = Who::Dag(&cx.name);
    let mut fields = Fields::new(Scope::Dag(&cx.name), cx.detected);
    let mut def = DagDef {
        name: cx.name.clone(),
        ..DagDef::default()
    };
    for (key, raw) in root {
        fields.check(key)?;
        match key.as_ref() {
            "description" => def.description = Some(string(who, key, raw)?),
            "context" => def.context = cx.context(who, raw)?,
            "inputSchema" => def.input_schema = Some(object(who, key, raw)?),
            "tolerateFailures" => def.tolerate_failures = boolean(who, key, raw)?,
            "tags" => def.tags = string_list(who, key, raw)?,
            "info" => def.info = Some(object(who, key, raw)?),
            _ => {} // name and nodes: read already
        }
    }
    // About 40 bytes of JSON per node (`"n1":{"parents":["n0"],"run":"\u0000fn"}`): room
    // for the nodes up front rather than growing (and copying) 100,000-entry tables.
    let guess = nodes.len() / 40 + 1;
    let mut sink = DagNodes {
        cx,
        graph: DagGraph::with_capacity(guess, guess),
        nodes: Vec::with_capacity(guess),
        name: Cow::Borrowed(""),
        node: DagNodeDef::default(),
        run: RunFields::default(),
        policy: StepPolicy::default(),
        seen: 0,
    };
    for_each_object(nodes, &mut sink)?;
    if sink.graph.is_empty() {
        return Err(DagError::Empty.into());
    }
    def.graph = sink.graph;
    def.nodes = sink.nodes;
    Ok(def)
}

/// Reads DAG nodes as they stream by. A DAG may have 100,000 nodes, so each node object is
/// scanned once, and names are borrowed from the text rather than copied per node; machine
/// states, few and small, are read with the plainer [`for_each_entry`].
struct DagNodes<'c, 'o, 'a> {
    cx: &'c Cx<'o>,
    graph: DagGraph,
    nodes: Vec<DagNodeDef>,
    /// The node being read: it is declared in `graph` already.
    name: Cow<'a, str>,
    node: DagNodeDef,
    run: RunFields,
    policy: StepPolicy,
    seen: u32,
}

impl<'a> ObjectSink<'a> for DagNodes<'_, '_, 'a> {
    fn begin(&mut self, name: Cow<'a, str>) -> Result<(), DefinitionError> {
        self.graph.add_node(&name);
        self.name = name;
        Ok(())
    }

    fn field(&mut self, key: Cow<'a, str>, raw: &'a RawValue) -> Result<(), DefinitionError> {
        let (cx, graph, node) = (self.cx, &mut self.graph, &mut self.node);
        let who = Who::Node(&self.name);
        check_field(Scope::Node(&self.name), &mut self.seen, cx.detected, &key)?;
        match key.as_ref() {
            "parents" => parents(who, raw, graph)?,
            "run" | "runner" | "args" => self.run.read(cx, who, &key, raw)?,
            "semaphoreKey" | "category" => {
                let prev = graph.last_semaphore_key().map(str::to_owned);
                graph.set_semaphore_key(Some(semaphore_key(who, &key, raw, prev.as_deref())?));
            }
            "tolerateParentErrors" => {
                graph.set_tolerate_parent_errors(boolean(who, &key, raw)?);
            }
            "tags" => node.tags = string_list(who, &key, raw)?,
            "info" => node.info = Some(object(who, &key, raw)?),
            "retry" => self.policy.retry = retry(cx, who, raw)?,
            "cache" => node.cache = cache(cx, who, raw)?,
            "uses" => node.uses = string_list(who, &key, raw)?,
            "expand" => node.expand = Some(expand(cx, who, raw)?),
            "map" => node.map = Some(map(cx, who, raw)?),
            "timeout" => {
                self.policy.timeout = match classify(raw) {
                    Val::Null => None,
                    v => Some((duration_of(who, "timeout", raw)?, duration_label(&v, raw))),
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), DefinitionError> {
        let policy = std::mem::take(&mut self.policy);
        if !policy.is_empty() {
            self.graph.set_policy(policy);
        }
        let run = std::mem::take(&mut self.run);
        let who = Who::Node(&self.name);
        let derived = match (&self.node.expand, &self.node.map) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    InvalidKind::Conflict,
                    who.location(Some("map")),
                    format!("{who} has both expand and map; give one"),
                ))
            }
            (Some(_), None) => Some("expand"),
            (None, Some(_)) => Some("map"),
            (None, None) => None,
        };
        if let Some(field) = derived {
            if run.inline || run.key.is_some() {
                return Err(invalid(
                    InvalidKind::Conflict,
                    who.location(Some(field)),
                    format!("{who} has both {field} and a runner; {field} is what it runs"),
                ));
            }
        }
        if let Some(m) = &self.node.map {
            let node = self.graph.len() as u32 - 1;
            if !self.graph.parent_names(node).any(|p| p == m.over) {
                return Err(invalid(
                    InvalidKind::Type,
                    who.location(Some("map")),
                    format!(
                        "{who} maps over '{}', which is not one of its parents",
                        m.over
                    ),
                ));
            }
        }
        self.node.runner = match derived {
            Some(_) => None,
            None => run.settle(self.cx, who)?,
        };
        self.seen = 0;
        self.nodes.push(std::mem::take(&mut self.node));
        Ok(())
    }

    fn not_an_object(&self) -> DefinitionError {
        let who = Who::Node(&self.name);
        invalid(
            InvalidKind::Type,
            who.location(None),
            format!("{who} must be an object"),
        )
    }
}

/// A node's `parents`, added to the node last declared in `graph`.
fn parents(who: Who, raw: &RawValue, graph: &mut DagGraph) -> Result<(), DefinitionError> {
    let text = match classify(raw) {
        Val::Null => return Ok(()),
        Val::Array(text) => text,
        _ => {
            return Err(invalid(
                InvalidKind::Type,
                who.location(Some("parents")),
                format!("{who} parents must be an array of node names"),
            ))
        }
    };
    for_each_item(text, |_, item| {
        match classify(item) {
            Val::Str(s) => graph.add_parent(&s),
            v => {
                return Err(invalid(
                    InvalidKind::Type,
                    who.location(Some("parents")),
                    format!(
                        "{who} has a parent that is not a node name: {}",
                        describe(&v)
                    ),
                ))
            }
        }
        Ok(())
    })?;
    Ok(())
}

fn machine_def(
    cx: &Cx,
    root: &[(Cow<str>, &RawValue)],
    nodes: &str,
) -> Result<MachineDef, DefinitionError> {
    let who = Who::Machine(&cx.name);
    let mut fields = Fields::new(Scope::Machine(&cx.name), false);
    let mut def = MachineDef {
        name: cx.name.clone(),
        description: None,
        initial: None,
        error_state: None,
        max_steps: DEFAULT_MAX_STEPS,
        tags: Vec::new(),
        info: None,
        context: None,
        input_schema: None,
        states: Vec::new(),
    };
    for (key, raw) in root {
        fields.check(key)?;
        match key.as_ref() {
            "description" => def.description = Some(string(who, key, raw)?),
            "initial" => def.initial = state_name(who, key, raw)?,
            "context" => def.context = cx.context(who, raw)?,
            "errorState" => def.error_state = state_name(who, key, raw)?,
            "maxSteps" => def.max_steps = positive_int(who, key, raw)?.unwrap_or(DEFAULT_MAX_STEPS),
            "tags" => def.tags = string_list(who, key, raw)?,
            "info" => def.info = Some(object(who, key, raw)?),
            "inputSchema" => def.input_schema = Some(object(who, key, raw)?),
            _ => {}
        }
    }
    // An empty name never named a state (`config.initial || initial`).
    let given = cx.opts.initial.clone().filter(|s| !s.is_empty());
    def.initial = given.or(def.initial.filter(|s| !s.is_empty()));
    for_each_entry(nodes, |name, raw| {
        def.states.push(state(cx, name.into_owned(), raw)?);
        Ok(())
    })?;
    if def.states.is_empty() {
        return Err(MachineError::NoStates(def.name).into());
    }
    Ok(def)
}

fn state(cx: &Cx, name: String, raw: &RawValue) -> Result<StateDef, DefinitionError> {
    let who = Who::State(&name);
    let Val::Object(text) = classify(raw) else {
        return Err(invalid(
            InvalidKind::Type,
            who.location(None),
            format!("{who} must be an object"),
        ));
    };
    let mut fields = Fields::new(Scope::State(&name), false);
    let mut run = RunFields::default();
    let mut s = StateDef::default();
    for_each_entry(text, |key, raw| {
        fields.check(&key)?;
        match key.as_ref() {
            "run" | "runner" | "args" => run.read(cx, who, &key, raw)?,
            "transition" => s.transitions = transitions(cx, &name, raw)?,
            "final" => s.is_final = boolean(who, &key, raw)?,
            "errorState" => s.error_state = state_name(who, &key, raw)?,
            "semaphoreKey" | "category" => {
                let prev = s.semaphore_key.as_deref();
                s.semaphore_key = Some(semaphore_key(who, &key, raw, prev)?);
            }
            "maxVisits" => s.max_visits = positive_int(who, &key, raw)?,
            "timeout" => {
                let t = timeout(&name, raw)?;
                s.timeout_label = t.as_ref().map(|t| t.2.clone());
                s.timeout = t.map(|(ms, target, _)| (ms, target));
            }
            "tags" => s.tags = string_list(who, &key, raw)?,
            "info" => s.info = Some(object(who, &key, raw)?),
            "retry" => s.retry = retry(cx, who, raw)?,
            "cache" => s.cache = cache(cx, who, raw)?,
            _ => {}
        }
        Ok(())
    })?;
    s.runner = run.settle(cx, who)?;
    s.name = name;
    Ok(s)
}

/// A state's `transition`: a state name, or an object of event type to a state name, a
/// `{ state, condition?, delay? }`, or an array of those.
fn transitions(
    cx: &Cx,
    state: &str,
    raw: &RawValue,
) -> Result<Vec<TransitionDef>, DefinitionError> {
    let text = match classify(raw) {
        Val::Null => return Ok(Vec::new()),
        Val::Str(target) => {
            return Ok(vec![TransitionDef {
                target: target.into_owned(),
                ..TransitionDef::default()
            }])
        }
        // An array is an object in JS, whose keys '0', '1' … would become event types.
        Val::Object(text) => text,
        _ => {
            return Err(invalid(
                InvalidKind::Type,
                Who::State(state).location(Some("transition")),
                format!("State {state} transition must be a state name or an object of events"),
            ))
        }
    };
    let mut out = Vec::new();
    for_each_entry(text, |event, value| {
        let mut one = |item: &RawValue, index: Option<usize>| -> Result<(), DefinitionError> {
            let t = transition(cx, state, &event, item)?;
            out.push(TransitionDef { index, ..t });
            Ok(())
        };
        match classify(value) {
            Val::Array(items) => for_each_item(items, |i, item| one(item, Some(i))),
            _ => one(value, None),
        }
    })?;
    Ok(out)
}

fn transition(
    cx: &Cx,
    state: &str,
    event: &str,
    raw: &RawValue,
) -> Result<TransitionDef, DefinitionError> {
    let loc = |field: &str| Location {
        node: Some(state.to_string()),
        event: Some(event.to_string()),
        field: Some(field.to_string()),
    };
    let no_state = || {
        invalid(
            InvalidKind::Type,
            loc("transition"),
            format!("State {state} transition for event '{event}' must name a state"),
        )
    };
    let text = match classify(raw) {
        Val::Str(target) => {
            return Ok(TransitionDef {
                event: event.to_string(),
                target: target.into_owned(),
                ..TransitionDef::default()
            })
        }
        Val::Object(text) => text,
        _ => return Err(no_state()),
    };
    // Read whole before checking: the messages about `condition` name the target `state`,
    // which may come after it.
    let mut fields = Fields::new(Scope::Transition(state, event), false);
    let (mut target, mut condition, mut delay) = (None, None, None);
    for_each_entry(text, |key, raw| {
        fields.check(&key)?;
        match key.as_ref() {
            "state" => target = Some(raw),
            "condition" => condition = Some(raw),
            _ => delay = Some(raw),
        }
        Ok(())
    })?;
    let Some(Val::Str(target)) = target.map(classify) else {
        return Err(no_state());
    };
    let condition = match condition.map(classify) {
        None => ConditionDef::None,
        Some(Val::Marker(m)) if m == FN_MARKER => {
            if cx.opts.stored {
                return Err(cx.not_storable(
                    loc("transition.condition"),
                    &format!(
                        "state '{state}' transition '{event}' has an inline condition function"
                    ),
                    "name a registered condition instead (condition: 'key')",
                ));
            }
            ConditionDef::Inline
        }
        Some(Val::Str(key)) if !key.is_empty() => ConditionDef::Registered(key.into_owned()),
        Some(_) => {
            return Err(invalid(
                InvalidKind::Type,
                loc("transition.condition"),
                format!("State {state} transition to {target}: condition must be a function"),
            ))
        }
    };
    let delay_ms = match delay {
        Some(raw) if !matches!(classify(raw), Val::Null) => Some(
            duration(state, "delay", "transition.delay", raw).map_err(|e| with_event(e, event))?,
        ),
        _ => None,
    };
    Ok(TransitionDef {
        event: event.to_string(),
        target: target.into_owned(),
        condition,
        delay_ms,
        index: None,
    })
}

fn with_event(mut e: DefinitionError, event: &str) -> DefinitionError {
    if let DefinitionError::Invalid { location, .. } = &mut e {
        location.event = Some(event.to_string());
    }
    e
}

/// A state's `timeout`: `{ after, state }`, or `null` for none.
fn timeout(state: &str, raw: &RawValue) -> Result<Option<(u64, String, String)>, DefinitionError> {
    let shape = || {
        invalid(
            InvalidKind::Type,
            Who::State(state).location(Some("timeout")),
            format!("State {state} timeout must be {{ after, state }}"),
        )
    };
    let text = match classify(raw) {
        Val::Null => return Ok(None),
        Val::Object(text) => text,
        _ => return Err(shape()),
    };
    let mut fields = Fields::new(Scope::Timeout(state), false);
    let (mut after, mut target) = (None, None);
    for_each_entry(text, |key, raw| {
        fields.check(&key)?;
        match key.as_ref() {
            "after" => after = Some(raw),
            _ => target = Some(raw),
        }
        Ok(())
    })?;
    let (Some(after), Some(Val::Str(target))) = (after, target.map(classify)) else {
        return Err(shape());
    };
    let ms = duration(state, "timeout", "timeout.after", after)?;
    // The timeout error names the duration as it was written (`after 5s`, `after 40ms`).
    let label = match classify(after) {
        Val::Str(s) => s.into_owned(),
        _ => format!("{}ms", after.get().trim()),
    };
    Ok(Some((ms, target.into_owned(), label)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_described_as_js_prints_them() {
        assert_eq!(describe_marker(FN_MARKER).as_deref(), Some("a function"));
        assert_eq!(describe_marker(NAN_MARKER).as_deref(), Some("NaN"));
        assert_eq!(
            describe_marker(NEG_INFINITY_MARKER).as_deref(),
            Some("-Infinity")
        );
        assert_eq!(describe_marker("\u{0}bigint:5").as_deref(), Some("5n"));
        assert_eq!(describe_marker(SYMBOL_MARKER).as_deref(), Some("a symbol"));
        assert_eq!(describe_marker("fn"), None);
        assert_eq!(describe_marker("\u{0}other"), None);
    }

    #[test]
    fn edit_distance_counts_transpositions_once_and_ignores_case() {
        assert_eq!(edit_distance("retyr", "retry"), 1);
        assert_eq!(edit_distance("semaphorekey", "semaphoreKey"), 0);
        assert_eq!(edit_distance("parent", "parents"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(
            suggest("retyr", DAG_NODE.iter().chain(NOT_YET_NODE).copied()),
            Some("retry")
        );
        assert_eq!(suggest("zzzzzz", DAG_NODE.iter().copied()), None);
    }

    #[test]
    fn marker_paths_are_written_like_the_engines() {
        let raw: &RawValue =
            serde_json::from_str(r#"{"a":[1,{"b c":"\u0000bigint:5"}],"z":"\u0000fn"}"#).unwrap();
        let (path, marker) = find_marker(raw).unwrap().unwrap();
        assert_eq!(path, r#".a[1]["b c"]"#);
        assert_eq!(marker, "\u{0}bigint:5");
        let plain: &RawValue = serde_json::from_str(r#"{"a":"\\u0000fn"}"#).unwrap();
        assert_eq!(find_marker(plain).unwrap(), None);
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let depth = 2_000;
        let json = format!("{}\"\\u0000fn\"{}", "[".repeat(depth), "]".repeat(depth));
        let raw: &RawValue = serde_json::from_str(&json).unwrap();
        let (path, _) = find_marker(raw).unwrap().unwrap();
        assert_eq!(path.len(), 3 * depth);
    }
}
