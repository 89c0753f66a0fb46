import { describe, test, expect } from 'vitest';
import { createRequire } from 'node:module';
import * as ramus from 'ramus';
import { StateMachineRunner, parseDuration, TimeoutError, transitionTo, runAll } from 'ramus';
import { expectPlainThrow } from './helpers.mjs';

const require = createRequire(import.meta.url);

const make = (config, extra = {}) => new StateMachineRunner({ config, input: null, ...extra });
const ok = (nodes, rest = {}) => ({ name: 'm', initial: 'a', ...rest, nodes });

describe('state machine exports', () => {
  test('ESM exports StateMachineRunner, transitionTo, runAll, TimeoutError and parseDuration', () => {
    for (const name of ['StateMachineRunner', 'transitionTo', 'runAll', 'TimeoutError', 'parseDuration']) {
      expect(typeof ramus[name], name).toBe('function');
    }
  });

  test('CJS exports the same functions as ESM', () => {
    const cjs = require('ramus');
    for (const name of ['StateMachineRunner', 'transitionTo', 'runAll', 'TimeoutError', 'parseDuration']) {
      expect(cjs[name], name).toBe(ramus[name]);
    }
  });

  test('TimeoutError is an Error subclass named TimeoutError', () => {
    const e = new TimeoutError('State x timed out after 1ms');
    expect(e).toBeInstanceOf(Error);
    expect(e).toBeInstanceOf(TimeoutError);
    expect(e.name).toBe('TimeoutError');
    expect(e.message).toBe('State x timed out after 1ms');
  });

  test('a valid machine constructs with status initial at its initial state', () => {
    const r = make(ok({ a: { transition: 'b' }, b: { final: true } }));
    expect(r.state).toBe('a');
    expect(r.machineStatus).toBe('initial');
    expect(r.canStep()).toBe(true);
  });

  test('transitionTo and runAll are callable without a running machine', () => {
    expect(() => transitionTo('a')).not.toThrow();
    expect(typeof runAll([], { timeout: 10 }).then).toBe('function');
  });
});

describe('validation at construction: initial state', () => {
  test('missing config.initial and no options.initial: "No initial state"', () => {
    expectPlainThrow(() => make({ name: 'm', nodes: { a: { final: true } } }), 'No initial state');
  });

  test('empty config.initial: "No initial state"', () => {
    expectPlainThrow(() => make({ name: 'm', initial: '', nodes: { a: { final: true } } }), 'No initial state');
  });

  test('options.initial supplies a missing config.initial', () => {
    const r = make({ name: 'm', nodes: { a: { final: true }, b: { final: true } } }, { initial: 'b' });
    expect(r.state).toBe('b');
  });

  test('config.initial that is not a state: "Initial state X does not exist"', () => {
    expectPlainThrow(() => make(ok({ b: { final: true } }, { initial: 'start' })), 'Initial state start does not exist');
  });

  test('options.initial that is not a state: "Initial state X does not exist"', () => {
    expectPlainThrow(
      () => make(ok({ a: { final: true } }), { initial: 'elsewhere' }),
      'Initial state elsewhere does not exist'
    );
  });

  test('options.initial overrides a valid config.initial', () => {
    const r = make(ok({ a: { transition: 'b' }, b: { final: true } }), { initial: 'b' });
    expect(r.state).toBe('b');
    expect(r.currentState.state).toBe('b');
  });

  test('empty nodes: "Machine M has no states" (before the initial checks)', () => {
    expectPlainThrow(() => make({ name: 'empty-one', initial: 'a', nodes: {} }), 'Machine empty-one has no states');
    expectPlainThrow(() => make({ name: 'empty-two', nodes: {} }), 'Machine empty-two has no states');
  });
});

describe('validation at construction: error states', () => {
  test('machine errorState that is not a state: "Error state X does not exist"', () => {
    expectPlainThrow(
      () => make(ok({ a: { final: true } }, { errorState: 'oops' })),
      'Error state oops does not exist'
    );
  });

  test("a state's errorState that is not a state: \"Error state X does not exist\"", () => {
    expectPlainThrow(
      () => make(ok({ a: { transition: 'b', errorState: 'gone' }, b: { final: true } })),
      'Error state gone does not exist'
    );
  });

  test('valid machine and state error states construct', () => {
    expect(() =>
      make(ok({ a: { transition: 'b', errorState: 'e2' }, b: { final: true }, e1: { final: true }, e2: { final: true } }, { errorState: 'e1' }))
    ).not.toThrow();
  });
});

describe('validation at construction: transition targets', () => {
  test('string transition to an unknown state', () => {
    expectPlainThrow(
      () => make(ok({ a: { transition: 'nowhere' } })),
      'State a Transition target nowhere does not exist'
    );
  });

  test('event map with an unknown string target', () => {
    expectPlainThrow(
      () => make(ok({ a: { transition: { go: 'b', stop: 'halt' } }, b: { final: true } })),
      'State a Transition target halt does not exist'
    );
  });

  test("'' transition object with an unknown state", () => {
    expectPlainThrow(
      () => make(ok({ a: { transition: 'b' }, b: { transition: { '': { state: 'zzz' } } } })),
      'State b Transition target zzz does not exist'
    );
  });

  test('guarded array with one unknown state among valid ones', () => {
    expectPlainThrow(
      () =>
        make(
          ok({
            a: {
              transition: {
                go: [
                  { state: 'b', condition: () => true },
                  { state: 'missing', condition: () => true },
                ],
              },
            },
            b: { final: true },
          })
        ),
      'State a Transition target missing does not exist'
    );
  });

  test('transition with delay and an unknown state', () => {
    expectPlainThrow(
      () => make(ok({ a: { transition: { '': { state: 'later', delay: 10 } } } })),
      'State a Transition target later does not exist'
    );
  });

  test('timeout target that is not a state: "State S timeout target T does not exist"', () => {
    expectPlainThrow(
      () => make(ok({ a: { transition: 'b', timeout: { after: 100, state: 'slow' } }, b: { final: true } })),
      'State a timeout target slow does not exist'
    );
  });
});

describe('validation at construction: durations', () => {
  test('unparseable delay string: "State S has an invalid delay: D"', () => {
    expectPlainThrow(
      () => make(ok({ a: { transition: { '': { state: 'b', delay: 'soon' } } }, b: { final: true } })),
      'State a has an invalid delay: soon'
    );
  });

  test('unparseable delay inside a guarded array', () => {
    expectPlainThrow(
      () =>
        make(
          ok({
            a: { transition: 'b' },
            b: { transition: { go: [{ state: 'c', delay: '10 parsecs' }] } },
            c: { final: true },
          })
        ),
      'State b has an invalid delay: 10 parsecs'
    );
  });

  test('unparseable timeout: "State S has an invalid timeout: D"', () => {
    expectPlainThrow(
      () => make(ok({ a: { transition: 'b', timeout: { after: 'forever', state: 'b' } }, b: { final: true } })),
      'State a has an invalid timeout: forever'
    );
  });

  test('valid duration strings and numbers construct', () => {
    expect(() =>
      make(
        ok({
          a: {
            timeout: { after: '15m', state: 'b' },
            transition: { '': { state: 'b', delay: '250ms' }, go: { state: 'b', delay: 90 }, x: [{ state: 'b', delay: '30d' }] },
          },
          b: { final: true, timeout: { after: 5000, state: 'a' } },
        })
      )
    ).not.toThrow();
  });
});

describe('parseDuration', () => {
  test.each([
    ['250ms', 250],
    ['90s', 90_000],
    ['15m', 900_000],
    ['2h', 7_200_000],
    ['30d', 2_592_000_000],
    ['1s', 1000],
    ['0ms', 0],
  ])('%s = %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  test('a number is milliseconds', () => {
    expect(parseDuration(1234)).toBe(1234);
  });

  test('garbage does not parse to a number of milliseconds', () => {
    let result;
    let threw = false;
    try {
      result = parseDuration('soon');
    } catch {
      threw = true;
    }
    expect(threw || result === undefined || result === null || Number.isNaN(result)).toBe(true);
  });
});
