// Corrupt data on disk: a byte flipped in a stored chunk is detected when the chunk is read,
// quarantined, and fetched again from a peer, or, when no good copy is left anywhere, the step that
// made it runs again. `pipemesh store verify --repair` does the same for a whole store. In every
// case the run's results are byte for byte those of a clean run.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHash } from 'node:crypto'
import { open, readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCliJson, tempDir } from '../helpers/cli.js'
import { startMesh, type Mesh } from '../helpers/mesh.js'
import { waitFor } from '../helpers/wait.js'
import type { RunSummary } from '../../src/run/types.js'
import type { VerifyResult } from '../../cli/commands/store.js'
import { LEASE_MS, expectNothingLost, finished, outputMatching, pipeline, step, submit } from './support.js'

/**
 * The artifact the pipelines make: one chunk, large enough to live in a pack, and with no
 * repeating pattern, so that its bytes found in a pack are exactly where its body starts.
 */
const DATA = Buffer.from(Array.from({ length: 50_000 }, (_, i) => `${i + 1}\n`).join(''))
const DATA_HEX = createHash('sha256').update(DATA).digest('hex')
const MAKE = 'seq 1 50000 > ${{outputs.data}}'

/** Where a store's packs hold an intact copy of DATA (the store's index is the agent's, locked). */
async function intactBody (store: string): Promise<{ file: string, offset: number } | undefined> {
  const dir = join(store, 'packs')
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const file = join(dir, name)
    const offset = (await readFile(file)).indexOf(DATA)
    if (offset >= 0) return { file, offset }
  }
  return undefined
}

/** Flips a byte in the middle of the store's intact copy of DATA. */
async function flipByte (store: string): Promise<void> {
  const body = await intactBody(store)
  if (body === undefined) throw new Error(`no intact copy of the test data in ${store} to damage`)
  // One byte written in place: the agent may hold the pack open.
  const at = body.offset + (DATA.length >> 1)
  const fh = await open(body.file, 'r+')
  try {
    await fh.write(Buffer.from([DATA[DATA.length >> 1]! ^ 0x5a]), 0, 1, at)
  } finally {
    await fh.close()
  }
}

async function intact (store: string): Promise<boolean> {
  return await intactBody(store) !== undefined
}

describe('corrupt chunks in a mesh', () => {
  let mesh: Mesh
  let work: Awaited<ReturnType<typeof tempDir>>
  let file: string
  let clean: RunSummary
  const client = (): string => join(work.path, 'client')
  const store = (agent: string): string => join(mesh.dataRoot, agent, 'store')

  beforeAll(async () => {
    work = await tempDir()
    mesh = await startMesh({
      leaseMs: LEASE_MS,
      agents: { ra: ['--resources', 'cpu=2', '--label', 'role=a'], rb: ['--resources', 'cpu=2', '--label', 'role=b'] }
    })
    // make runs on rb (and is reused later); use runs on ra, which fetches the data from rb.
    file = await pipeline(join(work.path, 'p'), `name: corrupt
steps:
  make:
    command: ${MAKE}
    outputs: [data]
    resources: { labels: { role: b } }
  use:
    command: sha256sum \${{inputs.data}} | cut -c1-64 > \${{outputs.sum}}; wc -c < \${{inputs.data}} >> \${{outputs.sum}}
    inputs:
      data: \${{steps.make.outputs.data}}
    outputs: [sum]
    resources: { labels: { role: a } }
    cache: false
`)
    clean = await finished(mesh, await submit(mesh, client(), file))
    expect(clean.status).toBe('succeeded')
    expect(await intact(store('ra'))).toBe(true)
    expect(await intact(store('rb'))).toBe(true)
  }, 120_000)

  afterAll(async () => {
    await mesh?.stop()
    await work?.cleanup()
  })

  it('a flipped byte is detected on read, quarantined and fetched again from a peer; the result is unchanged', async () => {
    await flipByte(store('ra'))
    const run = await finished(mesh, await submit(mesh, client(), file))
    expectNothingLost(run, clean)
    expect(step(run, 'make').status).toBe('reused')
    expect(step(run, 'use')).toMatchObject({ agent: 'ra', attempts: 1 })
    expect((await readdir(join(store('ra'), 'quarantine'))).filter(f => f.startsWith(DATA_HEX))).toHaveLength(1)
    expect(await intact(store('ra'))).toBe(true)
    await outputMatching(mesh.agents.get('ra')!, /stored input is damaged/, 'agent ra to log the repair')
  })

  it('with no good copy left anywhere, the step that made the data runs again', async () => {
    await flipByte(store('ra'))
    await flipByte(store('rb'))
    const run = await finished(mesh, await submit(mesh, client(), file))
    expectNothingLost(run, clean)
    // make was first reused, then run again once both copies turned out corrupt.
    expect(step(run, 'make')).toMatchObject({ status: 'succeeded', agent: 'rb', attempts: 1 })
    const use = step(run, 'use')
    expect(use.attempts).toBeGreaterThanOrEqual(2)
    expect(use.history?.at(-1)).toMatchObject({ agent: 'ra', state: 'succeeded' })
    expect(use.history?.slice(0, -1).every(a => a.state === 'lost')).toBe(true)
    expect(await intact(store('ra'))).toBe(true)
    expect(await intact(store('rb'))).toBe(true)
  })

  it('store verify --repair on a stopped agent fetches damaged artifacts again from the mesh', async () => {
    await mesh.signalAgent('ra', 'SIGKILL')
    await flipByte(store('ra'))
    const repaired = await runCliJson<VerifyResult>(['--data', join(mesh.dataRoot, 'ra'), 'store', 'verify', '--repair', '--coordinator', mesh.url])
    expect(repaired.exitCode, JSON.stringify(repaired.json)).toBe(0)
    expect(repaired.json.corrupt).toEqual([`sha256:${DATA_HEX}`])
    expect(repaired.json.refetched).toEqual([step(clean, 'make').outputs.data])
    expect(repaired.json.dropped).toEqual([])
    expect(await intact(store('ra'))).toBe(true)
    const again = await runCliJson<VerifyResult>(['--data', join(mesh.dataRoot, 'ra'), 'store', 'verify'])
    expect(again.exitCode).toBe(0)
    await mesh.startAgent('ra', ['--resources', 'cpu=2', '--label', 'role=a'])
    await waitFor('ra to reconnect', async () => (await mesh.client.agents()).find(a => a.name === 'ra' && a.connected))
  })
})

describe('store verify --repair without a mesh (embedded mode)', () => {
  let work: Awaited<ReturnType<typeof tempDir>>

  beforeAll(async () => { work = await tempDir() })
  afterAll(async () => { await work?.cleanup() })

  it('quarantines the corrupt chunk, drops the damaged artifact, and the next run rebuilds it', async () => {
    const data = join(work.path, 'state')
    const file = await pipeline(join(work.path, 'p'), `name: embedded-corrupt
steps:
  make:
    command: ${MAKE}
    outputs: [data]
  use:
    command: wc -c < \${{inputs.data}} > \${{outputs.n}}
    inputs:
      data: \${{steps.make.outputs.data}}
    outputs: [n]
`)
    const first = await runCliJson<RunSummary>(['--data', data, 'run', file])
    expect(first.exitCode, first.stderr).toBe(0)
    const chunk = join(data, 'agent', 'store')
    await flipByte(chunk)

    const verify = await runCliJson<VerifyResult>(['--data', data, 'store', 'verify', '--repair'])
    expect(verify.exitCode).toBe(1)
    expect(verify.json.corrupt).toEqual([`sha256:${DATA_HEX}`])
    expect(verify.json.dropped).toEqual([step(first.json, 'make').outputs.data])

    const second = await runCliJson<RunSummary>(['--data', data, 'run', file])
    expect(second.exitCode, second.stderr).toBe(0)
    expectNothingLost(second.json, first.json)
    expect(step(second.json, 'make').status).toBe('succeeded')
    expect(step(second.json, 'use').status).toBe('reused')
    expect(await intact(chunk)).toBe(true)
    const clean = await runCliJson<VerifyResult>(['--data', data, 'store', 'verify'])
    expect(clean.exitCode).toBe(0)
  })
})
