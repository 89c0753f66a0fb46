//! Events as the face reads them: one compact JSON text per drain.

use std::collections::HashMap;
use std::fmt::Write;

use ramus_core::{DataRef, Event, Executor, Id};

/// `(code, state name, argument)` of an event's data; the argument is the machine's state
/// id for status events, the failed attempt for retries (whose delay is the state field).
fn data_code(d: DataRef) -> (u8, &'static str, i64) {
    match d {
        DataRef::RunInput => (1, "", -1),
        DataRef::RunOutput => (2, "", -1),
        DataRef::RunError => (3, "", -1),
        DataRef::NodeInput => (4, "", -1),
        DataRef::NodeOutput => (5, "", -1),
        DataRef::CachedOutput => (12, "", -1),
        DataRef::NodeError => (6, "", -1),
        DataRef::State(s) => (7, s, -1),
        DataRef::Custom => (8, "", -1),
        DataRef::Status(s, state) => (9, s, state as i64),
        DataRef::Transition => (10, "", -1),
        DataRef::Retry { attempt, .. } => (11, "", i64::from(attempt)),
    }
}

/// `{"r": runId, "s": [stepId, …], "e": [[id, type, step, parentStep, node, time, data,
/// state, arg], …]}`: `step`/`parentStep` index `s` (-1 for none), `node` is the DAG node
/// or machine state the event is about (-1 for run events). Step ids repeat across a
/// step's events and the run id across all of them, so each is formatted once per drain.
pub(crate) fn wire(events: &[Event], run_id: Id, exec: &Executor) -> String {
    let mut steps: Vec<Id> = Vec::new();
    let mut seen: HashMap<Id, usize> = HashMap::new();
    let mut index = |id: Id, steps: &mut Vec<Id>| {
        *seen.entry(id).or_insert_with(|| {
            steps.push(id);
            steps.len() - 1
        })
    };
    let mut body = String::with_capacity(events.len() * 100);
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let step = index(e.step, &mut steps);
        let parent = e.parent_step.map_or(-1, |p| index(p, &mut steps) as i64);
        let (code, state, arg) = data_code(e.data);
        let delay;
        let state = match e.data {
            DataRef::Retry { delay: ms, .. } => {
                delay = ms.to_string();
                delay.as_str()
            }
            _ => state,
        };
        let node = e
            .node
            .and_then(|slot| exec.slot_node(slot))
            .map_or(-1, |n| n as i64);
        let _ = write!(
            body,
            r#"["{}",{},{},{},{},{},{},"{}",{}]"#,
            e.id,
            serde_json::to_string(e.kind.as_str()).unwrap_or_default(),
            step,
            parent,
            node,
            e.time,
            code,
            state,
            arg
        );
    }
    let mut s = String::with_capacity(body.len() + steps.len() * 40 + 64);
    let _ = write!(s, r#"{{"r":"{run_id}","s":["#);
    for (i, id) in steps.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "\"{id}\"");
    }
    s.push_str("],\"e\":[");
    s.push_str(&body);
    s.push_str("]}");
    s
}
