// One socket write per send on a Noise connection, instead of one per part. Noise frames each
// message (at most 64 KiB) as a two-byte length and the ciphertext, and @libp2p/tcp writes every
// part of what it is given with its own socket.write(). With TCP_NODELAY on, that made each
// message two syscalls and two segments and woke the receiver twice: a control message (a task,
// a result) paid it once, and a chunk of an artifact 32 times per MiB, half of them two-byte
// segments (a 1 GiB transfer between two agents ran 10-20% faster without them). Corking the
// socket around a send makes Node hand all its parts to the kernel in one writev.
// Backpressure is read after the uncork: the send may go on while less than the socket's
// high-water mark is still waiting for the kernel. (While corked, write() reports "full" as soon
// as 16 KiB are buffered, which says nothing about the kernel.) The wrapper changes nothing
// else: the encrypter is Noise itself, given the connection it would have been given.

import type { ConnectionEncrypter, MessageStream } from '@libp2p/interface'
import type { Socket } from 'node:net'

/** What @libp2p/tcp's connection is sent: a list of buffers. */
type Sendable = Iterable<Uint8Array> & { byteLength: number }

interface SocketConnection {
  /** @libp2p/tcp's connection keeps its net.Socket here. */
  socket?: Socket
  sendData?: (data: Sendable) => { sentBytes: number, canSendMore: boolean }
}

/** Makes each send on the connection's socket one write; other connections are left as they are. */
export function coalesceWrites (connection: MessageStream): void {
  const conn = connection as unknown as SocketConnection
  const socket = conn.socket
  if (socket === undefined || typeof socket.cork !== 'function' || typeof conn.sendData !== 'function') return
  conn.sendData = function (data: Sendable): { sentBytes: number, canSendMore: boolean } {
    socket.cork()
    try {
      for (const buf of data) socket.write(buf)
    } finally {
      socket.uncork()
    }
    return { sentBytes: data.byteLength, canSendMore: socket.writableLength < socket.writableHighWaterMark }
  }
}

/** `encrypter` (Noise) with every connection it secures writing each send in one piece. */
export function withCoalescedWrites<C> (encrypter: (components: C) => ConnectionEncrypter): (components: C) => ConnectionEncrypter {
  return (components) => {
    const inner = encrypter(components)
    return {
      protocol: inner.protocol,
      secureOutbound: async (connection, options) => {
        coalesceWrites(connection)
        return await inner.secureOutbound(connection, options)
      },
      secureInbound: async (connection, options) => {
        coalesceWrites(connection)
        return await inner.secureInbound(connection, options)
      }
    }
  }
}
