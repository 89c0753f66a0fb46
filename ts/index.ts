// First: a machine without a native engine gets an error naming its platform (see load-addon.ts).
import './load-addon';
export { analyzeDag, CompiledDag, DagRunner, runDag } from './dag';
export { DagBuilder } from './dag-types';
export { DagNodeRunner, type DagNodeRunnerEvents, type DagNodeRunnerOptions, type RunnerResult } from './node-runner';
export { chain, type ChainNode, type ChainRun, type ChainStep } from './chain';
export { mergeDag, type MergeOptions } from './merge';
export type {
  AnyInputs,
  Dag,
  DagInputs,
  DagNode,
  DagNodes,
  DagNodeState,
  DagOutput,
  DerivedNode,
  DagRunnerOptions,
  LeafOutput,
  NodeArgs,
  NodeResultCache,
  Retry,
  StepCache,
  Tools,
} from './dag-types';
export { CancelledError, DuplicateRunError, LeaseHeldError, LeaseLostError } from './errors';
export { Worker } from './worker';
export type { LimitState } from './limits';
export { betterSqliteCache, calculateCacheKey, fileCache, memoryCache, redisCache, sqliteCache, stableStringify, type RedisLike } from './cache';
export type { DagEventType, MachineEventType, RamusErrorEvent, RamusEvent } from './events';
export { parseDuration, StateMachineRunner, TimeoutError, TransitionTo, transitionTo } from './machine';
export type {
  AnyStateMachine,
  CurrentState,
  Duration,
  EventMap,
  EventOf,
  MachineEvent,
  MachineOutput,
  MachineStatus,
  RunnerOutput,
  SendEvent,
  StateArgs,
  StateMachine,
  StateMachineRunnerOptions,
  StateNode,
  Transition,
  TransitionGuard,
  TransitionGuardInput,
} from './machine-types';
export { defineMachine } from './machine-types';
export { runAll, type RunAllResult } from './run-all';
export { acquireSemaphores, LocalSemaphore, type Semaphore, type SemaphoreCount, type SemaphoreReleaser } from './semaphore';
export { MESSAGE_FROM_USER, type MessageFromUserEvent, type MessageFromUserEventData, type MessageToUserEvent, type MessageToUserEventData } from './chat';
export { toMermaid, type MermaidSource, type ToMermaidOptions } from './mermaid';
export { Engine } from './engine';
export type {
  Definition,
  Durability,
  EngineOptions,
  EnqueueOptions,
  EngineRun,
  EngineRunOf,
  ForkOptions,
  RegisteredCondition,
  RegisteredKeys,
  RegisteredPredicate,
  RegisteredRunner,
  RegisteredRunnerArgs,
  RegistryEntry,
  RunFilter,
  Startable,
  StartOptions,
  StartOptionsOf,
  Storable,
  StoredDag,
  StoredDagNode,
  StoredDagNodeFields,
  StoredRetry,
  StoredMachine,
  StoredRun,
  StoredState,
  StoredStep,
  StoredTransition,
  WorkOptions,
} from './engine';
export { StorageError } from './values';
export { nestAcrossAwaits } from './context';
export { TestClock } from './testing';
export { inspect, inspectorAssets, type InspectActions, type InspectOptions, type Inspector } from './inspect/server';
export { configureTracing, flushTracing, shutdownTracing, type TracingOptions } from './tracing';
