//! DAG definitions: validation with the contract's exact messages, and compilation into
//! flat integer tables the executor walks without string lookups.

// Node names are the program's own (not untrusted input): a fast hash, not a DoS-resistant one.
use rustc_hash::FxHashMap as HashMap;

use petgraph::graph::DiGraph;

use crate::error::DagError;

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
    let compiled = Tables::build(nodes)?;
    let name = |i: &u32| nodes[*i as usize].name.clone();
    Ok(Analysis {
        root_nodes: compiled.roots.iter().map(name).collect(),
        leaf_nodes: compiled.leaves.iter().map(name).collect(),
    })
}

/// Resolve node `i`'s parent names to ids (once), appending them to `parent_ix`.
fn resolve(
    nodes: &[NodeSpec],
    index: &HashMap<String, u32>,
    resolved: &mut [Option<(u32, u32)>],
    parent_ix: &mut Vec<u32>,
    i: usize,
) -> Result<(u32, u32), DagError> {
    if let Some(r) = resolved[i] {
        return Ok(r);
    }
    let start = parent_ix.len() as u32;
    for p in &nodes[i].parents {
        match index.get(p.as_str()) {
            Some(&pi) => parent_ix.push(pi),
            None => {
                return Err(DagError::UnknownParent {
                    node: nodes[i].name.clone(),
                    parent: p.clone(),
                })
            }
        }
    }
    let r = (start, parent_ix.len() as u32);
    resolved[i] = Some(r);
    Ok(r)
}

/// The integer tables shared by analysis and compilation.
struct Tables {
    parent_off: Vec<u32>,
    parent_ix: Vec<u32>,
    roots: Vec<u32>,
    leaves: Vec<u32>,
    topo: Vec<u32>,
    index: HashMap<String, u32>,
}

impl Tables {
    fn build(nodes: &[NodeSpec]) -> Result<Tables, DagError> {
        let n = nodes.len();
        let mut index = HashMap::with_capacity_and_hasher(n, Default::default());
        for (i, node) in nodes.iter().enumerate() {
            if index.insert(node.name.clone(), i as u32).is_some() {
                return Err(DagError::DuplicateNode(node.name.clone()));
            }
        }

        // Parents are resolved during the walk rather than up front so that, on a graph
        // with several faults, the first one met in walk order is reported: the same one
        // the original TypeScript engine reports.
        let mut parent_ix: Vec<u32> = Vec::new();
        let mut resolved: Vec<Option<(u32, u32)>> = vec![None; n];

        // Iterative depth-first walk over parents: white (0) unseen, grey (1) on the
        // current path, black (2) done. Linear in nodes plus edges; a black node's
        // ancestors were fully explored, so walking them again could find nothing new.
        let mut color = vec![0u8; n];
        let mut topo = Vec::with_capacity(n);
        let mut stack: Vec<(u32, u32)> = Vec::new();
        for start in 0..n {
            if color[start] != 0 {
                continue;
            }
            color[start] = 1;
            let (s, _) = resolve(nodes, &index, &mut resolved, &mut parent_ix, start)?;
            stack.push((start as u32, s));
            while let Some(&(node, cursor)) = stack.last() {
                let (_, end) = resolved[node as usize].expect("resolved when pushed");
                if cursor < end {
                    let parent = parent_ix[cursor as usize];
                    if let Some(top) = stack.last_mut() {
                        top.1 += 1;
                    }
                    match color[parent as usize] {
                        0 => {
                            color[parent as usize] = 1;
                            let (ps, _) = resolve(
                                nodes,
                                &index,
                                &mut resolved,
                                &mut parent_ix,
                                parent as usize,
                            )?;
                            stack.push((parent, ps));
                        }
                        1 => {
                            let mut path: Vec<String> = stack
                                .iter()
                                .map(|&(i, _)| nodes[i as usize].name.clone())
                                .collect();
                            path.push(nodes[parent as usize].name.clone());
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

        // Re-pack parents in node order: the walk resolved them in visit order.
        let mut parent_off = Vec::with_capacity(n + 1);
        let mut packed = Vec::with_capacity(parent_ix.len());
        let mut is_parent = vec![false; n];
        let mut roots = Vec::new();
        for (i, r) in resolved.iter().enumerate() {
            let (s, e) = r.expect("every node is visited");
            parent_off.push(packed.len() as u32);
            if s == e {
                roots.push(i as u32);
            }
            for &p in &parent_ix[s as usize..e as usize] {
                is_parent[p as usize] = true;
                packed.push(p);
            }
        }
        parent_off.push(packed.len() as u32);
        let leaves = (0..n as u32).filter(|&i| !is_parent[i as usize]).collect();
        Ok(Tables {
            parent_off,
            parent_ix: packed,
            roots,
            leaves,
            topo,
            index,
        })
    }
}

/// A validated DAG, compiled once for many runs: node ids are indices into flat tables
/// (compressed parent and child lists), so a run never looks a name up.
#[derive(Debug)]
pub struct CompiledDag {
    name: String,
    names: Vec<String>,
    index: HashMap<String, u32>,
    parent_off: Vec<u32>,
    parent_ix: Vec<u32>,
    child_off: Vec<u32>,
    child_ix: Vec<u32>,
    roots: Vec<u32>,
    leaves: Vec<u32>,
    topo: Vec<u32>,
    tolerate_parent_errors: Vec<bool>,
    semaphore_keys: Vec<Option<String>>,
}

impl CompiledDag {
    /// Validate and compile. Errors, with the contract's messages:
    /// - [`DagError::Empty`]: no nodes;
    /// - [`DagError::UnknownParent`]: a parent that is not a node;
    /// - [`DagError::Cycle`]: found by walking from each node in declaration order through
    ///   its parents in declaration order; the first path that returns to a node on it.
    ///
    /// Time is linear in nodes plus edges.
    pub fn compile(name: impl Into<String>, nodes: &[NodeSpec]) -> Result<CompiledDag, DagError> {
        let t = Tables::build(nodes)?;
        if nodes.is_empty() {
            return Err(DagError::Empty);
        }
        let n = nodes.len();
        let mut child_count = vec![0u32; n + 1];
        for &p in &t.parent_ix {
            child_count[p as usize + 1] += 1;
        }
        for i in 0..n {
            child_count[i + 1] += child_count[i];
        }
        let child_off = child_count;
        let mut fill = child_off.clone();
        let mut child_ix = vec![0u32; t.parent_ix.len()];
        for child in 0..n {
            for &p in &t.parent_ix[t.parent_off[child] as usize..t.parent_off[child + 1] as usize] {
                child_ix[fill[p as usize] as usize] = child as u32;
                fill[p as usize] += 1;
            }
        }
        Ok(CompiledDag {
            name: name.into(),
            names: nodes.iter().map(|n| n.name.clone()).collect(),
            index: t.index,
            parent_off: t.parent_off,
            parent_ix: t.parent_ix,
            child_off,
            child_ix,
            roots: t.roots,
            leaves: t.leaves,
            topo: t.topo,
            tolerate_parent_errors: nodes.iter().map(|n| n.tolerate_parent_errors).collect(),
            semaphore_keys: nodes.iter().map(|n| n.semaphore_key.clone()).collect(),
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
        self.names.is_empty()
    }

    /// A node's name.
    pub fn node_name(&self, node: u32) -> &str {
        &self.names[node as usize]
    }

    /// A node's id by name.
    pub fn node_id(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
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
