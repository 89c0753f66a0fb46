//! The sinks a run's events feed in Rust — the store (`RunWriter`) and spans (`RunSpans`) —
//! with the bookkeeping both native run kinds share: which recorded events were handled,
//! whether JS drains them too, and the data of custom events waiting for their event.

use std::collections::VecDeque;

use napi::Result;
use opentelemetry::KeyValue;
use ramus_core::{Event, Recorder};

use crate::store::RunWriter;
use crate::trace::RunSpans;

#[derive(Default)]
pub(crate) struct Sinks {
    pub(crate) writer: Option<RunWriter>,
    pub(crate) spans: Option<RunSpans>,
    /// The data (JSON) of custom events recorded and not handled yet, in order.
    custom: VecDeque<Option<String>>,
    /// Events of the recorder already handled (a listener drains them later).
    cursor: usize,
    /// Whether JS drains the recorder too; if not, handled events are dropped.
    listened: bool,
}

impl Sinks {
    /// Sinks for a run whose recorder is switched on for them; `listened` whether JS
    /// observed it already.
    pub(crate) fn new(rec: &mut Recorder) -> Sinks {
        let listened = rec.observing();
        rec.set_observe(true);
        Sinks {
            listened,
            ..Sinks::default()
        }
    }

    /// The recorded events not handled yet.
    pub(crate) fn unhandled<'a>(&self, events: &'a [Event]) -> &'a [Event] {
        &events[self.cursor.min(events.len())..]
    }

    /// After a call's events were handled: keep them for a JS listener or drop them, and
    /// hand a full batch to the writer without waiting for the face's flush.
    pub(crate) fn handled(&mut self, rec: &mut Recorder) {
        if self.listened {
            self.cursor = rec.events().len();
        } else {
            rec.clear_events();
            self.cursor = 0;
        }
        if let Some(w) = self.writer.as_mut().filter(|w| w.full()) {
            // Errors surface at the face's next flush or at close.
            let _ = w.flush(None);
        }
    }

    /// JS starts or stops draining the events (`set_observe`).
    pub(crate) fn set_listened(&mut self, on: bool) {
        self.listened = on;
    }

    /// JS drained the recorder: every event is gone, handled or not.
    pub(crate) fn drained(&mut self) {
        self.cursor = 0;
    }

    /// A custom event is about to be recorded with this data (JSON).
    pub(crate) fn push_custom(&mut self, data: Option<String>) {
        self.custom.push_back(data);
    }

    /// A recorded custom event of type `kind` from `node`: a span event on its step's span,
    /// and an `events` row.
    pub(crate) fn custom(&mut self, e: &Event, kind: &str, node: Option<String>) {
        let data = self.custom.pop_front().flatten();
        if let Some(s) = self.spans.as_ref() {
            let attrs = data
                .iter()
                .map(|d| KeyValue::new("event.data", d.clone()))
                .collect();
            s.event(e.node, kind, attrs, e.time);
        }
        if let Some(w) = self.writer.as_mut() {
            w.custom(
                e.step.to_string(),
                e.parent_step.map(|p| p.to_string()),
                kind,
                node,
                data,
                e.time,
            );
        }
    }

    /// Write what the store writer collected, with the run's snapshot (JSON).
    pub(crate) fn flush(&mut self, snapshot: Option<String>) -> Result<()> {
        match self.writer.as_mut() {
            Some(w) => w.flush(snapshot),
            None => Ok(()),
        }
    }

    /// Record how the run ended, for the store.
    pub(crate) fn end(&mut self, status: &str, output: Option<String>, error: Option<String>) {
        if let Some(w) = self.writer.as_mut() {
            w.end(status, output, error);
        }
    }

    /// End the run's span (once; later calls do nothing).
    pub(crate) fn end_spans(&mut self, status: &str, error: Option<String>) {
        if let Some(s) = self.spans.as_mut() {
            s.end(status, error);
        }
    }
}
