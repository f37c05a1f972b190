import type { Libp2p } from '@libp2p/interface'
import { randomBytes } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import { noiseDecryptCounts } from '../../../src/net/noise-decrypt.js'
import { collect, nodePair, sendAll } from './streams.js'

// src/net/noise-decrypt.ts: Noise connections decrypt what they receive without first copying
// each message into a destination buffer that Node's ChaCha20 does not use.

const nodes: Libp2p[] = []
afterEach(async () => { await Promise.all(nodes.splice(0).map(async n => { await n.stop() })) })

const SINK = '/pipemesh/test-sink/1.0.0'

describe('decryption on a libp2p connection', () => {
  it('is patched on both ends of a connection, and a bulk stream and small messages arrive intact', async () => {
    const before = noiseDecryptCounts()
    const [a, b] = await nodePair(nodes)
    const total = 8 * 1024 * 1024
    const data = randomBytes(total)
    const received = collect(b, SINK)
    const stream = await a.dialProtocol(b.getMultiaddrs()[0]!, SINK)
    const after = noiseDecryptCounts()
    expect(after.patched - before.patched, 'connections that got the copy-free decrypt (dialer and listener)').toBe(2)
    expect(after.skipped - before.skipped, 'Noise streams of an unexpected shape: @chainsafe/libp2p-noise changed').toBe(0)
    // Small sends first (below 1200 bytes the library decrypts with WebAssembly, which used the
    // destination the patch no longer passes), then 1 MiB ones.
    for (const n of [1, 17, 1199, 1200, 5000]) stream.send(data.subarray(0, n))
    await sendAll(stream, data)
    const small = [1, 17, 1199, 1200, 5000].map(n => data.subarray(0, n))
    expect((await received).equals(Buffer.concat([...small, data]))).toBe(true)
  })
})
