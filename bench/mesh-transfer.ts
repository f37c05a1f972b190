// T1 in the mesh: a large artifact produced on agent-a (label zone=a) and consumed on agent-b
// (zone=b), through `pipemesh run --coordinator`. The fetch is timed by agent-b itself: the
// agent reports each input it fetches for an attempt, and the run's event stream carries the
// report of its end (elapsed from the first request to the last chunk stored and verified),
// which the bench follows with the run. Beside it, two intervals on agent-b, each from the
// step's placement (coordinator clock) to its process's first line (`date`, same machine clock):
//   cold: the input is not on agent-b yet: dispatch + fetch from agent-a + materialize + spawn;
//   warm: the same run again (producer reused, consumer `cache: false`): the input is already
//         held, so dispatch + materialize + spawn.
// The cold interval is what a consumer step waits for its input, all told. The producer runs
// first, on its own (same step, same fingerprint: the cold run reuses it); then, untimed, a sync
// and as many bytes as each interval writes are written and freed (see fresh-memory.ts), so that
// neither interval pays this VM's first-touch cost of memory. The agents' transfer counters
// (GET /v1/agents) must show agent-a served and agent-b fetched the bytes (the coordinator
// carries none); the agents' peak resident memory (VmHWM) is read from /proc.

import { mkdtemp, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { stringify } from 'yaml'
import type { HttpCoordinatorClient } from '../src/client/http.js'
import { sync } from './baselines.js'
import { recycleMemory } from './fresh-memory.js'
import { CPU_AGENT, GPU_AGENT, childrenOf, memoryOf, startMesh, type MeshDaemons } from './mesh.js'
import type { RunSummary } from '../src/run/types.js'
import { runCli } from './runner.js'

export interface MeshTransferRep {
  /** Fetch time as agent-b reported it, and the rate it gives. */
  fetchMs: number
  mibPerSec: number
  coldMs: number
  warmMs: number
  /** bytes ÷ cold interval: what a consumer step waits for its input, all told. */
  toStepStartMibPerSec: number
  /** Peak resident memory (VmHWM) so far, per agent process and per agent's step launcher. */
  agentHwm: Record<string, number>
  launcherHwm: Record<string, number>
}

const MIB = 1024 * 1024
const COUNTER_TIMEOUT_MS = 20_000

function producerScript (bytes: number): string {
  // A fast deterministic generator (AES-CTR keystream) where openssl exists: /dev/urandom runs at
  // ~100 MiB/s on a loaded machine. The producer is not what is measured, but it costs time.
  return [
    `n=${bytes}`,
    'if command -v openssl >/dev/null 2>&1; then',
    '  openssl enc -aes-128-ctr -nosalt -pass "pass:pipemesh-bench-$1" -in /dev/zero 2>/dev/null | head -c "$n" > "$2"',
    'else',
    '  head -c "$n" /dev/urandom > "$2"',
    'fi',
    'test "$(wc -c < "$2")" -eq "$n"',
    ''
  ].join('\n')
}

const PRODUCE = {
  command: 'sh produce.sh ${{params.seed}} ${{outputs.blob}}',
  code: ['produce.sh'],
  outputs: ['blob'],
  resources: { labels: { zone: 'a' } }
}

function producerPipeline (): string {
  return stringify({ name: 'bench-t1-produce', params: { seed: 1 }, steps: { produce: PRODUCE } }, { lineWidth: 0 })
}

function pipeline (): string {
  return stringify({
    name: 'bench-t1',
    params: { seed: 1 },
    steps: {
      produce: PRODUCE,
      consume: {
        // The first line is the process's start (ms since the epoch): the end of the interval.
        command: 'date +%s%3N && cat ${{inputs.blob}} > /dev/null',
        inputs: { blob: '${{steps.produce.outputs.blob}}' },
        cache: false,
        resources: { labels: { zone: 'b' } }
      }
    }
  }, { lineWidth: 0 })
}

export class MeshTransferBench {
  private constructor (private readonly mesh: MeshDaemons, private readonly dir: string, private readonly bytes: number) {}

  private get file (): string { return join(this.dir, 'pipeline.yaml') }

  /** Starts the mesh (its own, so the agents' peak memory is T1's) and writes the pipeline. */
  static async start (scratch: string, bytes: number, options: { daemonNodeArgs?: string[] } = {}): Promise<MeshTransferBench> {
    const dir = await mkdtemp(join(scratch, 't1-mesh-'))
    await writeFile(join(dir, 'produce.sh'), producerScript(bytes))
    await writeFile(join(dir, 'pipeline.yaml'), pipeline())
    await writeFile(join(dir, 'produce.yaml'), producerPipeline())
    const mesh = await startMesh(join(dir, 'mesh'), {
      ...options.daemonNodeArgs === undefined ? {} : { nodeArgs: options.daemonNodeArgs },
      warmup: async (warmup, url, env) => {
        const run = await runCli(['run', warmup, '--coordinator', url, '--json'], { env })
        if (run.summary?.status !== 'succeeded') throw new Error(`the warm-up run failed: ${run.error ?? run.summary?.status ?? '?'}`)
        return run.ms
      }
    })
    return new MeshTransferBench(mesh, dir, bytes)
  }

  async stop (): Promise<void> { await this.mesh.stop() }

  async rep (seed: number): Promise<MeshTransferRep> {
    const { client } = this.mesh
    await this.produce(seed)
    await this.levelMemory(2 * this.bytes)
    const before = await counters(client)
    const cold = await this.run(seed)
    await settledCounters(client, before, this.bytes)
    await this.levelMemory(this.bytes)
    const warm = await this.run(seed)
    const coldMs = cold.consumerStart - cold.placedAt
    const warmMs = warm.consumerStart - warm.placedAt
    const fetchMs = cold.fetchMs
    if (fetchMs === undefined) throw new Error(`T1 mesh: no report from ${CPU_AGENT} of the end of fetching the input (no 'fetch' event for consume's blob); a transfer this small may be over before the bench follows the run: try a larger --size-mib`)
    if (warm.fetchMs !== undefined) throw new Error(`T1 mesh: the warm run fetched the input again (${warm.fetchMs} ms); it should have been held`)
    const agentHwm: Record<string, number> = {}
    const launcherHwm: Record<string, number> = {}
    for (const agent of this.mesh.agents) {
      agentHwm[agent.name] = memoryOf(agent.pid)?.hwm ?? NaN
      const launcher = childrenOf(agent.pid, 'launcher')[0]
      if (launcher !== undefined) launcherHwm[agent.name] = memoryOf(launcher)?.hwm ?? NaN
    }
    const mib = this.bytes / MIB
    return { fetchMs, mibPerSec: mib / (fetchMs / 1000), coldMs, warmMs, toStepStartMibPerSec: mib / (coldMs / 1000), agentHwm, launcherHwm }
  }

  private async levelMemory (bytes: number): Promise<void> {
    await sync()
    await recycleMemory(this.dir, bytes)
  }

  /** Runs the producer alone on agent-a, so that the timed runs reuse it. */
  private async produce (seed: number): Promise<void> {
    const run = await runCli(['run', join(this.dir, 'produce.yaml'), '--coordinator', this.mesh.url, '--json', '--param', `seed=${seed}`], { env: this.mesh.cliEnv })
    const produce = run.summary?.steps.find(s => s.id === 'produce')
    if (run.summary?.status !== 'succeeded' || produce?.status !== 'succeeded') throw new Error(`T1 mesh: the producer run ${run.summary?.status ?? 'failed'}: ${run.error ?? produce?.error?.message ?? ''}`)
    if (produce.agent !== GPU_AGENT) throw new Error(`T1 mesh: produce ran on ${produce.agent ?? '?'}, expected ${GPU_AGENT} (zone=a)`)
  }

  /**
   * One `pipemesh run`, checked: the producer reused, the consumer run on agent-b. Submitted
   * detached and followed at once, so that agent-b's report of the fetch's end comes in the
   * run's events. (Events are not replayed: a fetch over before the bench subscribes, ~0.1 s
   * after the submission, would go unseen; a fetch of the default GiB takes seconds.)
   */
  private async run (seed: number): Promise<{ placedAt: number, consumerStart: number, fetchMs?: number }> {
    const { client } = this.mesh
    const submitted = await runCli(['run', this.file, '--coordinator', this.mesh.url, '--json', '--detach', '--param', `seed=${seed}`], { env: this.mesh.cliEnv })
    const runId = submitted.summary?.runId
    if (runId === undefined) throw new Error(`T1 mesh: the run was not submitted: ${submitted.error ?? '?'}`)
    let fetchMs: number | undefined
    for await (const event of client.events(runId)) {
      if (event.type === 'fetch' && event.stepId === 'consume' && event.input === 'blob' && event.done) fetchMs = event.elapsedMs
    }
    const summary = await client.getRun(runId)
    const step = (id: string): RunSummary['steps'][number] | undefined => summary.steps.find(s => s.id === id)
    const produce = step('produce')
    const consume = step('consume')
    if (summary.status !== 'succeeded' || produce === undefined || consume === undefined) {
      throw new Error(`T1 mesh run ${summary.status}: ${JSON.stringify(summary.steps.map(s => [s.id, s.status, s.error?.message]))}`)
    }
    if (produce.status !== 'reused') throw new Error(`T1 mesh: produce was ${produce.status}, expected reused (the producer ran first, on its own)`)
    if (consume.agent !== CPU_AGENT) throw new Error(`T1 mesh: consume ran on ${consume.agent ?? '?'}, expected ${CPU_AGENT} (zone=b)`)
    if (consume.startedAt === undefined) throw new Error('T1 mesh: consume has no startedAt in the summary')
    let consumerStart: number | undefined
    for await (const entry of client.logs(runId, 'consume')) {
      if (/^\d{13}$/.test(entry.line.trim())) { consumerStart = Number(entry.line.trim()); break }
    }
    if (consumerStart === undefined) throw new Error('T1 mesh: the consume step did not log its start time')
    return { placedAt: consume.startedAt, consumerStart, ...fetchMs === undefined ? {} : { fetchMs } }
  }
}

interface Counters { served: number, fetched: number }

/** agent-a's bytes served and agent-b's bytes fetched, as last reported in their heartbeats. */
async function counters (client: HttpCoordinatorClient): Promise<Counters> {
  const agents = await client.agents()
  const a = agents.find(x => x.name === GPU_AGENT)
  const b = agents.find(x => x.name === CPU_AGENT)
  return { served: a?.transfers?.bytesServed ?? 0, fetched: b?.transfers?.bytesFetched ?? 0 }
}

/** Waits for the next heartbeats to report the transfer; throws if the bytes did not go agent to agent. */
async function settledCounters (client: HttpCoordinatorClient, before: Counters, bytes: number): Promise<Counters> {
  const deadline = Date.now() + COUNTER_TIMEOUT_MS
  for (;;) {
    const now = await counters(client)
    if (now.served - before.served >= bytes && now.fetched - before.fetched >= bytes) return now
    if (Date.now() > deadline) {
      throw new Error(`T1 mesh: after ${COUNTER_TIMEOUT_MS / 1000} s the transfer counters show ${GPU_AGENT} served ${now.served - before.served} and ${CPU_AGENT} fetched ${now.fetched - before.fetched} bytes, expected >= ${bytes} each`)
    }
    await new Promise(resolve => setTimeout(resolve, 200))
  }
}
