// The README's TypeScript examples compile under `strict` against the package, as a user's
// project would import it.
//
// Every ```ts block of README.md is compiled as its own ES module (top-level `await` works)
// in a new project whose node_modules links `ramus` to this repository (its built lib/).
// A block that is deliberately a fragment is excluded by an HTML comment on the line right
// before it: `<!-- not compiled -->` (the test fails when more than MAX_EXCLUDED are).
// The examples may use the few names declared in ENV below: the program's own clients
// (`llm`, `searchTheWeb`, …) and the definitions earlier sections made (`dag`, `config`),
// as a reader would have them.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, test } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MAX_EXCLUDED = 1;
const ENV = `// What the README's examples assume the program has (see __test__/readme.test.mjs).
import type { Dag, Semaphore, StateMachine } from 'ramus';
declare global {
  /** The program's model client. */
  function llm(prompt: string): Promise<string>;
  function callModel(): Promise<string>;
  function searchTheWeb(topic: string, options: { attempt: number }): Promise<string[]>;
  /** The research DAG and the writer machine of the sections before, DAGs that research or
   * write, and a semaphore shared with other programs. */
  const dag: Dag<{ calls: number }, { topic: string }>;
  const config: StateMachine<{ drafts: number }, { question: string }>;
  const writeDag: Dag<{}, unknown, { text: string; score: number }>;
  const research: Dag<{}, string>;
  const writer: Dag<{}, string, string>;
  const shared: Semaphore;
}
export {};
`;

/** The ```ts blocks of a markdown text, with the line each starts at and whether it is excluded. */
function tsBlocks(markdown) {
  const lines = markdown.split('\n');
  const blocks = [];
  for (let i = 0; i < lines.length; i++) {
    if (!/^```ts\s*$/.test(lines[i])) continue;
    const start = i;
    const body = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]); i++) body.push(lines[i]);
    blocks.push({ line: start + 1, code: body.join('\n'), excluded: /^<!--\s*not compiled\s*-->$/.test(lines[start - 1]?.trim() ?? '') });
  }
  return blocks;
}

const blocks = tsBlocks(readFileSync(join(ROOT, 'README.md'), 'utf8'));
let dir;
let result;
let diagnostics = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ramus-readme-'));
  mkdirSync(join(dir, 'node_modules', '@types'), { recursive: true });
  symlinkSync(ROOT, join(dir, 'node_modules', 'ramus'), 'dir');
  symlinkSync(join(ROOT, 'node_modules', '@types', 'node'), join(dir, 'node_modules', '@types', 'node'), 'dir');
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'readme-examples', private: true, type: 'module' }));
  writeFileSync(join(dir, 'env.d.ts'), ENV);
  const files = ['env.d.ts'];
  for (const b of blocks) {
    if (b.excluded) continue;
    const file = `readme-line-${b.line}.mts`;
    // `export {}`: a block without imports is a module too, so blocks do not share names.
    writeFileSync(join(dir, file), `${b.code}\nexport {};\n`);
    files.push(file);
  }
  const tsconfig = {
    compilerOptions: { strict: true, noEmit: true, target: 'ES2022', lib: ['ES2022'], module: 'NodeNext', moduleResolution: 'NodeNext', types: ['node'], skipLibCheck: true },
    files,
  };
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify(tsconfig));
  result = spawnSync(join(ROOT, 'node_modules', '.bin', 'tsc'), ['-p', 'tsconfig.json', '--pretty', 'false'], { cwd: dir, encoding: 'utf8', timeout: 110_000 });
  diagnostics = `${result.stdout}${result.stderr}`.split('\n').filter((l) => /error TS\d+/.test(l));
}, 120_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('README examples (strict tsc)', () => {
  test('the README has TypeScript examples, and few are excluded', () => {
    expect(blocks.length).toBeGreaterThan(5);
    expect(blocks.filter((b) => b.excluded).map((b) => b.line).length).toBeLessThanOrEqual(MAX_EXCLUDED);
  });

  test('every compiled example type-checks (errors name README.md lines as readme-line-<N>.mts)', () => {
    expect(result.error).toBeUndefined();
    expect(diagnostics).toEqual([]);
    expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
  });
});
