import type { Libp2p } from '@libp2p/interface'
import { randomBytes } from 'node:crypto'
import { Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { collect, nodePair, sendAll } from './streams.js'

// src/net/coalesce-writes.ts: each send on a Noise connection (length + ciphertext, per message)
// is one socket write.

const nodes: Libp2p[] = []
afterEach(async () => { await Promise.all(nodes.splice(0).map(async n => { await n.stop() })) })

const ECHO = '/pipemesh/test-echo/1.0.0'

/** Counts the calls through which every net.Socket in this process hands data to the kernel. */
function countSocketWrites (): { calls: () => number, restore: () => void } {
  const proto = Socket.prototype as unknown as Record<'_write' | '_writev', (...args: unknown[]) => unknown>
  const original = { _write: proto._write, _writev: proto._writev }
  let calls = 0
  for (const name of ['_write', '_writev'] as const) {
    const fn = original[name]
    proto[name] = function (this: unknown, ...args: unknown[]) { calls++; return fn.apply(this, args) }
  }
  return { calls: () => calls, restore: () => { Object.assign(proto, original) } }
}

describe('writes on a libp2p connection', () => {
  it('go to the socket once per Noise message, not once per part', async () => {
    const [a, b] = await nodePair(nodes)
    await b.handle(ECHO, async (stream) => {
      for await (const chunk of stream) stream.send(chunk.subarray())
    })
    const stream = await a.dialProtocol(b.getMultiaddrs()[0]!, ECHO)
    const replies = stream[Symbol.asyncIterator]()
    const roundTrips = 100
    const counter = countSocketWrites()
    try {
      for (let i = 0; i < roundTrips; i++) {
        stream.send(new Uint8Array(200).fill(i))
        const reply = await replies.next()
        expect(reply.done, `reply ${i} never came`).toBe(false)
      }
    } finally {
      counter.restore()
    }
    // Each round trip is two messages, each a yamux frame in one Noise message: two socket
    // writes when the length prefix and the ciphertext go together, four when they do not.
    expect(counter.calls()).toBeGreaterThanOrEqual(2 * roundTrips)
    expect(counter.calls()).toBeLessThan(2.5 * roundTrips)
  })

  it('send a bulk stream in fewer socket writes than it has Noise messages, all bytes intact', async () => {
    const [a, b] = await nodePair(nodes)
    const total = 8 * 1024 * 1024
    const data = randomBytes(total)
    const received = collect(b, ECHO)
    const stream = await a.dialProtocol(b.getMultiaddrs()[0]!, ECHO)
    const counter = countSocketWrites()
    let bytes: Buffer
    try {
      await sendAll(stream, data)
      bytes = await received
    } finally {
      counter.restore()
    }
    expect(bytes.equals(data)).toBe(true)
    // Noise carries at most 65519 bytes of plaintext per message: 129 messages here, each a
    // length and a ciphertext, so 258 writes when the parts went one by one. (Both nodes live in
    // this process, so the count includes the receiver's window updates.)
    const messages = Math.ceil(total / 65519)
    expect(counter.calls()).toBeLessThan(messages)
  })
})
