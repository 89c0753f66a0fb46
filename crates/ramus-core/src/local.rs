//! A driver for Rust programs: run a compiled DAG whose nodes are Rust closures, with
//! ready nodes executing concurrently on a small pool of threads.
//!
//! ```
//! use std::sync::Arc;
//! use ramus_core::{CompiledDag, NodeSpec, local};
//!
//! let dag = Arc::new(CompiledDag::compile("sum", &[
//!     NodeSpec::new("a", &[]),
//!     NodeSpec::new("b", &[]),
//!     NodeSpec::new("total", &["a", "b"]),
//! ]).unwrap());
//! let result = local::run(&dag, 2, |name, inputs: &[Option<i64>]| -> Result<i64, String> {
//!     Ok(match name {
//!         "a" => 1,
//!         "b" => 2,
//!         _ => inputs.iter().flatten().sum(),
//!     })
//! }).unwrap();
//! assert_eq!(result.output(&dag, "total"), Some(&3));
//! ```

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::dag::CompiledDag;
use crate::dag_run::{DagRun, DagRunOptions, Launch, Outcome, RunStatus};
use crate::event::Recorder;

/// The outputs of a finished run, indexed by node id.
#[derive(Debug)]
pub struct LocalResult<T> {
    /// Each node's output; `None` for nodes that did not finish.
    pub outputs: Vec<Option<T>>,
}

impl<T> LocalResult<T> {
    /// The output of the node called `name`.
    pub fn output(&self, dag: &CompiledDag, name: &str) -> Option<&T> {
        self.outputs[dag.node_id(name)? as usize].as_ref()
    }
}

/// A node failed: its name and error.
#[derive(Debug, PartialEq, Eq)]
pub struct LocalFailure<E> {
    /// The failing node.
    pub node: String,
    /// What it returned.
    pub error: E,
}

/// Run `dag` to completion. `f(node_name, parent_outputs)` computes a node; parent outputs
/// come in the node's declared parent order. Up to `threads` nodes run at once.
pub fn run<T, E, F>(
    dag: &Arc<CompiledDag>,
    threads: usize,
    f: F,
) -> Result<LocalResult<T>, LocalFailure<E>>
where
    T: Clone + Send,
    E: Send,
    F: Fn(&str, &[Option<T>]) -> Result<T, E> + Sync,
{
    let mut run = DagRun::new(
        Arc::clone(dag),
        DagRunOptions::default(),
        Recorder::new(0, dag.len(), None, None),
    );
    let mut outputs: Vec<Option<T>> = vec![None; dag.len()];
    let mut error: Option<(u32, E)> = None;
    let (job_tx, job_rx) = mpsc::channel::<(u32, Vec<Option<T>>)>();
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<(u32, Result<T, E>)>();

    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let done_tx = done_tx.clone();
            let (job_rx, f) = (&job_rx, &f);
            scope.spawn(move || loop {
                // The lock is held only to take one job; a closed channel ends the worker.
                let job = job_rx
                    .lock()
                    .map_err(|_| ())
                    .and_then(|rx| rx.recv().map_err(|_| ()));
                let Ok((node, inputs)) = job else { break };
                if done_tx
                    .send((node, f(dag.node_name(node), &inputs)))
                    .is_err()
                {
                    break;
                }
            });
        }
        drop(done_tx);

        let mut launches = Vec::new();
        let mut in_flight = 0usize;
        run.start(0, &mut launches);
        loop {
            for launch in launches.drain(..) {
                if let Launch::Run(node) = launch {
                    let inputs = dag
                        .parents(node)
                        .iter()
                        .map(|&p| outputs[p as usize].clone())
                        .collect();
                    in_flight += 1;
                    if job_tx.send((node, inputs)).is_err() {
                        in_flight -= 1;
                    }
                }
            }
            if in_flight == 0 || run.status() != RunStatus::Running {
                break;
            }
            let Ok((node, result)) = done_rx.recv() else {
                break;
            };
            in_flight -= 1;
            match result {
                Ok(v) => {
                    outputs[node as usize] = Some(v);
                    run.complete(node, Outcome::Ok, 0, &mut launches);
                }
                Err(e) => {
                    error.get_or_insert((node, e));
                    run.complete(node, Outcome::Error, 0, &mut launches);
                }
            }
        }
        drop(job_tx);
    });

    match (run.status(), error) {
        (RunStatus::Failed, Some((node, error))) => Err(LocalFailure {
            node: dag.node_name(node).to_string(),
            error,
        }),
        _ => Ok(LocalResult { outputs }),
    }
}
