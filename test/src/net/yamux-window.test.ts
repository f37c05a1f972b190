import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Libp2p, Stream } from '@libp2p/interface'
import { afterEach, describe, expect, it } from 'vitest'
import { createNode } from '../../../src/net/node.js'

// src/net/yamux-window.ts: window updates only once half the receive window is used.

const nodes: Libp2p[] = []
afterEach(async () => { await Promise.all(nodes.splice(0).map(async n => { await n.stop() })) })

const SINK = '/pipemesh/test-sink/1.0.0'
const WINDOW_UPDATE = 1

interface Receiver { bytes: number, windowUpdates: number, changed: () => Promise<void> }

/** b receives on SINK, counting bytes and the window-update frames its side of the stream sends. */
async function pair (): Promise<{ stream: Stream, rx: Receiver }> {
  const a = await createNode({ privateKey: await generateKeyPair('Ed25519') })
  const b = await createNode({ privateKey: await generateKeyPair('Ed25519') })
  nodes.push(a, b)
  let wake: () => void = () => {}
  const rx: Receiver = { bytes: 0, windowUpdates: 0, changed: async () => { await new Promise<void>(resolve => { wake = resolve }) } }
  await b.handle(SINK, async (stream) => {
    const muxed = stream as unknown as { sendFrame: (header: { type: number }, data?: unknown) => boolean }
    expect(typeof muxed.sendFrame, 'the yamux stream sends its frames through sendFrame').toBe('function')
    const send = muxed.sendFrame
    muxed.sendFrame = (header, data) => {
      if (header.type === WINDOW_UPDATE) rx.windowUpdates++
      return send(header, data)
    }
    for await (const chunk of stream) { rx.bytes += chunk.byteLength; wake() }
  })
  const stream = await a.dialProtocol(b.getMultiaddrs()[0]!, SINK)
  return { stream, rx }
}

async function until (rx: Receiver, bytes: number, what: string): Promise<void> {
  const deadline = Date.now() + 30_000
  while (rx.bytes < bytes) {
    if (Date.now() > deadline) throw new Error(`${what}: only ${rx.bytes} of ${bytes} bytes arrived in 30 s`)
    await Promise.race([rx.changed(), new Promise(resolve => setTimeout(resolve, 100))])
  }
}

describe('yamux window updates', () => {
  it('are not sent for each small message, only once half the window is used', async () => {
    const { stream, rx } = await pair()
    // 200 messages of 100 bytes, each delivered before the next is sent: 200 data frames,
    // 20 KB, far from half of the 256 KiB initial window.
    for (let i = 1; i <= 200; i++) {
      stream.send(new Uint8Array(100))
      await until(rx, i * 100, `message ${i}`)
    }
    expect(rx.windowUpdates).toBeLessThan(5)
  })

  it('still let a transfer much larger than the window through, with updates as it goes', async () => {
    const { stream, rx } = await pair()
    const total = 16 * 1024 * 1024
    const piece = new Uint8Array(64 * 1024)
    for (let sent = 0; sent < total; sent += piece.byteLength) {
      if (!stream.send(piece)) await new Promise(resolve => stream.addEventListener('drain', resolve, { once: true }))
    }
    await until(rx, total, 'a 16 MiB transfer over a 2 MiB window')
    expect(rx.windowUpdates).toBeGreaterThan(4)
  })
})
