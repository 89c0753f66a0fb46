//! DAG definitions: validation with the contract's exact messages, and compilation into
//! flat integer tables the executor walks without string lookups.

use std::hash::BuildHasher;

use hashbrown::hash_table::{Entry, HashTable};
use petgraph::graph::DiGraph;
use rustc_hash::FxBuildHasher;

use crate::error::DagError;
use crate::retry::StepPolicy;

/// A node as declared, before compilation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSpec {
    /// The node's name, unique in its DAG.
    pub name: String,
    /// Names of the nodes whose outputs this node needs, in declaration order.
    pub parents: Vec<String>,
    /// Run even when a parent failed or was cancelled; that parent's input is then empty.
    pub tolerate_parent_errors: bool,
    /// Rate-limiting key: the node holds a slot of each of the run's semaphores under it.
    pub semaphore_key: Option<String>,
}

impl NodeSpec {
    /// A node with the given parents and default options.
    pub fn new(name: impl Into<String>, parents: &[&str]) -> Self {
        NodeSpec {
            name: name.into(),
            parents: parents.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        }
    }
}

/// Roots and leaves of a valid DAG, in declaration order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Analysis {
    /// Nodes without parents.
    pub root_nodes: Vec<String>,
    /// Nodes that are nobody's parent.
    pub leaf_nodes: Vec<String>,
}

/// Validate `nodes` and return roots and leaves. See [`CompiledDag::compile`] for the rules.
pub fn analyze(nodes: &[NodeSpec]) -> Result<Analysis, DagError> {
    DagGraph::from(nodes).analyze()
}

/// Names by id, in one buffer, with the index from name to id. A DAG may have 100,000
/// nodes: a `String` per name, and another as a map's key, made parsing and compiling one
/// about twice as slow (malloc and free were a third of it).
#[derive(Clone, Debug, Default)]
struct Names {
    text: String,
    /// Where each name ends in `text`; it starts where the one before ends.
    ends: Vec<u32>,
    /// Ids, hashed by their names.
    index: HashTable<u32>,
}

// Node names are the program's own (not untrusted input): a fast hash, not a DoS-resistant one.
fn hash(name: &str) -> u64 {
    FxBuildHasher.hash_one(name)
}

impl Names {
    fn with_capacity(names: usize, bytes: usize) -> Names {
        Names {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(names),
            index: HashTable::with_capacity(names),
        }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, id: u32) -> &str {
        slice(&self.text, &self.ends, id)
    }

    fn id(&self, name: &str) -> Option<u32> {
        self.index
            .find(hash(name), |&id| self.get(id) == name)
            .copied()
    }

    /// Adds `name` as the next id; false when it is taken (the index keeps the first).
    fn push(&mut self, name: &str) -> bool {
        let id = self.ends.len() as u32;
        self.text.push_str(name);
        self.ends.push(self.text.len() as u32);
        let (text, ends) = (&self.text, &self.ends);
        let entry = self.index.entry(
            hash(name),
            |&other| slice(text, ends, other) == name,
            |&other| hash(slice(text, ends, other)),
        );
        match entry {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(id);
                true
            }
        }
    }
}

/// Item `i` of strings stored end to end in `text`, `ends[i]` where each ends.
fn slice<'t>(text: &'t str, ends: &[u32], i: u32) -> &'t str {
    let i = i as usize;
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    &text[start..ends[i] as usize]
}

/// A parent entry naming a node not declared yet: the low bits index `DagGraph::pending`.
/// Node ids stay below it: a JS string (the JSON of a definition) cannot hold 2^31 nodes.
const PENDING: u32 = 1 << 31;

/// A DAG's nodes as compilation takes them, built node by node (by the definition parser,
/// or from [`NodeSpec`]s) without an allocation per node: names in one buffer, parents as
/// ids in one table. A parent named before it is declared is kept by name and resolved
/// when compiling, in the walk that finds cycles, so the first fault in walk order is the
/// one reported.
///
/// ```
/// use ramus_core::dag::{CompiledDag, DagGraph};
/// let mut g = DagGraph::default();
/// g.add_node("b");
/// g.add_parent("a"); // declared below
/// g.add_node("a");
/// let dag = CompiledDag::from_graph("d", g).unwrap();
/// assert_eq!(dag.parents(0), &[1]);
/// ```
#[derive(Clone, Debug, Default)]
pub struct DagGraph {
    names: Names,
    /// Node `i`'s parents are `parents[parent_off[i]..parent_off[i + 1]]`.
    parent_off: Vec<u32>,
    /// Node ids, or [`PENDING`] entries.
    parents: Vec<u32>,
    /// Parents named before they were declared: the names' ends in `pending_text` (each
    /// starts where the one before ends).
    pending: Vec<u32>,
    pending_text: String,
    tolerate_parent_errors: Vec<bool>,
    semaphore_keys: Vec<Option<String>>,
    /// `(node, policy)` of the nodes with a retry or timeout, in node order.
    policies: Vec<(u32, StepPolicy)>,
    /// The first node declared under a name already taken.
    duplicate: Option<u32>,
    /// The node the next parent most likely is (see [`DagGraph::add_parent`]).
    guess: u32,
}

impl DagGraph {
    /// An empty graph with room for about `nodes` nodes and `edges` parents.
    pub fn with_capacity(nodes: usize, edges: usize) -> DagGraph {
        let mut parent_off = Vec::with_capacity(nodes + 1);
        parent_off.push(0);
        DagGraph {
            names: Names::with_capacity(nodes, nodes * 8),
            parent_off,
            parents: Vec::with_capacity(edges),
            tolerate_parent_errors: Vec::with_capacity(nodes),
            semaphore_keys: Vec::with_capacity(nodes),
            ..DagGraph::default()
        }
    }

    /// Declares the next node (its id is the number of nodes before it). A name declared
    /// twice is reported when compiling.
    pub fn add_node(&mut self, name: &str) -> u32 {
        if self.parent_off.is_empty() {
            self.parent_off.push(0);
        }
        let id = self.names.len() as u32;
        if !self.names.push(name) && self.duplicate.is_none() {
            self.duplicate = Some(id);
        }
        self.parent_off.push(self.parents.len() as u32);
        self.tolerate_parent_errors.push(false);
        self.semaphore_keys.push(None);
        self.guess = id.wrapping_sub(1);
        id
    }

    /// Appends a parent to the last node declared.
    ///
    /// # Panics
    /// If no node is declared yet.
    pub fn add_parent(&mut self, name: &str) {
        assert!(!self.is_empty(), "a parent of no node");
        // Parents are mostly named in declaration order: a chain names the node declared
        // just before, a fan-in names the nodes after its previous parent's. Trying that
        // one name first spares a lookup in a table of 100,000 names, which misses the
        // cache. (Equal names are an error, so which of two the guess finds is moot.)
        let g = self.guess;
        let guessed = ((g as usize) < self.names.len() && self.names.get(g) == name).then_some(g);
        let entry = match guessed.or_else(|| self.names.id(name)) {
            Some(id) => {
                self.guess = id.wrapping_add(1);
                id
            }
            None => {
                self.pending_text.push_str(name);
                self.pending.push(self.pending_text.len() as u32);
                PENDING | (self.pending.len() as u32 - 1)
            }
        };
        self.parents.push(entry);
        *self
            .parent_off
            .last_mut()
            .expect("one entry per node and one more") += 1;
    }

    /// Whether the last node declared runs when a parent failed.
    pub fn set_tolerate_parent_errors(&mut self, tolerate: bool) {
        *self
            .tolerate_parent_errors
            .last_mut()
            .expect("a node is declared") = tolerate;
    }

    /// The rate-limiting key of the last node declared, if it has one yet.
    pub fn last_semaphore_key(&self) -> Option<&str> {
        self.semaphore_keys.last().and_then(|k| k.as_deref())
    }

    /// The rate-limiting key of the last node declared.
    pub fn set_semaphore_key(&mut self, key: Option<String>) {
        *self.semaphore_keys.last_mut().expect("a node is declared") = key;
    }

    /// The retry and timeout of the last node declared.
    pub fn set_policy(&mut self, policy: StepPolicy) {
        let node = self.len() as u32 - 1;
        self.policies.retain(|(n, _)| *n != node);
        if !policy.is_empty() {
            self.policies.push((node, policy));
        }
    }

    /// A node's retry and timeout, if it has either.
    pub fn policy(&self, node: u32) -> Option<&StepPolicy> {
        find_policy(&self.policies, node)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no node is declared.
    pub fn is_empty(&self) -> bool {
        self.names.len() == 0
    }

    /// A node's name.
    pub fn name(&self, node: u32) -> &str {
        self.names.get(node)
    }

    fn pending_name(&self, k: u32) -> &str {
        slice(&self.pending_text, &self.pending, k)
    }

    /// A node's parents by name, in declaration order.
    pub fn parent_names(&self, node: u32) -> impl Iterator<Item = &str> + '_ {
        let i = node as usize;
        self.parents[self.parent_off[i] as usize..self.parent_off[i + 1] as usize]
            .iter()
            .map(|&p| {
                if p & PENDING != 0 {
                    self.pending_name(p & !PENDING)
                } else {
                    self.names.get(p)
                }
            })
    }

    /// Whether a node runs when a parent failed.
    pub fn tolerates_parent_errors(&self, node: u32) -> bool {
        self.tolerate_parent_errors[node as usize]
    }

    /// A node's rate-limiting key.
    pub fn semaphore_key(&self, node: u32) -> Option<&str> {
        self.semaphore_keys[node as usize].as_deref()
    }

    /// The nodes as specs, one allocation per name as [`NodeSpec`] holds them.
    pub fn to_specs(&self) -> Vec<NodeSpec> {
        (0..self.len() as u32)
            .map(|i| NodeSpec {
                name: self.name(i).to_owned(),
                parents: self.parent_names(i).map(str::to_owned).collect(),
                tolerate_parent_errors: self.tolerates_parent_errors(i),
                semaphore_key: self.semaphore_key(i).map(str::to_owned),
            })
            .collect()
    }

    /// Roots and leaves, checking the graph as [`CompiledDag::from_graph`] does.
    pub fn analyze(&self) -> Result<Analysis, DagError> {
        let mut parents = self.parents.clone();
        let t = Tables::build(self, &mut parents)?;
        let name = |i: &u32| self.name(*i).to_owned();
        Ok(Analysis {
            root_nodes: t.roots.iter().map(name).collect(),
            leaf_nodes: t.leaves.iter().map(name).collect(),
        })
    }
}

/// Graphs are equal when they declare the same nodes, whatever was resolved when.
impl PartialEq for DagGraph {
    fn eq(&self, other: &DagGraph) -> bool {
        self.len() == other.len()
            && (0..self.len() as u32).all(|i| {
                self.name(i) == other.name(i)
                    && self.parent_names(i).eq(other.parent_names(i))
                    && self.tolerates_parent_errors(i) == other.tolerates_parent_errors(i)
                    && self.semaphore_key(i) == other.semaphore_key(i)
                    && self.policy(i) == other.policy(i)
            })
    }
}

impl Eq for DagGraph {}

impl From<&[NodeSpec]> for DagGraph {
    fn from(nodes: &[NodeSpec]) -> DagGraph {
        let edges = nodes.iter().map(|n| n.parents.len()).sum();
        let mut g = DagGraph::with_capacity(nodes.len(), edges);
        for n in nodes {
            g.add_node(&n.name);
            for p in &n.parents {
                g.add_parent(p);
            }
            g.set_tolerate_parent_errors(n.tolerate_parent_errors);
            g.set_semaphore_key(n.semaphore_key.clone());
        }
        g
    }
}

/// The integer tables shared by analysis and compilation.
struct Tables {
    roots: Vec<u32>,
    leaves: Vec<u32>,
    topo: Vec<u32>,
}

impl Tables {
    /// Checks the graph and orders it; resolves the pending entries of `parents` (the
    /// graph's, or a copy) in place.
    fn build(g: &DagGraph, parents: &mut [u32]) -> Result<Tables, DagError> {
        let n = g.len();
        if let Some(d) = g.duplicate {
            return Err(DagError::DuplicateNode(g.name(d).to_owned()));
        }

        // A parent named before it was declared is looked up now. One that is no node is
        // reported when the walk reaches its child, so that on a graph with several faults
        // the first one met in walk order is reported: the one the original TypeScript
        // engine reports. `unknown[i]`: the first unknown parent of node i.
        let mut unknown: Option<Vec<Option<u32>>> = None;
        if !g.pending.is_empty() {
            for i in 0..n {
                let range = g.parent_off[i] as usize..g.parent_off[i + 1] as usize;
                for p in &mut parents[range] {
                    if *p & PENDING == 0 {
                        continue;
                    }
                    let k = *p & !PENDING;
                    match g.names.id(g.pending_name(k)) {
                        Some(id) => *p = id,
                        None => {
                            let first = &mut unknown.get_or_insert_with(|| vec![None; n])[i];
                            first.get_or_insert(k);
                        }
                    }
                }
            }
        }
        let parents: &[u32] = parents;
        let check = |node: usize| match unknown.as_ref().and_then(|u| u[node]) {
            Some(k) => Err(DagError::UnknownParent {
                node: g.name(node as u32).to_owned(),
                parent: g.pending_name(k).to_owned(),
            }),
            None => Ok(()),
        };

        // Iterative depth-first walk over parents: white (0) unseen, grey (1) on the
        // current path, black (2) done. Linear in nodes plus edges; a black node's
        // ancestors were fully explored, so walking them again could find nothing new.
        // The stack holds (node, cursor into `parents`).
        let mut color = vec![0u8; n];
        let mut topo = Vec::with_capacity(n);
        let mut stack: Vec<(u32, u32)> = Vec::new();
        for start in 0..n {
            if color[start] != 0 {
                continue;
            }
            color[start] = 1;
            check(start)?;
            stack.push((start as u32, g.parent_off[start]));
            while let Some(top) = stack.last_mut() {
                let (node, cursor) = *top;
                if cursor < g.parent_off[node as usize + 1] {
                    top.1 += 1;
                    let parent = parents[cursor as usize];
                    match color[parent as usize] {
                        0 => {
                            color[parent as usize] = 1;
                            check(parent as usize)?;
                            stack.push((parent, g.parent_off[parent as usize]));
                        }
                        1 => {
                            let mut path: Vec<String> =
                                stack.iter().map(|&(i, _)| g.name(i).to_owned()).collect();
                            path.push(g.name(parent).to_owned());
                            return Err(DagError::Cycle { path });
                        }
                        _ => {}
                    }
                } else {
                    color[node as usize] = 2;
                    // Post-order over parents puts every node after all of its parents.
                    topo.push(node);
                    stack.pop();
                }
            }
        }

        let mut is_parent = vec![false; n];
        for &p in parents {
            is_parent[p as usize] = true;
        }
        let roots = (0..n as u32)
            .filter(|&i| g.parent_off[i as usize] == g.parent_off[i as usize + 1])
            .collect();
        let leaves = (0..n as u32).filter(|&i| !is_parent[i as usize]).collect();
        Ok(Tables {
            roots,
            leaves,
            topo,
        })
    }
}

/// A validated DAG, compiled once for many runs: node ids are indices into flat tables
/// (compressed parent and child lists), so a run never looks a name up.
#[derive(Debug)]
pub struct CompiledDag {
    name: String,
    names: Names,
    parent_off: Vec<u32>,
    parent_ix: Vec<u32>,
    child_off: Vec<u32>,
    child_ix: Vec<u32>,
    roots: Vec<u32>,
    leaves: Vec<u32>,
    topo: Vec<u32>,
    tolerate_parent_errors: Vec<bool>,
    semaphore_keys: Vec<Option<String>>,
    policies: Vec<(u32, StepPolicy)>,
}

fn find_policy(policies: &[(u32, StepPolicy)], node: u32) -> Option<&StepPolicy> {
    policies
        .binary_search_by_key(&node, |(n, _)| *n)
        .ok()
        .map(|i| &policies[i].1)
}

impl CompiledDag {
    /// Validate and compile. Errors, with the contract's messages:
    /// - [`DagError::Empty`]: no nodes;
    /// - [`DagError::DuplicateNode`]: two nodes with one name;
    /// - [`DagError::UnknownParent`]: a parent that is not a node;
    /// - [`DagError::Cycle`]: found by walking from each node in declaration order through
    ///   its parents in declaration order; the first path that returns to a node on it.
    ///
    /// Time is linear in nodes plus edges.
    pub fn compile(name: impl Into<String>, nodes: &[NodeSpec]) -> Result<CompiledDag, DagError> {
        CompiledDag::from_graph(name, DagGraph::from(nodes))
    }

    /// [`compile`](CompiledDag::compile) a graph built node by node, keeping its tables.
    pub fn from_graph(name: impl Into<String>, mut g: DagGraph) -> Result<CompiledDag, DagError> {
        let mut parents = std::mem::take(&mut g.parents);
        let t = Tables::build(&g, &mut parents)?;
        if g.is_empty() {
            return Err(DagError::Empty);
        }
        let n = g.len();
        let mut child_off = vec![0u32; n + 1];
        for &p in &parents {
            child_off[p as usize + 1] += 1;
        }
        for i in 0..n {
            child_off[i + 1] += child_off[i];
        }
        let mut fill = child_off.clone();
        let mut child_ix = vec![0u32; parents.len()];
        for child in 0..n {
            for &p in &parents[g.parent_off[child] as usize..g.parent_off[child + 1] as usize] {
                child_ix[fill[p as usize] as usize] = child as u32;
                fill[p as usize] += 1;
            }
        }
        Ok(CompiledDag {
            name: name.into(),
            names: g.names,
            parent_off: g.parent_off,
            parent_ix: parents,
            child_off,
            child_ix,
            roots: t.roots,
            leaves: t.leaves,
            topo: t.topo,
            tolerate_parent_errors: g.tolerate_parent_errors,
            semaphore_keys: g.semaphore_keys,
            policies: g.policies,
        })
    }

    /// The DAG's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false: a compiled DAG has nodes.
    pub fn is_empty(&self) -> bool {
        self.names.len() == 0
    }

    /// A node's name.
    pub fn node_name(&self, node: u32) -> &str {
        self.names.get(node)
    }

    /// A node's id by name.
    pub fn node_id(&self, name: &str) -> Option<u32> {
        self.names.id(name)
    }

    /// A node's parents, in declaration order.
    pub fn parents(&self, node: u32) -> &[u32] {
        let i = node as usize;
        &self.parent_ix[self.parent_off[i] as usize..self.parent_off[i + 1] as usize]
    }

    /// A node's children.
    pub fn children(&self, node: u32) -> &[u32] {
        let i = node as usize;
        &self.child_ix[self.child_off[i] as usize..self.child_off[i + 1] as usize]
    }

    /// The nodes of `from` and every node downstream of them, in id order.
    ///
    /// ```
    /// use ramus_core::{CompiledDag, NodeSpec};
    /// let spec = |n: &str, p: &[&str]| NodeSpec { name: n.into(), parents: p.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    /// let dag = CompiledDag::compile("d", &[spec("a", &[]), spec("b", &["a"]), spec("c", &[]), spec("d", &["b", "c"])]).unwrap();
    /// assert_eq!(dag.downstream([1]), [1, 3]);
    /// ```
    pub fn downstream(&self, from: impl IntoIterator<Item = u32>) -> Vec<u32> {
        let mut seen = vec![false; self.len()];
        let mut todo: Vec<u32> = from.into_iter().collect();
        while let Some(n) = todo.pop() {
            if !std::mem::replace(&mut seen[n as usize], true) {
                todo.extend_from_slice(self.children(n));
            }
        }
        (0..self.len() as u32)
            .filter(|&n| seen[n as usize])
            .collect()
    }

    /// Nodes without parents, in declaration order.
    pub fn roots(&self) -> &[u32] {
        &self.roots
    }

    /// Nodes that are nobody's parent, in declaration order. The run's output is built
    /// from their outputs.
    pub fn leaves(&self) -> &[u32] {
        &self.leaves
    }

    /// Every node after all of its parents.
    pub fn topological_order(&self) -> &[u32] {
        &self.topo
    }

    /// Whether the node runs when a parent failed.
    pub fn tolerates_parent_errors(&self, node: u32) -> bool {
        self.tolerate_parent_errors[node as usize]
    }

    /// The node's semaphore key, if it is rate limited.
    pub fn semaphore_key(&self, node: u32) -> Option<&str> {
        self.semaphore_keys[node as usize].as_deref()
    }

    /// The node's retry and timeout, if it has either.
    pub fn policy(&self, node: u32) -> Option<&StepPolicy> {
        find_policy(&self.policies, node)
    }

    /// Whether some node has a retry or a timeout (its runs then need timers).
    pub fn uses_timers(&self) -> bool {
        !self.policies.is_empty()
    }

    /// The message of a node's `TimeoutError`: `Node fetch timed out after 5s`.
    pub fn timeout_message(&self, node: u32) -> String {
        match self.policy(node).and_then(|p| p.timeout.as_ref()) {
            Some((_, label)) => format!("Node {} timed out after {label}", self.node_name(node)),
            None => format!("Node {} timed out", self.node_name(node)),
        }
    }

    /// The DAG as a petgraph graph (edges parent → child, node weights are node ids) for
    /// analyses beyond what the executor needs.
    pub fn to_graph(&self) -> DiGraph<u32, ()> {
        let mut g = DiGraph::with_capacity(self.len(), self.parent_ix.len());
        let ids: Vec<_> = (0..self.len() as u32).map(|i| g.add_node(i)).collect();
        for child in 0..self.len() as u32 {
            for &p in self.parents(child) {
                g.add_edge(ids[p as usize], ids[child as usize], ());
            }
        }
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes as `(name, parents)`, and the message analysis must report.
    type Case<'a> = (&'a [(&'a str, &'a [&'a str])], &'a str);

    fn spec(list: &[(&str, &[&str])]) -> Vec<NodeSpec> {
        list.iter().map(|(n, p)| NodeSpec::new(*n, p)).collect()
    }

    #[test]
    fn roots_and_leaves() {
        let a = analyze(&spec(&[
            ("root", &[]),
            ("a", &["root"]),
            ("b", &["root"]),
            ("out", &["a", "b"]),
            ("lone", &[]),
        ]))
        .unwrap();
        assert_eq!(a.root_nodes, vec!["root", "lone"]);
        assert_eq!(a.leaf_nodes, vec!["out", "lone"]);
    }

    #[test]
    fn messages() {
        let cases: &[Case] = &[
            (
                &[("one", &[]), ("two", &["one", "three"])],
                "Node 'two' has unknown parent 'three'",
            ),
            (
                &[
                    ("one", &["six"]),
                    ("two", &["one"]),
                    ("three", &["one", "two"]),
                    ("four", &["three"]),
                    ("five", &["four"]),
                    ("six", &["three"]),
                ],
                "Cycle detected: one -> six -> three -> one",
            ),
            (&[("a", &["a"])], "Cycle detected: a -> a"),
            (
                &[("x", &[]), ("a", &["x", "b"]), ("b", &["c"]), ("c", &["b"])],
                "Cycle detected: a -> b -> c -> b",
            ),
        ];
        for (nodes, msg) in cases {
            assert_eq!(analyze(&spec(nodes)).unwrap_err().to_string(), *msg);
        }
        assert_eq!(
            CompiledDag::compile("d", &[]).unwrap_err().to_string(),
            "DAG has no nodes"
        );
    }

    #[test]
    fn parents_declared_later_are_resolved_and_faults_keep_walk_order() {
        let d = CompiledDag::compile("rev", &spec(&[("c", &["b"]), ("b", &["a"]), ("a", &[])]))
            .unwrap();
        assert_eq!(
            (d.parents(0), d.parents(1), d.parents(2)),
            (&[1][..], &[2][..], &[][..])
        );
        assert_eq!(d.topological_order(), &[2, 1, 0]);
        assert_eq!((d.roots(), d.leaves()), (&[2][..], &[0][..]));
        assert_eq!(d.node_id("a"), Some(2));
        assert_eq!(d.node_id("nope"), None);
        let cases: &[Case] = &[
            // The first unknown parent of a node, after a known one declared later.
            (
                &[("a", &["b", "zz", "yy"]), ("b", &[])],
                "Node 'a' has unknown parent 'zz'",
            ),
            // A node's unknown parent is reported when the walk reaches the node...
            (
                &[("x", &["y"]), ("y", &["x"]), ("z", &["nope"])],
                "Cycle detected: x -> y -> x",
            ),
            (
                &[("z", &["nope"]), ("x", &["y"]), ("y", &["x"])],
                "Node 'z' has unknown parent 'nope'",
            ),
            // ...through its children too, before the walk goes on past it.
            (
                &[("c", &["p", "q"]), ("p", &["gone"]), ("q", &["c"])],
                "Node 'p' has unknown parent 'gone'",
            ),
            (
                &[("a", &["b"]), ("b", &[]), ("a", &["zz"])],
                "Node 'a' is declared twice",
            ),
        ];
        for (nodes, msg) in cases {
            assert_eq!(analyze(&spec(nodes)).unwrap_err().to_string(), *msg);
            assert_eq!(
                CompiledDag::compile("d", &spec(nodes))
                    .unwrap_err()
                    .to_string(),
                *msg
            );
        }
    }

    #[test]
    fn a_graph_is_the_specs_it_was_built_from() {
        let specs = vec![
            NodeSpec {
                semaphore_key: Some("llm".into()),
                ..NodeSpec::new("b", &["a", "later"])
            },
            NodeSpec {
                tolerate_parent_errors: true,
                ..NodeSpec::new("a", &[])
            },
            NodeSpec::new("later", &["a"]),
        ];
        let g = DagGraph::from(&specs[..]);
        assert_eq!(g.to_specs(), specs);
        assert_eq!(g, DagGraph::from(&g.to_specs()[..]));
        assert_ne!(g, DagGraph::from(&specs[..2]));
        let d = CompiledDag::from_graph("d", g).unwrap();
        assert_eq!(d.parents(0), &[1, 2]);
        assert_eq!(d.semaphore_key(0), Some("llm"));
        assert!(d.tolerates_parent_errors(1));
        assert_eq!(d.node_name(2), "later");
    }

    #[test]
    fn long_chain_is_linear_and_ordered() {
        let n = 200_000;
        let nodes: Vec<NodeSpec> = (0..n)
            .map(|i| NodeSpec {
                name: format!("n{i}"),
                parents: if i == 0 {
                    vec![]
                } else {
                    vec![format!("n{}", i - 1)]
                },
                ..Default::default()
            })
            .collect();
        let d = CompiledDag::compile("chain", &nodes).unwrap();
        assert_eq!(d.roots(), &[0]);
        assert_eq!(d.leaves(), &[n - 1]);
        assert_eq!(d.children(5), &[6]);
        let pos: Vec<usize> = {
            let mut p = vec![0; n as usize];
            for (k, &i) in d.topological_order().iter().enumerate() {
                p[i as usize] = k;
            }
            p
        };
        assert!((1..n as usize).all(|i| pos[i - 1] < pos[i]));
    }
}
