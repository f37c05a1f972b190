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
  stop: () => Promise<void>
}

function spawn (name: string, args: string[], env: Record<string, string> = {}): MeshProcess {
  const proc = execa(process.execPath, [CLI, ...args], {
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

export async function startMesh (options: { leaseMs?: number } = {}): Promise<Mesh> {
  const root = await tempDir('pipemesh-mesh-')
  const coordinator = spawn('coordinator', ['--data', join(root.path, 'coordinator'), 'coordinator', '--api', '127.0.0.1:0', '--lease', `${options.leaseMs ?? 5000}ms`])
  const agents = new Map<string, MeshProcess>()
  const all = (): MeshProcess[] => [coordinator, ...agents.values()]
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
      startAgent: async (name, args = []) => {
        const p = spawn(name, ['--data', join(root.path, name), 'agent', '--coordinator', multiaddr, '--name', name, ...args])
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
    return mesh
  } catch (err) {
    await stop()
    throw err
  }
}
