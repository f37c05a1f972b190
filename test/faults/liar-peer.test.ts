// A peer that serves bytes which do not match their hash: the fetching agent drops it for that
// transfer and takes the chunk from another holder; the step never notices. The liar is a real
// Agent (in this test process, so that its store can be made to lie) holding the artifact before
// the honest agent makes it, so that it is the first holder the fetch asks.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pino } from 'pino'
import { tempDir } from '../helpers/cli.js'
import { startMesh, type Mesh } from '../helpers/mesh.js'
import { waitFor } from '../helpers/wait.js'
import { Agent } from '../../agent/agent.js'
import { ContentStore } from '../../src/store/content-store.js'
import type { Digest } from '../../src/store/types.js'
import { LEASE_MS, expectNothingLost, finished, pipeline, step, submit } from './support.js'

const SIZE = 300_000

describe('a peer serving wrong bytes', () => {
  let mesh: Mesh
  let work: Awaited<ReturnType<typeof tempDir>>
  let liar: Agent | undefined
  const client = (): string => join(work.path, 'client')

  beforeAll(async () => {
    work = await tempDir()
    mesh = await startMesh({
      leaseMs: LEASE_MS,
      agents: { maker: ['--resources', 'cpu=2', '--label', 'role=maker'], user: ['--resources', 'cpu=2', '--label', 'role=user'] }
    })
  }, 120_000)

  afterAll(async () => {
    await liar?.stop({ graceMs: 0 })
    await mesh?.stop()
    await work?.cleanup()
  })

  it('is dropped for the transfer; the chunk comes from another holder and the result is unchanged', async () => {
    // The liar holds the very artifact `make` will produce, and announces it first.
    const dir = join(work.path, 'liar')
    await mkdir(dir, { recursive: true })
    await writeFile(join(work.path, 'data'), Buffer.alloc(SIZE, 'd'))
    const seed = await ContentStore.open(join(dir, 'store'))
    const data = await seed.ingest(join(work.path, 'data'))
    await seed.close()
    const { token } = await mesh.client.createToken(60_000)
    liar = await Agent.start({ dataDir: dir, coordinator: mesh.multiaddr, join: token, logger: pino({ level: 'silent' }), name: 'liar', labels: { role: 'liar' } })
    await waitFor('the liar to announce what it holds', async () => (await mesh.client.agents()).find(a => a.name === 'liar' && a.connected && a.holdings > 0))
    const honest = liar.store.readChunk.bind(liar.store)
    let lies = 0
    liar.store.readChunk = async (digest: Digest): Promise<Uint8Array> => {
      const bytes = Buffer.from(await honest(digest))
      bytes[0]! ^= 0xff
      lies++
      return bytes
    }

    const file = await pipeline(join(work.path, 'p'), `name: liar
steps:
  make:
    command: head -c ${SIZE} /dev/zero | tr '\\000' d > \${{outputs.data}}
    outputs: [data]
    resources: { labels: { role: maker } }
  use:
    command: sha256sum \${{inputs.data}} | cut -c1-64 > \${{outputs.sum}}
    inputs:
      data: \${{steps.make.outputs.data}}
    outputs: [sum]
    resources: { labels: { role: user } }
    cache: false
`)
    const run = await finished(mesh, await submit(mesh, client(), file))
    expect(run.status, JSON.stringify(run, null, 2)).toBe('succeeded')
    expect(step(run, 'make').outputs.data).toBe(data.digest)
    expect(step(run, 'use').attempts).toBe(1)
    // The liar was asked and lied; the bytes used came from the maker.
    expect(lies).toBeGreaterThan(0)
    await waitFor('the maker to report serving the data (heartbeat counters)', async () =>
      ((await mesh.client.agents()).find(a => a.name === 'maker')?.transfers?.bytesServed ?? 0) >= SIZE ? true : undefined)

    // A clean run for comparison: the liar turned honest, the same steps again.
    liar.store.readChunk = honest
    const clean = await finished(mesh, await submit(mesh, client(), file))
    expectNothingLost(run, clean)
  })
})
