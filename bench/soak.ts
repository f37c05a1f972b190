// Soak benchmark (`npm run bench:soak`, not part of `npm test` or `npm run bench`): a coordinator
// and three agents as real processes; 20 runs of a 50-step pipeline kept in flight while, every few
// seconds, one agent is killed (kill -9) and started again after a random pause. Every finished
// run's outputs are compared with a clean reference run. Prints runs completed, attempts retried,
// wrong results (must be 0), lost runs (must be 0) and the coordinator's RSS at start and end.
//
//   node dist/bench/soak.js [--duration 3m] [--runs 20] [--steps 50] [--agents 3] [--interval 5s] [--lease 3s] [--json]

import '../src/util/polyfill.js'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { HttpCoordinatorClient } from '../src/client/http.js'
import type { RunSummary } from '../src/run/types.js'
import { parseDuration } from '../src/util/units.js'
import { CLI } from './runner.js'

interface Options { durationMs: number, runs: number, steps: number, agents: number, intervalMs: number, leaseMs: number, drainMs: number, json: boolean }

function options (): Options {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '3m' },
      runs: { type: 'string', default: '20' },
      steps: { type: 'string', default: '50' },
      agents: { type: 'string', default: '3' },
      interval: { type: 'string', default: '5s' },
      lease: { type: 'string', default: '3s' },
      drain: { type: 'string', default: '5m' },
      json: { type: 'boolean', default: false }
    }
  })
  const int = (name: string, v: string | undefined, min: number): number => {
    const n = Number(v)
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be a whole number >= ${min}, got ${String(v)}`)
    return n
  }
  return {
    durationMs: parseDuration(values.duration),
    runs: int('runs', values.runs, 1),
    steps: int('steps', values.steps, 2),
    agents: int('agents', values.agents, 2),
    intervalMs: parseDuration(values.interval),
    leaseMs: parseDuration(values.lease),
    drainMs: parseDuration(values.drain),
    json: values.json
  }
}

/** A daemon started from the built CLI, its output kept for parsing and for the report on failure. */
class Daemon {
  output = ''
  readonly exited: Promise<void>
  constructor (readonly name: string, readonly child: ChildProcess) {
    child.stdout?.on('data', (d: Buffer) => { this.output += d.toString() })
    child.stderr?.on('data', (d: Buffer) => { this.output = (this.output + d.toString()).slice(-200_000) })
    this.exited = new Promise(resolve => { child.once('exit', () => { resolve() }) })
  }

  static start (name: string, args: string[]): Daemon {
    return new Daemon(name, spawn(CLI, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PIPEMESH_LOG_LEVEL: 'warn' } }))
  }

  get alive (): boolean { return this.child.exitCode === null && this.child.signalCode === null }

  async line (pattern: RegExp, timeoutMs = 30_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const m = this.output.match(pattern)
      if (m !== null) return m
      if (!this.alive || Date.now() > deadline) throw new Error(`${this.name} never printed ${String(pattern)}:\n${this.output.slice(-4000)}`)
      await sleep(50)
    }
  }

  async kill (): Promise<void> {
    if (this.alive) this.child.kill('SIGKILL')
    await this.exited
  }
}

/**
 * `steps` steps in layers of five: each step of a layer reads two outputs of the layer before;
 * the first layer writes 256 KiB blobs, so artifacts move between agents. `nonce` changes every
 * fingerprint but no output byte, so a run executes everything (or reuses a run of the same
 * nonce) and must reproduce the reference digests exactly.
 */
function pipelineText (steps: number): string {
  const width = 5
  const lines = ['name: soak', 'params: { nonce: reference }', 'steps:']
  for (let i = 0; i < steps; i++) {
    const layer = Math.floor(i / width)
    const id = `s${i}`
    if (layer === 0) {
      lines.push(`  ${id}:`, `    command: ": \${{params.nonce}}; sleep 0.2; head -c 262144 /dev/zero | tr '\\\\000' ${String.fromCharCode(97 + (i % 26))} > \${{outputs.out}}"`, '    outputs: [out]')
      continue
    }
    const a = (layer - 1) * width + (i % width)
    const b = (layer - 1) * width + ((i + 1) % width)
    lines.push(`  ${id}:`,
      `    command: ": \${{params.nonce}}; sleep 0.2; (cat \${{inputs.a}} \${{inputs.b}}; echo ${id}) | sha256sum | cut -c1-64 > \${{outputs.out}}"`,
      '    inputs:', `      a: \${{steps.s${a}.outputs.out}}`, `      b: \${{steps.s${b}.outputs.out}}`,
      '    outputs: [out]')
  }
  return lines.join('\n') + '\n'
}

async function rssBytes (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
  const kb = /VmRSS:\s+(\d+)/.exec(status)?.[1]
  return kb === undefined ? NaN : Number(kb) * 1024
}

function outputsOf (run: RunSummary): Map<string, string> {
  const out = new Map<string, string>()
  for (const s of run.steps) for (const [name, digest] of Object.entries(s.outputs)) out.set(`${s.id}.${name}`, digest)
  return out
}

async function main (): Promise<void> {
  const opts = options()
  const log = (line: string): void => { if (!opts.json) process.stdout.write(line + '\n') }
  const scratch = await mkdtemp(join(tmpdir(), 'pipemesh-soak-'))
  const daemons: Daemon[] = []
  const coordinator = Daemon.start('coordinator', ['--data', join(scratch, 'coordinator'), 'coordinator', '--api', '127.0.0.1:0', '--lease', `${opts.leaseMs}ms`])
  daemons.push(coordinator)
  try {
    const url = (await coordinator.line(/http api:\s+(\S+)/))[1]!
    const multiaddr = (await coordinator.line(/libp2p:\s+(\S+)/))[1]!
    const client = new HttpCoordinatorClient(url)
    const agents = new Map<string, Daemon>()
    const startAgent = async (name: string, join?: string): Promise<void> => {
      const args = ['--data', `${scratch}/${name}`, 'agent', '--coordinator', multiaddr, '--name', name, '--resources', 'cpu=4,memory=8GiB']
      const d = Daemon.start(name, join === undefined ? args : [...args, '--join', join])
      daemons.push(d)
      agents.set(name, d)
      await d.line(/pipemesh agent/)
    }
    const names = Array.from({ length: opts.agents }, (_, i) => `agent${i + 1}`)
    for (const name of names) await startAgent(name, (await client.createToken(60_000)).token)
    const connected = async (): Promise<number> => (await client.agents()).filter(a => a.connected).length
    for (let t = Date.now(); await connected() < names.length; await sleep(100)) {
      if (Date.now() - t > 60_000) throw new Error('agents did not connect within 60 s')
    }

    const request = (nonce: string): Parameters<HttpCoordinatorClient['submit']>[0] => ({
      pipeline: { text: pipelineText(opts.steps), file: 'soak.yaml' },
      params: { nonce },
      artifacts: { inputs: {}, code: {}, environments: {} }
    })
    const waitRun = async (runId: string): Promise<RunSummary> => {
      for (;;) {
        const run = await client.getRun(runId)
        if (run.status !== 'running') return run
        await sleep(250)
      }
    }
    log(`soak: ${opts.runs} runs of ${opts.steps} steps in flight, ${opts.agents} agents, one killed every ~${opts.intervalMs / 1000} s, for ${opts.durationMs / 1000} s (lease ${opts.leaseMs / 1000} s)`)
    const reference = await waitRun((await client.submit(request('reference'))).runId)
    if (reference.status !== 'succeeded') throw new Error(`the clean reference run ${reference.runId} did not succeed: ${reference.error ?? ''}`)
    const expected = outputsOf(reference)
    const rssStart = await rssBytes(coordinator.child.pid!)

    // Chaos: kill one agent, pause (sometimes less than a lease, sometimes more), start it again.
    const counts = { submitted: 0, completed: 0, failed: 0, wrong: 0, retried: 0, lost: 0, kills: 0, reusedSteps: 0 }
    const problems: string[] = []
    let chaos = true
    const chaosLoop = (async () => {
      let nextKill = Date.now() + opts.intervalMs * (0.5 + Math.random())
      while (chaos) {
        // Kills are spaced from kill to kill; the victim's pause and restart count in the gap.
        await sleep(Math.max(0, nextKill - Date.now()))
        if (!chaos) break
        nextKill = Date.now() + opts.intervalMs * (0.5 + Math.random())
        const name = names[Math.floor(Math.random() * names.length)]!
        await agents.get(name)!.kill()
        counts.kills++
        await sleep(200 + Math.random() * 2 * opts.leaseMs)
        await startAgent(name)
      }
    })()

    // Runs: keep `runs` in flight until the chaos ends. Odd runs share a nonce, so later ones are
    // (partly) reused from earlier ones, whose holders may meanwhile have been killed.
    const inFlight = new Map<string, number>()
    const evaluate = (run: RunSummary): void => {
      for (const s of run.steps) {
        counts.retried += Math.max(0, s.attempts - 1)
        counts.lost += s.history?.filter(a => a.state === 'lost').length ?? 0
        if (s.status === 'reused') counts.reusedSteps++
      }
      if (run.status !== 'succeeded') {
        counts.failed++
        if (problems.length < 10) problems.push(`run ${run.runId} ${run.status}: ${run.error ?? ''}`)
        return
      }
      counts.completed++
      const got = outputsOf(run)
      const bad = [...expected].filter(([k, v]) => got.get(k) !== v)
      if (bad.length > 0 || got.size !== expected.size) {
        counts.wrong++
        problems.push(`run ${run.runId}: WRONG outputs for ${bad.map(([k]) => k).join(', ')}`)
      }
    }
    const started = Date.now()
    let nextReport = started + 10_000
    let seq = 0
    while (Date.now() - started < opts.durationMs || inFlight.size > 0) {
      const chaosOver = Date.now() - started >= opts.durationMs
      if (chaosOver && chaos) {
        chaos = false
        await chaosLoop
        log(`chaos over after ${((Date.now() - started) / 1000).toFixed(0)} s; waiting for ${inFlight.size} runs in flight`)
      }
      if (chaosOver && Date.now() - started > opts.durationMs + opts.drainMs) break
      while (!chaosOver && inFlight.size < opts.runs) {
        const nonce = seq % 2 === 1 ? 'shared' : `run${seq}`
        seq++
        try {
          const run = await client.submit(request(nonce))
          inFlight.set(run.runId, Date.now())
          counts.submitted++
        } catch (err) {
          problems.push(`submit failed: ${(err as Error).message}`)
          break
        }
      }
      for (const runId of [...inFlight.keys()]) {
        const run = await client.getRun(runId).catch(() => undefined)
        if (run === undefined || run.status === 'running') continue
        inFlight.delete(runId)
        evaluate(run)
      }
      if (Date.now() >= nextReport) {
        nextReport += 10_000
        log(`  t=${((Date.now() - started) / 1000).toFixed(0)}s completed ${counts.completed}, failed ${counts.failed}, wrong ${counts.wrong}, in flight ${inFlight.size}, agent kills ${counts.kills}, attempts retried ${counts.retried}, coordinator RSS ${((await rssBytes(coordinator.child.pid!)) / 2 ** 20).toFixed(0)} MiB`)
      }
      await sleep(250)
    }
    chaos = false
    await chaosLoop
    const lostRuns = [...inFlight.keys()]
    const rssEnd = await rssBytes(coordinator.child.pid!)
    const report = {
      durationS: Math.round((Date.now() - started) / 1000),
      runsSubmitted: counts.submitted,
      runsCompleted: counts.completed,
      runsFailed: counts.failed,
      wrongResults: counts.wrong,
      lostRuns: lostRuns.length,
      agentKills: counts.kills,
      attemptsRetried: counts.retried,
      attemptsLost: counts.lost,
      stepsReused: counts.reusedSteps,
      coordinatorRssStartMiB: Number((rssStart / 2 ** 20).toFixed(1)),
      coordinatorRssEndMiB: Number((rssEnd / 2 ** 20).toFixed(1)),
      problems: [...problems, ...lostRuns.map(id => `run ${id} never finished`)]
    }
    if (opts.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n')
    else {
      log(`runs completed:      ${report.runsCompleted} of ${report.runsSubmitted} (failed ${report.runsFailed})`)
      log(`attempts retried:    ${report.attemptsRetried} (${report.attemptsLost} lost to killed agents or missing inputs)`)
      log(`wrong results:       ${report.wrongResults}`)
      log(`lost runs:           ${report.lostRuns}`)
      log(`agent kills:         ${report.agentKills}`)
      log(`coordinator RSS:     ${report.coordinatorRssStartMiB} MiB at start, ${report.coordinatorRssEndMiB} MiB at end`)
      for (const p of report.problems) log(`  ! ${p}`)
    }
    process.exitCode = report.wrongResults > 0 || report.lostRuns > 0 ? 1 : 0
  } catch (err) {
    process.stderr.write(`soak failed: ${(err as Error).stack ?? String(err)}\n`)
    for (const d of daemons.slice(-4)) process.stderr.write(`--- ${d.name}\n${d.output.slice(-3000)}\n`)
    process.exitCode = 1
  } finally {
    await Promise.all(daemons.map(async d => { await d.kill() }))
    await rm(scratch, { recursive: true, force: true })
  }
}

void main()
