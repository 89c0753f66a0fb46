// napi-rs's names for platforms: the suffix of the per-platform npm package (npm/<name>/) and
// of the .node file. Pure functions, shared by the loader (load-addon.ts) and by
// scripts/package.js.
import { readFileSync } from 'node:fs';

const ARCH: Record<string, string> = { x86_64: 'x64', aarch64: 'arm64', i686: 'ia32', armv7: 'arm', riscv64gc: 'riscv64', s390x: 's390x', powerpc64le: 'ppc64' };

/**
 * napi-rs's name of a Rust target triple (its `platformArchABI`): the suffix of the
 * per-platform package and of the .node file. `x86_64-unknown-linux-gnu` → `linux-x64-gnu`,
 * `aarch64-apple-darwin` → `darwin-arm64`, `x86_64-pc-windows-msvc` → `win32-x64-msvc`.
 */
export function platformOfTriple(triple: string): string {
  const parts = triple.split('-');
  const arch = ARCH[parts[0]!] ?? parts[0]!;
  const abi = parts[parts.length - 1]!;
  if (triple.includes('-darwin')) return `darwin-${arch}`;
  if (triple.includes('-windows-')) return `win32-${arch}-${abi}`;
  if (triple.includes('-android')) return `android-${arch}${arch === 'arm' ? '-eabi' : ''}`;
  if (triple.includes('-freebsd')) return `freebsd-${arch}`;
  if (triple.includes('-linux-')) return `linux-${arch}-${abi}`;
  return triple;
}

function isMusl(): boolean {
  try {
    return readFileSync('/usr/bin/ldd', 'utf8').includes('musl');
  } catch {
    const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
    return !report?.header?.glibcVersionRuntime;
  }
}

/** This process's platform in napi-rs's naming (what ../index.js looks for). */
export function currentPlatform(): string {
  const { platform, arch } = process;
  if (platform === 'linux') {
    const libc = isMusl() ? 'musl' : 'gnu';
    return `linux-${arch}-${arch === 'arm' ? `${libc}eabihf` : libc}`;
  }
  if (platform === 'win32') return `win32-${arch}-msvc`;
  if (platform === 'android') return `android-${arch}${arch === 'arm' ? '-eabi' : ''}`;
  return `${platform}-${arch}`;
}

/** napi's names of the `napi.targets` of a package.json: the platforms with a prebuilt engine. */
export function platformsOf(manifest: { napi?: { targets?: string[] } }): string[] {
  return (manifest.napi?.targets ?? []).map(platformOfTriple);
}

