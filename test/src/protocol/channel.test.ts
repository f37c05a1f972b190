import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Libp2p, Stream } from '@libp2p/interface'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { PipemeshError } from '../../../src/errors.js'
import { createNode } from '../../../src/net/node.js'
import { FrameStream, openChannel, request, type MessageChannel } from '../../../src/protocol/channel.js'

const PROTO = '/pipemesh/test-channel/1.0.0'
const ping = z.object({ type: z.literal('ping'), n: z.number().int() })
type Ping = z.infer<typeof ping>

let a: Libp2p
let b: Libp2p
beforeEach(async () => {
  a = await createNode({ privateKey: await generateKeyPair('Ed25519') })
  b = await createNode({ privateKey: await generateKeyPair('Ed25519') })
})
afterEach(async () => { await Promise.all([a.stop(), b.stop()]) })

/** Echo server on `b` whose per-stream outcome (end or error) the test can await. */
function serveEcho (maxMessageBytes?: number): Array<Promise<unknown>> {
  const outcomes: Array<Promise<unknown>> = []
  void b.handle(PROTO, (stream) => {
    const ch = openChannel<Ping, Ping>(stream, { inSchema: ping, ...(maxMessageBytes === undefined ? {} : { maxMessageBytes }) })
    outcomes.push((async () => {
      for await (const msg of ch) await ch.send(msg)
      await ch.close()
      return 'ended'
    })().catch((err: unknown) => err))
  })
  return outcomes
}
async function dial (): Promise<Stream> { return await a.dialProtocol(b.getMultiaddrs()[0]!, PROTO) }
async function waitForOutcome (outcomes: Array<Promise<unknown>>, i: number): Promise<unknown> {
  while (outcomes[i] === undefined) await new Promise(resolve => setImmediate(resolve))
  return await outcomes[i]
}

describe('MessageChannel', () => {
  it('round-trips typed messages on a long-lived channel without timer or Nagle delays', async () => {
    serveEcho()
    const ch: MessageChannel<Ping, Ping> = openChannel(await dial(), { inSchema: ping })
    const rounds = 500
    const times: number[] = []
    for (let n = 0; n < rounds; n++) {
      const t0 = performance.now()
      await ch.send({ type: 'ping', n })
      expect(await ch.receive()).toEqual({ type: 'ping', n })
      times.push(performance.now() - t0)
    }
    times.sort((x, y) => x - y)
    const median = times[rounds >> 1]!
    console.log(`channel round trip: median ${(median * 1000).toFixed(0)} us, p90 ${(times[Math.floor(rounds * 0.9)]! * 1000).toFixed(0)} us`)
    // Generous for a loaded 2-core machine; a timer or Nagle delay in the path would be 10x this.
    expect(median).toBeLessThan(5)
    await ch.close()
    expect(await ch.receive()).toBeUndefined()
  })

  it('resets only the stream that carries a message failing its schema; the node keeps serving', async () => {
    const outcomes = serveEcho()
    const good = openChannel<Ping, Ping>(await dial(), { inSchema: ping })
    const bad = openChannel<Ping, unknown>(await dial(), { inSchema: ping })
    await bad.send({ type: 'ping', n: 'one' })
    const serverErr = await waitForOutcome(outcomes, 1)
    expect(serverErr).toBeInstanceOf(PipemeshError)
    expect((serverErr as PipemeshError).code).toBe('PROTOCOL')
    expect((serverErr as PipemeshError).message).toMatch(/n: .*number/)
    await expect(bad.receive()).rejects.toMatchObject({ code: 'UNREACHABLE' })

    await good.send({ type: 'ping', n: 7 })
    expect(await good.receive()).toEqual({ type: 'ping', n: 7 })
    const fresh = openChannel<Ping, Ping>(await dial(), { inSchema: ping })
    await fresh.send({ type: 'ping', n: 8 })
    expect(await fresh.receive()).toEqual({ type: 'ping', n: 8 })
  })

  it('refuses a message over the size limit without buffering it, and bytes that are not JSON', async () => {
    const outcomes = serveEcho(1024)
    const big = new FrameStream(await dial(), { maxFrameBytes: 1 << 20 })
    await big.send(Buffer.alloc(4096, 0x20))
    const tooBig = await waitForOutcome(outcomes, 0)
    expect(tooBig).toMatchObject({ code: 'PROTOCOL', message: expect.stringMatching(/4096-byte message; the limit is 1024/) })

    const junk = new FrameStream(await dial(), { maxFrameBytes: 1024 })
    await junk.send(Buffer.from([0xff, 0xfe, 0x00]))
    expect(await waitForOutcome(outcomes, 1)).toMatchObject({ code: 'PROTOCOL', message: expect.stringMatching(/not UTF-8 JSON/) })

    const ch = openChannel<Ping, unknown>(await dial(), { inSchema: ping, maxMessageBytes: 1024 })
    await expect(ch.send({ pad: 'x'.repeat(2000) })).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED' })
  })

  it('reports a stream that ends in the middle of a message', async () => {
    const outcomes = serveEcho()
    const stream = await dial()
    stream.send(Uint8Array.from([0, 0, 0, 10, 1, 2]))
    await stream.close()
    expect(await waitForOutcome(outcomes, 0)).toMatchObject({ code: 'PROTOCOL', message: expect.stringMatching(/ended in the middle/) })
  })

  it('stops a fast sender while the reader lags, then delivers everything in order', async () => {
    let serverFrames: FrameStream | undefined
    void b.handle(PROTO, (stream) => { serverFrames = new FrameStream(stream, { maxFrameBytes: 1 << 20, highWaterBytes: 2 << 20 }) })
    const sender = new FrameStream(await dial(), { maxFrameBytes: 1 << 20 })
    const total = 64
    let sent = 0
    const sending = (async () => {
      for (let i = 0; i < total; i++) {
        await sender.send(Buffer.alloc(1 << 20, i))
        sent++
      }
      await sender.close()
    })()
    // Nobody reads yet: the sender must stall with a bounded amount in flight.
    while (!(serverFrames?.stream.readStatus === 'paused' && sender.stream.writableNeedsDrain) && sent < total) {
      await new Promise(resolve => setTimeout(resolve, 20))
    }
    // 2 MiB queued by the reader + a 2 MiB yamux window, give or take a frame.
    expect(sent).toBeLessThan(10)
    const received: number[] = []
    for (;;) {
      const f = await serverFrames!.next()
      if (f === null) break
      expect(f.byteLength).toBe(1 << 20)
      received.push(f[0]!)
    }
    await sending
    expect(received).toEqual(Array.from({ length: total }, (_, i) => i))
  })

  it('a reader that pauses again while its stream resumes stays paused: the sender cannot overrun the read buffer', async () => {
    // Resuming hands the reader everything buffered while paused (up to a 2 MiB window), which
    // can take it past its high-water mark again at once. That second pause, made inside the
    // stream's resume(), must hold: yamux's own resume step used to follow it and grant the
    // sender more window while the stream stayed paused, until its 4 MiB read buffer overflowed
    // and the stream was reset.
    let serverFrames: FrameStream | undefined
    void b.handle(PROTO, (stream) => { serverFrames = new FrameStream(stream, { maxFrameBytes: 1 << 20, highWaterBytes: 1 << 20 }) })
    const sender = new FrameStream(await dial(), { maxFrameBytes: 1 << 20 })
    const total = 48
    const sending = (async () => {
      for (let i = 0; i < total; i++) await sender.send(Buffer.alloc(256 * 1024, i))
      await sender.close()
    })()
    sending.catch(() => {})
    while (serverFrames === undefined) await new Promise(resolve => setTimeout(resolve, 5))
    const received: number[] = []
    for (;;) {
      // A slow reader: the stream pauses and resumes many times.
      await new Promise(resolve => setTimeout(resolve, 2))
      const f = await serverFrames.next()
      if (f === null) break
      received.push(f[0]!)
    }
    await sending
    expect(received).toEqual(Array.from({ length: total }, (_, i) => i))
  })

  it('hands a large frame over as the pieces it arrived in, or joined, byte for byte', async () => {
    let serverFrames: FrameStream | undefined
    void b.handle(PROTO, (stream) => { serverFrames = new FrameStream(stream, { maxFrameBytes: 2 << 20 }) })
    const sender = new FrameStream(await dial(), { maxFrameBytes: 2 << 20 })
    const big = randomBytes((1 << 20) + 3)
    const small = Buffer.from('after the big ones')
    await sender.send(big)
    await sender.send([big.subarray(0, 1000), big.subarray(1000)])
    await sender.send(small)
    await sender.close()
    while (serverFrames === undefined) await new Promise(resolve => setImmediate(resolve))
    const parts = await serverFrames.nextParts()
    // Noise carries at most 64 KiB per message, so a MiB cannot arrive in one piece.
    expect(parts!.length).toBeGreaterThan(1)
    expect(Buffer.concat(parts!).equals(big)).toBe(true)
    expect(Buffer.from((await serverFrames.next())!).equals(big)).toBe(true)
    expect(Buffer.concat((await serverFrames.nextParts())!).toString()).toBe('after the big ones')
    expect(await serverFrames.nextParts()).toBeNull()
  })

  it('request() does a one-shot exchange and times out when no reply comes', async () => {
    serveEcho()
    const reply = await request<Ping, Ping>(a, b.getMultiaddrs()[0]!, PROTO, { type: 'ping', n: 42 }, { inSchema: ping })
    expect(reply).toEqual({ type: 'ping', n: 42 })

    await b.handle('/pipemesh/test-silent/1.0.0', () => {})
    const t0 = Date.now()
    await expect(request(a, b.peerId, '/pipemesh/test-silent/1.0.0', { type: 'ping', n: 1 }, { inSchema: ping, timeoutMs: 300 }))
      .rejects.toMatchObject({ code: 'TIMEOUT' })
    expect(Date.now() - t0).toBeLessThan(5000)

    const stopped = b.getMultiaddrs()[0]!
    await b.stop()
    await expect(request(a, stopped, PROTO, { type: 'ping', n: 1 }, { inSchema: ping, timeoutMs: 5000 }))
      .rejects.toMatchObject({ code: 'UNREACHABLE' })
  })

  it('cancels a pending receive when its signal aborts, resetting the stream', async () => {
    void b.handle(PROTO, () => {})
    const controller = new AbortController()
    const ch = openChannel<Ping, Ping>(await dial(), { inSchema: ping, signal: controller.signal })
    const pending = ch.receive()
    controller.abort()
    await expect(pending).rejects.toMatchObject({ code: 'CANCELLED' })
    expect(ch.frames.stream.status).toBe('aborted')
  })
})
