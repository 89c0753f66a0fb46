//! Tracing from JS: the engine's OTLP exporter, configured, flushed and shut down off the
//! JS thread (a flush may wait for a collector that lives in this very process).

use std::collections::HashMap;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::{js_error, JsResult as Result};

/// Export spans to an OTLP/HTTP endpoint (`http://host:4318/v1/traces`), replacing any
/// earlier configuration. `headers` are sent with every export (an API key).
#[napi]
pub fn configure_tracing(
    endpoint: String,
    service_name: Option<String>,
    headers: Option<HashMap<String, String>>,
    timeout_ms: Option<u32>,
) -> Result<()> {
    ramus_engine::configure_tracing(ramus_engine::TracingConfig {
        endpoint,
        service_name,
        headers: headers.unwrap_or_default(),
        timeout_ms,
    })
    .map_err(js_error)
}

/// Waits for an export off the JS thread.
pub struct FlushTask {
    shutdown: bool,
}

impl Task for FlushTask {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<()> {
        let r = if self.shutdown {
            ramus_engine::shutdown_tracing()
        } else {
            ramus_engine::flush_tracing()
        };
        r.map_err(|e| Error::from_reason(e.to_string()))
    }

    fn resolve(&mut self, _: Env, _: ()) -> napi::Result<()> {
        Ok(())
    }
}

/// Export the spans ended so far; resolves when the collector answered.
#[napi]
pub fn flush_tracing() -> AsyncTask<FlushTask> {
    AsyncTask::new(FlushTask { shutdown: false })
}

/// Flush and stop exporting; runs created afterwards record no spans.
#[napi]
pub fn shutdown_tracing() -> AsyncTask<FlushTask> {
    AsyncTask::new(FlushTask { shutdown: true })
}

/// Whether spans are being exported.
#[napi]
pub fn tracing_enabled() -> bool {
    ramus_engine::tracing_enabled()
}
