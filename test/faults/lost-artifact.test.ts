// Artifacts whose only holders are gone: a step's input made earlier in the run is rebuilt by
// running its producer again, from the run's own records, instead of failing the run; and a reuse
// entry whose outputs nobody holds any more is never reported as a hit.

import { describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { runCliJson } from '../helpers/cli.js'
import { waitFor } from '../helpers/wait.js'
import type { Explanation } from '../../src/run/explain.js'
import { AGENT_ARGS, cleanRun, finished, Gate, gateWait, LEASE_MS, pipeline, step, stepWhere, submit, twoAgentMesh } from './support.js'

describe('lost artifacts', () => {
  const fx = twoAgentMesh()

  it('when the only holder of an intermediate artifact dies before its consumer starts, the producer reruns and the run completes', async () => {
    // The salt keeps the clean run's data apart from the faulty run's: the same bytes made
    // there on the other agent would survive the holder's death and nothing would be lost.
    const file = await pipeline(join(fx.dir, 'p'), `name: lost-artifact
params: { gate: none, salt: none }
steps:
  make:
    command: (printf '%s' \${{params.salt}}; head -c 200000 /dev/zero | tr '\\000' m) > \${{outputs.data}}
    outputs: [data]
    cache: false
  hold:
    command: ${gateWait()}
    after: [make]
    cache: false
  use:
    command: wc -c < \${{inputs.data}} > \${{outputs.n}}
    inputs:
      data: \${{steps.make.outputs.data}}
    outputs: [n]
    after: [hold]
    cache: false
`)
    const clean = await cleanRun(fx.mesh, fx.client, file, join(fx.dir, 'clean'), { salt: 'c' })

    const gate = await Gate.create(join(fx.dir, 'fault'))
    const runId = await submit(fx.mesh, fx.client, file, { gate: gate.dir, salt: 'f' })
    await stepWhere(fx.mesh, runId, 'hold', s => s.status === 'running', 'to run')
    const holder = step(await fx.mesh.client.getRun(runId), 'make').agent!
    const other = holder === 'a1' ? 'a2' : 'a1'
    await fx.mesh.signalAgent(holder, 'SIGKILL')
    await gate.open()

    const run = await finished(fx.mesh, runId)
    expect(run.status, JSON.stringify(run, null, 2)).toBe('succeeded')
    // Same length of data, so the same count: the rebuilt input was read whole.
    expect(step(run, 'use').outputs).toEqual(step(clean, 'use').outputs)
    expect(step(run, 'make').history?.map(a => [a.agent, a.state])).toEqual([[holder, 'succeeded'], [other, 'succeeded']])
    expect(step(run, 'use')).toMatchObject({ agent: other, attempts: 1 })
    await fx.restart(holder)
  })

  it('a reuse entry whose outputs no agent holds any more is not a hit: the step runs again', async () => {
    const file = await pipeline(join(fx.dir, 'r'), `name: reuse-lost
steps:
  solo:
    command: echo solo > \${{outputs.out}}
    outputs: [out]
    resources: { labels: { zone: z1 } }
`)
    await fx.mesh.startAgent('z1a', [...AGENT_ARGS, '--label', 'zone=z1'])
    const first = await finished(fx.mesh, await submit(fx.mesh, fx.client, file))
    expect(step(first, 'solo')).toMatchObject({ status: 'succeeded', agent: 'z1a' })

    await fx.mesh.signalAgent('z1a', 'SIGKILL')
    await fx.mesh.startAgent('z1b', [...AGENT_ARGS, '--label', 'zone=z1'])
    await waitFor('z1a to be given up on', async () => (await fx.mesh.client.agents()).some(a => a.name === 'z1a') ? undefined : true, LEASE_MS * 5)
    const second = await finished(fx.mesh, await submit(fx.mesh, fx.client, file))
    expect(step(second, 'solo')).toMatchObject({ status: 'succeeded', agent: 'z1b' })
    expect(step(second, 'solo').outputs).toEqual(step(first, 'solo').outputs)
    const why = await runCliJson<Explanation>(['explain', second.runId, 'solo', '--coordinator', fx.mesh.url])
    expect(why.json.summary).toMatch(/no longer held by any connected agent/)

    // With its outputs held again, the same fingerprint is reused.
    const third = await finished(fx.mesh, await submit(fx.mesh, fx.client, file))
    expect(step(third, 'solo').status).toBe('reused')
  })
})
