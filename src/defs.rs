//! Definitions: a DAG or machine config (JSON, functions as markers) compiled once in
//! Rust, and what the face needs to call its runners (names, parent tables, the order of
//! eventless conditions).

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use ramus_engine::{RunDef, RunOptions};
use serde_json::Value;

use crate::{coded, js_error, unpack, JsResult as Result};

/// Parse and compile a config: `kind` is `'dag'`, `'machine'` or `'detect'` (a config
/// with `initial` is a machine).
pub(crate) fn compile(
    kind: &str,
    json: &str,
    initial: Option<&str>,
    stored: bool,
) -> Result<RunDef> {
    let kind = match kind {
        "dag" => Some(ramus_store::Kind::Dag),
        "machine" => Some(ramus_store::Kind::Machine),
        _ => None,
    };
    RunDef::parse(json, kind, stored, initial).map_err(js_error)
}

/// A compiled definition, shared by its runs.
#[napi]
pub struct NativeDefinition {
    pub(crate) inner: Arc<RunDef>,
}

#[napi]
impl NativeDefinition {
    /// Parse and compile `config` (JSON; functions as `"\u0000fn"`): `kind` is `'dag'`,
    /// `'machine'` or `'detect'`; `initial` supplies a machine's initial state when the
    /// config has none.
    #[napi(constructor)]
    pub fn new(kind: String, config: String, initial: Option<String>) -> Result<Self> {
        let def = compile(&kind, &config, initial.as_deref(), false)?;
        Ok(NativeDefinition {
            inner: Arc::new(def),
        })
    }

    /// `'dag'` or `'machine'`.
    #[napi(getter)]
    pub fn kind(&self) -> &'static str {
        self.inner.kind().as_str()
    }

    /// The definition's name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.inner.name.clone()
    }

    /// Node or state names, by id.
    #[napi]
    pub fn names(&self) -> Vec<String> {
        (0..self.inner.len() as u32)
            .map(|i| self.inner.node_name(i).to_owned())
            .collect()
    }

    /// DAGs: parents of every node as a compressed table: entries `[n+1 ..]` hold the
    /// parent ids and entry `i` the offset of node `i`'s parents in it.
    #[napi]
    pub fn parent_table(&self) -> Uint32Array {
        let Some(dag) = self.inner.dag() else {
            return Uint32Array::new(Vec::new());
        };
        let n = dag.len();
        let mut table = Vec::with_capacity(n + 1 + n);
        let mut off = n as u32 + 1;
        for i in 0..n as u32 {
            table.push(off);
            off += dag.parents(i).len() as u32;
        }
        table.push(off);
        for i in 0..n as u32 {
            table.extend_from_slice(dag.parents(i));
        }
        Uint32Array::new(table)
    }

    /// DAGs: the ids of nodes that make their work at run time (`expand`, `map`).
    #[napi]
    pub fn derived_nodes(&self) -> Uint32Array {
        Uint32Array::new(
            self.inner
                .runners
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    matches!(
                        r,
                        ramus_engine::RunnerRef::Expand { .. }
                            | ramus_engine::RunnerRef::Map { .. }
                    )
                })
                .map(|(i, _)| i as u32)
                .collect(),
        )
    }

    /// DAGs: leaf node ids, in declaration order.
    #[napi]
    pub fn leaves(&self) -> Uint32Array {
        Uint32Array::new(
            self.inner
                .dag()
                .map_or_else(Vec::new, |d| d.leaves().to_vec()),
        )
    }

    /// DAGs: root node ids, in declaration order.
    #[napi]
    pub fn roots(&self) -> Uint32Array {
        Uint32Array::new(
            self.inner
                .dag()
                .map_or_else(Vec::new, |d| d.roots().to_vec()),
        )
    }

    /// Machines: a state's id by name, or -1.
    #[napi]
    pub fn state_id(&self, name: String) -> i32 {
        self.inner.node_id(&name).map_or(-1, |i| i as i32)
    }

    /// Machines: per state, the eventless conditions the face evaluates after a run, in
    /// the order the core would ask them: entry `s` is the offset of state `s`'s list,
    /// entry `n` the end, then the transition ids.
    #[napi]
    pub fn guard_table(&self) -> Int32Array {
        let Some(m) = self.inner.machine() else {
            return Int32Array::new(Vec::new());
        };
        per_state((0..m.len() as u32).map(|s| m.eventless_guards(s).map(|t| t as i32).collect()))
    }

    /// Machines: per state, where the face may move by itself after the state ran (see
    /// `CompiledMachine::local_moves`): entry `s` is the offset of state `s`'s list, entry
    /// `n` the end; a list holds one target per condition of `guardTable` (that condition
    /// held), then one for none holding; -1 where the core decides.
    #[napi]
    pub fn local_moves(&self) -> Int32Array {
        let Some(m) = self.inner.machine() else {
            return Int32Array::new(Vec::new());
        };
        per_state((0..m.len() as u32).map(|s| {
            m.local_moves(s)
                .into_iter()
                .map(|t| t.map_or(-1, |t| t as i32))
                .collect()
        }))
    }

    /// Machines: per state, 1 when it is final, 2 when it has a runner (bits).
    #[napi]
    pub fn state_flags(&self) -> Uint8Array {
        let Some(m) = self.inner.machine() else {
            return Uint8Array::new(Vec::new());
        };
        Uint8Array::new(
            (0..m.len() as u32)
                .map(|s| m.is_final(s) as u8 | (m.has_run(s) as u8) << 1)
                .collect(),
        )
    }

    /// Whether runs of it arm timers: delays, timeouts, retries.
    #[napi]
    pub fn uses_timers(&self) -> bool {
        self.inner.uses_timers()
    }

    /// Machines: the event types a state has transitions for.
    #[napi]
    pub fn available_events(&self, state: u32) -> Vec<String> {
        self.inner.machine().map_or_else(Vec::new, |m| {
            m.available_events(state)
                .into_iter()
                .map(str::to_owned)
                .collect()
        })
    }

    /// Machines: the state `state` may choose with `transitionTo`, by id (the core's check).
    #[napi]
    pub fn resolve_choice(&self, state: u32, target: String) -> Result<u32> {
        let Some(m) = self.inner.machine() else {
            return Err(coded("ERR_INVALID_ARGUMENT", "not a state machine"));
        };
        m.resolve_choice(state, &target)
            .map_err(|e| js_error(e.into()))
    }

    /// Stored definitions: each node's registered runner as JSON `[[key, args] | null, …]`.
    #[napi]
    pub fn runners(&self) -> String {
        let items: Vec<Value> = self
            .inner
            .runners
            .iter()
            .map(|r| match r {
                ramus_engine::RunnerRef::Key { key, args } => serde_json::json!([
                    key,
                    args.as_deref()
                        .and_then(|a| serde_json::from_str::<Value>(a).ok())
                        .unwrap_or(Value::Null)
                ]),
                _ => Value::Null,
            })
            .collect();
        Value::Array(items).to_string()
    }

    /// Machines: each transition's registered condition key, or null (JSON array).
    #[napi]
    pub fn conditions(&self) -> String {
        serde_json::to_string(&self.inner.conditions).unwrap_or_else(|_| "[]".into())
    }

    /// Machines: where each transition's inline condition is in the config, as JSON
    /// `[[state, event, index | null] | null, …]` by transition id.
    #[napi]
    pub fn inline_conditions(&self) -> String {
        serde_json::to_string(&self.inner.inline_conditions).unwrap_or_else(|_| "[]".into())
    }

    /// The default context of a stored definition (JSON), or null.
    #[napi(getter)]
    pub fn context(&self) -> Option<String> {
        self.inner.context.clone()
    }

    /// Whether the config's context is a function (called for each run's default).
    #[napi(getter)]
    pub fn context_fn(&self) -> bool {
        self.inner.context_fn
    }

    /// Check a run's input (JSON) against the definition's `inputSchema`.
    #[napi]
    pub fn check_input(&self, input: Option<String>) -> Result<()> {
        self.inner.check_input(input.as_deref()).map_err(js_error)
    }

    /// Whether the definition has an `inputSchema` (the face then passes inputs as JSON).
    #[napi(getter)]
    pub fn has_input_schema(&self) -> bool {
        self.inner.input_schema.is_some()
    }

    /// Tags of the definition.
    #[napi(getter)]
    pub fn tags(&self) -> Vec<String> {
        self.inner.tags.clone()
    }

    /// Info of the definition (JSON), or null.
    #[napi(getter)]
    pub fn info(&self) -> Option<String> {
        self.inner.info.clone()
    }

    /// DAGs: keep running what can run when a node fails.
    #[napi(getter)]
    pub fn tolerate_failures(&self) -> bool {
        self.inner.tolerate_failures
    }
}

/// Roots and leaves of a DAG, by name.
#[napi(object)]
pub struct DagAnalysis {
    /// Nodes without parents.
    pub root_nodes: Vec<String>,
    /// Nodes that are nobody's parent.
    pub leaf_nodes: Vec<String>,
}

/// Validate a DAG config's nodes (JSON; runners not required) and return roots and leaves.
#[napi]
pub fn analyze_dag(config: String) -> Result<DagAnalysis> {
    let a = RunDef::analyze(&config).map_err(js_error)?;
    Ok(DagAnalysis {
        root_nodes: a.root_nodes,
        leaf_nodes: a.leaf_nodes,
    })
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RunOptionsJson {
    name: Option<String>,
    traceparent: Option<String>,
    input: Option<Box<serde_json::value::RawValue>>,
    context: Option<Box<serde_json::value::RawValue>>,
    initial: Option<String>,
}

/// The runtime's options for a run created by the face.
pub(crate) fn run_options(
    def: &NativeDefinition,
    flags: u32,
    parent: i32,
    slot: u32,
    clock: u32,
    json: Option<&str>,
) -> Result<RunOptions> {
    let o: RunOptionsJson = match json {
        Some(j) => serde_json::from_str(j)
            .map_err(|e| coded("ERR_INVALID_ARGUMENT", format!("invalid run options: {e}")))?,
        None => RunOptionsJson::default(),
    };
    let initial = match o.initial {
        Some(name) => Some(def.inner.node_id(&name).ok_or_else(|| {
            coded(
                "ERR_DEFINITION",
                format!("Initial state {name} does not exist"),
            )
        })?),
        None => None,
    };
    Ok(RunOptions {
        clock,
        parent: (parent >= 0).then(|| (unpack(parent), slot)),
        name: o.name,
        observe: flags & 1 != 0,
        semaphores: flags & 2 != 0,
        stepwise: flags & 4 != 0,
        keep_alive: flags & 8 != 0,
        initial,
        traceparent: o.traceparent,
        input: o.input.map(|r| r.get().to_owned()),
        context: o.context.map(|r| r.get().to_owned()),
        ..RunOptions::default()
    })
}

/// Lists by state in one array, as the face reads them: entry `s` is the offset of state
/// `s`'s list, entry `n` the end of the last.
fn per_state(lists: impl Iterator<Item = Vec<i32>>) -> Int32Array {
    let lists: Vec<Vec<i32>> = lists.collect();
    let mut table = Vec::with_capacity(lists.len() + 1);
    let mut off = lists.len() as i32 + 1;
    for l in &lists {
        table.push(off);
        off += l.len() as i32;
    }
    table.push(off);
    table.extend(lists.into_iter().flatten());
    Int32Array::new(table)
}
