// Steps that keep a checkpoint directory resume instead of starting over: after their agent is
// killed mid-step (on the other agent), after a failed attempt (its retry), and in the next run
// of a pipeline whose run failed (same fingerprint). Real coordinator and agent processes; the
// step is a shell loop that counts epochs into its checkpoint directory.

import { describe, expect, it } from 'vitest'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCli, runCliJson } from '../helpers/cli.js'
import { waitForCounters } from '../helpers/mesh.js'
import { isAlive, waitFor } from '../helpers/wait.js'
import type { Explanation } from '../../src/run/explain.js'
import type { StepSummary } from '../../src/run/types.js'
import type { Digest } from '../../src/store/types.js'
import { finished, Gate, pipeline, step, stepWhere, submit, twoAgentMesh } from './support.js'

/**
 * Shell text that reads the epoch to start from (0 when the checkpoint directory is empty),
 * prints it, and counts on, each epoch written under a temporary name and renamed.
 */
function epochs (until: string): string {
  return `e=0; [ -f ckpt/epoch ] && e=$(cat ckpt/epoch); echo "start $e"; i=$e; while ${until}; do i=$((i+1)); echo $i > ckpt/epoch.tmp && mv ckpt/epoch.tmp ckpt/epoch; sleep 0.02; done`
}

/**
 * A one-step pipeline whose step counts epochs into its checkpoint directory (saved every
 * 200 ms) until the gate opens, then writes where it started and ended; it records its pid for
 * the gate. Started, it waits until a save has reached the coordinator. Returns the gate, the run
 * and the step as it was then.
 */
async function gatedTraining (fx: ReturnType<typeof twoAgentMesh>, name: string): Promise<{ gate: Gate, runId: string, saved: StepSummary }> {
  const gate = await Gate.create(join(fx.dir, name))
  const file = await pipeline(join(fx.dir, `${name}-p`), `name: resume-${name}
steps:
  train:
    command: |
      echo $$ > ${gate.dir}/pids/$PIPEMESH_STEP.$PIPEMESH_ATTEMPT
      ${epochs(`[ ! -e ${gate.dir}/open ]`)}
      echo "started at $e, ended at $i" > \${{outputs.out}}
    outputs: [out]
    checkpoint: { path: ckpt, every: 200ms }
    cache: false
`)
  const runId = await submit(fx.mesh, fx.client, file)
  // A save has reached the coordinator: the step has something to resume from.
  const saved = await stepWhere(fx.mesh, runId, 'train', s => s.status === 'running' && s.checkpoint !== undefined, 'to report a checkpoint save')
  return { gate, runId, saved }
}

describe('checkpoints', () => {
  const fx = twoAgentMesh()

  async function output (runId: string, stepId: string): Promise<string> {
    const dest = join(fx.dir, `${runId}-${stepId}`)
    const got = await runCliJson(['--data', fx.client, 'artifacts', 'get', `${runId}/${stepId}/out`, dest, '--coordinator', fx.mesh.url])
    expect(got.exitCode, got.stderr).toBe(0)
    return await readFile(dest, 'utf8')
  }

  it('agent killed mid-step: the step resumes on the other agent from its last save', async () => {
    const { gate, runId, saved } = await gatedTraining(fx, 'kill')
    expect(saved.checkpoint).toMatchObject({ runId, attempt: 1, agent: saved.agent })
    const victim = saved.agent!
    const other = victim === 'a1' ? 'a2' : 'a1'
    // ...and the other agent has pulled a copy of it (or of a later save).
    await waitForCounters(fx.mesh, c => (c[other]?.bytesFetched ?? 0) > 0)
    await fx.mesh.signalAgent(victim, 'SIGKILL')

    const moved = await stepWhere(fx.mesh, runId, 'train', s => s.status === 'running' && s.attempts === 2, 'to run again on the other agent', 20_000)
    expect(moved.agent).toBe(other)
    await waitFor('the second attempt to start', async () => await gate.pid('train', 2))
    await gate.open()
    const run = await finished(fx.mesh, runId)
    expect(run.status, JSON.stringify(run, null, 2)).toBe('succeeded')
    const [, start, end] = /started at (\d+), ended at (\d+)/.exec(await output(runId, 'train')) ?? []
    // It went on from a save attempt 1 made, although the agent that made it is dead: the
    // coordinator had the other agent keep a copy of each save.
    expect(Number(start)).toBeGreaterThan(0)
    expect(Number(end)).toBeGreaterThanOrEqual(Number(start))
    expect(step(run, 'train').history?.map(a => [a.number, a.agent, a.state, a.resumedFrom?.attempt])).toEqual([[1, victim, 'lost', undefined], [2, other, 'succeeded', 1]])

    const why = await runCli(['explain', runId, 'train', '--coordinator', fx.mesh.url])
    expect(why.stdout).toContain(`resumed from the checkpoint saved by attempt 1 on ${victim}`)
    const orphan = (await gate.pid('train', 1))!
    await waitFor('the orphaned step of the killed agent to end', () => isAlive(orphan) ? undefined : true)
    await fx.restart(victim)
  })

  it('an agent stopped with SIGTERM hands its step back with a last save, and the step resumes elsewhere', async () => {
    const { gate, runId, saved } = await gatedTraining(fx, 'term')
    const victim = saved.agent!
    const other = victim === 'a1' ? 'a2' : 'a1'
    // The agent gives its running step its stop grace (1 s here: --stop-grace) before it hands it back.
    await fx.mesh.signalAgent(victim, 'SIGTERM')
    const moved = await stepWhere(fx.mesh, runId, 'train', s => s.status === 'running' && s.agent === other, 'to run again on the other agent', 40_000)
    expect(moved.history?.[0]).toMatchObject({ agent: victim, state: 'cancelled' })
    await waitFor('the step to start on the other agent', async () => await gate.pid('train', moved.attempts))
    await gate.open()
    const run = await finished(fx.mesh, runId)
    expect(run.status, JSON.stringify(run, null, 2)).toBe('succeeded')
    const [, start] = /started at (\d+), ended at (\d+)/.exec(await output(runId, 'train')) ?? []
    expect(Number(start)).toBeGreaterThan(0)
    expect(step(run, 'train').history?.at(-1)?.resumedFrom?.attempt).toBe(1)
    await fx.restart(victim)
  })

  it('a coordinator restarted mid-step: the adopted attempt\'s saves are recorded again, and the run completes', async () => {
    const { gate, runId } = await gatedTraining(fx, 'restart')
    await fx.mesh.restartCoordinator()
    const restartedAt = Date.now()
    await waitFor('both agents to reconnect', async () => (await fx.mesh.client.agents()).filter(a => a.connected).length === 2 ? true : undefined, 20_000)
    const later = await stepWhere(fx.mesh, runId, 'train', s => (s.checkpoint?.at ?? 0) > restartedAt, 'to report a save taken after the restart', 20_000)
    expect(later).toMatchObject({ status: 'running', attempts: 1 })
    await gate.open()
    const run = await finished(fx.mesh, runId)
    expect(run.status, JSON.stringify(run, null, 2)).toBe('succeeded')
    expect(step(run, 'train').attempts).toBe(1)
    expect(await output(runId, 'train')).toMatch(/^started at 0, ended at \d+\n$/)
  })

  it('a step that succeeds leaves none of its saves on the agent that made them', async () => {
    const { gate, runId, saved } = await gatedTraining(fx, 'done')
    // Several saves, so that some were superseded while the step ran and one is current.
    const seen = new Set([saved.checkpoint!.digest])
    await waitFor('three saves to be reported', async () => {
      const s = step(await fx.mesh.client.getRun(runId), 'train')
      if (s.checkpoint !== undefined) seen.add(s.checkpoint.digest)
      return seen.size >= 3 ? true : undefined
    }, 30_000)
    await gate.open()
    const run = await finished(fx.mesh, runId)
    expect(run.status).toBe('succeeded')
    const runner = (await fx.mesh.client.agents()).find(a => a.name === saved.agent)!
    // (A copy on the other agent goes with its next sweep, batched; the maker's go at once.)
    await waitFor('the agent that made the saves to hold none of them', async () => {
      for (const digest of seen) if ((await fx.mesh.client.locate(digest as Digest)).some(p => p.peerId === runner.id)) return undefined
      return true
    }, 20_000)
  })

  it('a failed attempt\'s retry starts where it stopped', async () => {
    const file = await pipeline(join(fx.dir, 'retry-p'), `name: resume-retry
steps:
  train:
    command: |
      ${epochs('[ $i -lt $((e+5)) ]')}
      [ "$PIPEMESH_ATTEMPT" = 1 ] && { echo "diverged at epoch $i" >&2; exit 1; }
      echo "started at $e, ended at $i" > \${{outputs.out}}
    outputs: [out]
    checkpoint: ckpt
    retry: { max: 1, backoff: 10ms }
`)
    const run = await finished(fx.mesh, await submit(fx.mesh, fx.client, file))
    expect(run.status, JSON.stringify(run, null, 2)).toBe('succeeded')
    // Attempt 1 counted 0 -> 5 and failed; its last save (taken as it ended, not periodically:
    // the interval is the default 10 minutes) is where attempt 2 began.
    expect(await output(run.runId, 'train')).toBe('started at 5, ended at 10\n')
    expect(step(run, 'train').history?.map(a => [a.state, a.resumedFrom?.attempt])).toEqual([['failed', undefined], ['succeeded', 1]])
  })

  it('the next run of a pipeline whose run failed resumes the failed step, then is reused', async () => {
    const gate = await Gate.create(join(fx.dir, 'rerun'))
    const file = await pipeline(join(fx.dir, 'rerun-p'), `name: resume-rerun
steps:
  prep:
    command: echo data > \${{outputs.out}}
    outputs: [out]
  train:
    command: |
      ${epochs('[ $i -lt $((e+5)) ]')}
      [ -e ${gate.dir}/open ] || { echo "out of memory at epoch $i" >&2; exit 1; }
      echo "started at $e, ended at $i" > \${{outputs.out}}
    inputs: { data: "\${{steps.prep.outputs.out}}" }
    outputs: [out]
    checkpoint: ckpt
`)
    const failed = await finished(fx.mesh, await submit(fx.mesh, fx.client, file))
    expect(failed.status).toBe('failed')
    expect(step(failed, 'train').checkpoint).toMatchObject({ runId: failed.runId, attempt: 1 })
    const status = await runCli(['status', failed.runId, '--coordinator', fx.mesh.url])
    expect(status.stdout).toMatch(/checkpoint of train: \d+ B saved by attempt 1 on a[12]/)
    // The save can be downloaded, to see where the training got.
    const saveDir = join(fx.dir, 'failed-save')
    const got = await runCliJson(['--data', fx.client, 'artifacts', 'get', step(failed, 'train').checkpoint!.digest, saveDir, '--coordinator', fx.mesh.url])
    expect(got.exitCode, got.stderr).toBe(0)
    expect(await readFile(join(saveDir, 'epoch'), 'utf8')).toBe('5\n')
    // A mesh gc keeps the save: the step has not succeeded yet.
    const gc = await runCli(['store', 'gc', '--coordinator', fx.mesh.url, '--grace', '0s', '--json'])
    expect(gc.exitCode, gc.stderr).toBe(0)
    // --no-resume: the step starts from an empty directory (and fails again, leaving a save at 5).
    const fresh = await finished(fx.mesh, await submit(fx.mesh, fx.client, file, {}, ['--no-resume']))
    expect(fresh.status).toBe('failed')
    const freshLog = await runCli(['logs', fresh.runId, 'train', '--coordinator', fx.mesh.url])
    expect(freshLog.stdout).toContain('start 0')
    expect(step(fresh, 'train').checkpoint).toMatchObject({ runId: fresh.runId, attempt: 1 })

    await gate.open()
    const resumed = await finished(fx.mesh, await submit(fx.mesh, fx.client, file))
    expect(resumed.status, JSON.stringify(resumed, null, 2)).toBe('succeeded')
    expect(step(resumed, 'prep').status).toBe('reused')
    expect(await output(resumed.runId, 'train')).toBe('started at 5, ended at 10\n')
    const why = await runCliJson<Explanation>(['explain', resumed.runId, 'train', '--coordinator', fx.mesh.url, '--json'])
    expect(why.json.attempts[0]?.resumedFrom).toMatchObject({ runId: fresh.runId, attempt: 1 })
    const text = await runCli(['explain', resumed.runId, 'train', '--coordinator', fx.mesh.url])
    expect(text.stdout).toContain(`resumed from the checkpoint saved by attempt 1 of run ${fresh.runId}`)

    // Succeeded: a third run reuses it, and nothing is left to resume from.
    const again = await finished(fx.mesh, await submit(fx.mesh, fx.client, file))
    expect(again.steps.map(s => s.status)).toEqual(['reused', 'reused'])
    expect(step(again, 'train').checkpoint).toBeUndefined()
  })
})
