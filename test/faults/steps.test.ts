// Steps that misbehave, on a real agent process: one that hangs is killed at its timeout with its
// whole process tree; a flaky one is retried with backoff and every attempt is recorded with its
// own log; a run that exceeds its own timeout is stopped; outputs over the agent's size limit are
// refused and logs over its cap lose their middle, each with a message saying so. (Cancelling a run
// leaves no step process on any agent: test/mesh/cancel.test.ts.)

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCli, runCliJson, tempDir } from '../helpers/cli.js'
import { startMesh, type Mesh } from '../helpers/mesh.js'
import { isAlive, waitFor } from '../helpers/wait.js'
import type { Explanation } from '../../src/run/explain.js'
import { LEASE_MS, expectNothingLost, finished, pipeline, step, submit } from './support.js'

describe('misbehaving steps', () => {
  let mesh: Mesh
  let work: Awaited<ReturnType<typeof tempDir>>
  const client = (): string => join(work.path, 'client')
  const pidsOf = async (file: string): Promise<number[]> => (await readFile(file, 'utf8')).trim().split(/\s+/).map(Number)

  beforeAll(async () => {
    work = await tempDir()
    mesh = await startMesh({ leaseMs: LEASE_MS, agents: { solo: ['--resources', 'cpu=4', '--max-artifact-size', '100KiB', '--max-log-size', '4KiB'] } })
  }, 120_000)

  afterAll(async () => {
    await mesh?.stop()
    await work?.cleanup()
  })

  it('a step that hangs is killed at its timeout, with every process it started', async () => {
    const pids = join(work.path, 'hang.pids')
    const file = await pipeline(join(work.path, 'hang'), `name: hang
steps:
  stuck:
    command: sleep 600 & echo "$$ $!" > ${pids}; wait
    timeout: 1s
`)
    const run = await finished(mesh, await submit(mesh, client(), file))
    expect(run.status).toBe('failed')
    const stuck = step(run, 'stuck')
    expect(stuck.status).toBe('failed')
    expect(stuck.error?.code).toBe('TIMEOUT')
    expect(stuck.error?.message).toMatch(/exceeded its timeout of 1s; its process tree was killed/)
    const [shell, sleeper] = await pidsOf(pids)
    await waitFor('the step shell and its background sleep to be gone', () => !isAlive(shell!) && !isAlive(sleeper!) ? true : undefined, 10_000)
    const why = await runCliJson<Explanation>(['explain', run.runId, 'stuck', '--coordinator', mesh.url])
    const attempt = why.json.attempts[0]!
    // Killed at the timeout (SIGTERM, which sh and sleep obey), well before any grace period ends.
    expect(attempt.finishedAt! - attempt.startedAt).toBeLessThan(4000)
  })

  it('a flaky step with retries: 2 fails twice and succeeds on attempt 3; each attempt has its own log', async () => {
    const counter = join(work.path, 'flaky.count')
    const file = await pipeline(join(work.path, 'flaky'), `name: flaky
steps:
  flaky:
    command: n=$(cat ${counter}); n=$((n+1)); echo $n > ${counter}; if [ $n -lt 3 ]; then echo "failing on try $n" >&2; exit 1; fi; echo ok > \${{outputs.out}}
    outputs: [out]
    retries: 2
    cache: false
`)
    // The clean run starts with the counter at 2: it succeeds at once.
    await writeFile(counter, '2')
    const clean = await finished(mesh, await submit(mesh, client(), file))
    expect(step(clean, 'flaky').attempts).toBe(1)

    await writeFile(counter, '0')
    const run = await finished(mesh, await submit(mesh, client(), file))
    expectNothingLost(run, clean)
    const flaky = step(run, 'flaky')
    expect(flaky.attempts).toBe(3)
    expect(flaky.history?.map(a => [a.number, a.state, a.exitCode])).toEqual([[1, 'failed', 1], [2, 'failed', 1], [3, 'succeeded', 0]])
    expect(flaky.history?.every(a => a.agent === 'solo' && a.durationMs !== null)).toBe(true)
    for (const n of [1, 2]) {
      const logs = await runCli(['logs', run.runId, 'flaky', '--attempt', String(n), '--coordinator', mesh.url])
      expect(logs.stdout).toContain(`failing on try ${n}`)
    }
    const last = await runCli(['logs', run.runId, 'flaky', '--coordinator', mesh.url])
    expect(last.stdout).not.toContain('failing on try')
    const status = await runCli(['status', run.runId, '--coordinator', mesh.url])
    expect(status.stdout).toMatch(/attempts of flaky:\n\s+1\. solo: failed, exit 1/)
  })

  it('an exit code marked non-retryable is not retried', async () => {
    const file = await pipeline(join(work.path, 'fatal'), `name: fatal
steps:
  fatal:
    command: exit 3
    retry: { max: 2, backoff: 100ms, nonRetryableExitCodes: [3] }
    cache: false
`)
    const run = await finished(mesh, await submit(mesh, client(), file))
    expect(step(run, 'fatal')).toMatchObject({ status: 'failed', attempts: 1, exitCode: 3 })
    expect(step(run, 'fatal').reason).toMatch(/non-retryable/)
  })

  it('a run that exceeds its own timeout is stopped, and nothing of it keeps running', async () => {
    const pids = join(work.path, 'run-timeout.pids')
    const file = await pipeline(join(work.path, 'run-timeout'), `name: run-timeout
timeout: 2s
steps:
  long:
    command: sleep 600 & echo "$$ $!" > ${pids}; wait
`)
    await rm(pids, { force: true })
    const run = await finished(mesh, await submit(mesh, client(), file))
    expect(run.status).toBe('cancelled')
    expect(run.error).toMatch(/exceeded its timeout of 2s/)
    expect(step(run, 'long').status).toBe('cancelled')
    const [shell, sleeper] = await pidsOf(pids)
    await waitFor('the step processes to be gone', () => !isAlive(shell!) && !isAlive(sleeper!) ? true : undefined, 10_000)
  })

  it("outputs over the agent's size limit are refused and logs over its cap cut in the middle, each with a note", async () => {
    const file = await pipeline(join(work.path, 'limits'), `name: limits
steps:
  big:
    command: head -c 300000 /dev/zero > \${{outputs.out}}
    outputs: [out]
  chatty:
    command: for i in $(seq 1 2000); do echo "line $i of chatter"; done; echo done > \${{outputs.out}}
    outputs: [out]
`)
    const run = await finished(mesh, await submit(mesh, client(), file))
    expect(run.status).toBe('failed')
    const big = step(run, 'big')
    expect(big.status).toBe('failed')
    expect(big.error?.code).toBe('LIMIT_EXCEEDED')
    expect(big.error?.message).toMatch(/storing its outputs failed: .*over the store's artifact size limit of 102400 bytes/)
    expect(big.error?.hint).toMatch(/--max-artifact-size/)
    expect(step(run, 'chatty').status).toBe('succeeded')
    const logs = await runCli(['logs', run.runId, 'chatty', '--coordinator', mesh.url])
    // The beginning, a note, the end: the middle of the 2000 lines is gone.
    expect(logs.stdout).toContain('line 1 of chatter')
    expect(logs.stdout).not.toContain('line 1000 of chatter')
    expect(logs.stdout).toMatch(/log cap of 4096 bytes reached: output from here on is dropped/)
    expect(logs.stdout).toMatch(/\d+ line\(s\), \d+ bytes of output were dropped here; the last \d+ line\(s\) follow/)
    expect(logs.stdout.trimEnd().split('\n').at(-1)).toMatch(/line 2000 of chatter$/)
  })
})
