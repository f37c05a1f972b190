// One socket write per small Noise message instead of two. Noise frames each message as a
// two-byte length and the ciphertext, and @libp2p/tcp writes every part of what it is given with
// its own socket.write(): with TCP_NODELAY on, a control message (a task, a result) went out as
// two syscalls and two segments, and woke the receiver twice. Corking the socket around a small
// send makes Node hand the parts to the kernel in one writev.
// Only small sends are corked: a corked socket buffers everything, so a bulk send would report
// "full" after 16 KiB and stall on 'drain' between frames. The wrapper changes nothing else: the
// encrypter is Noise itself, given the connection it would have been given.

import type { ConnectionEncrypter, MessageStream } from '@libp2p/interface'
import type { Socket } from 'node:net'

/** What @libp2p/tcp's connection is sent: a list of buffers. */
interface Sendable { byteLength: number }

/** Sends up to this many bytes are written as one (the socket's default high-water mark). */
export const COALESCE_MAX = 16 * 1024

interface SocketConnection {
  /** @libp2p/tcp's connection keeps its net.Socket here. */
  socket?: Socket
  sendData?: (data: Sendable) => unknown
}

/** Corks the connection's socket around small sends; other connections are left as they are. */
export function coalesceSmallWrites (connection: MessageStream): void {
  const conn = connection as unknown as SocketConnection
  const socket = conn.socket
  const sendData = conn.sendData
  if (socket === undefined || typeof socket.cork !== 'function' || typeof sendData !== 'function') return
  conn.sendData = function (this: SocketConnection, data: Sendable): unknown {
    if (data.byteLength > COALESCE_MAX) return sendData.call(this, data)
    socket.cork()
    try {
      return sendData.call(this, data)
    } finally {
      socket.uncork()
    }
  }
}

/** `encrypter` (Noise) with every connection it secures writing small messages in one piece. */
export function withCoalescedWrites<C> (encrypter: (components: C) => ConnectionEncrypter): (components: C) => ConnectionEncrypter {
  return (components) => {
    const inner = encrypter(components)
    return {
      protocol: inner.protocol,
      secureOutbound: async (connection, options) => {
        coalesceSmallWrites(connection)
        return await inner.secureOutbound(connection, options)
      },
      secureInbound: async (connection, options) => {
        coalesceSmallWrites(connection)
        return await inner.secureInbound(connection, options)
      }
    }
  }
}
