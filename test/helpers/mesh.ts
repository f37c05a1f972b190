// Starts a real mesh for integration tests: one `pipemesh coordinator` process and any number of
// `pipemesh agent` processes on 127.0.0.1 with ephemeral ports, each with its own data dir.
// Everything started is killed by pid in stop().

import { execa, type ResultPromise } from 'execa'
import { join } from 'node:path'
import { CLI, tempDir } from './cli.js'
import { HttpCoordinatorClient } from '../../src/client/http.js'
import type { AgentListEntry } from '../../src/client/api.js'

export interface MeshProcess {
  name: string
  pid: number
  proc: ResultPromise
  output: () => string
}

export interface Mesh {
  url: string
  multiaddr: string
  client: HttpCoordinatorClient
  dataRoot: string
  coordinator: MeshProcess
  agents: Map<string, MeshProcess>
  startAgent: (name: string, args?: string[]) => Promise<MeshProcess>
  waitForAgents: (count: number, timeoutMs?: number) => Promise<AgentListEntry[]>
  /** Sends a signal to an agent (default SIGKILL); for SIGKILL, resolves once it has exited. */
  signalAgent: (name: string, signal?: NodeJS.Signals) => Promise<void>
  /** kill -9 the coordinator and start it again on the same data dir and HTTP port. */
  restartCoordinator: (beforeStart?: () => Promise<void>) => Promise<void>
  stop: () => Promise<void>
}

function spawn (name: string, args: string[], env: Record<string, string> = {}): MeshProcess {
  const proc = execa(CLI, args, {
    env: { PIPEMESH_LOG_LEVEL: 'info', ...env },
    reject: false,
    stdin: 'ignore',
    all: true,
    buffer: { all: true }
  })
  let out = ''
  proc.all?.on('data', (chunk: Buffer) => { out += chunk.toString() })
  if (proc.pid === undefined) throw new Error(`could not start ${name}`)
  return { name, pid: proc.pid, proc, output: () => out }
}

/** Waits until the process prints a line matching `pattern`; fails with its output otherwise. */
async function waitForOutput (p: MeshProcess, pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const m = p.output().match(pattern)
    if (m !== null) return m
    if (p.proc.exitCode !== null || Date.now() > deadline) {
      throw new Error(`${p.name} never printed ${String(pattern)} (exit ${String(p.proc.exitCode)})\n${p.output()}`)
    }
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/**
 * Starts a coordinator and, when `agents` is given (name -> extra agent flags), those agents too,
 * returning once all of them are connected.
 */
export async function startMesh (options: { leaseMs?: number, agents?: Record<string, string[]>, coordinatorArgs?: string[] } = {}): Promise<Mesh> {
  const root = await tempDir('pipemesh-mesh-')
  const coordinatorArgs = (api: string): string[] => ['--data', join(root.path, 'coordinator'), 'coordinator', '--api', api, '--lease', `${options.leaseMs ?? 5000}ms`, ...options.coordinatorArgs ?? []]
  let coordinator = spawn('coordinator', coordinatorArgs('127.0.0.1:0'))
  const agents = new Map<string, MeshProcess>()
  const retired: MeshProcess[] = []
  const all = (): MeshProcess[] => [coordinator, ...agents.values(), ...retired]
  const stop = async (): Promise<void> => {
    for (const p of all()) { try { process.kill(p.pid, 'SIGKILL') } catch {} }
    await Promise.all(all().map(async p => await p.proc))
    await root.cleanup()
  }
  try {
    const url = (await waitForOutput(coordinator, /http api:\s+(\S+)/, 30_000))[1]!
    const multiaddr = (await waitForOutput(coordinator, /libp2p:\s+(\S+)/, 30_000))[1]!
    const client = new HttpCoordinatorClient(url)
    const mesh: Mesh = {
      url,
      multiaddr,
      client,
      dataRoot: root.path,
      coordinator,
      agents,
      stop,
      signalAgent: async (name, signal = 'SIGKILL') => {
        const p = agents.get(name)
        if (p === undefined) throw new Error(`no agent named ${name}`)
        process.kill(p.pid, signal)
        if (signal === 'SIGKILL') await p.proc
      },
      restartCoordinator: async (beforeStart) => {
        const old = coordinator
        process.kill(old.pid, 'SIGKILL')
        await old.proc
        retired.push(old)
        await beforeStart?.()
        // The same HTTP port keeps `url` valid; the libp2p port is reused by the coordinator itself.
        coordinator = spawn('coordinator', coordinatorArgs(new URL(url).host))
        mesh.coordinator = coordinator
        await waitForOutput(coordinator, /http api:\s+(\S+)/, 30_000)
      },
      startAgent: async (name, args = []) => {
        // The secure path, as the README tells users: each new agent enrolls with a join token.
        const enrolled = await client.agents().then(list => list.some(a => a.name === name))
        const joinArgs = enrolled || args.includes('--join') ? [] : ['--join', (await client.createToken(60_000)).token]
        const p = spawn(name, ['--data', join(root.path, name), 'agent', '--coordinator', multiaddr, '--name', name, ...joinArgs, ...args])
        const previous = agents.get(name)
        if (previous !== undefined) retired.push(previous)
        agents.set(name, p)
        await waitForOutput(p, /pipemesh agent/, 30_000)
        return p
      },
      waitForAgents: async (count, timeoutMs = 30_000) => {
        const deadline = Date.now() + timeoutMs
        for (;;) {
          const list = (await client.agents()).filter(a => a.connected)
          if (list.length >= count) return list
          if (Date.now() > deadline) throw new Error(`only ${list.length} of ${count} agents connected within ${timeoutMs} ms\n${all().map(p => `--- ${p.name}\n${p.output()}`).join('\n')}`)
          await new Promise(resolve => setTimeout(resolve, 100))
        }
      }
    }
    const wanted = Object.entries(options.agents ?? {})
    if (wanted.length > 0) {
      await Promise.all(wanted.map(async ([name, args]) => await mesh.startAgent(name, args)))
      await mesh.waitForAgents(wanted.length)
    }
    return mesh
  } catch (err) {
    await stop()
    throw err
  }
}

/** Each agent's transfer counters by name, as the coordinator last heard them. */
export type Counters = Record<string, { bytesServed: number, bytesFetched: number }>

export async function transferCounters (mesh: Mesh): Promise<Counters> {
  const agents = await mesh.client.agents()
  return Object.fromEntries(agents.map(a => [a.name, { bytesServed: a.transfers?.bytesServed ?? 0, bytesFetched: a.transfers?.bytesFetched ?? 0 }]))
}

/** Counters travel with heartbeats, so they lag a transfer: polls until `ok` holds. */
export async function waitForCounters (mesh: Mesh, ok: (c: Counters) => boolean, timeoutMs = 30_000): Promise<Counters> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const counters = await transferCounters(mesh)
    if (ok(counters)) return counters
    if (Date.now() > deadline) throw new Error(`transfer counters never showed the expected bytes: ${JSON.stringify(counters)}`)
    await new Promise(resolve => setTimeout(resolve, 200))
  }
}
