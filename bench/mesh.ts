// The daemons of the mesh variant: one `pipemesh coordinator` and two `pipemesh agent` processes
// on 127.0.0.1, enrolled with join tokens as the README tells users. Agent "agent-a" declares
// `gpu=1,cpu=1` and label zone=a, "agent-b" `cpu=1` and zone=b: one slot each, so at most two
// steps run at once. Every process is killed by pid on stop, and on exit if the bench dies.

import { spawn, type ChildProcess } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { HttpCoordinatorClient } from '../src/client/http.js'
import { CLI } from './exec.js'
import { discard } from './scratch.js'

export const GPU_AGENT = 'agent-a'
export const CPU_AGENT = 'agent-b'
const OUTPUT_KEEP = 64 * 1024
const START_TIMEOUT_MS = 60_000

export interface Daemon {
  name: string
  pid: number
  /** The last 64 KiB of its stdout and stderr, for error messages. */
  output: () => string
}

export interface MeshStartup {
  /** From spawning the coordinator until both agents are connected. */
  daemonsMs: number
  /** A first two-step run, one step per agent: starts each agent's step launcher. */
  warmupMs: number
}

export interface MeshDaemons {
  url: string
  multiaddr: string
  client: HttpCoordinatorClient
  coordinator: Daemon
  agents: Daemon[]
  startup: MeshStartup
  /** Environment for `pipemesh run --coordinator`: its client state under the mesh's root. */
  cliEnv: NodeJS.ProcessEnv
  stop: () => Promise<void>
}

export interface MeshOptions {
  /** Added to the daemons' environment (PIPEMESH_LOG_LEVEL=debug…). */
  env?: Record<string, string>
  /** Node options for the daemons, before the script (--cpu-prof…: Node 20 refuses it in NODE_OPTIONS). */
  nodeArgs?: string[]
  /** Runs the warm-up pipeline and returns its wall time (ms); throws if it failed. */
  warmup: (file: string, url: string, cliEnv: NodeJS.ProcessEnv) => Promise<number>
}

// Every daemon alive, so that a bench that crashes or is interrupted leaves none behind.
const live = new Set<ChildProcess>()
process.on('exit', () => { for (const child of live) { try { child.kill('SIGKILL') } catch {} } })

interface Spawned extends Daemon { child: ChildProcess, exited: Promise<void>, waitFor: (pattern: RegExp) => Promise<RegExpMatchArray> }

function startDaemon (name: string, args: string[], env: NodeJS.ProcessEnv, nodeArgs: readonly string[]): Spawned {
  // Through the bin, as users start daemons; node options (profiling) need node named first,
  // which skips the bin's shell line, so the same malloc setting is given here.
  const child = nodeArgs.length === 0
    ? spawn(CLI, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, [...nodeArgs, CLI, ...args], { env: { MALLOC_MMAP_THRESHOLD_: '131072', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  if (child.pid === undefined) throw new Error(`could not start ${name}`)
  live.add(child)
  let out = ''
  const waiters = new Set<() => void>()
  const onData = (b: Buffer): void => {
    out += b.toString('utf8')
    if (out.length > 2 * OUTPUT_KEEP) out = out.slice(-OUTPUT_KEEP)
    for (const w of waiters) w()
  }
  child.stdout?.on('data', onData)
  child.stderr?.on('data', onData)
  const exited = new Promise<void>(resolve => { child.once('exit', () => { live.delete(child); for (const w of waiters) w(); resolve() }) })
  const waitFor = async (pattern: RegExp): Promise<RegExpMatchArray> => await new Promise((resolve, reject) => {
    const check = (): void => {
      const m = out.match(pattern)
      if (m !== null) { done(); resolve(m); return }
      if (child.exitCode !== null || child.signalCode !== null) { done(); reject(new Error(`${name} exited (${child.exitCode ?? child.signalCode ?? '?'}) before printing ${String(pattern)}:\n${out.slice(-2000)}`)) }
    }
    const timer = setTimeout(() => { done(); reject(new Error(`${name} did not print ${String(pattern)} within ${START_TIMEOUT_MS} ms:\n${out.slice(-2000)}`)) }, START_TIMEOUT_MS)
    const done = (): void => { clearTimeout(timer); waiters.delete(check) }
    waiters.add(check)
    check()
  })
  return { name, pid: child.pid, child, exited, waitFor, output: () => out.slice(-OUTPUT_KEEP) }
}

/** SIGTERM (the daemons stop cleanly), SIGKILL whatever is still there after 10 s. */
async function stopDaemons (daemons: readonly Spawned[]): Promise<void> {
  for (const d of daemons) d.child.kill('SIGTERM')
  const timer = setTimeout(() => { for (const d of daemons) d.child.kill('SIGKILL') }, 10_000)
  await Promise.all(daemons.map(async d => await d.exited))
  clearTimeout(timer)
}

/** A two-step pipeline, one step pinned to each agent by its zone label. */
export function warmupPipeline (): string {
  const step = (zone: string): unknown => ({ command: 'true', cache: false, resources: { labels: { zone } } })
  return stringify({ name: 'bench-warmup', steps: { on_a: step('a'), on_b: step('b') } })
}

/** Starts coordinator and agents under `root` (created), waits until both agents are connected, warms them up. */
export async function startMesh (root: string, options: MeshOptions): Promise<MeshDaemons> {
  await mkdir(root, { recursive: true })
  const env: NodeJS.ProcessEnv = { ...process.env, PIPEMESH_LOG_LEVEL: 'info', ...options.env }
  delete env.PIPEMESH_COORDINATOR
  const nodeArgs = options.nodeArgs ?? []
  const started: Spawned[] = []
  const t0 = performance.now()
  try {
    const coordinator = startDaemon('coordinator', ['--data', join(root, 'coordinator'), 'coordinator', '--api', '127.0.0.1:0'], env, nodeArgs)
    started.push(coordinator)
    const url = (await coordinator.waitFor(/http api:\s+(\S+)/))[1]!
    const multiaddr = (await coordinator.waitFor(/libp2p:\s+(\S+)/))[1]!
    const client = new HttpCoordinatorClient(url)
    const agentArgs: Array<[string, string[]]> = [
      [GPU_AGENT, ['--resources', 'gpu=1,cpu=1', '--label', 'zone=a']],
      [CPU_AGENT, ['--resources', 'cpu=1', '--label', 'zone=b']]
    ]
    const agents = await Promise.all(agentArgs.map(async ([name, extra]) => {
      const { token } = await client.createToken(60_000)
      const agent = startDaemon(name, ['--data', join(root, name), 'agent', '--coordinator', multiaddr, '--name', name, '--join', token, ...extra], env, nodeArgs)
      started.push(agent)
      return agent
    }))
    await waitForAgents(client, agents)
    const daemonsMs = performance.now() - t0
    const cliEnv: NodeJS.ProcessEnv = { ...process.env, PIPEMESH_HOME: join(root, 'client') }
    delete cliEnv.PIPEMESH_COORDINATOR
    const warmupFile = join(root, 'warmup.yaml')
    await writeFile(warmupFile, warmupPipeline())
    const warmupMs = await options.warmup(warmupFile, url, cliEnv)
    return {
      url,
      multiaddr,
      client,
      coordinator,
      agents,
      startup: { daemonsMs, warmupMs },
      cliEnv,
      stop: async () => {
        await stopDaemons(started)
        await discard(root)
      }
    }
  } catch (err) {
    await stopDaemons(started)
    await discard(root)
    throw err
  }
}

async function waitForAgents (client: HttpCoordinatorClient, agents: readonly Spawned[]): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS
  const names = agents.map(a => a.name)
  for (;;) {
    const connected = new Set((await client.agents()).filter(a => a.connected).map(a => a.name))
    if (names.every(n => connected.has(n))) return
    const dead = agents.find(a => a.child.exitCode !== null || a.child.signalCode !== null)
    if (dead !== undefined) throw new Error(`${dead.name} exited before connecting:\n${dead.output().slice(-2000)}`)
    if (Date.now() > deadline) {
      throw new Error(`agents ${names.filter(n => !connected.has(n)).join(', ')} not connected within ${START_TIMEOUT_MS} ms\n${agents.map(a => `--- ${a.name}\n${a.output().slice(-1000)}`).join('\n')}`)
    }
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

/** Resident memory of a process from /proc (Linux), in bytes: now (VmRSS) and its peak (VmHWM). */
export function memoryOf (pid: number): { rss: number, hwm: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024
    return { rss: kib('VmRSS'), hwm: kib('VmHWM') }
  } catch {
    return undefined
  }
}

/** Pids of the direct children of `pid` whose command line contains `needle` (an agent's step launcher). */
export function childrenOf (pid: number, needle: string): number[] {
  const found: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      // Field 4 (ppid) follows the parenthesised command name, which may itself contain spaces.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      if (ppid === pid && readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(needle)) found.push(Number(entry))
    } catch {}
  }
  return found
}
