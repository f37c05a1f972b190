// Noise decryption without a copy of every message. @chainsafe/libp2p-noise 17 decrypts each
// message it receives with `handshake.decrypt(ciphertext, dst)`, where `dst` is made with
// `subarray()` of the Uint8ArrayList its length-prefixed decoder hands over: a fresh copy of the
// message whenever it spans two socket reads, which is nearly always for bulk data (a full Noise
// message is 65537 bytes on the wire, and Node reads 65536 at a time). Only the WebAssembly
// ChaCha20 that the library uses below 1200 bytes writes into `dst`; Node's, used above, makes
// its own output and ignores it. So a receiving agent copied, allocated and later collected every
// byte once more for nothing: in two A/B pairs of T1 runs the receiving agent peaked 5-20 MB
// lower and fetched 10-20% faster without it.
// The stream that Noise returns gets its own `decrypt`, the library's loop without that
// destination; a stream of another shape is left as it is. The class is not exported, so the
// patch goes on each instance; the version is pinned by the lockfile, and
// test/src/net/noise-decrypt.test.ts checks that connections get it.

import type { ConnectionEncrypter, SecuredConnection } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'

/** Noise's largest message, and its authentication tag (@chainsafe/libp2p-noise constants). */
const NOISE_MSG_MAX_LENGTH_BYTES = 65535
const CHACHA_TAG_LENGTH = 16

interface NoiseStream {
  decrypt: (chunk: Uint8Array | Uint8ArrayList) => Uint8ArrayList
  handshake: { decrypt: (ciphertext: Uint8Array | Uint8ArrayList, dst?: Uint8Array) => Uint8Array | Uint8ArrayList }
  metrics?: { decryptedPackets: { increment: () => void }, decryptErrors: { increment: () => void } }
}

const counts = { patched: 0, skipped: 0 }

/** How many secured connections got the copy-free decrypt, and how many had another shape. */
export function noiseDecryptCounts (): Readonly<typeof counts> {
  return { ...counts }
}

function isNoiseStream (value: unknown): value is NoiseStream {
  const s = value as Partial<NoiseStream> | undefined
  return typeof s?.decrypt === 'function' && s.decrypt.length === 1 && typeof s.handshake?.decrypt === 'function'
}

function leanDecrypt (this: NoiseStream, chunk: Uint8Array | Uint8ArrayList): Uint8ArrayList {
  const output = new Uint8ArrayList()
  for (let i = 0; i < chunk.byteLength; i += NOISE_MSG_MAX_LENGTH_BYTES) {
    const end = Math.min(i + NOISE_MSG_MAX_LENGTH_BYTES, chunk.byteLength)
    if (end - CHACHA_TAG_LENGTH < i) throw new Error('Invalid chunk')
    const encrypted = chunk instanceof Uint8Array ? chunk.subarray(i, end) : chunk.sublist(i, end)
    try {
      output.append(this.handshake.decrypt(encrypted))
      this.metrics?.decryptedPackets.increment()
    } catch (err) {
      this.metrics?.decryptErrors.increment()
      throw err
    }
  }
  return output
}

function patch <S extends SecuredConnection> (secured: S): S {
  const stream: unknown = secured.connection
  if (isNoiseStream(stream)) {
    stream.decrypt = leanDecrypt
    counts.patched++
  } else {
    counts.skipped++
  }
  return secured
}

/** `encrypter` (Noise) whose secured connections decrypt without copying each message first. */
export function withLeanDecrypt<C> (encrypter: (components: C) => ConnectionEncrypter): (components: C) => ConnectionEncrypter {
  return (components) => {
    const inner = encrypter(components)
    return {
      protocol: inner.protocol,
      secureOutbound: async (connection, options) => patch(await inner.secureOutbound(connection, options)),
      secureInbound: async (connection, options) => patch(await inner.secureInbound(connection, options))
    }
  }
}
