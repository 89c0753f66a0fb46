//! A definition as the runtime holds it: compiled once, shared by its runs, with what the
//! sinks and drivers need besides the executor's tables.

use std::sync::Arc;

use ramus_core::{
    CompiledDag, CompiledMachine, ConditionDef, ContextDef, Definition, DefinitionError,
    ExpectKind, ParseOptions, RunnerDef,
};
use ramus_store::Kind;
use serde_json::{Map, Value};

use crate::error::EngineError;

/// The compiled form of a definition.
#[derive(Clone, Debug)]
pub enum Compiled {
    /// A DAG.
    Dag(Arc<CompiledDag>),
    /// A state machine.
    Machine(Arc<CompiledMachine>),
}

/// Where a node's or state's runner comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunnerRef {
    /// A function given with the definition (not storable).
    Inline,
    /// A runner registered under a key, with its `args` (JSON text).
    Key {
        /// The registry key.
        key: String,
        /// The node's `args`, JSON text.
        args: Option<String>,
    },
    /// A state without a runner: it passes its input on.
    None,
    /// A DAG node that runs the definition its `expand` returns (a registered runner's
    /// key in a stored definition; `None`: an inline function).
    Expand {
        /// The registry key.
        key: Option<String>,
    },
    /// A DAG node that runs `dag` (JSON text) once per item of parent `over`'s output.
    Map {
        /// The parent whose output is the list.
        over: String,
        /// The DAG's config, JSON text.
        dag: String,
    },
}

/// A definition, compiled.
#[derive(Debug)]
pub struct RunDef {
    /// The executor's tables.
    pub compiled: Compiled,
    /// The definition's name.
    pub name: String,
    /// DAGs: keep running what can run when a node fails.
    pub tolerate_failures: bool,
    /// Stored definitions: name and version.
    pub stored: Option<(String, i64)>,
    /// The runner of each node or state, by id.
    pub runners: Vec<RunnerRef>,
    /// The registered condition of each transition (machines), by transition id.
    pub conditions: Vec<Option<String>>,
    /// Machines: where each transition's inline condition function is in the config:
    /// `(state, event, index in the event's array)`, or None.
    pub inline_conditions: Vec<Option<(String, String, Option<usize>)>>,
    /// The default context of a stored definition (JSON text), copied per run.
    pub context: Option<String>,
    /// Whether the config's context is a function (inline configs).
    pub context_fn: bool,
    /// The JSON Schema a run's input must match, compiled.
    pub input_schema: Option<Arc<jsonschema::Validator>>,
    /// Tags of the definition.
    pub tags: Vec<String>,
    /// Info of the definition, JSON text.
    pub info: Option<String>,
    /// Span attributes per node or state (`{ name: { key: value } }`, JSON text).
    pub attributes: Option<String>,
    /// DAGs: the root-input keys each node reads (`uses`), by node id; empty when no node
    /// declares any.
    pub uses: Vec<Vec<String>>,
}

impl RunDef {
    /// A definition of `compiled` with no metadata (inline runners everywhere).
    pub fn new(name: impl Into<String>, compiled: Compiled) -> RunDef {
        let n = match &compiled {
            Compiled::Dag(d) => d.len(),
            Compiled::Machine(m) => m.len(),
        };
        RunDef {
            compiled,
            name: name.into(),
            tolerate_failures: false,
            stored: None,
            runners: vec![RunnerRef::Inline; n],
            conditions: Vec::new(),
            inline_conditions: Vec::new(),
            context: None,
            context_fn: false,
            input_schema: None,
            tags: Vec::new(),
            info: None,
            attributes: None,
            uses: Vec::new(),
        }
    }

    /// Parse, validate and compile a config (JSON text; functions as the face's
    /// markers). `stored`: a definition for `engine.define` (registered runners only).
    ///
    /// ```
    /// use ramus_engine::RunDef;
    /// let def = RunDef::parse(r#"{"name":"d","nodes":{"a":{"runner":"fetch"}}}"#, None, true, None).unwrap();
    /// assert_eq!(def.node_name(0), "a");
    /// ```
    pub fn parse(
        json: &str,
        kind: Option<Kind>,
        stored: bool,
        initial: Option<&str>,
    ) -> Result<RunDef, EngineError> {
        let mut opts = ParseOptions::new(match kind {
            Some(Kind::Dag) => ExpectKind::Dag,
            Some(Kind::Machine) => ExpectKind::Machine,
            None => ExpectKind::Detect,
        })
        .stored(stored);
        if let Some(i) = initial {
            opts = opts.initial(i);
        }
        Self::from_definition(ramus_core::parse_definition(json, &opts)?)
    }

    /// A graph alone (`analyzeDag`): nodes need no runner.
    pub fn analyze(json: &str) -> Result<ramus_core::Analysis, EngineError> {
        let mut opts = ParseOptions::new(ExpectKind::Dag);
        opts.runners_optional = true;
        match ramus_core::parse_definition(json, &opts)? {
            Definition::Dag(d) => Ok(d.analyze()?),
            Definition::Machine(_) => Err(EngineError::Invalid("not a DAG".into())),
        }
    }

    /// A parsed definition, compiled.
    pub fn from_definition(def: Definition) -> Result<RunDef, EngineError> {
        let runner = |r: Option<&RunnerDef>| match r {
            Some(RunnerDef::Inline) => RunnerRef::Inline,
            Some(RunnerDef::Registered { key, args }) => RunnerRef::Key {
                key: key.clone(),
                args: args.clone(),
            },
            None => RunnerRef::None,
        };
        let schema = |s: &Option<String>| -> Result<_, EngineError> {
            let Some(text) = s else { return Ok(None) };
            let value: Value = serde_json::from_str(text)
                .map_err(|e| EngineError::Invalid(format!("inputSchema: {e}")))?;
            jsonschema::validator_for(&value)
                .map(|v| Some(Arc::new(v)))
                .map_err(|e| {
                    EngineError::Invalid(format!("inputSchema is not a valid JSON Schema: {e}"))
                })
        };
        let context = |c: &Option<ContextDef>| match c {
            Some(ContextDef::Json(t)) => (Some(t.clone()), false),
            Some(ContextDef::Inline) => (None, true),
            None => (None, false),
        };
        match def {
            Definition::Dag(d) => {
                // The graph moves into the compiled DAG: a DAG of 100,000 nodes is not copied.
                let compiled = CompiledDag::from_graph(d.name.clone(), d.graph)
                    .map_err(DefinitionError::from)?;
                let attributes = attributes(
                    (0..compiled.len() as u32)
                        .zip(&d.nodes)
                        .map(|(i, n)| (compiled.node_name(i), &n.tags, n.info.as_deref())),
                );
                let (context, context_fn) = context(&d.context);
                Ok(RunDef {
                    compiled: Compiled::Dag(Arc::new(compiled)),
                    name: d.name,
                    tolerate_failures: d.tolerate_failures,
                    stored: None,
                    runners: d
                        .nodes
                        .iter()
                        .map(|n| match (&n.expand, &n.map) {
                            (Some(e), _) => RunnerRef::Expand {
                                key: match e {
                                    RunnerDef::Registered { key, .. } => Some(key.clone()),
                                    RunnerDef::Inline => None,
                                },
                            },
                            (None, Some(m)) => RunnerRef::Map {
                                over: m.over.clone(),
                                dag: m.dag.clone(),
                            },
                            (None, None) => runner(n.runner.as_ref()),
                        })
                        .collect(),
                    conditions: Vec::new(),
                    inline_conditions: Vec::new(),
                    context,
                    context_fn,
                    input_schema: schema(&d.input_schema)?,
                    tags: d.tags,
                    info: d.info,
                    attributes,
                    uses: if d.nodes.iter().any(|n| !n.uses.is_empty()) {
                        d.nodes.iter().map(|n| n.uses.clone()).collect()
                    } else {
                        Vec::new()
                    },
                })
            }
            Definition::Machine(m) => {
                let compiled = m.compile()?;
                let mut rd = RunDef::new(m.name.clone(), Compiled::Machine(Arc::new(compiled)));
                rd.runners = m.states.iter().map(|s| runner(s.runner.as_ref())).collect();
                for s in &m.states {
                    for t in &s.transitions {
                        rd.conditions.push(match &t.condition {
                            ConditionDef::Registered(k) => Some(k.clone()),
                            _ => None,
                        });
                        rd.inline_conditions.push(
                            matches!(t.condition, ConditionDef::Inline)
                                .then(|| (s.name.clone(), t.event.clone(), t.index)),
                        );
                    }
                }
                rd.tags = m.tags.clone();
                rd.info = m.info.clone();
                (rd.context, rd.context_fn) = context(&m.context);
                rd.input_schema = schema(&m.input_schema)?;
                rd.attributes = attributes(
                    m.states
                        .iter()
                        .map(|s| (s.name.as_str(), &s.tags, s.info.as_deref())),
                );
                Ok(rd)
            }
        }
    }

    /// Check a run's input (JSON text) against the definition's `inputSchema`.
    pub fn check_input(&self, input: Option<&str>) -> Result<(), EngineError> {
        let Some(schema) = &self.input_schema else {
            return Ok(());
        };
        let value: Value = match input {
            Some(t) => serde_json::from_str(t).unwrap_or(Value::Null),
            None => Value::Null,
        };
        let errors: Vec<String> = schema
            .iter_errors(&value)
            .map(|e| {
                let path = e.instance_path.to_string();
                if path.is_empty() {
                    format!("input: {e}")
                } else {
                    format!("input{}: {e}", path.replace('/', "."))
                }
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(EngineError::InputSchema(format!(
                "The input of {} does not match its inputSchema: {}",
                self.name,
                errors.join("; ")
            )))
        }
    }

    /// DAG or machine.
    pub fn kind(&self) -> Kind {
        match self.compiled {
            Compiled::Dag(_) => Kind::Dag,
            Compiled::Machine(_) => Kind::Machine,
        }
    }

    /// The name of a node or state.
    pub fn node_name(&self, node: u32) -> &str {
        match &self.compiled {
            Compiled::Dag(d) => d.node_name(node),
            Compiled::Machine(m) => m.state_name(node),
        }
    }

    /// A node or state by name.
    pub fn node_id(&self, name: &str) -> Option<u32> {
        match &self.compiled {
            Compiled::Dag(d) => d.node_id(name),
            Compiled::Machine(m) => m.state_id(name),
        }
    }

    /// Number of nodes or states.
    pub fn len(&self) -> usize {
        match &self.compiled {
            Compiled::Dag(d) => d.len(),
            Compiled::Machine(m) => m.len(),
        }
    }

    /// Always false: a compiled definition has nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The machine, if this is one.
    pub fn machine(&self) -> Option<&Arc<CompiledMachine>> {
        match &self.compiled {
            Compiled::Machine(m) => Some(m),
            Compiled::Dag(_) => None,
        }
    }

    /// The DAG, if this is one.
    pub fn dag(&self) -> Option<&Arc<CompiledDag>> {
        match &self.compiled {
            Compiled::Dag(d) => Some(d),
            Compiled::Machine(_) => None,
        }
    }

    /// The message of the `TimeoutError` the timeout of `node` (a DAG node or a state)
    /// gives.
    pub fn timeout_message(&self, node: u32) -> String {
        match &self.compiled {
            Compiled::Dag(d) => d.timeout_message(node),
            Compiled::Machine(m) => m.timeout_message(node),
        }
    }

    /// Whether its runs arm timers (delays, timeouts, retries), so they need a clock.
    pub fn uses_timers(&self) -> bool {
        match &self.compiled {
            Compiled::Dag(d) => d.uses_timers(),
            Compiled::Machine(m) => m.uses_timers(),
        }
    }
}

/// Span attributes from the nodes' `tags` and `info`: `tags` as `workflow.step.tags`, each
/// `info` field as `workflow.step.info.<key>`, and `info.tool: true` (or the tag `tool`)
/// makes the node a GenAI tool call (`execute_tool <name>`).
fn attributes<'a>(
    nodes: impl Iterator<Item = (&'a str, &'a Vec<String>, Option<&'a str>)>,
) -> Option<String> {
    let mut out = Map::new();
    for (name, tags, info) in nodes {
        let mut attrs = Map::new();
        if !tags.is_empty() {
            attrs.insert("workflow.step.tags".into(), Value::String(tags.join(",")));
        }
        let info: Option<Map<String, Value>> = info.and_then(|i| serde_json::from_str(i).ok());
        let mut tool = tags.iter().any(|t| t == "tool");
        for (k, v) in info.into_iter().flatten() {
            tool |= k == "tool" && v == Value::Bool(true);
            let v = match v {
                Value::Object(_) | Value::Array(_) => Value::String(v.to_string()),
                other => other,
            };
            attrs.insert(format!("workflow.step.info.{k}"), v);
        }
        if tool {
            attrs.insert("gen_ai.operation.name".into(), "execute_tool".into());
            attrs.insert("gen_ai.tool.name".into(), Value::String(name.to_owned()));
        }
        if !attrs.is_empty() {
            out.insert(name.to_owned(), Value::Object(attrs));
        }
    }
    (!out.is_empty()).then(|| Value::Object(out).to_string())
}
