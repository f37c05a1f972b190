// Helpers for the tests of src/net: two nodes to connect, a protocol handler that collects
// everything a stream receives, and a sender that respects backpressure.

import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Libp2p, Stream } from '@libp2p/interface'
import { createNode } from '../../../src/net/node.js'

/** Two started nodes as the agents build them, added to `started` for the test to stop. */
export async function nodePair (started: Libp2p[]): Promise<[Libp2p, Libp2p]> {
  const a = await createNode({ privateKey: await generateKeyPair('Ed25519') })
  started.push(a)
  const b = await createNode({ privateKey: await generateKeyPair('Ed25519') })
  started.push(b)
  return [a, b]
}

/** Handles `protocol` on `node`; resolves with everything the first stream received once it ends. */
export function collect (node: Libp2p, protocol: string): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    void node.handle(protocol, async (stream) => {
      const received: Uint8Array[] = []
      try {
        for await (const chunk of stream) received.push(chunk.subarray())
        resolve(Buffer.concat(received))
      } catch (err) { reject(err as Error) }
    })
  })
}

/** Sends `data` in 1 MiB pieces, waiting for 'drain' whenever the stream asks to, then closes it. */
export async function sendAll (stream: Stream, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.byteLength; off += 1024 * 1024) {
    if (!stream.send(data.subarray(off, off + 1024 * 1024))) {
      await new Promise<void>(resolve => { stream.addEventListener('drain', () => { resolve() }, { once: true }) })
    }
  }
  await stream.close()
}
