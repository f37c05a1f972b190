// Hostile wire input never crashes a node: fast-check throws random bytes, random frames and
// mangled versions of valid messages at a real coordinator's control and enroll protocols and at
// an agent-style chunk server, then checks each still serves a well-behaved peer.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { join } from 'node:path'
import { pino } from 'pino'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import type { Libp2p } from '@libp2p/interface'
import { Coordinator } from '../../coordinator/coordinator.js'
import { createNode } from '../../src/net/node.js'
import { CHUNKS_PROTOCOL, fetchArtifact, serveArtifacts } from '../../src/net/transfer.js'
import { ENROLL_PROTOCOL } from '../../src/protocol/enroll.js'
import { CONTROL_PROTOCOL } from '../../src/protocol/messages.js'
import { openChannel } from '../../src/protocol/channel.js'
import { coordinatorMessageSchema, type AgentMessage, type CoordinatorMessage } from '../../src/protocol/messages.js'
import { ContentStore } from '../../src/store/content-store.js'
import { tempDir, writeTree } from '../helpers/cli.js'

function frame (payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + payload.length)
  new DataView(out.buffer).setUint32(0, payload.length)
  out.set(payload, 4)
  return out
}

const encoder = new TextEncoder()

/** Byte sequences a hostile peer might send: noise, wrong lengths, frames of junk or of mangled JSON. */
const hostileBytes = fc.oneof(
  fc.uint8Array({ maxLength: 512 }),
  fc.uint8Array({ maxLength: 64 }).map(b => frame(b)),
  fc.jsonValue().map(v => frame(encoder.encode(JSON.stringify(v)))),
  fc.record({ type: fc.constantFrom('hello', 'holdings', 'heartbeat', 'started', 'checkpoint', 'log', 'finished', 'fetched', 'collected', 'nope'), extra: fc.jsonValue() })
    .map(v => frame(encoder.encode(JSON.stringify({ ...v, ...(typeof v.extra === 'object' && v.extra !== null ? v.extra : {}) })))),
  fc.integer({ min: 5, max: 2 ** 32 - 1 }).map(n => { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, n); return b })
)

describe('fuzzing the wire protocols', () => {
  let work: Awaited<ReturnType<typeof tempDir>>
  let coordinator: Coordinator
  let fuzzer: Libp2p
  let server: Libp2p
  let serverStore: ContentStore
  let target: string

  beforeAll(async () => {
    work = await tempDir()
    coordinator = await Coordinator.start({ dataDir: join(work.path, 'coordinator'), logger: pino({ level: 'silent' }) })
    fuzzer = await createNode({ privateKey: await generateKeyPair('Ed25519') })
    // A member may open the control protocol, so its messages reach the parser.
    await coordinator.membership.admit(fuzzer.peerId.toString(), 'fuzzer')
    // Open enrollment too, so the enroll protocol is reachable by strangers.
    await coordinator.createToken(3_600_000)
    target = `${coordinator.multiaddrs()[0]!}`
    serverStore = await ContentStore.open(join(work.path, 'server-store'))
    server = await createNode({ privateKey: await generateKeyPair('Ed25519') })
    await serveArtifacts(server, serverStore, {})
  })

  afterAll(async () => {
    await fuzzer?.stop()
    await server?.stop()
    await serverStore?.close()
    await coordinator?.stop()
    await work?.cleanup()
  })

  async function sendHostile (node: Libp2p, addr: string, protocol: string, chunks: Uint8Array[]): Promise<void> {
    try {
      const stream = await node.dialProtocol(multiaddr(addr), protocol, { signal: AbortSignal.timeout(5000) })
      for (const chunk of chunks) stream.send(chunk)
      await stream.close().catch(() => {})
      // Read whatever comes back until the far side gives up on us.
      const reading = (async () => { for await (const _ of stream) { /* drain */ } })()
      await Promise.race([reading.catch(() => {}), new Promise(resolve => setTimeout(resolve, 200))])
      stream.abort(new Error('done'))
    } catch {
      // Being refused or reset is the expected outcome.
    }
  }

  async function coordinatorStillWorks (): Promise<void> {
    const stream = await fuzzer.dialProtocol(multiaddr(target), CONTROL_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
    const channel = openChannel<CoordinatorMessage, AgentMessage>(stream, { inSchema: coordinatorMessageSchema })
    await channel.send({
      type: 'hello', name: 'fuzzer', version: 'test', addrs: [], running: [],
      capabilities: { hostname: 'h', os: 'linux', arch: 'x64', cpu: { model: 'x', cores: 1 }, memory: 1, gpus: [], diskFree: 1, capacity: { cpu: 1, memory: 1, gpus: [] }, labels: {}, detectedAt: 0 }
    })
    const welcome = await channel.receive()
    expect(welcome?.type).toBe('welcome')
    channel.abort(new Error('done'))
  }

  it('the coordinator survives hostile control and enroll streams', async () => {
    const stranger = await createNode({ privateKey: await generateKeyPair('Ed25519') })
    try {
      await fc.assert(fc.asyncProperty(fc.array(hostileBytes, { minLength: 1, maxLength: 4 }), fc.boolean(), async (chunks, enroll) => {
        if (enroll) await sendHostile(stranger, target, ENROLL_PROTOCOL, chunks)
        else await sendHostile(fuzzer, target, CONTROL_PROTOCOL, chunks)
      }), { numRuns: 60 })
      await coordinatorStillWorks()
      expect(await coordinator.listRuns()).toEqual([])
    } finally {
      await stranger.stop()
    }
  })

  it('a chunk server survives hostile requests and still serves honest peers', async () => {
    const addr = server.getMultiaddrs()[0]!.toString()
    await fc.assert(fc.asyncProperty(fc.array(hostileBytes, { minLength: 1, maxLength: 4 }), async (chunks) => {
      await sendHostile(fuzzer, addr, CHUNKS_PROTOCOL, chunks)
    }), { numRuns: 60 })
    await writeTree(work.path, { 'payload.bin': 'x'.repeat(300_000) })
    const ref = await serverStore.ingest(join(work.path, 'payload.bin'))
    const client = await ContentStore.open(join(work.path, 'client-store'))
    try {
      await fetchArtifact(fuzzer, client, ref.digest, [{ peerId: server.peerId.toString(), addrs: [addr] }])
      expect(await client.has(ref.digest)).toBe(true)
    } finally {
      await client.close()
    }
  })
})
