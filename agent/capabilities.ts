// What this machine offers to the mesh: cores, memory, GPUs, OS, free disk, measured at agent start
// and advertised to the coordinator, with `--resources` / `--label` declaring what detection cannot
// see (or standing in a GPU for tests). GPUs come from nvidia-smi directly: systeminformation's
// graphics() only reads nvidia-smi after `lspci` succeeds (absent in most CUDA containers), runs
// it synchronously, and lists display chips (a server's BMC VGA) that no step can compute on.
// Every agent start (and so every embedded `pipemesh run`) pays for detection, so on Linux the
// CPU model and distribution are read from /proc/cpuinfo (via os.cpus) and /etc/os-release:
// systeminformation's osInfo() also runs `hostname`, MAC address and code page probes
// synchronously (~20-40 ms of a blocked event loop) for fields nobody here reads. It is loaded,
// lazily, only on other platforms.

import os from 'node:os'
import { execFile } from 'node:child_process'
import { access, constants as fsConstants, readFile, statfs } from 'node:fs/promises'
import { delimiter, dirname, join, resolve } from 'node:path'
import { closest, distance } from 'fastest-levenshtein'
import { CancelledError, PipemeshError, throwIfAborted } from '../src/errors.js'
import type { GpuInfo } from '../src/scheduler/types.js'
import { parseBytes } from '../src/util/units.js'

export interface ResourceOverrides {
  /** Cores to offer (fractions allowed). */
  cpu?: number
  /** Memory to offer, in bytes. */
  memory?: number
  /** GPU count to offer: fewer hides devices, more adds stand-ins for devices detection missed. */
  gpu?: number
  /** Memory each offered GPU has, in bytes; overrides what was detected. */
  gpuMemory?: number
}

export interface AgentCapabilities {
  hostname: string
  /** Distribution, release and kernel, e.g. `Debian GNU/Linux 12 (linux 6.1.0)`. */
  os: string
  arch: string
  cpu: { model: string, cores: number }
  /** Bytes of memory this process may use (the cgroup limit when lower than the machine's). */
  memory: number
  /** GPUs as detected, before overrides. */
  gpus: GpuInfo[]
  /** Bytes free in the data directory's file system. */
  diskFree: number
  /** What the agent offers the scheduler: detection with overrides applied. */
  capacity: { cpu: number, memory: number, gpus: GpuInfo[] }
  labels: Record<string, string>
  /** Epoch ms. */
  detectedAt: number
  /** What detection could not see or was told to ignore, for the agent to log at start. */
  warnings: string[]
}

export interface DetectOptions {
  dataDir: string
  overrides?: ResourceOverrides
  labels?: Record<string, string>
  signal?: AbortSignal
  /** Longest wait for nvidia-smi, which can hang on a wedged driver. @default 5000 */
  gpuTimeoutMs?: number
}

/** Longest wait for a systeminformation probe; os.* values stand in when it is slower. */
const PROBE_TIMEOUT_MS = 2000
const MiB = 1024 * 1024

export async function detectCapabilities (options: DetectOptions): Promise<AgentCapabilities> {
  const { signal } = options
  throwIfAborted(signal)
  const warnings: string[] = []
  const [described, detected, diskFree] = await Promise.all([
    describeMachine(signal),
    detectNvidiaGpus(options.gpuTimeoutMs ?? 5000, warnings, signal),
    freeDisk(options.dataDir)
  ])
  const gpus = visibleToThisProcess(detected, warnings)

  const cores = os.availableParallelism()
  const limit = process.constrainedMemory()
  const memory = limit > 0 && limit < os.totalmem() ? limit : os.totalmem()
  const { model: cpuModel, distro } = described

  const o = options.overrides ?? {}
  const capacityGpus = offeredGpus(gpus, o, warnings)
  if (o.cpu !== undefined && o.cpu > cores) warnings.push(`declared cpu=${o.cpu}, more than the ${cores} cores detected`)
  if (o.memory !== undefined && o.memory > memory) warnings.push(`declared memory=${o.memory} bytes, more than the ${memory} detected`)

  return {
    hostname: os.hostname(),
    os: `${distro === '' ? os.type() : distro} (${os.platform()} ${os.release()})`,
    arch: os.arch(),
    cpu: { model: cpuModel !== '' ? cpuModel : (os.cpus()[0]?.model.trim() ?? 'unknown'), cores },
    memory,
    gpus,
    diskFree,
    capacity: { cpu: o.cpu ?? cores, memory: o.memory ?? memory, gpus: capacityGpus },
    labels: { ...options.labels },
    detectedAt: Date.now(),
    warnings
  }
}

const RESOURCE_KEYS = { cpu: 'cpu', memory: 'memory', gpu: 'gpu', gpumemory: 'gpuMemory' } as const
const RESOURCE_HINT = 'expected comma-separated key=value pairs from cpu, memory, gpu, gpuMemory, e.g. gpu=2,cpu=8,memory=16GiB'

/** `gpu=2,cpu=8,memory=16GiB,gpuMemory=24GiB` as given to `--resources`. Keys are case-insensitive. */
export function parseResourceOverrides (text: string): ResourceOverrides {
  const out: ResourceOverrides = {}
  if (text.trim() === '') return out
  for (const item of text.split(',')) {
    const bad = (why: string): PipemeshError => new PipemeshError('INVALID_ARGUMENT', `--resources "${text}": ${why}`, { hint: RESOURCE_HINT })
    const eq = item.indexOf('=')
    if (eq < 0) throw bad(item.trim() === '' ? 'empty entry (a stray comma?)' : `"${item.trim()}" has no "=value"`)
    const rawKey = item.slice(0, eq).trim()
    const value = item.slice(eq + 1).trim()
    const key = RESOURCE_KEYS[rawKey.toLowerCase().replace(/[-_]/g, '') as keyof typeof RESOURCE_KEYS]
    if (key === undefined) {
      const names = Object.values(RESOURCE_KEYS)
      const near = closest(rawKey, names)
      throw bad(`unknown resource "${rawKey}"${distance(rawKey.toLowerCase(), near.toLowerCase()) <= 3 ? ` (did you mean ${near}?)` : ''}`)
    }
    if (out[key] !== undefined) throw bad(`${key} is given twice`)
    if (key === 'cpu') {
      const n = Number(value)
      if (value === '' || !Number.isFinite(n) || n <= 0) throw bad(`cpu must be a positive number of cores, got "${value}"`)
      out.cpu = n
    } else if (key === 'gpu') {
      if (!/^\d+$/.test(value)) throw bad(`gpu must be a whole number of devices, got "${value}"`)
      out.gpu = Number(value)
    } else {
      let bytes: number
      try { bytes = parseBytes(value) } catch (err) { throw bad(`${key}: ${(err as Error).message}`) }
      if (bytes <= 0) throw bad(`${key} must be more than zero, got "${value}"`)
      out[key] = bytes
    }
  }
  return out
}

const LABEL_KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,126}[A-Za-z0-9])?$/

/** `--label zone=lab2` values (each may hold several, comma-separated) into one record. */
export function parseLabels (items: string[]): Record<string, string> {
  const out: Record<string, string> = {}
  for (const item of items) {
    for (const pair of item.split(',')) {
      const bad = (why: string): PipemeshError =>
        new PipemeshError('INVALID_ARGUMENT', `--label "${item}": ${why}`, { hint: 'expected key=value, e.g. --label zone=lab2' })
      const eq = pair.indexOf('=')
      if (eq < 0) throw bad(pair.trim() === '' ? 'empty label' : `"${pair.trim()}" has no "=value"`)
      const key = pair.slice(0, eq).trim()
      const value = pair.slice(eq + 1).trim()
      if (!LABEL_KEY.test(key)) throw bad(`label key "${key}" must be 1-128 letters, digits, ".", "_", "-" or "/", starting and ending with a letter or digit`)
      if (value === '' || value.length > 256 || /\s/.test(value)) throw bad(`label ${key} needs a value of 1-256 characters without spaces`)
      if (out[key] !== undefined && out[key] !== value) throw bad(`label ${key} is given twice (${out[key]} and ${value})`)
      out[key] = value
    }
  }
  return out
}

/** CPU model and "distribution release" (empty strings where unknown: os.* values stand in). */
async function describeMachine (signal?: AbortSignal): Promise<{ model: string, distro: string }> {
  if (process.platform === 'linux') {
    return { model: os.cpus()[0]?.model.trim() ?? '', distro: await linuxDistribution() }
  }
  const { default: si } = await import('systeminformation')
  const [cpuInfo, osInfo] = await Promise.all([bounded(si.cpu(), signal), bounded(si.osInfo(), signal)])
  return {
    model: cpuInfo === undefined ? '' : `${cpuInfo.manufacturer} ${cpuInfo.brand}`.trim(),
    distro: osInfo === undefined ? '' : `${osInfo.distro} ${osInfo.release}`.trim()
  }
}

/** `NAME VERSION_ID` from os-release (what systeminformation reports), e.g. `Debian GNU/Linux 12`. */
async function linuxDistribution (): Promise<string> {
  for (const file of ['/etc/os-release', '/usr/lib/os-release']) {
    const text = await readFile(file, 'utf8').catch(() => undefined)
    if (text === undefined) continue
    const fields = new Map<string, string>()
    for (const line of text.split('\n')) {
      const m = /^([A-Z_]+)=(.*)$/.exec(line.trim())
      if (m !== null) fields.set(m[1]!, m[2]!.replace(/^(["'])(.*)\1$/, '$2'))
    }
    return `${fields.get('NAME') ?? ''} ${fields.get('VERSION_ID') ?? ''}`.trim()
  }
  return ''
}

interface ExecResult { stdout: string, stderr: string, exitCode?: number, code?: string, timedOut: boolean, canceled: boolean, failed: boolean }

/** Runs a program to completion without throwing (node:child_process: execa is ~200 KB to load). */
async function run (file: string, args: string[], timeoutMs: number, signal?: AbortSignal): Promise<ExecResult> {
  return await new Promise(resolve => {
    execFile(file, args, { timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8', ...(signal === undefined ? {} : { signal }) }, (err, stdout, stderr) => {
      if (err === null) { resolve({ stdout, stderr, exitCode: 0, timedOut: false, canceled: false, failed: false }); return }
      const e = err as NodeJS.ErrnoException & { code?: string | number, killed?: boolean, signal?: string | null }
      const canceled = signal?.aborted === true
      resolve({
        stdout: String(stdout ?? ''),
        stderr: String(stderr ?? ''),
        ...(typeof e.code === 'number' ? { exitCode: e.code } : {}),
        ...(typeof e.code === 'string' ? { code: e.code } : {}),
        timedOut: !canceled && e.killed === true && e.signal === 'SIGKILL',
        canceled,
        failed: true
      })
    })
  })
}

/** Whether an executable of this name is in one of PATH's directories (as execFile would find it). */
async function onPath (name: string): Promise<boolean> {
  const dirs = (process.env.PATH ?? '').split(delimiter).filter(d => d !== '')
  const found = await Promise.all(dirs.map(async dir => await access(join(dir, name), fsConstants.X_OK).then(() => true, () => false)))
  return found.includes(true)
}

/** NVIDIA GPUs from nvidia-smi; none (with a warning when it exists but fails) otherwise. */
async function detectNvidiaGpus (timeoutMs: number, warnings: string[], signal?: AbortSignal): Promise<GpuInfo[]> {
  // Most machines have no nvidia-smi: looking for it costs a few stats, spawning ~5 ms of this
  // process's time even when the spawn fails.
  if (!await onPath('nvidia-smi')) return []
  const query = '--query-gpu=index,uuid,name,memory.total,driver_version'
  const r = await run('nvidia-smi', [query, '--format=csv,noheader,nounits'], timeoutMs, signal)
  if (r.canceled) throw new CancelledError('capability detection cancelled')
  if (r.code === 'ENOENT') return []
  if (r.timedOut) {
    warnings.push(`nvidia-smi did not answer within ${timeoutMs} ms; no GPU detected`)
    return []
  }
  if (r.failed) {
    const why = `${r.stdout} ${r.stderr}`.trim().split('\n')[0] ?? ''
    warnings.push(`nvidia-smi failed (exit ${r.exitCode ?? '?'}): ${why}; no GPU detected`)
    return []
  }
  const gpus: GpuInfo[] = []
  for (const line of r.stdout.split('\n')) {
    const f = line.split(',').map(s => s.trim())
    if (f.length < 5) continue
    // A model name could hold a comma: the fields around it are fixed.
    const [index, uuid] = f as [string, string]
    const driver = f[f.length - 1] as string
    const mib = Number(f[f.length - 2])
    const gpu: GpuInfo = {
      index: Number(index),
      vendor: 'NVIDIA',
      model: f.slice(2, -2).join(', '),
      memory: Number.isFinite(mib) ? mib * MiB : 0
    }
    if (!/^N\/A|^\[/.test(driver)) gpu.driver = driver
    if (uuid.startsWith('GPU-')) gpu.uuid = uuid
    if (Number.isInteger(gpu.index)) gpus.push(gpu)
  }
  return gpus.sort((a, b) => a.index - b.index)
}

/**
 * An agent started with CUDA_VISIBLE_DEVICES set (to leave other GPUs to people) offers only those
 * devices; nvidia-smi itself ignores the variable. Entries are indices or UUID prefixes.
 */
function visibleToThisProcess (gpus: GpuInfo[], warnings: string[]): GpuInfo[] {
  const visible = process.env.CUDA_VISIBLE_DEVICES
  if (visible === undefined || gpus.length === 0) return gpus
  const wanted = visible.split(',').map(s => s.trim()).filter(s => s !== '')
  const kept = gpus.filter(g => wanted.some(w => w === String(g.index) || (g.uuid !== undefined && w.startsWith('GPU-') && g.uuid.startsWith(w))))
  if (kept.length < gpus.length) warnings.push(`CUDA_VISIBLE_DEVICES=${visible}: offering ${kept.length} of ${gpus.length} GPUs`)
  return kept
}

/** Detected GPUs cut to, or padded with stand-ins up to, the declared count; gpuMemory applied. */
function offeredGpus (gpus: GpuInfo[], o: ResourceOverrides, warnings: string[]): GpuInfo[] {
  let out = gpus.map(g => ({ ...g }))
  if (o.gpu !== undefined && o.gpu < out.length) out = out.slice(0, o.gpu)
  if (o.gpu !== undefined && o.gpu > out.length) {
    let next = out.reduce((m, g) => Math.max(m, g.index + 1), 0)
    const added: number[] = []
    while (out.length < o.gpu) {
      added.push(next)
      out.push({ index: next++, vendor: 'declared', model: 'declared GPU (not detected)', memory: 0 })
    }
    warnings.push(`declared gpu=${o.gpu} but ${gpus.length} detected: offering stand-in device${added.length === 1 ? '' : 's'} ${added.join(', ')}`)
  }
  if (o.gpuMemory !== undefined) out = out.map(g => ({ ...g, memory: o.gpuMemory as number }))
  return out
}

/** Free bytes for an unprivileged writer in the file system holding `dir` (or its nearest existing parent). */
export async function freeDisk (dir: string): Promise<number> {
  let at = resolve(dir)
  for (;;) {
    try {
      const s = await statfs(at)
      return s.bavail * s.bsize
    } catch (err) {
      const parent = dirname(at)
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || parent === at) {
        throw new PipemeshError('INVALID_ARGUMENT', `cannot read free disk space of data dir ${dir}: ${(err as Error).message}`, { cause: err })
      }
      at = parent
    }
  }
}

/** A systeminformation probe, or undefined when it fails or takes longer than PROBE_TIMEOUT_MS. */
async function bounded<T> (probe: Promise<T>, signal?: AbortSignal): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined
  let onAbort: (() => void) | undefined
  try {
    return await Promise.race([
      probe.catch(() => undefined),
      new Promise<undefined>(resolve => { timer = setTimeout(resolve, PROBE_TIMEOUT_MS, undefined) }),
      new Promise<never>((_resolve, reject) => {
        onAbort = () => reject(new CancelledError('capability detection cancelled'))
        signal?.addEventListener('abort', onAbort, { once: true })
      })
    ])
  } finally {
    clearTimeout(timer)
    if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort)
  }
}
