// Shared by the fault-injection tests: submitting runs to a real mesh, waiting on step states,
// gates that hold a step running until the test opens them, and the "nothing lost" check
// (every output digest equal to a clean run's).

import { afterAll, beforeAll, expect } from 'vitest'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCliJson, tempDir, writeTree } from '../helpers/cli.js'
import { startMesh, type Mesh } from '../helpers/mesh.js'
import { waitFor, waitForRun } from '../helpers/wait.js'
import type { RunSummary, StepSummary } from '../../src/run/types.js'

export const LEASE_MS = 2000
/** A short stop grace: an agent stopped with SIGTERM hands its steps back after 1 s. */
export const AGENT_ARGS = ['--resources', 'cpu=2', '--stop-grace', '1s']

/**
 * A coordinator with two agents, a1 and a2 (2 CPUs each, a short lease), and a scratch
 * directory, for the tests of the describe block this is called in: started before them,
 * stopped after. `client` is the CLI's data directory.
 */
export function twoAgentMesh (): { readonly mesh: Mesh, readonly dir: string, readonly client: string, restart: (name: string) => Promise<void> } {
  let mesh: Mesh | undefined
  let work: Awaited<ReturnType<typeof tempDir>> | undefined
  beforeAll(async () => {
    work = await tempDir()
    mesh = await startMesh({ leaseMs: LEASE_MS, agents: { a1: AGENT_ARGS, a2: AGENT_ARGS } })
  }, 120_000)
  afterAll(async () => {
    await mesh?.stop()
    await work?.cleanup()
  })
  const ready = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error('the two-agent mesh is not started (used outside a test?)')
    return value
  }
  return {
    get mesh () { return ready(mesh) },
    get dir () { return ready(work).path },
    get client () { return join(ready(work).path, 'client') },
    /** Starts a killed agent again, for the next test, and waits until both are connected. */
    restart: async (name: string) => {
      await ready(mesh).startAgent(name, AGENT_ARGS)
      await ready(mesh).waitForAgents(2)
    }
  }
}

/** Writes `p.yaml` (and any other files) into `dir` and returns the pipeline file's path. */
export async function pipeline (dir: string, yaml: string, files: Record<string, string> = {}): Promise<string> {
  await writeTree(dir, { 'p.yaml': yaml, ...files })
  return join(dir, 'p.yaml')
}

/** Submits through the CLI (which uploads inputs and code) and returns at once. */
export async function submit (mesh: Mesh, clientDir: string, file: string, params: Record<string, string> = {}, extra: string[] = []): Promise<string> {
  const args = ['--data', clientDir, 'run', file, '--coordinator', mesh.url, '--detach', ...extra]
  for (const [k, v] of Object.entries(params)) args.push('--param', `${k}=${v}`)
  const { exitCode, json, stderr } = await runCliJson<RunSummary>(args, { timeoutMs: 60_000 })
  expect(exitCode, `${JSON.stringify(json)}\n${stderr}`).toBe(0)
  return json.runId
}

/**
 * Runs the pipeline once with its gate (in `gateDir`) already open and returns the summary: the
 * fault-free reference a faulty run of it is compared with.
 */
export async function cleanRun (mesh: Mesh, clientDir: string, file: string, gateDir: string, params: Record<string, string> = {}): Promise<RunSummary> {
  const gate = await Gate.create(gateDir, true)
  const clean = await finished(mesh, await submit(mesh, clientDir, file, { ...params, gate: gate.dir }))
  expect(clean.status, JSON.stringify(clean, null, 2)).toBe('succeeded')
  return clean
}

export async function finished (mesh: Mesh, runId: string, timeoutMs = 60_000): Promise<RunSummary> {
  return await waitForRun(mesh.client, runId, r => r.status !== 'running', `run ${runId} to finish`, timeoutMs)
}

export async function stepWhere (mesh: Mesh, runId: string, stepId: string, ok: (s: StepSummary) => boolean, what: string, timeoutMs = 60_000): Promise<StepSummary> {
  const run = await waitForRun(mesh.client, runId, r => r.steps.some(s => s.id === stepId && ok(s)), `step ${stepId} ${what}`, timeoutMs)
  return run.steps.find(s => s.id === stepId)!
}

export function step (run: RunSummary, id: string): StepSummary {
  const s = run.steps.find(x => x.id === id)
  if (s === undefined) throw new Error(`run ${run.runId} has no step ${id}`)
  return s
}

/** Every step's outputs, by step and output name: what must not change under faults. */
export function outputDigests (run: RunSummary): Record<string, Record<string, string>> {
  return Object.fromEntries(run.steps.map(s => [s.id, s.outputs]))
}

/** Asserts the run succeeded and produced exactly the clean run's outputs. */
export function expectNothingLost (run: RunSummary, clean: RunSummary): void {
  expect(run.status, JSON.stringify(run, null, 2)).toBe('succeeded')
  expect(outputDigests(run)).toEqual(outputDigests(clean))
}

/**
 * Shell text for a step command that records the shell's pid in `<gate>/pids/<step>.<attempt>`
 * and then waits until `<gate>/open` exists. `dir` is a path, or a placeholder such as
 * `${{params.gate}}` so that a clean run and a faulty run can use different gates.
 */
export function gateWait (dir = '${{params.gate}}'): string {
  return `echo $$ > ${dir}/pids/$PIPEMESH_STEP.$PIPEMESH_ATTEMPT; while [ ! -e ${dir}/open ]; do sleep 0.05; done`
}

/** A directory the test opens to let gated steps finish. */
export class Gate {
  constructor (readonly dir: string) {}

  static async create (dir: string, open = false): Promise<Gate> {
    const gate = new Gate(dir)
    await mkdir(join(dir, 'pids'), { recursive: true })
    if (open) await gate.open()
    return gate
  }

  async open (): Promise<void> {
    await writeFile(join(this.dir, 'open'), '')
  }

  /** Pid of the gated shell of a step's attempt, once it has started. */
  async pid (stepId: string, attempt: number): Promise<number | undefined> {
    const text = await readFile(join(this.dir, 'pids', `${stepId}.${attempt}`), 'utf8').catch(() => '')
    const pid = Number(text.trim())
    return pid > 0 ? pid : undefined
  }

  async pids (): Promise<number[]> {
    const files = await readdir(join(this.dir, 'pids')).catch(() => [] as string[])
    const pids = await Promise.all(files.map(async f => Number((await readFile(join(this.dir, 'pids', f), 'utf8')).trim())))
    return pids.filter(p => p > 0)
  }
}

/** Text of a process's captured output that matches, or undefined. */
export async function outputMatching (p: { output: () => string }, pattern: RegExp, what: string, timeoutMs = 30_000): Promise<string> {
  return await waitFor(what, () => pattern.exec(p.output())?.[0], timeoutMs, () => p.output().slice(-4000))
}
