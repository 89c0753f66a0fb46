//! Time travel: a machine's context at any step (stored as JSON Patches), and forks — a
//! new run that starts from the state an old one was in at one of its steps.
//!
//! A fork is written as an ordinary stored run that has not ended, and is then resumed
//! like any other: the resume plan is the only code that turns stored rows into a live
//! run, so a fork needs no path of its own (see [`EngineCore::fork`]).

use ramus_store::{Kind, Record, Run, RunStatus, Step, StepStatus, Store, WHOLE_CONTEXT};
use serde_json::Value;

use crate::engine_core::EngineCore;
use crate::error::EngineError;
use crate::ids::new_id;

/// What a fork changes (JSON values as text; `None` keeps the old run's).
#[derive(Clone, Debug, Default)]
pub struct ForkOptions {
    /// The step to fork at: the new run starts as the old one was when it started.
    pub at_step: String,
    /// A DAG: the new run's root input. A machine: the input the forked state starts with
    /// (at the machine's first step that is the run's input too).
    pub input: Option<String>,
    /// A machine: the context the forked state starts with (default: the context then).
    /// A DAG: the run's context.
    pub context: Option<String>,
    /// The output of the node or state at `at_step`, which then does not run: a DAG's
    /// downstream runs again, a machine goes on from it as from its runner's output.
    pub output: Option<String>,
}

/// The context a machine step stores, given the context of the run's previous step: a
/// JSON Patch, or the whole document when the patches since the last whole one would
/// outgrow it (so rebuilding a context never applies more bytes of patches than the
/// context holds).
#[derive(Debug, Default)]
pub struct ContextDiffs {
    last: Option<(String, Value)>,
    since_whole: usize,
}

impl ContextDiffs {
    /// The stored form of `context` (JSON text) for the next step. Taken by value: it is
    /// kept to compare the next one with, and a context may be large.
    pub fn next(&mut self, context: String) -> String {
        if let Some((text, _)) = &self.last {
            if *text == context {
                return "[]".to_owned();
            }
        }
        let Ok(value) = serde_json::from_str::<Value>(&context) else {
            // The face hands over JSON it wrote itself; anything else is kept whole.
            self.last = None;
            return whole(&context);
        };
        let patch = self.last.as_ref().map(|(_, before)| {
            serde_json::to_string(&json_patch::diff(before, &value)).unwrap_or_default()
        });
        let stored = match patch {
            Some(p) if !p.is_empty() && self.since_whole + p.len() <= context.len() => {
                self.since_whole += p.len();
                p
            }
            _ => {
                self.since_whole = 0;
                whole(&context)
            }
        };
        self.last = Some((context, value));
        stored
    }
}

/// A patch that replaces the whole document.
fn whole(context: &str) -> String {
    format!("{WHOLE_CONTEXT}{context}}}]")
}

/// Whether a stored context is a whole document (the form the store's read looks for).
fn is_whole(stored: &str) -> bool {
    stored.starts_with(WHOLE_CONTEXT)
}

/// A machine's context at step `seq` of `run_id`, rebuilt from the stored patches.
fn rebuild(store: &dyn Store, run_id: &str, seq: i64) -> Result<Value, EngineError> {
    let rows = store.step_contexts(run_id, seq)?;
    let mut patches = Vec::new();
    let mut found = false;
    for (at, text) in rows {
        let patch: json_patch::Patch = serde_json::from_str(&text).map_err(|e| {
            EngineError::Invalid(format!(
                "Step {at} of run {run_id} stores a context this version cannot read: {e}"
            ))
        })?;
        patches.push(patch);
        if is_whole(&text) {
            found = true;
            break;
        }
    }
    if !found {
        return Err(EngineError::NotForkable(format!(
            "Run {run_id} has no stored context at step {seq} (its steps were recorded before contexts were stored per step, schema version 7)"
        )));
    }
    let mut doc = Value::Null;
    for p in patches.iter().rev() {
        json_patch::patch(&mut doc, p).map_err(|e| {
            EngineError::Invalid(format!(
                "The stored contexts of run {run_id} do not apply at step {seq}: {e}"
            ))
        })?;
    }
    Ok(doc)
}

/// The step `step_id` of run `run_id` or of a run started inside it (at any depth), with
/// the run it belongs to.
fn step_within(store: &dyn Store, run_id: &str, step_id: &str) -> Result<(Run, Step), EngineError> {
    let top = store
        .run(run_id)?
        .ok_or_else(|| EngineError::NoRun(run_id.to_owned(), store.location().to_owned()))?;
    let step = store
        .step(step_id)?
        .ok_or_else(|| EngineError::NoStep(format!("No step '{step_id}' in run {run_id}")))?;
    if step.run_id == run_id {
        return Ok((top, step));
    }
    let owner = store
        .run(&step.run_id)?
        .ok_or_else(|| EngineError::NoStep(format!("No step '{step_id}' in run {run_id}")))?;
    let mut above = owner.parent_run_id.clone();
    while let Some(p) = above {
        if p == run_id {
            return Ok((owner, step));
        }
        above = store.run(&p)?.and_then(|r| r.parent_run_id);
    }
    Err(EngineError::NoStep(format!(
        "Step '{step_id}' belongs to run {}, which is neither run {run_id} nor started inside it",
        step.run_id
    )))
}

/// A machine's context as it was when step `step_id` of run `run_id` (or of a machine
/// started inside it) started, read from any store (the inspector reads it without an
/// engine).
///
/// ```
/// # let store = ramus_store::SqliteStore::open(":memory:", ramus_store::Durability::Sync).unwrap();
/// // A run that is not in the store is a clear error.
/// let err = ramus_engine::travel::context_at(&store, "0190b6a4-1f00-7a3c-8d2e-5b1f0c9e4a77", "nope").unwrap_err();
/// assert_eq!(err.code(), "ERR_NO_RUN");
/// ```
pub fn context_at(store: &dyn Store, run_id: &str, step_id: &str) -> Result<Value, EngineError> {
    // A step of a machine started inside the run is found through it too.
    let (run, step) = step_within(store, run_id, step_id)?;
    if run.kind != Kind::Machine {
        return Err(EngineError::Invalid(format!(
            "Run {} ({}) is a DAG; contextAt reads a state machine's context at a step",
            run.id, run.name
        )));
    }
    rebuild(store, &run.id, step.seq)
}

impl EngineCore {
    /// A machine's context as it was when step `step_id` of run `run_id` started (see
    /// [`context_at`]).
    pub fn context_at(&self, run_id: &str, step_id: &str) -> Result<Value, EngineError> {
        context_at(self.store().as_ref(), run_id, step_id)
    }

    /// Write a fork of run `run_id` at step `o.at_step` and return the new top-level run's
    /// id; the caller resumes it (`resume_plan`) to run it. The old run is not touched.
    ///
    /// A machine fork starts in the state of that step, with the context, input, limits
    /// and queued events it had as it started (the context or input given instead). A DAG
    /// fork keeps the outputs of the nodes whose steps came before it and finished; that
    /// step's node (unless `o.output` gives its output) and everything after run again.
    ///
    /// The step may belong to a run started inside a step of another (`run_id` is then
    /// that run, or one it was started inside): the chain of runs above it is forked at
    /// the steps that started each, so the top-level fork runs that step again, and the
    /// nested run that step starts is the fork at `o.at_step`. The runs that step had
    /// started before that one are kept as they ended (refused while one has not ended);
    /// those it started after it run again.
    pub fn fork(&self, run_id: &str, o: &ForkOptions, now: i64) -> Result<String, EngineError> {
        let store = self.store().as_ref();
        let (run, step) = step_within(store, run_id, &o.at_step)?;
        for (what, v) in [
            ("input", &o.input),
            ("context", &o.context),
            ("output", &o.output),
        ] {
            if let Some(text) = v {
                serde_json::from_str::<Value>(text)
                    .map_err(|e| EngineError::Invalid(format!("fork: {what} is not JSON: {e}")))?;
            }
        }
        let mut records = Vec::new();
        let (_, id) = self.fork_at(&run, &step, o, now, &mut records)?;
        // Held by this engine from its first commit: no other process's resumeAll takes it
        // before this engine's resume does.
        let (owner, until) = self.first_lease(&id, now);
        records.push(Record::Lease {
            run_id: id.clone(),
            owner,
            until,
        });
        if let Err(e) = self.store().submit_sync(records) {
            self.let_go(&id);
            return Err(e.into());
        }
        Ok(id)
    }

    /// Append the records of a fork of `run` at its `step` (and of the runs above it) to
    /// `records`; `(this fork's id, the top-level fork's id)`.
    fn fork_at(
        &self,
        run: &Run,
        step: &Step,
        o: &ForkOptions,
        now: i64,
        records: &mut Vec<Record>,
    ) -> Result<(String, String), EngineError> {
        let store = self.store().as_ref();
        let run_id = run.id.as_str();
        let not_forkable =
            |why: String| EngineError::NotForkable(format!("Run {run_id} ({}) {why}", run.name));
        // Above a nested run: its parent forked at the step that started it, with a step
        // standing for that one, open, so that the resume runs it again and hands it the
        // runs recorded as started inside it.
        let parent = match (&run.parent_run_id, &run.parent_step_id) {
            (Some(p), Some(ps)) => {
                let (prun, pstep) = step_within(store, p, ps)?;
                let at = ForkOptions {
                    at_step: ps.clone(),
                    ..ForkOptions::default()
                };
                let (pid, top) = self.fork_at(&prun, &pstep, &at, now, records)?;
                let seq = records
                    .iter()
                    .filter(|r| matches!(r, Record::Step(s) if s.run_id == pid))
                    .count() as i64
                    + 1;
                let standing = new_id(now as u64);
                records.push(Record::Step(Step {
                    id: standing.clone(),
                    run_id: pid.clone(),
                    seq,
                    node: pstep.node.clone(),
                    parent_step_id: None,
                    input: pstep.input.clone(),
                    output: None,
                    error: None,
                    // Open, as an interrupted step, so the resume runs its node again;
                    // `pending` tells it apart when the resume closes it.
                    status: StepStatus::Pending,
                    attempt: 1,
                    cached: false,
                    started_at: Some(now),
                    ended_at: None,
                    // Whole: the patch the old step stored is from a step the fork lacks.
                    context: match &pstep.context {
                        Some(_) => Some(whole(&rebuild(store, p, pstep.seq)?.to_string())),
                        None => None,
                    },
                    snapshot: pstep.snapshot.clone(),
                    superseded_at: None,
                }));
                // The runs that step had started before this one and that had ended are
                // kept as they ended: it gets their outcomes again instead of running them.
                for sib in store.children(p)? {
                    if sib.id == run.id {
                        break;
                    }
                    if sib.parent_step_id.as_deref() != Some(ps.as_str()) {
                        continue;
                    }
                    // The step hands its nested runs back in the order it starts them: one
                    // that is still running cannot be kept, nor left out without the
                    // fork taking its place.
                    if !sib.status.is_terminal() {
                        return Err(not_forkable(format!(
                            "cannot be forked at step {}: the step that started it had started run {} ({}) before it, which has not ended; fork once it has",
                            step.id, sib.id, sib.name
                        )));
                    }
                    records.push(Record::Run(Run {
                        id: new_id(now as u64),
                        parent_run_id: Some(pid.clone()),
                        parent_step_id: Some(standing.clone()),
                        forked_from_run_id: Some(sib.id.clone()),
                        forked_from_step_id: None,
                        ..sib
                    }));
                }
                Some((pid, standing, top))
            }
            _ => {
                let (Some(name), Some(version)) = (&run.definition_name, run.definition_version)
                else {
                    return Err(not_forkable(
                        "was started from a config with inline run functions, so it cannot be forked; define it with registered runners (engine.define) to make its runs forkable".into(),
                    ));
                };
                // The definition must load here, as the resume that runs the fork needs it.
                self.load(name, Some(version))?;
                None
            }
        };
        let id = new_id(now as u64);
        let mut own = Vec::new();
        let snapshot = match run.kind {
            Kind::Machine => {
                let stored = step.snapshot.as_deref().ok_or_else(|| {
                    not_forkable(format!(
                        "has no stored state at step {} (recorded before schema version 7, or a step that is not a state's first start)",
                        o.at_step
                    ))
                })?;
                let mut snap: serde_json::Map<String, Value> = serde_json::from_str(stored)
                    .map_err(|e| {
                        not_forkable(format!("stores a step this version cannot read: {e}"))
                    })?;
                let core = snap
                    .get_mut("core")
                    .and_then(Value::as_object_mut)
                    .ok_or_else(|| {
                        not_forkable("stores a step without its machine state".into())
                    })?;
                // A new run: it records its own start, arms its own timeout and has every
                // attempt of the state ahead of it.
                core.insert("started".into(), Value::Bool(false));
                core.insert("timeout".into(), Value::Null);
                core.remove("attempt");
                let context = match &o.context {
                    Some(c) => serde_json::from_str(c).unwrap_or(Value::Null),
                    None => rebuild(store, run_id, step.seq)?,
                };
                snap.insert("context".into(), context);
                // The state's step takes this output instead of running, then the machine
                // goes on from it as it would from the runner's.
                if let Some(output) = &o.output {
                    snap.insert(
                        "given".into(),
                        serde_json::from_str(output).unwrap_or(Value::Null),
                    );
                }
                if let Some(input) = o.input.as_deref().or(step.input.as_deref()) {
                    snap.insert(
                        "input".into(),
                        serde_json::from_str(input).unwrap_or(Value::Null),
                    );
                }
                Some(Value::Object(snap).to_string())
            }
            Kind::Dag => {
                let context = o.context.clone().or_else(|| {
                    run.snapshot
                        .as_deref()
                        .and_then(|s| serde_json::from_str::<Value>(s).ok())
                        .and_then(|s| s.get("context").cloned())
                        .map(|c| c.to_string())
                });
                let mut seq = 0;
                let mut keep = |node: &str, s: &Step, output: Option<String>| {
                    seq += 1;
                    Record::Step(Step {
                        id: new_id(now as u64),
                        run_id: id.clone(),
                        seq,
                        node: node.to_owned(),
                        parent_step_id: None,
                        input: s.input.clone(),
                        output,
                        error: None,
                        status: StepStatus::Finished,
                        attempt: 1,
                        cached: s.cached,
                        started_at: s.started_at,
                        ended_at: s.ended_at.or(Some(now)),
                        context: None,
                        snapshot: None,
                        superseded_at: None,
                    })
                };
                for s in store.steps(run_id)? {
                    if s.seq < step.seq
                        && s.status == StepStatus::Finished
                        && s.superseded_at.is_none()
                    {
                        own.push(keep(&s.node, &s, s.output.clone()));
                    }
                }
                if let Some(output) = &o.output {
                    own.push(keep(&step.node, step, Some(output.clone())));
                }
                context.map(|c| format!(r#"{{"context":{c}}}"#))
            }
        };
        records.push(Record::Run(Run {
            id: id.clone(),
            name: run.name.clone(),
            kind: run.kind,
            definition_name: run.definition_name.clone(),
            definition_version: run.definition_version,
            status: RunStatus::Running,
            input: match (run.kind, &o.input) {
                (Kind::Machine, Some(_)) if step.seq > 1 => run.input.clone(),
                (_, input) => input.clone().or(run.input.clone()),
            },
            output: None,
            error: None,
            tags: run.tags.clone(),
            info: run.info.clone(),
            trace_id: None,
            span_id: None,
            parent_run_id: parent.as_ref().map(|(p, _, _)| p.clone()),
            parent_step_id: parent.as_ref().map(|(_, s, _)| s.clone()),
            snapshot,
            created_at: now,
            updated_at: now,
            ended_at: None,
            forked_from_run_id: Some(run_id.to_owned()),
            forked_from_step_id: Some(step.id.clone()),
        }));
        records.extend(own);
        let top = parent.map_or_else(|| id.clone(), |(_, _, top)| top);
        Ok((id, top))
    }
}

/// What [`EngineCore::rerun`] changes (JSON values as text).
#[derive(Clone, Debug, Default)]
pub struct RerunOptions {
    /// The DAG node to run again; its downstream runs again after it.
    pub node: String,
    /// Its output instead of running it (its downstream still runs again).
    pub output: Option<String>,
}

impl EngineCore {
    /// A DAG run this engine may run again in place: stored, top-level, from a stored
    /// definition, and not live here.
    fn reopenable(
        &self,
        run_id: &str,
        what: &str,
    ) -> Result<(Run, std::sync::Arc<crate::RunDef>), EngineError> {
        // Before the row is read: a run that started here may not be committed yet.
        if self.holds(run_id) {
            return Err(EngineError::NotResumable(format!(
                "{what}: run {run_id} is running in this engine; rerun its nodes once it has ended"
            )));
        }
        let run = self.store().run(run_id)?.ok_or_else(|| {
            EngineError::NoRun(run_id.to_owned(), self.store().location().to_owned())
        })?;
        let refuse = |why: String| {
            EngineError::NotResumable(format!("{what}: run {run_id} ({}) {why}", run.name))
        };
        if run.kind != Kind::Dag {
            return Err(refuse(
                "is a state machine; fork it at a step instead (engine.fork)".into(),
            ));
        }
        if let Some(parent) = &run.parent_run_id {
            return Err(refuse(format!(
                "was started inside run {parent}; rerun the node of that run that started it"
            )));
        }
        let (Some(name), Some(version)) = (&run.definition_name, run.definition_version) else {
            return Err(refuse("was started from a config with inline run functions; define it with registered runners (engine.define) to rerun its nodes".into()));
        };
        if run.status == RunStatus::Queued {
            return Err(refuse("is queued and has not started".into()));
        }
        let def = self.load(name, Some(version))?;
        Ok((run, def))
    }

    /// The nodes of a DAG run whose current step failed: a run that does not tolerate
    /// failures runs them again with any rerun (else their errors would stand, with their
    /// downstream cancelled, in a run that goes on as if they did not matter).
    fn failed_nodes(&self, run: &Run, def: &crate::RunDef) -> Result<Vec<u32>, EngineError> {
        // A run that finished without tolerating failures has none standing (a failed
        // attempt it retried is followed by the one that finished): the resume reads its
        // steps anyway, so they are not read twice.
        if def.tolerate_failures || run.status == RunStatus::Finished {
            return Ok(Vec::new());
        }
        let mut last = std::collections::HashMap::new();
        for s in self.store().current_steps(&run.id)? {
            last.insert(s.node, s.status);
        }
        Ok(last
            .into_iter()
            .filter(|(_, s)| *s == StepStatus::Error)
            .filter_map(|(n, _)| def.node_id(&n))
            .collect())
    }

    /// Claim `run` (no other live engine may hold it) and write what makes it run again,
    /// with `nodes` set aside and `extra` after; the caller resumes it.
    fn reopen(
        &self,
        run: &Run,
        def: &crate::RunDef,
        nodes: &[u32],
        input: Option<String>,
        extra: Vec<Record>,
        now: i64,
    ) -> Result<(), EngineError> {
        let fence = self.claim(&run.id, now)?;
        let mut records = vec![
            fence.record(),
            Record::RunReopened {
                id: run.id.clone(),
                input,
                at: now,
            },
            Record::StepsSuperseded {
                run_id: run.id.clone(),
                nodes: nodes.iter().map(|&n| def.node_name(n).to_owned()).collect(),
                at: now,
            },
        ];
        records.extend(extra);
        if let Err(e) = self.store().submit_sync(records) {
            let _ = self.hand_back(&run.id);
            return Err(e.into());
        }
        Ok(())
    }

    /// Run a node of a stored DAG run again (or set its output), and everything downstream
    /// of it; every other node keeps its output. The run continues in place (the same id):
    /// its old steps stay, set aside (`superseded_at`). The caller resumes the run. Works on
    /// runs that ended (finished, failed, cancelled) and on runs no live engine holds.
    pub fn rerun(&self, run_id: &str, o: &RerunOptions, now: i64) -> Result<(), EngineError> {
        let (run, def) = self.reopenable(run_id, "rerun")?;
        let dag = def.dag().expect("a DAG");
        let Some(node) = dag.node_id(&o.node) else {
            let hint =
                ramus_core::suggest(&o.node, (0..dag.len() as u32).map(|n| dag.node_name(n)))
                    .map(|s| format!(" (did you mean '{s}'?)"))
                    .unwrap_or_default();
            return Err(EngineError::Invalid(format!(
                "rerun: run {run_id} ({}) has no node '{}'{hint}",
                run.name, o.node
            )));
        };
        let mut extra = Vec::new();
        if let Some(output) = &o.output {
            if let Err(e) = serde_json::from_str::<Value>(output) {
                return Err(EngineError::Invalid(format!(
                    "rerun: output is not JSON: {e}"
                )));
            }
            let last = self
                .store()
                .steps(run_id)?
                .into_iter()
                .rfind(|s| s.node == o.node);
            extra.push(Record::Step(Step {
                id: new_id(now as u64),
                run_id: run_id.to_owned(),
                seq: self.store().max_seqs(run_id)?.0 + 1,
                node: o.node.clone(),
                parent_step_id: None,
                input: last.and_then(|s| s.input),
                output: Some(output.clone()),
                error: None,
                status: StepStatus::Finished,
                attempt: 1,
                cached: false,
                started_at: Some(now),
                ended_at: Some(now),
                context: None,
                snapshot: None,
                superseded_at: None,
            }));
        }
        // The node's own steps are set aside before its new one is written (same commit).
        let failed = self.failed_nodes(&run, &def)?;
        let nodes = dag.downstream(std::iter::once(node).chain(failed));
        self.reopen(&run, &def, &nodes, None, extra, now)
    }

    /// Change keys of a stored DAG run's root input (`patch`: a JSON object, merged into
    /// the input) and run again the nodes whose `uses` names a key that changed, and their
    /// downstream; the rest keep their outputs. Returns the nodes set to run again. The
    /// caller resumes the run.
    pub fn update_input(
        &self,
        run_id: &str,
        patch: &str,
        now: i64,
    ) -> Result<Vec<String>, EngineError> {
        let Ok(Value::Object(patch)) = serde_json::from_str::<Value>(patch) else {
            return Err(EngineError::Invalid(
                "updateInput(runId, patch): patch must be a JSON object of root-input keys".into(),
            ));
        };
        let (run, def) = self.reopenable(run_id, "updateInput")?;
        let mut input = match run.input.as_deref().map(serde_json::from_str::<Value>) {
            None | Some(Ok(Value::Null)) => serde_json::Map::new(),
            Some(Ok(Value::Object(o))) => o,
            Some(_) => {
                return Err(EngineError::Invalid(format!(
                    "updateInput: the input of run {run_id} ({}) is not an object, so it has no keys to update",
                    run.name
                )));
            }
        };
        let changed: Vec<String> = patch
            .iter()
            .filter(|(k, v)| input.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        input.extend(patch);
        let dag = def.dag().expect("a DAG");
        let users = def
            .uses
            .iter()
            .enumerate()
            .filter(|(_, keys)| keys.iter().any(|k| changed.contains(k)))
            .map(|(n, _)| n as u32);
        let failed = self.failed_nodes(&run, &def)?;
        let nodes = dag.downstream(users.chain(failed));
        self.reopen(
            &run,
            &def,
            &nodes,
            Some(Value::Object(input).to_string()),
            Vec::new(),
            now,
        )?;
        Ok(nodes.iter().map(|&n| def.node_name(n).to_owned()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(patches: &[String]) -> Value {
        let mut doc = Value::Null;
        for p in patches {
            let p: json_patch::Patch = serde_json::from_str(p).unwrap();
            json_patch::patch(&mut doc, &p).unwrap();
        }
        doc
    }

    #[test]
    fn diffs_rebuild_every_context_and_stay_small() {
        let mut d = ContextDiffs::default();
        let big = "x".repeat(10_000);
        let mut stored = Vec::new();
        let mut seen = Vec::new();
        for i in 0..50 {
            let ctx =
                serde_json::json!({ "big": big, "n": i, "list": (0..i % 5).collect::<Vec<_>>() });
            stored.push(d.next(ctx.to_string()));
            seen.push(ctx);
        }
        for i in 0..seen.len() {
            assert_eq!(apply(&stored[..=i]), seen[i], "context at step {i}");
        }
        let bytes: usize = stored[1..].iter().map(String::len).sum();
        assert!(
            bytes < 49 * 200,
            "patches after the first take {bytes} bytes"
        );
        assert!(stored[0].contains(&big), "the first context is whole");
    }

    #[test]
    fn patches_give_way_to_a_whole_context_once_they_outgrow_it() {
        let mut d = ContextDiffs::default();
        let mut stored = Vec::new();
        for i in 0..20 {
            stored.push(d.next(format!(r#"{{"a":{i},"b":"{}"}}"#, "y".repeat(i))));
        }
        let wholes = stored.iter().filter(|p| is_whole(p)).count();
        assert!(
            wholes > 1,
            "a small context changing each step is stored whole again"
        );
        assert_eq!(
            d.next(r#"{"a":19,"b":"yyyyyyyyyyyyyyyyyyy"}"#.to_owned()),
            "[]"
        );
    }
}
