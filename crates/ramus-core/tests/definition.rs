//! The definition parser: the contract's messages, what valid configs turn into, and
//! properties over arbitrary and mutated inputs.

use proptest::prelude::*;
use ramus_core::definition::{
    parse, ConditionDef, ContextDef, Definition, DefinitionError, ExpectKind, ParseOptions,
    RunnerDef, BIGINT_MARKER_PREFIX, DEFAULT_MAX_STEPS, FN_MARKER, INFINITY_MARKER, NAN_MARKER,
    SYMBOL_MARKER,
};
use ramus_core::{MachineSpec, NodeSpec, StateSpec, TransitionSpec};
use serde_json::{json, Value};

/// `JSON.stringify`'s text for a function under the face's replacer.
const F: &str = FN_MARKER;

fn inline() -> ParseOptions {
    ParseOptions::default()
}
fn dag() -> ParseOptions {
    ParseOptions::new(ExpectKind::Dag)
}
fn machine() -> ParseOptions {
    ParseOptions::new(ExpectKind::Machine)
}
fn stored() -> ParseOptions {
    ParseOptions::default().stored(true)
}

/// Parse and compile; the error if either fails.
fn check(json: &str, opts: &ParseOptions) -> Result<Definition, DefinitionError> {
    let def = parse(json, opts)?;
    def.compile()?;
    Ok(def)
}

fn message(v: &Value, opts: &ParseOptions) -> String {
    match check(&v.to_string(), opts) {
        Ok(d) => panic!("{v} was accepted: {d:?}"),
        Err(e) => e.to_string(),
    }
}

/// A machine with state `a` (and a final `b`) around the given state `a`.
fn m(a: Value) -> Value {
    json!({ "name": "m", "initial": "a", "nodes": { "a": a, "b": { "final": true } } })
}

/// A DAG with the node `x` (and a root `a`).
fn d(x: Value) -> Value {
    json!({ "name": "d", "nodes": { "a": { "run": F }, "x": x } })
}

#[track_caller]
fn expect_all(cases: &[(Value, &str)], opts: &ParseOptions) {
    for (config, expected) in cases {
        assert_eq!(message(config, opts), *expected, "for {config}");
    }
}

#[test]
fn dag_messages_of_the_contract() {
    expect_all(
        &[
            (
                json!({ "name": "d" }),
                "DAG nodes must be an object of named nodes",
            ),
            (
                json!({ "name": "d", "nodes": [] }),
                "DAG nodes must be an object of named nodes",
            ),
            (
                json!({ "name": "d", "nodes": 5 }),
                "DAG nodes must be an object of named nodes",
            ),
            (
                json!({ "name": "d", "nodes": null }),
                "DAG nodes must be an object of named nodes",
            ),
            (d(json!(1)), "Node 'x' must be an object"),
            (d(json!([])), "Node 'x' must be an object"),
            (d(json!(null)), "Node 'x' must be an object"),
            (d(json!({})), "Node 'x' has no run function"),
            (
                d(json!({ "parents": ["a"] })),
                "Node 'x' has no run function",
            ),
            (
                d(json!({ "run": "not a function" })),
                "Node 'x' has no run function",
            ),
            (
                d(json!({ "run": F, "parents": "a" })),
                "Node 'x' parents must be an array of node names",
            ),
            (
                d(json!({ "run": F, "parents": {} })),
                "Node 'x' parents must be an array of node names",
            ),
            (
                d(json!({ "run": F, "parents": [5] })),
                "Node 'x' has a parent that is not a node name: 5",
            ),
            (
                d(json!({ "run": F, "parents": ["a", null] })),
                "Node 'x' has a parent that is not a node name: null",
            ),
            (
                d(json!({ "run": F, "parents": [F] })),
                "Node 'x' has a parent that is not a node name: a function",
            ),
            (
                d(json!({ "run": F, "semaphoreKey": 5 })),
                "Node 'x' semaphoreKey must be a string",
            ),
            (
                d(json!({ "run": F, "semaphoreKey": null })),
                "Node 'x' semaphoreKey must be a string",
            ),
            (
                d(json!({ "run": F, "parents": ["three"] })),
                "Node 'x' has unknown parent 'three'",
            ),
            (json!({ "name": "d", "nodes": {} }), "DAG has no nodes"),
        ],
        &dag(),
    );
    for text in ["5", "[]", "null", "\"dag\"", "true"] {
        assert_eq!(
            check(text, &dag()).unwrap_err().to_string(),
            "A DAG must be an object with a name and nodes"
        );
    }
    let nodes = json!({
        "one": { "parents": ["six"], "run": F },
        "two": { "parents": ["one"], "run": F },
        "three": { "parents": ["one", "two"], "run": F },
        "four": { "parents": ["three"], "run": F },
        "five": { "run": F },
        "six": { "parents": ["five", "three"], "run": F },
    });
    // json! sorts keys; the cycle is reported from the first node in that order.
    let e = check(&json!({ "name": "d", "nodes": nodes }).to_string(), &dag()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Cycle detected: four -> three -> one -> six -> three"
    );
    assert_eq!(e.code(), "ERR_DEFINITION_CYCLE");
    // Declaration order is kept: the same graph written in its own order.
    let ordered = r#"{"name":"d","nodes":{"one":{"parents":["six"],"run":"\u0000fn"},"two":{"parents":["one"],"run":"\u0000fn"},"three":{"parents":["one","two"],"run":"\u0000fn"},"four":{"parents":["three"],"run":"\u0000fn"},"five":{"run":"\u0000fn"},"six":{"parents":["five","three"],"run":"\u0000fn"}}}"#;
    assert_eq!(
        check(ordered, &dag()).unwrap_err().to_string(),
        "Cycle detected: one -> six -> three -> one"
    );
}

#[test]
fn machine_messages_of_the_contract() {
    expect_all(
        &[
            (
                json!({ "name": "m", "initial": "a" }),
                "State machine nodes must be an object of named states",
            ),
            (
                json!({ "name": "m", "initial": "a", "nodes": [] }),
                "State machine nodes must be an object of named states",
            ),
            (m(json!(5)), "State a must be an object"),
            (m(json!([])), "State a must be an object"),
            (m(json!({ "run": "x" })), "State a run must be a function"),
            (m(json!({ "run": null })), "State a run must be a function"),
            (
                m(json!({ "transition": 5 })),
                "State a transition must be a state name or an object of events",
            ),
            (
                m(json!({ "transition": ["b"] })),
                "State a transition must be a state name or an object of events",
            ),
            (
                m(json!({ "transition": true })),
                "State a transition must be a state name or an object of events",
            ),
            (
                m(json!({ "transition": { "go": {} } })),
                "State a transition for event 'go' must name a state",
            ),
            (
                m(json!({ "transition": { "go": 5 } })),
                "State a transition for event 'go' must name a state",
            ),
            (
                m(json!({ "transition": { "go": null } })),
                "State a transition for event 'go' must name a state",
            ),
            (
                m(json!({ "transition": { "go": [5] } })),
                "State a transition for event 'go' must name a state",
            ),
            (
                m(json!({ "transition": { "go": ["b", ["b"]] } })),
                "State a transition for event 'go' must name a state",
            ),
            (
                m(json!({ "transition": { "go": { "state": 5 } } })),
                "State a transition for event 'go' must name a state",
            ),
            (
                m(json!({ "transition": { "go": { "state": F } } })),
                "State a transition for event 'go' must name a state",
            ),
            (
                m(json!({ "transition": { "go": { "condition": 5, "state": "b" } } })),
                "State a transition to b: condition must be a function",
            ),
            (
                m(json!({ "transition": { "go": { "state": "b", "condition": null } } })),
                "State a transition to b: condition must be a function",
            ),
            (
                m(json!({ "timeout": 5 })),
                "State a timeout must be { after, state }",
            ),
            (
                m(json!({ "timeout": [] })),
                "State a timeout must be { after, state }",
            ),
            (
                m(json!({ "timeout": { "after": 5 } })),
                "State a timeout must be { after, state }",
            ),
            (
                m(json!({ "timeout": { "state": "b" } })),
                "State a timeout must be { after, state }",
            ),
            (
                m(json!({ "timeout": { "after": 5, "state": 5 } })),
                "State a timeout must be { after, state }",
            ),
            (
                m(json!({ "transition": { "": { "state": "b", "delay": "5x" } } })),
                "State a has an invalid delay: 5x",
            ),
            (
                m(json!({ "transition": { "": { "state": "b", "delay": "soon" } } })),
                "State a has an invalid delay: soon",
            ),
            (
                m(json!({ "transition": { "go": [{ "state": "b", "delay": "10 parsecs" }] } })),
                "State a has an invalid delay: 10 parsecs",
            ),
            (
                m(json!({ "transition": { "": { "state": "b", "delay": -1 } } })),
                "State a has an invalid delay: -1",
            ),
            (
                m(json!({ "transition": { "": { "state": "b", "delay": [5] } } })),
                "State a has an invalid delay: [5]",
            ),
            (
                m(json!({ "transition": { "": { "state": "b", "delay": true } } })),
                "State a has an invalid delay: true",
            ),
            (
                m(
                    json!({ "transition": { "": { "state": "b", "delay": format!("{BIGINT_MARKER_PREFIX}5") } } }),
                ),
                "State a has an invalid delay: 5n",
            ),
            (
                m(json!({ "transition": { "": { "state": "b", "delay": NAN_MARKER } } })),
                "State a has an invalid delay: NaN",
            ),
            (
                m(json!({ "transition": { "": { "state": "b", "delay": "-5ms" } } })),
                "State a has an invalid delay: -5ms",
            ),
            (
                m(json!({ "transition": "b", "timeout": { "after": "forever", "state": "b" } })),
                "State a has an invalid timeout: forever",
            ),
            (
                m(
                    json!({ "transition": "b", "timeout": { "after": INFINITY_MARKER, "state": "b" } }),
                ),
                "State a has an invalid timeout: Infinity",
            ),
            // Graph errors, from the compiler.
            (
                json!({ "name": "m", "nodes": { "a": { "final": true } } }),
                "No initial state",
            ),
            (
                json!({ "name": "m", "initial": "", "nodes": { "a": { "final": true } } }),
                "No initial state",
            ),
            (
                json!({ "name": "m", "initial": "start", "nodes": { "b": { "final": true } } }),
                "Initial state start does not exist",
            ),
            (
                json!({ "name": "m", "initial": "a", "errorState": "oops", "nodes": { "a": { "final": true } } }),
                "Error state oops does not exist",
            ),
            (
                m(json!({ "transition": "b", "errorState": "gone" })),
                "Error state gone does not exist",
            ),
            (
                m(json!({ "transition": "nowhere" })),
                "State a Transition target nowhere does not exist",
            ),
            (
                m(json!({ "transition": { "go": "b", "stop": "halt" } })),
                "State a Transition target halt does not exist",
            ),
            (
                m(json!({ "transition": { "": { "state": "later", "delay": 10 } } })),
                "State a Transition target later does not exist",
            ),
            (
                m(json!({ "transition": "b", "timeout": { "after": 100, "state": "slow" } })),
                "State a timeout target slow does not exist",
            ),
            (
                json!({ "name": "empty-one", "initial": "a", "nodes": {} }),
                "Machine empty-one has no states",
            ),
            (
                json!({ "name": "empty-two", "nodes": {} }),
                "Machine empty-two has no states",
            ),
        ],
        &machine(),
    );
    for text in ["5", "[]", "null"] {
        assert_eq!(
            check(text, &machine()).unwrap_err().to_string(),
            "A state machine config must be an object"
        );
    }
}

#[test]
fn stored_definition_messages() {
    for text in ["5", "[]", "null"] {
        assert_eq!(
            check(text, &stored()).unwrap_err().to_string(),
            "A definition must be an object with a name and nodes"
        );
    }
    expect_all(
        &[
            (json!({ "nodes": {} }), "A definition needs a name"),
            (json!({ "name": "", "nodes": {} }), "A definition needs a name"),
            (json!({ "name": 5, "nodes": {} }), "A definition needs a name"),
            (json!({ "name": "n" }), "Definition 'n' has no nodes"),
            (json!({ "name": "n", "nodes": null }), "Definition 'n' has no nodes"),
            (json!({ "name": "n", "nodes": 5 }), "Definition 'n' has no nodes"),
            (
                json!({ "name": "mixed", "nodes": { "a": { "runner": "fetch" }, "helper": { "parents": ["a"], "run": F } } }),
                "Definition 'mixed' cannot be stored: node 'helper' has an inline run function; name a registered runner instead (runner: 'key', args: {…})",
            ),
            (
                json!({ "name": "mm", "initial": "a", "nodes": { "a": { "run": F, "transition": "b" }, "b": { "final": true } } }),
                "Definition 'mm' cannot be stored: node 'a' has an inline run function; name a registered runner instead (runner: 'key', args: {…})",
            ),
            (
                json!({ "name": "mm", "initial": "a", "nodes": { "a": { "transition": { "go": { "state": "b", "condition": F } } }, "b": { "final": true } } }),
                "Definition 'mm' cannot be stored: state 'a' transition 'go' has an inline condition function; name a registered condition instead (condition: 'key')",
            ),
            (
                json!({ "name": "n", "context": F, "nodes": { "a": { "runner": "fetch" } } }),
                "Definition 'n' cannot be stored: its context is a function; give the initial context as a JSON object",
            ),
            (
                json!({ "name": "n", "nodes": { "a": {} } }),
                "Node 'a' has no runner; a stored definition names a registered runner (runner: 'key', args: {…})",
            ),
            (json!({ "name": "n", "nodes": {} }), "DAG has no nodes"),
            (json!({ "name": "n", "initial": "a", "nodes": {} }), "Machine n has no states"),
        ],
        &stored(),
    );
    let e = check(
        &json!({ "name": "n", "nodes": { "a": { "run": F } } }).to_string(),
        &stored(),
    )
    .unwrap_err();
    assert_eq!(e.code(), "ERR_DEFINITION_NOT_STORABLE");
    assert_eq!(e.location().node.as_deref(), Some("a"));
    // The same configs are fine inline.
    for ok in [
        json!({ "name": "n", "context": F, "nodes": { "a": { "run": F } } }),
        json!({ "name": "n", "context": { "k": 1 }, "nodes": { "a": { "runner": "fetch" } } }),
        json!({ "name": "mm", "initial": "a", "nodes": { "a": { "transition": { "go": { "state": "b", "condition": F } } }, "b": { "final": true } } }),
    ] {
        check(&ok.to_string(), &inline()).unwrap();
    }
    // Registered runners and conditions are storable; a stored machine state may have no runner.
    let def = check(
        &json!({
            "name": "flow", "initial": "a", "context": { "n": 0 },
            "nodes": {
                "a": { "runner": "draft", "args": { "n": 1 }, "transition": { "go": { "state": "b", "condition": "approved" } } },
                "b": { "final": true }
            }
        })
        .to_string(),
        &stored(),
    )
    .unwrap();
    let Definition::Machine(md) = def else {
        panic!("a machine")
    };
    assert_eq!(md.context, Some(ContextDef::Json(r#"{"n":0}"#.into())));
    assert_eq!(
        md.states[0].transitions[0].condition,
        ConditionDef::Registered("approved".into())
    );
    assert_eq!(md.states[1].runner, None);
}

#[test]
fn unknown_and_unsupported_fields_are_refused_with_suggestions() {
    expect_all(
        &[
            (
                d(json!({ "run": F, "retyr": 3 })),
                "unknown field 'retyr' on node 'x' (did you mean 'retry'?)",
            ),
            (
                d(json!({ "run": F, "parent": ["a"] })),
                "unknown field 'parent' on node 'x' (did you mean 'parents'?)",
            ),
            (
                d(json!({ "run": F, "semaphorekey": "k" })),
                "unknown field 'semaphorekey' on node 'x' (did you mean 'semaphoreKey'?)",
            ),
            (
                d(json!({ "run": F, "zzzzzz": 1 })),
                "unknown field 'zzzzzz' on node 'x'",
            ),
            (
                d(json!({ "run": F, "retry": 3 })),
                "Node 'x' retry must be an object { attempts, backoff?, initial?, max?, jitter?, retryOn? }, got 3",
            ),
            (
                d(json!({ "run": F, "retry": { "backoff": "fixed" } })),
                "Node 'x' retry needs attempts (how many attempts in all, the first included)",
            ),
            (
                d(json!({ "run": F, "retry": { "attempts": 0 } })),
                "Node 'x' retry.attempts must be a positive integer, got 0",
            ),
            (
                d(json!({ "run": F, "retry": { "attempts": 1001 } })),
                "Node 'x' retry.attempts must be at most 1000, got 1001",
            ),
            (
                d(json!({ "run": F, "retry": { "attempts": 2, "backof": "fixed" } })),
                "unknown field 'backof' on retry of node 'x' (did you mean 'backoff'?)",
            ),
            (
                d(json!({ "run": F, "retry": { "attempts": 2, "backoff": "linear" } })),
                "Node 'x' retry.backoff must be 'fixed' or 'exponential', got \"linear\"",
            ),
            (
                d(json!({ "run": F, "retry": { "attempts": 2, "initial": "soon" } })),
                "Node 'x' has an invalid retry.initial: soon",
            ),
            (
                d(json!({ "run": F, "retry": { "attempts": 2, "retryOn": 5 } })),
                "Node 'x' retry.retryOn must be a function or a registered key, got 5",
            ),
            (
                d(json!({ "run": F, "timeout": "later" })),
                "Node 'x' has an invalid timeout: later",
            ),
            (
                d(json!({ "run": F, "cache": "yes" })),
                "Node 'x' cache must be a boolean or an object { key?, ttl?, version? }, got \"yes\"",
            ),
            (
                d(json!({ "run": F, "cache": { "tll": 5 } })),
                "unknown field 'tll' on cache of node 'x' (did you mean 'ttl'?)",
            ),
            (
                d(json!({ "run": F, "uses": "x" })),
                "Node 'x' uses must be an array of strings, got \"x\"",
            ),
            (
                d(json!({ "run": F, "expand": {} })),
                "Node 'x' expand must be a function that returns a DAG or machine config (or a registered runner's key), got {}",
            ),
            (
                d(json!({ "run": F, "map": "a" })),
                "Node 'x' map must be an object { over, dag }, got \"a\"",
            ),
            (
                d(json!({ "run": F, "semaphoreKey": "llm", "category": "io" })),
                "Node 'x' has category 'io' and semaphoreKey 'llm'; category is another name for semaphoreKey: give one, or the same key",
            ),
            (
                d(json!({ "run": F, "transition": "a" })),
                "unknown field 'transition' on node 'x' (a state machine field)",
            ),
            (
                json!({ "name": "d", "nodse": {}, "nodes": { "a": { "run": F } } }),
                "unknown field 'nodse' on definition 'd' (did you mean 'nodes'?)",
            ),
            (
                json!({ "name": "d", "maxSteps": 3, "nodes": { "a": { "run": F } } }),
                "unknown field 'maxSteps' on definition 'd' (a state machine field)",
            ),
        ],
        &dag(),
    );
    expect_all(
        &[
            (m(json!({ "transiton": "b" })), "unknown field 'transiton' on state 'a' (did you mean 'transition'?)"),
            (m(json!({ "retry": 2 })), "State a retry must be an object { attempts, backoff?, initial?, max?, jitter?, retryOn? }, got 2"),
            (m(json!({ "retry": { "attempts": 2, "jiter": true } })), "unknown field 'jiter' on retry of state 'a' (did you mean 'jitter'?)"),
            (m(json!({ "parents": [] })), "unknown field 'parents' on state 'a' (a DAG node field)"),
            (m(json!({ "transition": { "go": { "state": "b", "delya": 5 } } })), "unknown field 'delya' on transition of state 'a' for event 'go' (did you mean 'delay'?)"),
            (m(json!({ "transition": { "go": [{ "sate": "b" }] } })), "unknown field 'sate' on transition of state 'a' for event 'go' (did you mean 'state'?)"),
            (m(json!({ "timeout": { "after": 5, "state": "b", "aftr": 1 } })), "unknown field 'aftr' on timeout of state 'a' (did you mean 'after'?)"),
            (json!({ "name": "m", "initial": "a", "maxStep": 5, "nodes": { "a": { "final": true } } }), "unknown field 'maxStep' on definition 'm' (did you mean 'maxSteps'?)"),
            (json!({ "name": "m", "initial": "a", "tolerateFailures": true, "nodes": { "a": { "final": true } } }), "unknown field 'tolerateFailures' on definition 'm' (a DAG field)"),
        ],
        &machine(),
    );
    // Read as a DAG for want of `initial`, a machine config says why its fields are unknown.
    assert_eq!(
        message(&json!({ "name": "m", "nodes": { "a": { "final": true } } }), &inline()),
        "unknown field 'final' on node 'a' (a state machine field: a config without 'initial' is read as a DAG)"
    );
    let e = check(&d(json!({ "run": F, "retyr": 3 })).to_string(), &dag()).unwrap_err();
    assert_eq!(e.code(), "ERR_DEFINITION_UNKNOWN_FIELD");
    assert_eq!(e.location().node.as_deref(), Some("x"));
    assert_eq!(e.location().field.as_deref(), Some("retyr"));
    assert!(check(&d(json!({ "run": F, "uses": ["q"] })).to_string(), &dag()).is_ok());
    let e = check(&d(json!({ "run": F, "expand": F })).to_string(), &dag()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Node 'x' has both expand and a runner; expand is what it runs"
    );
    // Hand-written JSON can repeat a field: refused rather than last-one-wins.
    let e = check(
        r#"{"name":"d","nodes":{"a":{"run":"\u0000fn","tags":[],"tags":["x"]}}}"#,
        &dag(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "duplicate field 'tags' on node 'a'");
    assert_eq!(e.code(), "ERR_DEFINITION_DUPLICATE_FIELD");
}

#[test]
fn counts_must_be_positive_integers() {
    let steps = |v: Value| json!({ "name": "m", "initial": "a", "maxSteps": v, "nodes": { "a": { "final": true } } });
    expect_all(
        &[
            (
                steps(json!(NAN_MARKER)),
                "Machine m maxSteps must be a positive integer, got NaN",
            ),
            (
                steps(json!(INFINITY_MARKER)),
                "Machine m maxSteps must be a positive integer, got Infinity",
            ),
            (
                steps(json!(0)),
                "Machine m maxSteps must be a positive integer, got 0",
            ),
            (
                steps(json!(-1)),
                "Machine m maxSteps must be a positive integer, got -1",
            ),
            (
                steps(json!(1.5)),
                "Machine m maxSteps must be a positive integer, got 1.5",
            ),
            (
                steps(json!("5")),
                "Machine m maxSteps must be a positive integer, got \"5\"",
            ),
            (
                steps(json!(format!("{BIGINT_MARKER_PREFIX}5"))),
                "Machine m maxSteps must be a positive integer, got 5n",
            ),
            (
                steps(json!(true)),
                "Machine m maxSteps must be a positive integer, got true",
            ),
            (
                steps(json!(1e10)),
                "Machine m maxSteps must be at most 4294967295, got 10000000000.0",
            ),
            (
                m(json!({ "final": true, "maxVisits": 0 })),
                "State a maxVisits must be a positive integer, got 0",
            ),
            (
                m(json!({ "final": true, "maxVisits": "2" })),
                "State a maxVisits must be a positive integer, got \"2\"",
            ),
            (
                m(json!({ "final": true, "maxVisits": NAN_MARKER })),
                "State a maxVisits must be a positive integer, got NaN",
            ),
        ],
        &machine(),
    );
    let def = |v: Value| match check(&steps(v).to_string(), &machine()).unwrap() {
        Definition::Machine(m) => m,
        Definition::Dag(_) => panic!("a machine"),
    };
    assert_eq!(def(json!(null)).max_steps, DEFAULT_MAX_STEPS);
    assert_eq!(def(json!(50)).max_steps, 50);
    assert_eq!(def(json!(5.0)).max_steps, 5);
    assert_eq!(def(json!(50_000)).spec().max_steps, Some(50_000));
    let unbounded = json!({ "name": "m", "initial": "a", "nodes": { "a": { "final": true } } });
    let Definition::Machine(md) = check(&unbounded.to_string(), &machine()).unwrap() else {
        panic!("a machine")
    };
    assert_eq!(md.max_steps, 10_000);
    assert_eq!(md.spec().max_steps, Some(DEFAULT_MAX_STEPS));
}

#[test]
fn field_types_are_checked() {
    expect_all(
        &[
            (d(json!({ "run": F, "tolerateParentErrors": 1 })), "Node 'x' tolerateParentErrors must be a boolean, got 1"),
            (d(json!({ "run": F, "tags": "a" })), "Node 'x' tags must be an array of strings, got \"a\""),
            (d(json!({ "run": F, "tags": ["a", 5] })), "Node 'x' tags[1] must be a string, got 5"),
            (d(json!({ "run": F, "info": [] })), "Node 'x' info must be an object, got []"),
            (d(json!({ "run": F, "info": null })), "Node 'x' info must be an object, got null"),
            (d(json!({ "runner": 5 })), "Node 'x' runner must be the key of a registered runner (a non-empty string), got 5"),
            (d(json!({ "runner": "" })), "Node 'x' runner must be the key of a registered runner (a non-empty string), got \"\""),
            (d(json!({ "run": F, "runner": "k" })), "Node 'x' has both run and runner; give one"),
            (d(json!({ "run": F, "args": {} })), "Node 'x' has args but no runner: args are passed to a registered runner (runner: 'key')"),
            (d(json!({ "runner": "k", "args": { "limit": format!("{BIGINT_MARKER_PREFIX}5") } })), "Node 'x' args.limit: BigInt values cannot be stored"),
            (d(json!({ "runner": "k", "args": [1, { "on": F }] })), "Node 'x' args[1].on: functions cannot be stored"),
            (d(json!({ "runner": "k", "args": { "a b": SYMBOL_MARKER } })), "Node 'x' args[\"a b\"]: symbols cannot be stored"),
            (d(json!({ "runner": "k", "args": NAN_MARKER })), "Node 'x' args: NaN cannot be stored (JSON numbers are finite)"),
            (d(json!({ "run": F, "info": { "cb": F } })), "Node 'x' info.cb: functions cannot be stored"),
            (json!({ "name": "d", "tolerateFailures": "yes", "nodes": { "a": { "run": F } } }), "DAG 'd' tolerateFailures must be a boolean, got \"yes\""),
            (json!({ "name": "d", "description": 5, "nodes": { "a": { "run": F } } }), "DAG 'd' description must be a string, got 5"),
            (json!({ "name": "d", "inputSchema": true, "nodes": { "a": { "run": F } } }), "DAG 'd' inputSchema must be an object, got true"),
            (json!({ "name": "d", "tags": [F], "nodes": { "a": { "run": F } } }), "DAG 'd' tags[0] must be a string, got a function"),
            (json!({ "name": "d", "info": 5, "nodes": { "a": { "run": F } } }), "DAG 'd' info must be an object, got 5"),
            (json!({ "name": "d", "context": 5, "nodes": { "a": { "run": F } } }), "DAG 'd' context must be a function or an object, got 5"),
            (json!({ "name": "d", "context": { "db": { "close": F } }, "nodes": { "a": { "run": F } } }), "DAG 'd' context.db.close: functions cannot be stored"),
            (json!({ "name": 5, "nodes": { "a": { "run": F } } }), "DAG name must be a string, got 5"),
        ],
        &dag(),
    );
    expect_all(
        &[
            (m(json!({ "final": "yes" })), "State a final must be a boolean, got \"yes\""),
            (m(json!({ "final": true, "errorState": 5 })), "State a errorState must be a state name, got 5"),
            (m(json!({ "final": true, "semaphoreKey": 5 })), "State a semaphoreKey must be a string"),
            (m(json!({ "final": true, "info": "x" })), "State a info must be an object, got \"x\""),
            (m(json!({ "run": F, "runner": "k" })), "State a has both run and runner; give one"),
            (m(json!({ "args": { "n": 1 } })), "State a has args but no runner: args are passed to a registered runner (runner: 'key')"),
            (json!({ "name": "m", "initial": 5, "nodes": { "a": { "final": true } } }), "Machine m initial must be a state name, got 5"),
            (json!({ "name": "m", "initial": "a", "errorState": [], "nodes": { "a": { "final": true } } }), "Machine m errorState must be a state name, got []"),
            (json!({ "name": "m", "initial": "a", "inputSchema": [], "nodes": { "a": { "final": true } } }), "Machine m inputSchema must be an object, got []"),
            (json!({ "name": F, "initial": "a", "nodes": { "a": { "final": true } } }), "Machine name must be a string, got a function"),
        ],
        &machine(),
    );
    let e = check(
        &d(json!({ "runner": "k", "args": { "limit": format!("{BIGINT_MARKER_PREFIX}5") } }))
            .to_string(),
        &dag(),
    )
    .unwrap_err();
    assert_eq!(e.code(), "ERR_DEFINITION_NOT_JSON");
    assert_eq!(e.location().field.as_deref(), Some("args.limit"));
    let e = check("{\"name\":", &dag()).unwrap_err();
    assert_eq!(e.code(), "ERR_DEFINITION_JSON");
    assert!(
        e.to_string().starts_with("A definition must be JSON: "),
        "{e}"
    );
    assert_eq!(
        check("nope", &dag()).unwrap_err().code(),
        "ERR_DEFINITION_JSON"
    );
}

#[test]
fn a_dag_round_trips_into_node_specs() {
    // Raw text: declaration order matters, and json! would sort the keys.
    let json = r#"{
        "name": "research", "description": "find and sum up",
        "tolerateFailures": true, "tags": ["t1", "t2"], "info": {"team": "x"},
        "context": "\u0000fn", "inputSchema": {"type": "string"},
        "nodes": {
            "search": { "run": "\u0000fn", "tags": ["io"], "info": {"cost": 1}, "parents": null },
            "rank": { "parents": ["search"], "runner": "ranker", "semaphoreKey": "llm" },
            "sum": { "parents": ["search", "rank"], "runner": "llm", "args": {"words": 50},
                     "tolerateParentErrors": true },
            "__proto__": { "parents": ["sum"], "run": "\u0000fn" }
        }
    }"#;
    let Definition::Dag(dag) = check(json, &inline()).unwrap() else {
        panic!("a DAG")
    };
    assert_eq!(dag.name, "research");
    assert_eq!(dag.description.as_deref(), Some("find and sum up"));
    assert!(dag.tolerate_failures);
    assert_eq!(dag.tags, ["t1", "t2"]);
    assert_eq!(dag.info.as_deref(), Some(r#"{"team": "x"}"#));
    assert_eq!(dag.context, Some(ContextDef::Inline));
    assert_eq!(dag.input_schema.as_deref(), Some(r#"{"type": "string"}"#));
    let names: Vec<&str> = (0..4).map(|i| dag.graph.name(i)).collect();
    assert_eq!(dag.nodes.len(), 4);
    assert_eq!(dag.node_name(3), "__proto__");
    assert_eq!(names, ["search", "rank", "sum", "__proto__"]);
    assert_eq!(dag.nodes[0].runner, Some(RunnerDef::Inline));
    assert_eq!(dag.nodes[0].tags, ["io"]);
    assert_eq!(dag.nodes[0].info.as_deref(), Some(r#"{"cost": 1}"#));
    assert_eq!(
        dag.nodes[1].runner,
        Some(RunnerDef::Registered {
            key: "ranker".into(),
            args: None
        })
    );
    assert_eq!(
        dag.nodes[2].runner,
        Some(RunnerDef::Registered {
            key: "llm".into(),
            args: Some(r#"{"words": 50}"#.into())
        })
    );
    let specs: Vec<NodeSpec> = (&dag).into();
    assert_eq!(dag.node_specs(), specs);
    assert_eq!(
        specs,
        vec![
            NodeSpec::new("search", &[]),
            NodeSpec {
                semaphore_key: Some("llm".into()),
                ..NodeSpec::new("rank", &["search"])
            },
            NodeSpec {
                tolerate_parent_errors: true,
                ..NodeSpec::new("sum", &["search", "rank"])
            },
            NodeSpec::new("__proto__", &["sum"]),
        ]
    );
    let compiled = dag.compile().unwrap();
    assert_eq!(compiled.node_id("__proto__"), Some(3));
    assert_eq!(compiled.leaves(), &[3]);
    let a = dag.analyze().unwrap();
    assert_eq!(a.root_nodes, ["search"]);
}

#[test]
fn a_machine_round_trips_into_its_spec() {
    let json = r#"{
        "name": "writer", "initial": "draft", "errorState": "failed", "maxSteps": 40,
        "description": "d", "tags": ["w"], "info": {"v": 2}, "context": {"n": 0},
        "inputSchema": {"type": "object"},
        "nodes": {
            "draft": {
                "run": "\u0000fn", "semaphoreKey": "llm", "maxVisits": 3,
                "timeout": { "after": "15m", "state": "failed" },
                "transition": {
                    "": { "state": "review", "delay": "250ms" },
                    "go": [ "review", { "state": "__proto__", "condition": "\u0000fn", "delay": 90 } ],
                    "__proto__": { "state": "review", "condition": "approved" }
                }
            },
            "review": { "runner": "judge", "args": [1, 2], "transition": "draft", "errorState": "draft",
                        "timeout": { "after": 5000, "state": "failed" } },
            "__proto__": { "transition": { "x": [{ "state": "failed", "delay": "1.5h" }, { "state": "failed", "delay": "30d" }] } },
            "failed": { "final": true, "tags": ["end"], "info": {} }
        }
    }"#;
    let Definition::Machine(md) = check(json, &inline()).unwrap() else {
        panic!("a machine")
    };
    assert_eq!(md.initial.as_deref(), Some("draft"));
    assert_eq!(md.context, Some(ContextDef::Json(r#"{"n": 0}"#.into())));
    assert_eq!(md.states[0].runner, Some(RunnerDef::Inline));
    assert_eq!(
        md.states[1].runner,
        Some(RunnerDef::Registered {
            key: "judge".into(),
            args: Some("[1, 2]".into())
        })
    );
    assert_eq!(md.states[2].runner, None);
    let conditions: Vec<&ConditionDef> = md.states[0]
        .transitions
        .iter()
        .map(|t| &t.condition)
        .collect();
    assert_eq!(
        conditions,
        [
            &ConditionDef::None,
            &ConditionDef::None,
            &ConditionDef::Inline,
            &ConditionDef::Registered("approved".into())
        ]
    );
    let t = |event: &str, target: &str, guarded: bool, delay_ms: Option<u64>| TransitionSpec {
        event: event.into(),
        target: target.into(),
        guarded,
        delay_ms,
    };
    let spec: MachineSpec = (&md).into();
    assert_eq!(
        spec,
        MachineSpec {
            name: "writer".into(),
            initial: Some("draft".into()),
            error_state: Some("failed".into()),
            max_steps: Some(40),
            states: vec![
                StateSpec {
                    name: "draft".into(),
                    has_run: true,
                    is_final: false,
                    error_state: None,
                    max_visits: Some(3),
                    timeout: Some((900_000, "failed".into())),
                    timeout_label: Some("15m".into()),
                    semaphore_key: Some("llm".into()),
                    retry: None,
                    transitions: vec![
                        t("", "review", false, Some(250)),
                        t("go", "review", false, None),
                        t("go", "__proto__", true, Some(90)),
                        t("__proto__", "review", true, None),
                    ],
                },
                StateSpec {
                    name: "review".into(),
                    has_run: true,
                    error_state: Some("draft".into()),
                    timeout: Some((5000, "failed".into())),
                    timeout_label: Some("5000ms".into()),
                    transitions: vec![t("", "draft", false, None)],
                    ..StateSpec::default()
                },
                StateSpec {
                    name: "__proto__".into(),
                    transitions: vec![
                        t("x", "failed", false, Some(5_400_000)),
                        t("x", "failed", false, Some(2_592_000_000)),
                    ],
                    ..StateSpec::default()
                },
                StateSpec {
                    name: "failed".into(),
                    is_final: true,
                    ..StateSpec::default()
                },
            ],
        }
    );
    let compiled = md.compile().unwrap();
    let proto = compiled.state_id("__proto__").unwrap();
    assert_eq!(compiled.state_name(proto), "__proto__");
    assert!(compiled.event_id("__proto__").is_some());
    assert_eq!(compiled.available_events(0), ["go", "__proto__"]);
}

#[test]
fn initial_is_supplied_or_overridden_by_the_caller() {
    let config = |initial: Option<&str>| {
        let mut v =
            json!({ "name": "m", "nodes": { "a": { "transition": "b" }, "b": { "final": true } } });
        if let Some(i) = initial {
            v["initial"] = json!(i);
        }
        v.to_string()
    };
    let initial = |json: String, opts: ParseOptions| match check(&json, &opts) {
        Ok(Definition::Machine(m)) => Ok(m.initial),
        Ok(Definition::Dag(_)) => panic!("a machine"),
        Err(e) => Err(e.to_string()),
    };
    assert_eq!(
        initial(config(None), machine().initial("b")),
        Ok(Some("b".into()))
    );
    assert_eq!(
        initial(config(Some("a")), machine().initial("b")),
        Ok(Some("b".into()))
    );
    assert_eq!(initial(config(Some("a")), machine()), Ok(Some("a".into())));
    assert_eq!(
        initial(config(Some("")), machine().initial("b")),
        Ok(Some("b".into()))
    );
    assert_eq!(
        initial(config(Some("a")), machine().initial("")),
        Ok(Some("a".into()))
    );
    assert_eq!(
        initial(config(Some("a")), machine().initial("elsewhere")),
        Err("Initial state elsewhere does not exist".into())
    );
    assert_eq!(
        initial(config(None), machine()),
        Err("No initial state".into())
    );
}

#[test]
fn the_kind_is_detected_from_initial() {
    let j = json!({ "name": "m", "initial": null, "nodes": { "a": { "final": true } } });
    assert!(parse(&j.to_string(), &inline()).unwrap().is_machine());
    let j = json!({ "name": "d", "nodes": { "a": { "run": F } } });
    assert!(!parse(&j.to_string(), &inline()).unwrap().is_machine());
    // `initial` after `nodes` still makes a machine.
    let text = r#"{"name":"m","nodes":{"a":{"final":true}},"initial":"a"}"#;
    assert!(check(text, &inline()).unwrap().is_machine());
    assert_eq!(
        check(
            r#"{"name":"d","initial":"a","nodes":{"a":{"run":"\u0000fn"}}}"#,
            &dag()
        )
        .unwrap_err()
        .to_string(),
        "unknown field 'initial' on definition 'd' (a state machine field)"
    );
}

#[test]
fn graphs_alone_can_be_checked_without_runners() {
    let text = json!({ "name": "", "nodes": { "a": {}, "b": { "parents": ["a"] } } }).to_string();
    let Definition::Dag(dag) = parse(&text, &dag().runners_optional(true)).unwrap() else {
        panic!("a DAG")
    };
    assert_eq!(dag.nodes[0].runner, None);
    assert_eq!(dag.analyze().unwrap().leaf_nodes, ["b"]);
}

#[test]
fn proto_names_are_plain_names() {
    let text = r#"{"name":"__proto__","nodes":{"__proto__":{"run":"\u0000fn"},"b":{"parents":["__proto__"],"run":"\u0000fn"}}}"#;
    let def = check(text, &inline()).unwrap();
    assert_eq!(def.name(), "__proto__");
    let e = check(
        r#"{"name":"d","nodes":{"__proto__":{"run":"\u0000fn","parents":["nope"]}}}"#,
        &inline(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "Node '__proto__' has unknown parent 'nope'");
    assert_eq!(e.code(), "ERR_DEFINITION_UNKNOWN_PARENT");
}

#[test]
fn codes_of_compiler_errors() {
    let code = |v: Value, o: &ParseOptions| check(&v.to_string(), o).unwrap_err().code();
    assert_eq!(
        code(json!({ "name": "d", "nodes": {} }), &dag()),
        "ERR_DEFINITION_NO_NODES"
    );
    assert_eq!(
        code(json!({ "name": "m", "nodes": { "a": {} } }), &machine()),
        "ERR_DEFINITION_NO_INITIAL"
    );
    assert_eq!(
        code(m(json!({ "transition": "zz" })), &machine()),
        "ERR_DEFINITION_UNKNOWN_STATE"
    );
    assert_eq!(
        code(json!({ "name": "d", "nodes": 1 }), &dag()),
        "ERR_DEFINITION_TYPE"
    );
    assert_eq!(
        code(json!({ "name": "d" }), &stored()),
        "ERR_DEFINITION_MISSING"
    );
    assert_eq!(
        code(d(json!({ "run": F, "runner": "k" })), &dag()),
        "ERR_DEFINITION_CONFLICT"
    );
    assert_eq!(
        code(m(json!({ "final": true, "maxVisits": 0 })), &machine()),
        "ERR_DEFINITION_VALUE"
    );
    let dup = check(
        r#"{"name":"d","nodes":{"a":{"run":"\u0000fn"},"a":{"run":"\u0000fn"}}}"#,
        &dag(),
    )
    .unwrap_err();
    assert_eq!(dup.to_string(), "Node 'a' is declared twice");
    assert_eq!(dup.code(), "ERR_DEFINITION_DUPLICATE_NODE");
}

// ---- properties ----

/// Whether `message` names `field`: one of its path segments, in camelCase or as words
/// (`errorState` as "error state"), singular or plural.
fn mentions_field(message: &str, field: &str) -> bool {
    let msg = message.to_lowercase();
    field.split(['.', '[']).any(|seg| {
        let seg = seg.trim_end_matches(']').to_lowercase();
        let mut words = String::new();
        for c in field_words(&seg, field) {
            words.push(c);
        }
        msg.contains(&seg)
            || msg.contains(seg.trim_end_matches('s'))
            || msg.contains(&words)
            || msg.contains(words.trim_end_matches('s'))
    }) || msg.contains(&field.to_lowercase())
}

/// `seg` with a space before each letter that was upper case in `field`.
fn field_words(seg: &str, field: &str) -> Vec<char> {
    let Some(start) = field.to_lowercase().find(seg) else {
        return seg.chars().collect();
    };
    let original = &field[start..start + seg.len()];
    let mut out = Vec::new();
    for c in original.chars() {
        if c.is_uppercase() {
            out.push(' ');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// An error is useful: a message, naming the node and field it blames.
fn assert_useful(e: &DefinitionError, input: &str) {
    let msg = e.to_string();
    assert!(!msg.is_empty(), "empty message for {input}");
    let loc = e.location();
    if let Some(node) = &loc.node {
        assert!(
            msg.contains(node.as_str()),
            "{msg:?} does not name node {node:?} for {input}"
        );
    }
    if let Some(field) = &loc.field {
        assert!(
            mentions_field(&msg, field),
            "{msg:?} does not name field {field:?} for {input}"
        );
    }
}

fn options() -> impl Strategy<Value = ParseOptions> {
    (
        prop_oneof![
            Just(ExpectKind::Detect),
            Just(ExpectKind::Dag),
            Just(ExpectKind::Machine)
        ],
        any::<bool>(),
        prop::option::of(prop_oneof![Just("a"), Just(""), Just("zz")]),
        any::<bool>(),
    )
        .prop_map(|(expect, stored, initial, optional)| {
            let mut o = ParseOptions::new(expect)
                .stored(stored)
                .runners_optional(optional);
            if let Some(i) = initial {
                o = o.initial(i);
            }
            o
        })
}

const WORDS: &[&str] = &[
    "name",
    "nodes",
    "initial",
    "run",
    "runner",
    "args",
    "parents",
    "transition",
    "state",
    "condition",
    "delay",
    "timeout",
    "after",
    "final",
    "errorState",
    "maxSteps",
    "maxVisits",
    "semaphoreKey",
    "tags",
    "info",
    "context",
    "inputSchema",
    "tolerateFailures",
    "tolerateParentErrors",
    "description",
    "retry",
    "a",
    "b",
    "c",
    "__proto__",
    "",
    "go",
    "15m",
    "soon",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(WORDS).prop_map(str::to_string),
        1 => "[a-zA-Z_ \u{e9}\"\\\\]{0,6}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..5).prop_map(Value::from),
        prop_oneof![Just(1.5), Just(-0.0), Just(1e300), Just(4294967296.0)].prop_map(Value::from),
        word().prop_map(Value::from),
        prop::sample::select(vec![
            FN_MARKER.to_string(),
            NAN_MARKER.to_string(),
            INFINITY_MARKER.to_string(),
            format!("{BIGINT_MARKER_PREFIX}12"),
            SYMBOL_MARKER.to_string(),
            "\u{0}other".to_string(),
        ])
        .prop_map(Value::from),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(word(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Arbitrary JSON, often under the shape of a definition so the walk gets deep.
fn arb_config() -> impl Strategy<Value = Value> {
    prop_oneof![
        arb_json(),
        (
            arb_json(),
            prop::collection::btree_map(word(), arb_json(), 0..4)
        )
            .prop_map(|(nodes, extra)| {
                let mut v = json!({ "name": "n", "nodes": nodes });
                for (k, x) in extra {
                    v[k] = x;
                }
                v
            }),
        prop::collection::btree_map(word(), arb_json(), 0..4)
            .prop_map(|nodes| json!({ "name": "n", "initial": "a", "nodes": nodes })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_json_never_panics_and_errors_name_their_culprit(
        config in arb_config(),
        opts in options(),
    ) {
        let text = config.to_string();
        if let Err(e) = check(&text, &opts) {
            assert_useful(&e, &text);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "[{}\\[\\]\":,a-z0-9\\\\ ]{0,40}", opts in options()) {
        if let Err(e) = check(&text, &opts) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

/// A valid DAG: node `nI` (zero-padded, so json!'s sorted keys keep declaration order)
/// depends on some earlier nodes.
fn valid_dag() -> impl Strategy<Value = Value> {
    prop::collection::vec(prop::collection::vec(any::<prop::sample::Index>(), 0..3), 1..12).prop_map(
        |parents| {
            let mut nodes = serde_json::Map::new();
            for (i, ps) in parents.iter().enumerate() {
                let mut node = json!({ "run": F, "tags": ["t"], "tolerateParentErrors": false, "semaphoreKey": "k", "info": {} });
                if i > 0 {
                    let names: Vec<String> = ps.iter().map(|p| format!("n{:02}", p.index(i))).collect();
                    node["parents"] = json!(names);
                }
                nodes.insert(format!("n{i:02}"), node);
            }
            json!({ "name": "d", "tags": [], "nodes": nodes })
        },
    )
}

/// A valid machine: a ring of states, each with a few transition shapes.
fn valid_machine() -> impl Strategy<Value = Value> {
    (1usize..8).prop_map(|n| {
        let mut nodes = serde_json::Map::new();
        for i in 0..n {
            let next = format!("s{:02}", (i + 1) % n);
            let state = json!({
                "run": F,
                "transition": { "go": [next, { "state": next, "condition": F, "delay": "1s" }], "": { "state": next } },
                "maxVisits": 3,
                "timeout": { "after": 100, "state": next },
                "errorState": next,
                "final": i + 1 == n,
            });
            nodes.insert(format!("s{i:02}"), state);
        }
        json!({ "name": "m", "initial": "s00", "maxSteps": 50, "nodes": nodes })
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    Drop,
    Rename(String),
    Retype(Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::Drop),
        prop_oneof![
            Just("retyr"),
            Just("parent"),
            Just("transiton"),
            Just("zzz"),
            Just("mapp")
        ]
        .prop_map(|s| Mutation::Rename(s.into())),
        prop_oneof![
            Just(json!(5)),
            Just(json!(0)),
            Just(json!("x")),
            Just(json!(true)),
            Just(json!([5])),
            Just(json!({})),
            Just(json!(NAN_MARKER)),
            Just(json!(FN_MARKER)),
        ]
        .prop_map(Mutation::Retype),
    ]
}

/// Every object inside `v`, as JSON pointers, with the key it sits under.
fn objects(
    v: &Value,
    pointer: String,
    under: Option<&str>,
    out: &mut Vec<(String, Option<String>)>,
) {
    match v {
        Value::Object(map) => {
            out.push((pointer.clone(), under.map(str::to_string)));
            for (k, x) in map {
                objects(x, format!("{pointer}/{k}"), Some(k), out);
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                objects(x, format!("{pointer}/{i}"), under, out);
            }
        }
        _ => {}
    }
}

/// Applies `m` to a field of some object in `config`; returns the field's (new) name,
/// whether it was a field rather than a name (of a node, a state or an event), and how deep.
fn apply(
    config: &mut Value,
    pick: prop::sample::Index,
    field: prop::sample::Index,
    m: &Mutation,
) -> Option<(String, bool, usize)> {
    let mut found = Vec::new();
    objects(config, String::new(), None, &mut found);
    let (pointer, under) = &found[pick.index(found.len())];
    let is_field = !matches!(under.as_deref(), Some("nodes" | "transition"));
    let depth = pointer.matches('/').count();
    let map = config.pointer_mut(pointer)?.as_object_mut()?;
    if map.is_empty() {
        return None;
    }
    let key = map.keys().nth(field.index(map.len()))?.clone();
    match m {
        Mutation::Drop => {
            map.remove(&key);
        }
        Mutation::Rename(to) => {
            let v = map.remove(&key)?;
            map.insert(to.clone(), v);
            return Some((to.clone(), is_field, depth));
        }
        Mutation::Retype(v) => {
            map.insert(key.clone(), v.clone());
        }
    }
    Some((key, is_field, depth))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mutated_definitions_fail_with_useful_messages(
        machine in any::<bool>(),
        dag_config in valid_dag(),
        machine_config in valid_machine(),
        pick in any::<prop::sample::Index>(),
        field in any::<prop::sample::Index>(),
        m in mutation(),
        opts in options(),
    ) {
        let mut config = if machine { machine_config } else { dag_config };
        prop_assert!(check(&config.to_string(), &ParseOptions::default()).is_ok(), "{config}");
        let Some((key, is_field, depth)) = apply(&mut config, pick, field, &m) else { return Ok(()) };
        // Read as the kind it was written as, the renamed field is the first unknown one.
        let same_kind = match opts.expect {
            ExpectKind::Detect => depth > 0,
            ExpectKind::Dag => !machine,
            ExpectKind::Machine => machine,
        };
        let text = config.to_string();
        let renamed_field = matches!(m, Mutation::Rename(_)) && is_field;
        match check(&text, &opts) {
            // A renamed field is unknown or planned: never accepted.
            Ok(_) => prop_assert!(!renamed_field, "{} accepted", text),
            Err(e) => {
                assert_useful(&e, &text);
                if renamed_field && same_kind && depth > 0 && matches!(e.code(), "ERR_DEFINITION_UNKNOWN_FIELD" | "ERR_DEFINITION_UNSUPPORTED") {
                    prop_assert!(e.to_string().contains(&format!("'{key}'")), "{} for {}", e, text);
                }
            }
        }
    }

    #[test]
    fn graph_mutations_are_reported_by_name(
        dag_config in valid_dag(),
        pick in any::<prop::sample::Index>(),
        cycle in any::<bool>(),
    ) {
        let mut config = dag_config;
        let names: Vec<String> = config["nodes"].as_object().unwrap().keys().cloned().collect();
        let node = &names[pick.index(names.len())];
        // A cycle: the node depends on the last node, which (transitively or not) may depend
        // on it; making the last node depend on it too closes the loop for certain.
        let last = names.last().unwrap().clone();
        let bad = if cycle { last.clone() } else { "ghost".to_string() };
        config["nodes"][node.as_str()]["parents"] = json!([bad]);
        if cycle {
            config["nodes"][last.as_str()]["parents"] = json!([node]);
        }
        let text = config.to_string();
        let e = check(&text, &dag()).unwrap_err();
        assert_useful(&e, &text);
        if cycle {
            prop_assert_eq!(e.code(), "ERR_DEFINITION_CYCLE");
            prop_assert!(e.to_string().contains(node.as_str()), "{}", e);
        } else {
            prop_assert_eq!(e.to_string(), format!("Node '{node}' has unknown parent 'ghost'"));
        }
    }
}

// ---- performance ----

fn chain(n: usize) -> String {
    let mut s = String::with_capacity(n * 40);
    s.push_str(r#"{"name":"c","nodes":{"n0":{"run":"\u0000fn"}"#);
    for i in 1..n {
        s.push_str(&format!(
            r#","n{i}":{{"parents":["n{}"],"run":"\u0000fn"}}"#,
            i - 1
        ));
    }
    s.push_str("}}");
    s
}

/// Best of 15 runs of `f`, in ns per node; what `f` returns is dropped outside the timing
/// (the engine keeps what it compiles).
fn per_node<T>(n: usize, mut f: impl FnMut() -> T) -> f64 {
    use std::time::Instant;
    (0..15)
        .map(|_| {
            let t = Instant::now();
            let out = std::hint::black_box(f());
            let ns = t.elapsed().as_secs_f64() * 1e9 / n as f64;
            drop(out);
            ns
        })
        .fold(f64::INFINITY, f64::min)
}

/// `cargo test -p ramus-core --release --test definition -- --ignored --nocapture`
#[test]
#[ignore = "a measurement: run in release with --nocapture"]
fn chain_of_100k_nodes_parses_and_compiles_fast() {
    let n = 100_000;
    let text = chain(n);
    let opts = ParseOptions::default();
    let parse_ns = per_node(n, || parse(&text, &opts).unwrap());
    let def = parse(&text, &opts).unwrap();
    let compile_ns = per_node(n, || def.compile().unwrap());
    let total_ns = per_node(n, || {
        let def = parse(&text, &opts).unwrap();
        let compiled = def.compile().unwrap();
        (def, compiled)
    });
    let value_ns = per_node(n, || serde_json::from_str::<Value>(&text).unwrap());
    println!(
        "{n} nodes, {} bytes: parse {parse_ns:.0} ns/node, compile {compile_ns:.0} ns/node, \
         parse+compile {total_ns:.0} ns/node; serde_json::Value tree alone {value_ns:.0} ns/node",
        text.len()
    );
    assert!(total_ns < 1000.0, "{total_ns} ns per node");
}

#[test]
fn retries_and_node_timeouts_are_read() {
    use ramus_core::{Backoff, RetryOn, RetryPolicy};
    let def = parse(
        &json!({
            "name": "d",
            "nodes": {
                "a": { "run": F, "timeout": "5s", "retry": { "attempts": 3, "backoff": "fixed", "initial": 200, "max": "1m", "jitter": true, "retryOn": F } },
                "b": { "run": F, "parents": ["a"], "timeout": 40 }
            }
        })
        .to_string(),
        &dag(),
    )
    .unwrap();
    let Definition::Dag(dd) = def else {
        panic!("a DAG")
    };
    let a = dd.graph.policy(0).unwrap();
    assert_eq!(
        a.retry,
        Some(RetryPolicy {
            attempts: 3,
            backoff: Backoff::Fixed,
            initial_ms: 200,
            max_ms: Some(60_000),
            jitter: true,
            retry_on: Some(RetryOn::Inline),
        })
    );
    assert_eq!(a.timeout, Some((5000, "5s".into())));
    let b = dd.graph.policy(1).unwrap();
    assert_eq!(
        (b.retry.clone(), b.timeout.clone()),
        (None, Some((40, "40ms".into())))
    );
    let dag = dd.compile().unwrap();
    assert!(dag.uses_timers());
    assert_eq!(dag.timeout_message(0), "Node a timed out after 5s");

    // Stored definitions name registered predicates; an inline one cannot be stored.
    let stored_cfg = json!({ "name": "d", "nodes": { "a": { "runner": "fetch", "retry": { "attempts": 2, "retryOn": F } } } });
    let err = parse(&stored_cfg.to_string(), &stored()).unwrap_err();
    assert!(err.to_string().contains("inline retryOn function"), "{err}");
    let m = parse(
        &json!({ "name": "m", "initial": "a", "nodes": { "a": { "runner": "draft", "retry": { "attempts": 4, "retryOn": "transient" } } } }).to_string(),
        &stored(),
    )
    .unwrap();
    let Definition::Machine(md) = m else {
        panic!("a machine")
    };
    let r = md.states[0].retry.clone().unwrap();
    assert_eq!(
        (r.attempts, r.backoff, r.initial_ms, r.retry_on),
        (
            4,
            Backoff::Exponential,
            1000,
            Some(RetryOn::Registered("transient".into()))
        )
    );
}
