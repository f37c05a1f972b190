#!/bin/sh
':' //; export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-131072}"; exec node "$0" "$@"
// The line above is read by /bin/sh (':' is its no-op) and by node as a string and a comment.
// The shell sets glibc malloc's mmap threshold, which glibc reads only as a process starts, then
// runs this file with node, as `#!/usr/bin/env node` would. Why: by default glibc raises the
// threshold to the size of any large block it frees, after which the 1 MiB buffers that chunks
// pass through come from its heap, which then fragments and never shrinks. An agent serving
// and fetching chunks grew its heap by ~6 MB per GiB moved (42 -> 91 MB after 7.5 GiB, and
// still growing); fixed at 128 KiB, large buffers are mapped and unmapped whole, and its heap
// stayed at 42-58 MB. A value the user set is kept; musl and macOS ignore the variable.
// `node dist/pipemesh.mjs` runs the same CLI without the setting.
//
// The `pipemesh` bin (copied to dist/pipemesh.mjs by scripts/postbuild.mjs). It runs the bundled
// CLI, dist/pipemesh-bundle.cjs, through a V8 code cache: compiling the bundle's JavaScript is a
// large share of a CLI invocation (~0.1-0.2 s of CPU for an embedded `pipemesh run`), and Node 20
// caches compiled code only for its own modules. The first successful invocation of each kind of
// command writes the bytecode V8 compiled for it; later ones load that instead of compiling.
//
// The cache lives in $XDG_CACHE_HOME/pipemesh (default ~/.cache/pipemesh), one file per
// installation (the bundle's path), Node version and kind of command. Each file starts with a
// stamp of the bundle it was made from (its sha256 as built, and its size, inode and mtime now),
// and is used only for that very bundle: V8 itself checks only the source's length, its own
// version and flags. A rebuild overwrites the files of its installation. Any problem with the cache (unwritable directory, corrupt or rejected data) only
// means compiling as usual. PIPEMESH_CODE_CACHE=0 turns it off.

import { createHash } from 'node:crypto'
import { mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { setFlagsFromString } from 'node:v8'
import vm from 'node:vm'

// Replaced by the build with the bundle's sha256.
const BUNDLE_SHA256 = '__PIPEMESH_BUNDLE_SHA256__'
const bundle = join(dirname(fileURLToPath(import.meta.url)), 'pipemesh-bundle.cjs')

/**
 * Invocations that run much the same code share a cache: a cache holds what its first successful
 * invocation compiled, and loading it costs in proportion to its size (0.8-3 MB here). Runs and
 * the daemons each have their own; other commands are told apart by whether they talk to a
 * coordinator over HTTP or open the local state (LevelDB) in process.
 */
function commandKind (args) {
  // Global options that take a value, so that the value is not taken for the command.
  const withValue = new Set(['--data', '--log-level', '--api-token-file'])
  for (let i = 0; i < args.length; i++) {
    const a = args[i]
    if (withValue.has(a)) { i++; continue }
    if (a.startsWith('-')) continue
    const remote = args.includes('--coordinator') || (process.env.PIPEMESH_COORDINATOR ?? '') !== ''
    if (a === 'coordinator' || (a === 'agent' && args.length > i + 1 && args[i + 1].startsWith('-'))) return a
    if (a === 'run' || a === 'demo') return remote ? 'run-remote' : 'run'
    return remote ? 'remote' : 'local'
  }
  return 'none'
}

function cacheDir () {
  if (process.env.PIPEMESH_CODE_CACHE === '0') return undefined
  try {
    return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'pipemesh')
  } catch {
    return undefined
  }
}

/** Identifies the bundle's content: as built, and unchanged on disk since (hand edits included). */
function bundleStamp () {
  try {
    const st = statSync(bundle, { bigint: true })
    return createHash('sha256').update(`${BUNDLE_SHA256} ${st.size} ${st.ino} ${st.mtimeNs}`).digest()
  } catch {
    return undefined
  }
}

/**
 * How much bytecode a function runs before V8 optimizes it, per kind of command. A daemon runs
 * the same per-step handlers for as long as it lives: with V8's default (66 KiB) they stayed in
 * the baseline tier for thousands of steps, ~20% slower (W1 on the mesh) until about the tenth
 * run; a quarter of that gets there within a few runs, for a slower first one. A run in one
 * process (embedded) is over before most optimizations pay back what they cost the two cores
 * here: 1 MB cut ~10% off W1, and the few truly hot loops (a chatty step's log) still get there.
 */
const INTERRUPT_BUDGET = { coordinator: 16384, agent: 16384, run: 1_000_000 }

/**
 * How far an agent's old generation may grow past what the last full GC left, in percent. V8
 * counts the chunk buffers an agent allocates (its reads, Noise's ciphertext) against that
 * headroom until they are swept, and its default (~1.5x for a heap as small as an agent's,
 * ~16 MB live) started a full GC every ~14 MiB served: ~75 full GCs per GiB, a third of the
 * serving agent's CPU. At 400% (800% did no better) a GiB costs 2-8, and serving ran ~25%
 * faster; with the chunks it serves read into buffers of its main thread (chunk-files.ts), its
 * peak memory is what it was.
 */
const HEAP_GROWING_PERCENT = { agent: 400 }

/**
 * Those figures were measured on Node 20's V8 (11.x), whose tiering differs from later ones; a V8
 * without the flag would print an error for every command. Elsewhere V8 keeps its own budget.
 */
const TUNED_V8_MAJOR = 11

/**
 * Sets `flag` for this process unless node's own command line gives it. Before the bundle is
 * compiled: V8's code cache is only taken under the flags it was made with.
 */
function tune (flag, value) {
  if (value === undefined || process.execArgv.some(a => a.startsWith(flag))) return
  setFlagsFromString(`${flag}=${value}`)
}

const kind = commandKind(process.argv.slice(2))
if (Number(process.versions.v8.split('.')[0]) === TUNED_V8_MAJOR) {
  tune('--interrupt-budget', INTERRUPT_BUDGET[kind])
  tune('--heap-growing-percent', HEAP_GROWING_PERCENT[kind])
}

const dir = cacheDir()
const installation = createHash('sha256').update(bundle).digest('hex').slice(0, 16)
const stamp = bundleStamp()
const cacheFile = dir === undefined || stamp === undefined ? undefined : join(dir, `code-${installation}-${process.version}-${process.arch}-${kind}.bin`)

let cachedData
if (cacheFile !== undefined) {
  try {
    const data = readFileSync(cacheFile)
    if (data.subarray(0, stamp.length).equals(stamp)) cachedData = data.subarray(stamp.length)
  } catch {}
}

// The build leaves the bundle pure ASCII: latin1 reads it exactly, and faster than UTF-8.
const source = readFileSync(bundle, 'latin1')
const script = new vm.Script(source, {
  filename: bundle,
  ...(cachedData === undefined ? {} : { cachedData }),
  importModuleDynamically: vm.constants?.USE_MAIN_CONTEXT_DEFAULT_LOADER
})

if (cacheFile !== undefined && (cachedData === undefined || script.cachedDataRejected === true)) {
  // After a successful command: its bytecode then covers what that kind of command runs.
  process.once('exit', code => {
    if (code !== 0) return
    const tmp = `${cacheFile}.${process.pid}.tmp`
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 })
      writeFileSync(tmp, Buffer.concat([stamp, script.createCachedData()]), { mode: 0o600 })
      renameSync(tmp, cacheFile)
    } catch {
      try { rmSync(tmp, { force: true }) } catch {}
    }
  })
}

// The bundle is one function expression (see postbuild.mjs), called as Node calls a CommonJS module.
const module = { exports: {} }
script.runInThisContext()(module.exports, createRequire(bundle), module, bundle, dirname(bundle), pathToFileURL(bundle).href)
