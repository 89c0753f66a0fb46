//! An engine from JS: its store, stored definitions, starting and resuming stored runs,
//! and the delivery of events that other processes send to the runs live here.

use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use ramus_core::Executor;
use ramus_engine::delivery::Watched;
use ramus_engine::{Durable, DurableRow, EngineCore, RunRow};
use ramus_store::Store;
use ramus_store::{Durability, Kind, Options, SqliteStore, Synchronous};
use serde_json::{json, Value};

use crate::clock::TOKIO;
use crate::defs::{self, NativeDefinition};
use crate::reads::{store_error, NativeStore};
use crate::{coded, ctx, js_error, napi_error, pack, unpack, with_ctx, JsResult as Result};

type Deliver = Arc<ThreadsafeFunction<String, (), String, Status, false, true>>;

/// A durable engine: a store and its runs.
#[napi]
pub struct NativeEngine {
    core: Arc<EngineCore>,
    sqlite: Arc<SqliteStore>,
    /// Live runs whose stored events are looked for, by row id, with their run key.
    watched: Arc<Watched<i32>>,
    deliver: Option<Deliver>,
    poll: Duration,
    polling: std::sync::atomic::AtomicBool,
}

fn parser() -> Box<ramus_engine::Parser> {
    Box::new(|kind: Kind, json: &str| ramus_engine::RunDef::parse(json, Some(kind), true, None))
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StartJson {
    run_id: String,
    name: Option<String>,
    input: Option<Box<serde_json::value::RawValue>>,
    context: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    tags: Vec<String>,
    info: Option<Box<serde_json::value::RawValue>>,
    traceparent: Option<String>,
    initial: Option<String>,
    #[serde(default)]
    stored: bool,
    /// The run was claimed (a queued run, or one `start` enqueued for its idempotency key):
    /// its row exists and its lease is held.
    #[serde(default)]
    claimed: bool,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EnqueueJson {
    name: Option<String>,
    input: Option<Box<serde_json::value::RawValue>>,
    context: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    tags: Vec<String>,
    info: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    priority: i64,
    run_at: Option<i64>,
    idempotency_key: Option<String>,
    concurrency_key: Option<String>,
}

impl EnqueueJson {
    fn into_enqueue(self) -> ramus_engine::Enqueue {
        let raw = |r: Option<Box<serde_json::value::RawValue>>| r.map(|r| r.get().to_owned());
        ramus_engine::Enqueue {
            name: self.name,
            input: raw(self.input),
            context: raw(self.context),
            tags: self.tags,
            info: raw(self.info),
            priority: self.priority,
            run_at: self.run_at,
            idempotency_key: self.idempotency_key,
            concurrency_key: self.concurrency_key,
        }
    }
}

/// A worker's claim, made off the JS thread.
pub struct ClaimTask {
    core: Arc<EngineCore>,
    names: Option<Vec<String>>,
    limit: u32,
    now: i64,
    aging_ms: i64,
    skip: Vec<String>,
}

impl Task for ClaimTask {
    type Output = String;
    type JsValue = String;

    fn compute(&mut self) -> napi::Result<String> {
        let claimed = self
            .core
            .claim_work(
                self.names.take(),
                self.limit,
                self.now,
                self.aging_ms,
                std::mem::take(&mut self.skip),
            )
            .map_err(|e| napi::Error::from_reason(e.to_string()))?;
        let list: Vec<Value> = claimed
            .into_iter()
            .map(|c| json!([c.run_id, c.queued, c.priority]))
            .collect();
        Ok(Value::Array(list).to_string())
    }

    fn resolve(&mut self, _: Env, out: String) -> napi::Result<String> {
        Ok(out)
    }
}

/// The JSON options of the call `what`, or an `ERR_INVALID_ARGUMENT` naming it.
fn options_of<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| {
        coded(
            "ERR_INVALID_ARGUMENT",
            format!("invalid {what} options: {e}"),
        )
    })
}

#[napi]
impl NativeEngine {
    /// Open (and migrate) the database at `path`. `fsync`: commits survive a power loss
    /// (`synchronous = FULL`), not only a crash of the process. `deliver` receives, on the
    /// JS thread, events other processes stored for runs live here (JSON
    /// `[[run, id, type, data | null, queue], …]`); `poll_ms` is how often they are looked
    /// for.
    #[napi(constructor)]
    pub fn new(
        path: String,
        fsync: bool,
        poll_ms: u32,
        deliver: Option<Function<String, ()>>,
    ) -> Result<Self> {
        let mut options = Options::new(Durability::Batched);
        if fsync {
            options.synchronous = Synchronous::Full;
        }
        let sqlite = Arc::new(SqliteStore::open_with(&path, options).map_err(store_error)?);
        let store: Arc<dyn Store> = Arc::clone(&sqlite) as Arc<dyn Store>;
        let core = Arc::new(EngineCore::new(
            store,
            Arc::new(ramus_engine::SystemClock),
            parser(),
        ));
        let deliver = match deliver {
            Some(f) => Some(Arc::new(
                f.build_threadsafe_function::<String>()
                    .weak::<true>()
                    .callee_handled::<false>()
                    .build_callback(|ctx| Ok(ctx.value))
                    .map_err(napi_error)?,
            )),
            None => None,
        };
        Ok(NativeEngine {
            core,
            sqlite,
            watched: Arc::new(Watched::default()),
            deliver,
            poll: Duration::from_millis(poll_ms.max(1) as u64),
            polling: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The engine's store (reads, prune, flush).
    #[napi(getter)]
    pub fn store(&self) -> NativeStore {
        NativeStore {
            inner: Arc::clone(&self.sqlite),
        }
    }

    /// Runner and condition keys registered in the face: stored definitions may name them.
    #[napi]
    pub fn register(&self, keys: Vec<String>) {
        self.core.register(keys);
    }

    /// Store a definition (JSON of registered runners only); returns `{ name, version,
    /// created }` as JSON.
    #[napi]
    pub fn define(&self, config: String) -> Result<String> {
        let kind = match serde_json::from_str::<Value>(&config) {
            Ok(Value::Object(o)) if o.contains_key("initial") => Kind::Machine,
            _ => Kind::Dag,
        };
        let (name, version, created) = self.core.define(kind, &config).map_err(js_error)?;
        Ok(json!({ "name": name, "version": version, "created": created }).to_string())
    }

    /// A stored definition (the latest version unless one is given), compiled once.
    #[napi]
    pub fn load(&self, name: String, version: Option<f64>) -> Result<NativeDefinition> {
        let def = self
            .core
            .load(&name, version.map(|v| v as i64))
            .map_err(js_error)?;
        Ok(NativeDefinition { inner: def })
    }

    /// The latest version of a definition, or null.
    #[napi]
    pub fn latest_version(&self, name: String) -> Result<Option<f64>> {
        self.core
            .store()
            .latest_version(&name)
            .map(|v| v.map(|v| v as f64))
            .map_err(|e| js_error(e.into()))
    }

    /// Start a stored run of `definition` (see `create_run` for `flags`); `sync`: each
    /// step commits before the next starts. `options` (JSON): `runId`, `name`, `input`,
    /// `context`, `tags`, `info` (JSON values), `traceparent`, `initial`, `stored`
    /// (whether `definition` is a stored one, so the run can be resumed).
    #[napi]
    pub fn start(
        &self,
        definition: &NativeDefinition,
        flags: u32,
        clock: u32,
        sync: bool,
        options: String,
    ) -> Result<i32> {
        let o: StartJson = options_of(&options, "start")?;
        let def = &definition.inner;
        let mut opts = defs::run_options(
            definition,
            flags,
            -1,
            0,
            clock,
            Some(
                &json!({ "name": o.name, "traceparent": o.traceparent, "initial": o.initial })
                    .to_string(),
            ),
        )?;
        let context = o.context.as_ref().map(|c| c.get().to_owned());
        opts.run_id = Some(o.run_id.parse().map_err(|_| {
            coded(
                "ERR_INVALID_ARGUMENT",
                format!("runId is not a UUID: {}", o.run_id),
            )
        })?);
        opts.context = context.clone();
        opts.input = o.input.as_ref().map(|r| r.get().to_owned());
        opts.durable = Some(Durable {
            store: Arc::clone(self.core.store()),
            sync,
            row: DurableRow::New(RunRow {
                id: o.run_id.clone(),
                name: o.name.clone().unwrap_or_else(|| def.name.clone()),
                kind: Some(def.kind()),
                definition: if o.stored { def.stored.clone() } else { None },
                input: opts.input.clone(),
                tags: o.tags,
                info: o.info.map(|r| r.get().to_owned()),
                parent: None,
                snapshot: None,
                lease: (!o.claimed).then(|| {
                    self.core
                        .first_lease(&o.run_id, with_ctx(|c| c.rt.now(clock)) as i64)
                }),
            }),
            fence: if o.claimed {
                Some(self.core.fence_of(&o.run_id).ok_or_else(|| {
                    coded(
                        "ERR_LEASE_LOST",
                        format!("Run {} is not held by this engine", o.run_id),
                    )
                })?)
            } else {
                None
            },
        });
        ctx(|c| {
            c.rt.create(Arc::clone(def), opts)
                .map(pack)
                .map_err(js_error)
        })
    }

    /// Enqueue a run of a stored definition; `options` (JSON): `name`, `input`, `context`,
    /// `tags`, `info`, `priority`, `runAt`, `idempotencyKey`, `concurrencyKey`. With
    /// `claim`, a run it creates is held here, to start at once (`claimed` start). Returns
    /// JSON `{ runId, created }`.
    #[napi]
    pub fn enqueue(
        &self,
        definition: &NativeDefinition,
        options: String,
        claim: bool,
        clock: u32,
    ) -> Result<String> {
        let e = options_of::<EnqueueJson>(&options, "enqueue")?.into_enqueue();
        let done = self
            .core
            .enqueue(
                &definition.inner,
                e,
                claim,
                with_ctx(|c| c.rt.now(clock)) as i64,
            )
            .map_err(js_error)?;
        Ok(json!({ "runId": done.run_id, "created": done.created }).to_string())
    }

    /// Claim up to `limit` runs that need a worker (of the definitions `names`, or all),
    /// off the JS thread (a claim waits for the store's writer): resolves with JSON
    /// `[[runId, queued, priority], …]`, stored runs to resume first, then queued runs to start
    /// (`queued` true). `aging_ms`: waiting this long raises a queued run's priority by one;
    /// `skip`: runs this engine could not start.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn claim_work(
        &self,
        names: Option<Vec<String>>,
        limit: u32,
        clock: u32,
        aging_ms: f64,
        skip: Vec<String>,
    ) -> AsyncTask<ClaimTask> {
        AsyncTask::new(ClaimTask {
            core: Arc::clone(&self.core),
            names,
            limit,
            now: with_ctx(|c| c.rt.now(clock)) as i64,
            aging_ms: aging_ms as i64,
            skip,
        })
    }

    /// Set limits shared by every process on the store (`engine.limits`; JSON, see
    /// `ramus_engine::parse_limits`).
    #[napi]
    pub fn set_limits(&self, limits: String, clock: u32) -> Result<()> {
        let limits = ramus_engine::parse_limits(&limits).map_err(js_error)?;
        let now = with_ctx(|c| c.rt.now(clock)) as i64;
        self.core.set_limits(limits, now).map_err(js_error)
    }

    /// Take a slot of the limit `key` for a step waiting as `waiter` (one id per wait, in
    /// line by `priority`, then by how long it waits): 0 when taken, -1 when all its slots
    /// are held or others wait first (try again when one comes back), else the ms until
    /// its rate allows the next.
    #[napi]
    pub fn acquire_slot(
        &self,
        key: String,
        waiter: String,
        priority: f64,
        clock: u32,
    ) -> Result<f64> {
        let now = with_ctx(|c| c.rt.now(clock)) as i64;
        let got = self
            .core
            .acquire_slot(&key, &waiter, priority as i64, now)
            .map_err(js_error)?;
        Ok(match got {
            None => 0.0,
            Some(None) => -1.0,
            Some(Some(ms)) => ms as f64,
        })
    }

    /// A step stopped waiting for a slot without one (it was cancelled): it leaves the line.
    #[napi]
    pub fn stop_waiting(&self, waiter: String) -> Result<()> {
        self.core.stop_waiting(&waiter).map_err(js_error)
    }

    /// Give back a slot of `key` a step held.
    #[napi]
    pub fn release_slot(&self, key: String) -> Result<()> {
        self.core.release_slot(&key).map_err(js_error)
    }

    /// Every limit on the store with the slots held and the steps waiting now: JSON
    /// `[{ key, concurrency, rate: { count, per } | null, running, waiting }]`.
    #[napi]
    pub fn limits(&self, clock: u32) -> Result<String> {
        let now = with_ctx(|c| c.rt.now(clock)) as i64;
        let all = self.sqlite.limits(now).map_err(store_error)?;
        let list: Vec<Value> = all.into_iter().map(crate::reads::limit_json).collect();
        Ok(Value::Array(list).to_string())
    }

    /// Create or replace the schedule `name` (see `EngineCore::schedule`); `options`
    /// (JSON): `input`, `context`, `tags`, `priority`. Returns its next tick (ms) or null.
    #[napi]
    pub fn schedule(
        &self,
        name: String,
        definition: String,
        cron: String,
        timezone: Option<String>,
        options: String,
        clock: u32,
    ) -> Result<Option<f64>> {
        let e = options_of::<EnqueueJson>(&options, "schedule")?.into_enqueue();
        let now = with_ctx(|c| c.rt.now(clock)) as i64;
        let next = self
            .core
            .schedule(&name, &definition, &cron, timezone, e, now)
            .map_err(js_error)?;
        Ok(next.map(|n| n as f64))
    }

    /// Remove a schedule.
    #[napi]
    pub fn unschedule(&self, name: String) -> Result<()> {
        self.core.unschedule(&name).map_err(js_error)
    }

    /// The schedules: JSON `[{ name, definition, cron, timezone, input, tags, priority,
    /// next }]`.
    #[napi]
    pub fn schedules(&self) -> Result<String> {
        let all = self.sqlite.schedules(None).map_err(store_error)?;
        let list: Vec<Value> = all.into_iter().map(crate::reads::schedule_json).collect();
        Ok(Value::Array(list).to_string())
    }

    /// Hand a held run back to the store: another process may take it at once.
    #[napi]
    pub fn hand_back(&self, run_id: String) -> Result<()> {
        self.core.hand_back(&run_id).map_err(js_error)
    }

    /// How a claimed queued run starts: JSON `{ definition, version, name, input, context,
    /// tags, info }` (see `EngineCore::queued_start`).
    #[napi]
    pub fn queued_start(&self, run_id: String) -> Result<String> {
        let q = self.core.queued_start(&run_id).map_err(js_error)?;
        let raw = |t: &Option<String>| t.as_deref().map(raw_json);
        Ok(json!({
            "definition": q.definition.0,
            "version": q.definition.1,
            "name": q.name,
            "input": raw(&q.input),
            "context": raw(&q.context),
            "tags": q.tags,
            "info": raw(&q.info),
        })
        .to_string())
    }

    /// A claimed queued run that cannot start here ends as failed with `error` (JSON).
    #[napi]
    pub fn fail_queued(&self, run_id: String, error: String, clock: u32) -> Result<()> {
        let now = with_ctx(|c| c.rt.now(clock)) as i64;
        self.core.fail_queued(&run_id, error, now).map_err(js_error)
    }

    /// Write a fork of a stored run at one of its steps (JSON `{ atStep, input?, context?,
    /// output? }`, values as JSON) and return the new run's id, for `resume` to run.
    #[napi]
    pub fn fork(&self, run_id: String, options: String, clock: u32) -> Result<String> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Fork<'a> {
            at_step: String,
            #[serde(borrow)]
            input: Option<&'a serde_json::value::RawValue>,
            #[serde(borrow)]
            context: Option<&'a serde_json::value::RawValue>,
            #[serde(borrow)]
            output: Option<&'a serde_json::value::RawValue>,
        }
        let o: Fork = serde_json::from_str(&options)
            .map_err(|e| coded("ERR_INVALID_ARGUMENT", format!("fork(runId, options): {e}")))?;
        let text = |r: Option<&serde_json::value::RawValue>| r.map(|r| r.get().to_owned());
        let now = with_ctx(|c| c.rt.now(clock)) as i64;
        let options = ramus_engine::ForkOptions {
            at_step: o.at_step,
            input: text(o.input),
            context: text(o.context),
            output: text(o.output),
        };
        self.core.fork(&run_id, &options, now).map_err(js_error)
    }

    /// Set a stored DAG run's node to run again (JSON `{ node, output? }`) with its
    /// downstream; `resume` runs it.
    #[napi]
    pub fn rerun(&self, run_id: String, options: String, clock: u32) -> Result<()> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Rerun<'a> {
            node: String,
            #[serde(borrow)]
            output: Option<&'a serde_json::value::RawValue>,
        }
        let o: Rerun = serde_json::from_str(&options).map_err(|e| {
            coded(
                "ERR_INVALID_ARGUMENT",
                format!("rerun(runId, options): {e}"),
            )
        })?;
        let now = with_ctx(|c| c.rt.now(clock)) as i64;
        let options = ramus_engine::RerunOptions {
            node: o.node,
            output: o.output.map(|r| r.get().to_owned()),
        };
        self.core.rerun(&run_id, &options, now).map_err(js_error)
    }

    /// Merge `patch` (a JSON object) into a stored DAG run's input and set the nodes that
    /// use a changed key to run again; returns them. `resume` runs it.
    #[napi]
    pub fn update_input(&self, run_id: String, patch: String, clock: u32) -> Result<Vec<String>> {
        let now = with_ctx(|c| c.rt.now(clock)) as i64;
        self.core
            .update_input(&run_id, &patch, now)
            .map_err(js_error)
    }

    /// A machine run's context when one of its steps started, JSON.
    #[napi]
    pub fn context_at(&self, run_id: String, step_id: String) -> Result<String> {
        self.core
            .context_at(&run_id, &step_id)
            .map(|v| v.to_string())
            .map_err(js_error)
    }

    /// The ids of the top-level runs that have not ended, in the order `resumeAll` resumes
    /// them (the earliest due timer first, then the oldest).
    #[napi]
    pub fn resumable(&self, name: Option<String>) -> Result<Vec<String>> {
        self.core.resumable(name.as_deref()).map_err(js_error)
    }

    /// Continue a stored run here: returns JSON `{ run, definition: { name, version },
    /// name, input, status?: [machine status, current state], …plan }` (see [`face_plan`]);
    /// the run is created and ready to start.
    #[napi]
    pub fn resume(&self, run_id: String, flags: u32, clock: u32, sync: bool) -> Result<String> {
        let now = with_ctx(|c| c.rt.now(clock)) as i64;
        let plan = self.core.resume_plan(&run_id, now).map_err(js_error)?;
        let def = Arc::clone(&plan.def);
        let mut opts = defs::run_options(
            &NativeDefinition {
                inner: Arc::clone(&def),
            },
            flags,
            -1,
            0,
            clock,
            Some(&json!({ "name": plan.row.name }).to_string()),
        )?;
        opts.run_id = Some(
            run_id
                .parse()
                .map_err(|_| coded("ERR_INVALID_ARGUMENT", format!("not a run id: {run_id}")))?,
        );
        plan.continuation.continue_run(
            &run_id,
            Arc::clone(self.core.store()),
            sync,
            true,
            &mut opts,
        );
        let (key, continued, status) = ctx(|c| {
            let key = c.rt.create(def, opts).map_err(js_error)?;
            let live = c.rt.get_mut(key);
            // Where a machine is before it starts again (its status records come with the start).
            let status = live.as_ref().and_then(|l| match &l.exec {
                Executor::Machine(m) => Some((m.status().code(), m.current())),
                Executor::Dag(_) => None,
            });
            let continued = live.and_then(|l| l.take_continued());
            Ok::<_, crate::JsError>((key, continued, status))
        })?;
        let mut face = face_plan(continued.unwrap_or_default());
        if let Some((status, current)) = status {
            face["status"] = json!([status, current]);
        }
        face["run"] = json!(pack(key));
        face["definition"] =
            json!({ "name": plan.row.definition_name, "version": plan.row.definition_version });
        face["name"] = json!(plan.row.name);
        face["input"] = json!(plan.row.input.as_deref().map(raw_json));
        Ok(face.to_string())
    }

    /// Store an event for a run nobody runs here; returns its id.
    #[napi]
    pub fn send_stored(
        &self,
        run_id: String,
        event_type: String,
        data: Option<String>,
        queue: bool,
    ) -> Result<String> {
        self.core
            .send_stored(&run_id, &event_type, data, queue)
            .map_err(js_error)
    }

    /// Keep an event sent to a run live here in its log (already taken); returns its id.
    #[napi]
    pub fn record_event(
        &self,
        run_id: String,
        event_type: String,
        data: Option<String>,
        queue: bool,
    ) -> Result<String> {
        self.core
            .record_event(&run_id, &event_type, data, queue, true)
            .map_err(js_error)
    }

    /// Look for events other processes store for this live run (`row` is its row id).
    #[napi]
    pub fn watch(&self, run: i32, row: String) {
        self.watched.watch(&row, run, []);
        // `&self`: a claim out on the thread pool holds a borrow of this engine, and a
        // run resumed meanwhile must still be watched.
        if !self.polling.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.spawn_poller();
        }
    }

    /// Stop looking for a run's events (it ended, or is no longer live here).
    #[napi]
    pub fn unwatch(&self, row: String) {
        self.watched.unwatch(&row);
    }

    fn spawn_poller(&self) {
        let Some(deliver) = self.deliver.clone() else {
            return;
        };
        let watched = Arc::clone(&self.watched);
        let store = Arc::clone(&self.sqlite);
        let poll = self.poll;
        TOKIO.spawn(async move {
            loop {
                tokio::time::sleep(poll).await;
                if Arc::strong_count(&watched) == 1 {
                    return;
                }
                let batch = poll_once(&watched, &store);
                if let Some(json) = batch {
                    deliver.call(json, ThreadsafeFunctionCallMode::NonBlocking);
                }
            }
        });
    }

    /// One event for many runs, in one commit: `pending` find it stored, `taken` are live
    /// here and take it at once. Returns the event ids, `pending`'s first.
    #[napi]
    pub fn record_events(
        &self,
        pending: Vec<String>,
        taken: Vec<String>,
        event_type: String,
        data: Option<String>,
        queue: bool,
    ) -> Result<Vec<String>> {
        let runs: Vec<(String, bool)> = pending
            .into_iter()
            .map(|r| (r, false))
            .chain(taken.into_iter().map(|r| (r, true)))
            .collect();
        self.core
            .record_events(&runs, &event_type, data, queue)
            .map_err(js_error)
    }

    /// How long a lease lasts without renewal (ms).
    #[napi]
    pub fn set_lease_ms(&self, ms: f64) {
        self.core.set_lease_ms(ms as i64);
    }

    /// This engine as the holder of leases.
    #[napi(getter)]
    pub fn owner(&self) -> String {
        self.core.owner().to_owned()
    }

    /// Renew the leases of the runs this engine holds at `clock`'s now; returns the ids of
    /// those another engine took over meanwhile.
    #[napi]
    pub fn renew_leases(&self, clock: u32) -> Result<Vec<String>> {
        let now = with_ctx(|c| c.rt.now(clock)) as i64;
        self.core.renew(now).map_err(js_error)
    }

    /// A run ended or left this engine: its lease is not renewed any more.
    #[napi]
    pub fn let_go(&self, run_id: String) {
        self.core.let_go(&run_id);
    }

    /// Hand back the leases, flush and close the store.
    #[napi]
    pub fn close(&self) -> Result<()> {
        self.watched.clear();
        let released = self.core.release_all().map_err(js_error);
        self.sqlite.close().map_err(store_error)?;
        released
    }
}

/// What the face restores a continued run's values from: `{ done?: { status, output,
/// error }, dag?: { finished, failed }, machine?: { …values, previous }, context, pending }`.
pub(crate) fn face_plan(c: ramus_engine::Continued) -> Value {
    let raw = |t: &Option<String>| t.as_deref().map(raw_json);
    let mut face = json!({
        "context": raw(&c.context),
        "pending": c.pending.iter().map(|e| json!([e.id, e.event_type, raw(&e.data), e.queue])).collect::<Vec<_>>(),
    });
    if let Some((status, output, error)) = &c.done {
        face["done"] =
            json!({ "status": status.as_str(), "output": raw(output), "error": raw(error) });
    }
    if !c.finished.is_empty() || !c.failed.is_empty() {
        let rows = |list: &Vec<(u32, Option<String>)>| {
            list.iter()
                .map(|(n, v)| json!([n, raw(v)]))
                .collect::<Vec<_>>()
        };
        face["dag"] = json!({ "finished": rows(&c.finished), "failed": rows(&c.failed) });
    }
    if let Some((values, previous)) = c.machine {
        let mut v = serde_json::to_value(&values).unwrap_or(Value::Null);
        v["previous"] = json!(previous);
        face["machine"] = v;
    }
    face
}

/// What the face restores a run nested in a step that ran again from (JSON, see
/// [`face_plan`]), or null when it starts anew.
#[napi]
pub fn take_plan(run: i32) -> Option<String> {
    with_ctx(|c| c.rt.get_mut(unpack(run)).and_then(|l| l.take_continued()))
        .map(|continued| face_plan(continued).to_string())
}

fn raw_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// One look for stored events of the watched runs, as the face's `deliver` takes them.
fn poll_once(watched: &Watched<i32>, store: &SqliteStore) -> Option<String> {
    let out: Vec<Value> = watched
        .poll(store)
        .into_iter()
        .map(|(key, e)| {
            json!([
                unpack(key).index,
                e.id,
                e.event_type,
                e.data.as_deref().map(raw_json),
                e.queue
            ])
        })
        .collect();
    (!out.is_empty()).then(|| Value::Array(out).to_string())
}

/// Note the delivery of a stored event to a live run.
#[napi]
pub fn delivered(run: i32, event_id: String) {
    with_ctx(|c| c.rt.delivered(unpack(run), event_id));
}

/// The row id of a live stored run, or null.
#[napi]
pub fn row_id(run: i32) -> Option<String> {
    with_ctx(|c| {
        c.rt.get(unpack(run))
            .and_then(|l| l.row_id().map(str::to_owned))
    })
}

/// Whether the face must pass a run's values as JSON (it is stored or traced), and
/// whether each step commits before the next: bit 1 and bit 2.
#[napi]
pub fn run_flags(run: i32) -> u32 {
    with_ctx(|c| {
        c.rt.get(unpack(run)).map_or(0, |l| {
            l.wants_values() as u32
                | (l.is_sync() as u32) << 1
                | (l.is_durable() as u32) << 2
                | (l.is_continued() as u32) << 3
        })
    })
}

/// The engine closes, or pruned the run: write what it collected, then stop storing it
/// (it goes on in memory; its row stays as it is, resumable).
#[napi]
pub fn detach_store(run: i32) -> Result<()> {
    ctx(|c| c.rt.detach(unpack(run)).map_err(js_error))
}
