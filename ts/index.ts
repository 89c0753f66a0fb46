export { analyzeDag, CompiledDag, DagRunner, runDag } from './dag';
export { DagBuilder } from './dag-types';
export type {
  AnyInputs,
  Dag,
  DagInputs,
  DagNode,
  DagNodes,
  DagNodeState,
  DagOutput,
  DagRunnerOptions,
  LeafOutput,
  NodeArgs,
  NodeResultCache,
  Tools,
} from './dag-types';
export { CancelledError } from './errors';
export type { DagEventType, RamusEvent } from './events';
export { LocalSemaphore, type Semaphore } from './semaphore';
