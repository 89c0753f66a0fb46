//! OpenTelemetry spans of runs, the third sink of the event stream (after listeners and
//! the store): one span per run, one per DAG node or machine state visit, custom events
//! and transitions as span events. Exported over OTLP/HTTP (JSON) once an endpoint is
//! configured ([`configure_tracing`]); until then no run records anything for it.
//!
//! Spans are made after the fact from the events the core records, with the times those
//! events carry (`span_builder().with_start_time()`, `end_with_timestamp()`), and exported
//! by the SDK's batch processor on its own thread: the thread that drives runs never waits
//! on the network.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Tracer,
};
use opentelemetry_sdk::Resource;

use crate::error::EngineError;

/// Set while a provider is configured: runs created then record spans.
static ENABLED: AtomicBool = AtomicBool::new(false);
static PROVIDER: Mutex<Option<(SdkTracerProvider, Tracer)>> = Mutex::new(None);

/// The exporter's HTTP client: ureq, blocking, on the batch processor's thread.
#[derive(Debug)]
struct UreqClient(ureq::Agent);

#[async_trait::async_trait]
impl HttpClient for UreqClient {
    async fn send_bytes(
        &self,
        req: Request<Bytes>,
    ) -> std::result::Result<Response<Bytes>, HttpError> {
        let (parts, body) = req.into_parts();
        let resp = self.0.run(Request::from_parts(parts, body.to_vec()))?;
        let (parts, mut body) = resp.into_parts();
        let bytes = body.with_config().limit(1 << 20).read_to_vec()?;
        Ok(Response::from_parts(parts, Bytes::from(bytes)))
    }
}

fn provider_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Tracing(e.to_string())
}

/// Where spans go.
#[derive(Clone, Debug, Default)]
pub struct TracingConfig {
    /// The OTLP/HTTP traces URL (`http://127.0.0.1:4318/v1/traces`).
    pub endpoint: String,
    /// `service.name` of the exported resource; `ramus` by default.
    pub service_name: Option<String>,
    /// Sent with every export (an API key).
    pub headers: HashMap<String, String>,
    /// Export timeout in ms (3000 by default, at most 4500).
    pub timeout_ms: Option<u32>,
}

/// Export spans to an OTLP/HTTP endpoint (`http://host:4318/v1/traces`), replacing any
/// earlier configuration: every run created from now on records spans.
///
/// ```no_run
/// ramus_engine::configure_tracing(ramus_engine::TracingConfig {
///     endpoint: "http://127.0.0.1:4318/v1/traces".into(),
///     ..Default::default()
/// })
/// .unwrap();
/// ```
pub fn configure_tracing(config: TracingConfig) -> Result<(), EngineError> {
    let TracingConfig {
        endpoint,
        service_name,
        headers,
        timeout_ms,
    } = config;
    if !endpoint.starts_with("http://") {
        return Err(EngineError::Tracing(format!(
            "the OTLP endpoint must be an http:// URL (such as http://127.0.0.1:4318/v1/traces), got '{endpoint}'"
        )));
    }
    // Below the SDK's fixed 5 s flush wait, so a flush reports a slow collector instead of
    // leaving an export running.
    let timeout = Duration::from_millis(timeout_ms.unwrap_or(3_000).clamp(100, 4_500) as u64);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(endpoint)
        .with_timeout(timeout)
        .with_headers(headers)
        .with_http_client(UreqClient(agent))
        .build()
        .map_err(provider_error)?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(8192)
                .with_scheduled_delay(Duration::from_millis(500))
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        // Ramus decides what to record (everything, once configured); a caller's unsampled
        // traceparent must not silently drop the agent's spans.
        .with_sampler(Sampler::AlwaysOn)
        .with_resource(
            Resource::builder_empty()
                .with_service_name(service_name.unwrap_or_else(|| "ramus".into()))
                .build(),
        )
        .build();
    let tracer = provider.tracer("ramus");
    let old = PROVIDER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .replace((provider, tracer));
    ENABLED.store(true, Ordering::Release);
    if let Some((old, _)) = old {
        // Flushing the old exporter may wait for a slow collector: not on the JS thread.
        std::thread::spawn(move || {
            let _ = old.shutdown();
        });
    }
    Ok(())
}

/// Export the spans ended so far; blocks until the collector answered (call it off the
/// thread that drives runs).
pub fn flush_tracing() -> Result<(), EngineError> {
    let provider = PROVIDER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|(p, _)| p.clone());
    match provider {
        Some(p) => p.force_flush().map_err(provider_error),
        None => Ok(()),
    }
}

/// Flush and stop exporting; runs created afterwards record no spans. Blocks like
/// [`flush_tracing`].
pub fn shutdown_tracing() -> Result<(), EngineError> {
    ENABLED.store(false, Ordering::Release);
    let provider = PROVIDER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .map(|(p, _)| p);
    match provider {
        Some(p) => p.shutdown().map_err(provider_error),
        None => Ok(()),
    }
}

/// Stop recording spans for runs created from now on (then [`shutdown_tracing`] flushes
/// what was recorded).
pub fn disable_tracing() {
    ENABLED.store(false, Ordering::Release);
}

/// Whether spans are being exported.
pub fn tracing_enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

fn tracer() -> Option<Tracer> {
    if !ENABLED.load(Ordering::Acquire) {
        return None;
    }
    PROVIDER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|(_, t)| t.clone())
}

fn at(ms: u64) -> SystemTime {
    if ms == 0 {
        SystemTime::now()
    } else {
        UNIX_EPOCH + Duration::from_millis(ms)
    }
}

/// The remote parent named by a W3C `traceparent` (`00-<trace>-<span>-<flags>`).
fn parent_context(traceparent: Option<&str>) -> Context {
    let Some(tp) = traceparent else {
        return Context::new();
    };
    let parts: Vec<&str> = tp.trim().split('-').collect();
    if parts.len() < 4 || parts[0].len() != 2 || parts[1].len() != 32 || parts[2].len() != 16 {
        return Context::new();
    }
    let (Ok(trace), Ok(span), Ok(flags)) = (
        TraceId::from_hex(parts[1]),
        SpanId::from_hex(parts[2]),
        u8::from_str_radix(parts[3], 16),
    ) else {
        return Context::new();
    };
    let sc = SpanContext::new(
        trace,
        span,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    if !sc.is_valid() {
        return Context::new();
    }
    Context::new().with_remote_span_context(sc)
}

/// The `message` of a stored error (JSON text), for a span's error status.
pub fn error_message(json: Option<&str>) -> String {
    json.and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .and_then(|v| match v {
            serde_json::Value::Object(o) => {
                o.get("message").and_then(|m| m.as_str()).map(str::to_owned)
            }
            serde_json::Value::String(s) => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| "failed".into())
}

/// What a run is, for span names and attributes: a DAG is a workflow, a machine an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKind {
    /// A DAG run (`invoke_workflow`).
    Dag,
    /// A state machine run (`invoke_agent`).
    Machine,
}

/// The spans of one run.
/// The spans of one run: its own, and one per step.
pub struct RunSpans {
    tracer: Tracer,
    kind: RunKind,
    run: Context,
    steps: HashMap<u32, Context>,
    /// Extra attributes per node or state name (`info` and `tags` of its definition).
    attributes: HashMap<String, Vec<KeyValue>>,
    ended: bool,
}

impl RunSpans {
    /// The run's span, started now, under `traceparent` (the caller's active span, or the
    /// step a nested run was started in). None when tracing is off.
    pub fn start(
        kind: RunKind,
        name: &str,
        run_id: &str,
        traceparent: Option<&str>,
        attributes_json: Option<&str>,
    ) -> Option<RunSpans> {
        let tracer = tracer()?;
        let (op, kind_name) = match kind {
            RunKind::Dag => ("invoke_workflow", "dag"),
            RunKind::Machine => ("invoke_agent", "state_machine"),
        };
        let span = tracer
            .span_builder(format!("{op} {name}"))
            .with_kind(SpanKind::Internal)
            .with_start_time(at(0))
            .with_attributes(vec![
                KeyValue::new("gen_ai.operation.name", op),
                KeyValue::new(
                    if kind == RunKind::Dag {
                        "gen_ai.workflow.name"
                    } else {
                        "gen_ai.agent.name"
                    },
                    name.to_owned(),
                ),
                KeyValue::new("workflow.run.id", run_id.to_owned()),
                KeyValue::new("workflow.run.name", name.to_owned()),
                KeyValue::new("workflow.run.kind", kind_name),
            ])
            .start_with_context(&tracer, &parent_context(traceparent));
        let run = Context::new().with_span(span);
        Some(RunSpans {
            tracer,
            kind,
            run,
            steps: HashMap::new(),
            attributes: attributes_json.map(parse_attributes).unwrap_or_default(),
            ended: false,
        })
    }

    /// The W3C ids of the run's span (for the run's row).
    pub fn ids(&self) -> (String, String) {
        let span = self.run.span();
        let sc = span.span_context();
        (sc.trace_id().to_string(), sc.span_id().to_string())
    }

    /// The `traceparent` of a step's span (runs started inside it nest under it), or of
    /// the run's span.
    pub fn traceparent(&self, slot: Option<u32>) -> String {
        let cx = slot.and_then(|s| self.steps.get(&s)).unwrap_or(&self.run);
        let span = cx.span();
        let sc = span.span_context();
        format!("00-{}-{}-01", sc.trace_id(), sc.span_id())
    }

    /// A step's span starts.
    pub fn step_started(&mut self, slot: u32, node: &str, step_id: &str, time: u64) {
        let (name, mut attrs) = match self.kind {
            RunKind::Dag => (
                format!("workflow.dag.node {node}"),
                vec![KeyValue::new("workflow.dag.node.name", node.to_owned())],
            ),
            RunKind::Machine => (
                format!("workflow.state_machine.state {node}"),
                vec![KeyValue::new(
                    "workflow.state_machine.state",
                    node.to_owned(),
                )],
            ),
        };
        attrs.push(KeyValue::new("workflow.step.id", step_id.to_owned()));
        attrs.push(KeyValue::new("workflow.step.name", node.to_owned()));
        let mut name = name;
        if let Some(extra) = self.attributes.get(node) {
            // A node marked as a tool is a GenAI tool call.
            if extra.iter().any(|kv| {
                kv.key.as_str() == "gen_ai.operation.name" && kv.value.as_str() == "execute_tool"
            }) {
                name = format!("execute_tool {node}");
            }
            attrs.extend(extra.iter().cloned());
        }
        let span = self
            .tracer
            .span_builder(name)
            .with_start_time(at(time))
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &self.run);
        self.steps.insert(slot, Context::new().with_span(span));
    }

    /// A step's span ends.
    pub fn step_ended(&mut self, slot: u32, status: &str, error: Option<String>, time: u64) {
        if let Some(cx) = self.steps.remove(&slot) {
            let span = cx.span();
            span.set_attribute(KeyValue::new("workflow.step.status", status.to_owned()));
            if let Some(message) = error {
                span.set_status(Status::error(message));
            }
            span.end_with_timestamp(at(time));
        }
    }

    /// A custom event (on its step's span) or a transition (on the run's).
    pub fn event(&self, slot: Option<u32>, name: &str, attrs: Vec<KeyValue>, time: u64) {
        let cx = slot.and_then(|s| self.steps.get(&s)).unwrap_or(&self.run);
        cx.span()
            .add_event_with_timestamp(name.to_owned(), at(time), attrs);
    }

    /// End the run's span (and any step still open: cancelled with the run).
    pub fn end(&mut self, status: &str, error: Option<String>) {
        if self.ended {
            return;
        }
        self.ended = true;
        let now = at(0);
        for (_, cx) in self.steps.drain() {
            let span = cx.span();
            span.set_attribute(KeyValue::new("workflow.step.status", "cancelled"));
            span.end_with_timestamp(now);
        }
        let span = self.run.span();
        span.set_attribute(KeyValue::new("workflow.run.status", status.to_owned()));
        if let Some(message) = error {
            span.set_status(Status::error(message));
        }
        span.end_with_timestamp(now);
    }
}

/// `{ node: { key: value } }` from the face: attribute values are strings, numbers or
/// booleans (anything else is written as JSON text).
fn parse_attributes(json: &str) -> HashMap<String, Vec<KeyValue>> {
    let Ok(serde_json::Value::Object(nodes)) = serde_json::from_str::<serde_json::Value>(json)
    else {
        return HashMap::new();
    };
    nodes
        .into_iter()
        .map(|(node, attrs)| {
            let kvs = match attrs {
                serde_json::Value::Object(o) => {
                    o.into_iter().map(|(k, v)| attribute(k, v)).collect()
                }
                _ => Vec::new(),
            };
            (node, kvs)
        })
        .collect()
}

pub(crate) fn attribute(key: String, value: serde_json::Value) -> KeyValue {
    match value {
        serde_json::Value::String(s) => KeyValue::new(key, s),
        serde_json::Value::Bool(b) => KeyValue::new(key, b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => KeyValue::new(key, i),
            None => KeyValue::new(key, n.as_f64().unwrap_or(0.0)),
        },
        other => KeyValue::new(key, other.to_string()),
    }
}

impl Drop for RunSpans {
    fn drop(&mut self) {
        // A run dropped without ending (garbage-collected while waiting): close its spans
        // so they are exported rather than lost.
        self.end("abandoned", None);
    }
}
