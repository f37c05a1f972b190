// Builds the libp2p node every pipemesh process uses: TCP + Noise + Yamux and nothing else (no
// identify, DHT or discovery: peers learn each other's addresses from the coordinator). A
// connection gater consults `allowPeer` right after the Noise handshake, so peers that are not
// members are refused before any stream can open.
import '../util/polyfill.js'
import './yamux-window.js'
import { withCoalescedWrites } from './coalesce-writes.js'
import { withLeanDecrypt } from './noise-decrypt.js'

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import type { ConnectionGater, Libp2p, PeerId, PrivateKey } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import { throwIfAborted } from '../errors.js'

/**
 * Largest receive window per stream. A window bounds how much a sender may have in flight to a
 * stream that is not being read (the channel pauses streams whose reader falls behind), and must
 * stay under the stream's 4 MiB read-buffer limit or a paused stream is reset. 2 MiB measured as
 * fast as 16 MiB over loopback.
 */
export const STREAM_WINDOW_BYTES = 2 * 1024 * 1024
/** A paused stream may buffer up to its window; the read buffer limit must stay above it. */
const STREAM_READ_BUFFER_BYTES = Math.max(4 * 1024 * 1024, 2 * STREAM_WINDOW_BYTES)

export interface NodeGater {
  /** Called with the remote peer id (base58) once it has proven it holds that key. */
  allowPeer: (peerId: string) => boolean
}

export interface CreateNodeOptions {
  privateKey: PrivateKey
  /** Multiaddrs to listen on; defaults to a random loopback TCP port. */
  listen?: string[]
  /** Who may connect, in and out; everyone when absent. */
  gater?: NodeGater
  signal?: AbortSignal
}

/** Creates, starts and returns a listening libp2p node. The caller stops it with `node.stop()`. */
export async function createNode (options: CreateNodeOptions): Promise<Libp2p> {
  throwIfAborted(options.signal)
  const node = await createLibp2p({
    privateKey: options.privateKey,
    addresses: { listen: options.listen ?? ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [withCoalescedWrites(withLeanDecrypt(noise()))],
    streamMuxers: [yamux({
      streamOptions: { maxStreamWindowSize: STREAM_WINDOW_BYTES, maxReadBufferLength: STREAM_READ_BUFFER_BYTES }
    })],
    connectionGater: gaterFor(options.gater),
    connectionManager: {
      // Many agents (and tests) on one host reconnect at once; the default of 5 new connections
      // per second per IP resets the rest.
      inboundConnectionThreshold: 1000,
      maxIncomingPendingConnections: 100
    },
    connectionMonitor: {
      // Pings share the connection with bulk transfers; a busy event loop must not get a live
      // connection aborted.
      pingTimeout: { minTimeout: 15_000, maxTimeout: 60_000 }
    },
    start: false
  })
  try {
    await node.start()
    throwIfAborted(options.signal)
  } catch (err) {
    await Promise.resolve(node.stop()).catch(() => {})
    throw err
  }
  return node
}

function gaterFor (gater: NodeGater | undefined): ConnectionGater {
  if (gater === undefined) return {}
  const deny = (peerId: PeerId): boolean => {
    try {
      return !gater.allowPeer(peerId.toString())
    } catch {
      return true
    }
  }
  return {
    denyDialPeer: deny,
    denyInboundEncryptedConnection: deny,
    denyOutboundEncryptedConnection: deny
  }
}
