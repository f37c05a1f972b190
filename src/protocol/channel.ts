// Message framing over libp2p v3 streams. FrameStream moves length-prefixed byte frames with
// backpressure both ways (it waits for 'drain' when sending, and pauses the stream when its reader
// falls behind, so the yamux window stops the sender). MessageChannel puts schema-validated JSON
// on top; a frame that is too large or invalid resets that stream only, never the node.

import type { Libp2p, PeerId, Stream, StreamCloseEvent } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { isMultiaddr, multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { z } from 'zod'
import { CancelledError, PipemeshError } from '../errors.js'
import { byteLengthOf } from '../util/bytes.js'

export const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
const HEADER_BYTES = 4
const DEFAULT_HIGH_WATER_BYTES = 2 * 1024 * 1024
const COALESCE_BYTES = 64 * 1024

export interface FrameStreamOptions {
  /** Largest frame accepted; a bigger one resets the stream with a PROTOCOL error. */
  maxFrameBytes: number
  /** Largest frame this side may send (default maxFrameBytes). */
  maxSendFrameBytes?: number
  /** Queued unread bytes above which the stream is paused until the reader catches up. */
  highWaterBytes?: number
  /** Who is at the other end, for error messages. */
  peer?: string
  /** Aborts the stream when aborted. */
  signal?: AbortSignal
}

/** Length-prefixed (u32 big-endian) frames over one stream. One reader, any number of writers. */
export class FrameStream {
  readonly stream: Stream
  private readonly maxFrameBytes: number
  private readonly maxSendFrameBytes: number
  private readonly highWater: number
  private readonly label: string
  private segments: Uint8Array[] = []
  private segmentBytes = 0
  private pendingLength: number | undefined
  /** Whole frames not yet read, each as the received pieces it spans (joined by next()). */
  private readonly frames: Uint8Array[][] = []
  private frameBytes = 0
  private paused = false
  /** Inside stream.resume(), which hands over what was buffered while paused. */
  private resuming = false
  private ended = false
  private failure: Error | undefined
  private waiters: Array<() => void> = []
  private drainWait: Promise<void> | undefined
  private readonly detachSignal: () => void

  constructor (stream: Stream, options: FrameStreamOptions) {
    this.stream = stream
    this.maxFrameBytes = options.maxFrameBytes
    this.maxSendFrameBytes = options.maxSendFrameBytes ?? options.maxFrameBytes
    this.highWater = options.highWaterBytes ?? Math.max(DEFAULT_HIGH_WATER_BYTES, options.maxFrameBytes)
    this.label = `${stream.protocol === '' ? 'stream' : stream.protocol}${options.peer === undefined ? '' : ` with ${options.peer}`}`

    const onMessage = (evt: { data: Uint8Array | Iterable<Uint8Array> }): void => { this.onData(evt.data) }
    const onEnd = (): void => { this.ended = true; this.wake() }
    const onClose = (evt: StreamCloseEvent): void => {
      if (evt.error !== undefined) this.failure ??= evt.error
      this.ended = true
      stream.removeEventListener('message', onMessage)
      this.detachSignal()
      this.wake()
    }
    stream.addEventListener('message', onMessage)
    stream.addEventListener('end', onEnd)
    stream.addEventListener('close', onClose)

    const signal = options.signal
    if (signal !== undefined) {
      const onAbort = (): void => { this.abort(new CancelledError(`${this.label} cancelled`)) }
      signal.addEventListener('abort', onAbort, { once: true })
      this.detachSignal = () => { signal.removeEventListener('abort', onAbort) }
      if (signal.aborted) onAbort()
    } else {
      this.detachSignal = () => {}
    }
    if (stream.status === 'aborted' || stream.status === 'reset') this.failure ??= new Error(`stream was ${stream.status}`)
    if (stream.readableEnded || stream.status === 'closed') this.ended = true
  }

  /** Sends one frame made of `parts`; resolves once the stream can take more. */
  async send (parts: Uint8Array | Uint8Array[], options: { signal?: AbortSignal } = {}): Promise<void> {
    const list = Array.isArray(parts) ? parts : [parts]
    let total = 0
    for (const p of list) total += p.byteLength
    if (total > this.maxSendFrameBytes) {
      throw new PipemeshError('LIMIT_EXCEEDED', `cannot send a ${total}-byte message on ${this.label}: the limit is ${this.maxSendFrameBytes} bytes`)
    }
    // Writers queue behind a pending drain rather than piling more bytes into the stream.
    while (this.drainWait !== undefined) await this.drainWait.catch(() => {})
    if (this.failure !== undefined) throw this.failureError()
    let more = true
    try {
      if (total <= COALESCE_BYTES) {
        // One buffer, so a small message is one muxer frame and one encryption, not two.
        const frame = Buffer.allocUnsafe(HEADER_BYTES + total)
        frame.writeUInt32BE(total, 0)
        let offset = HEADER_BYTES
        for (const p of list) { frame.set(p, offset); offset += p.byteLength }
        more = this.stream.send(frame)
      } else {
        const header = Buffer.allocUnsafe(HEADER_BYTES)
        header.writeUInt32BE(total, 0)
        more = this.stream.send(header)
        for (const p of list) if (p.byteLength > 0) more = this.stream.send(p)
      }
    } catch (err) {
      throw this.closedError(err)
    }
    if (!more && this.stream.writableNeedsDrain) {
      const wait = this.waitForDrain(options.signal)
      this.drainWait = wait
      try {
        await wait
      } finally {
        if (this.drainWait === wait) this.drainWait = undefined
      }
    }
  }

  /** The next frame, or null once the remote has finished sending. */
  async next (options: { signal?: AbortSignal } = {}): Promise<Uint8Array | null> {
    const parts = await this.nextParts(options)
    return parts === null ? null : join(parts)
  }

  /**
   * The next frame as the pieces it arrived in (views of the received buffers, in order), or
   * null once the remote has finished sending. For a large frame that is copied on anyway, this
   * saves joining it first: a chunk arrives in ~64 KiB pieces.
   */
  async nextParts (options: { signal?: AbortSignal } = {}): Promise<Uint8Array[] | null> {
    for (;;) {
      const frame = this.frames.shift()
      if (frame !== undefined) {
        this.frameBytes -= byteLengthOf(frame)
        if (this.paused && this.frameBytes + this.segmentBytes <= this.highWater / 2) this.resume()
        return frame
      }
      if (this.failure !== undefined) throw this.failureError()
      if (this.ended) {
        if (this.segmentBytes > 0 || this.pendingLength !== undefined) {
          throw this.fail(new PipemeshError('PROTOCOL', `${this.label} ended in the middle of a message`))
        }
        return null
      }
      if (this.paused) this.resume()
      await this.waitForChange(options.signal)
    }
  }

  /** Closes the writing side once everything queued is sent; reading may continue. */
  async close (options: { signal?: AbortSignal } = {}): Promise<void> {
    try {
      await this.stream.close(options)
    } catch (err) {
      throw this.closedError(err)
    }
  }

  /** Resets the stream: both sides see it fail with `err`. */
  abort (err: Error): void {
    this.failure ??= err
    this.stream.abort(err)
    this.wake()
  }

  private onData (data: Uint8Array | Iterable<Uint8Array>): void {
    if (this.failure !== undefined) return
    if (data instanceof Uint8Array) {
      this.pushSegment(data)
    } else {
      for (const buf of data) this.pushSegment(buf)
    }
    for (;;) {
      if (this.pendingLength === undefined) {
        if (this.segmentBytes < HEADER_BYTES) break
        const header = join(this.take(HEADER_BYTES))
        const length = new DataView(header.buffer, header.byteOffset, HEADER_BYTES).getUint32(0)
        if (length > this.maxFrameBytes) {
          this.fail(new PipemeshError('PROTOCOL', `${this.label} sent a ${length}-byte message; the limit is ${this.maxFrameBytes} bytes`))
          return
        }
        this.pendingLength = length
      }
      if (this.segmentBytes < this.pendingLength) break
      const frame = this.take(this.pendingLength)
      this.frames.push(frame)
      this.frameBytes += this.pendingLength
      this.pendingLength = undefined
    }
    if (!this.resuming) this.pauseIfFull()
    this.wake()
  }

  /** Pauses the stream while more than the high-water mark is queued. */
  private pauseIfFull (): void {
    // Pause only with a whole frame queued: the reader is then certain to make progress.
    if (!this.paused && this.frames.length > 0 && this.frameBytes + this.segmentBytes > this.highWater &&
        this.stream.readStatus === 'readable') {
      this.paused = true
      this.stream.pause()
    }
  }

  /**
   * Resumes the stream. Its resume() first hands over what arrived while it was paused, and
   * only then tells the muxer to grant the sender window again (yamux sets its stream back to
   * established). A pause made while that data is handed over would be undone by that second
   * step: the stream reads as paused while the sender gets window, until the read buffer
   * overflows and the stream is reset. So the queue is checked once resume() has returned.
   */
  private resume (): void {
    this.paused = false
    if (this.stream.readStatus !== 'paused') return
    this.resuming = true
    try {
      this.stream.resume()
    } finally {
      this.resuming = false
    }
    this.pauseIfFull()
  }

  private pushSegment (buf: Uint8Array): void {
    if (buf.byteLength === 0) return
    this.segments.push(buf)
    this.segmentBytes += buf.byteLength
  }

  /** The next `n` received bytes, as views of the pieces they arrived in. */
  private take (n: number): Uint8Array[] {
    const out: Uint8Array[] = []
    let left = n
    while (left > 0) {
      const seg = this.segments[0] as Uint8Array
      if (seg.byteLength <= left) {
        out.push(seg)
        this.segments.shift()
        left -= seg.byteLength
      } else {
        out.push(seg.subarray(0, left))
        this.segments[0] = seg.subarray(left)
        left = 0
      }
    }
    this.segmentBytes -= n
    return out
  }

  private fail (err: PipemeshError): PipemeshError {
    this.segments = []
    this.segmentBytes = 0
    this.pendingLength = undefined
    this.frames.length = 0
    this.frameBytes = 0
    this.abort(err)
    return err
  }

  private wake (): void {
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w()
  }

  private async waitForChange (signal: AbortSignal | undefined): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      if (signal?.aborted === true) { reject(new CancelledError(`reading ${this.label} cancelled`)); return }
      const onAbort = (): void => { reject(new CancelledError(`reading ${this.label} cancelled`)) }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.waiters.push(() => { signal?.removeEventListener('abort', onAbort); resolve() })
    })
  }

  private async waitForDrain (signal: AbortSignal | undefined): Promise<void> {
    const stream = this.stream
    await new Promise<void>((resolve, reject) => {
      const cleanup = (): void => {
        stream.removeEventListener('drain', onDrain)
        stream.removeEventListener('close', onClose)
        signal?.removeEventListener('abort', onAbort)
      }
      const onDrain = (): void => { cleanup(); resolve() }
      const onClose = (evt: StreamCloseEvent): void => { cleanup(); reject(this.closedError(evt.error ?? this.failure)) }
      const onAbort = (): void => { cleanup(); reject(new CancelledError(`writing ${this.label} cancelled`)) }
      if (signal?.aborted === true) { onAbort(); return }
      stream.addEventListener('drain', onDrain)
      stream.addEventListener('close', onClose)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  private failureError (): PipemeshError {
    return this.failure instanceof PipemeshError ? this.failure : this.closedError(this.failure)
  }

  /** A stream closed or reset under us; `err` may be an Error, an event or nothing. */
  private closedError (err: unknown): PipemeshError {
    if (err instanceof PipemeshError) return err
    if (this.failure instanceof PipemeshError) return this.failure
    const cause = err instanceof Error ? err : (err as { error?: unknown } | undefined)?.error
    const detail = cause instanceof Error ? `: ${cause.message}` : ''
    return new PipemeshError('UNREACHABLE', `${this.label} was closed${detail}`, { retryable: true, cause })
  }
}

/** One buffer with the bytes of `parts` (the only part itself when there is one). */
function join (parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0] as Uint8Array
  const out = Buffer.allocUnsafe(byteLengthOf(parts))
  let offset = 0
  for (const p of parts) { out.set(p, offset); offset += p.byteLength }
  return out
}

export interface ChannelOptions<In> {
  inSchema: z.ZodType<In>
  /** Largest message accepted or sent, in bytes of JSON. */
  maxMessageBytes?: number
  peer?: string
  signal?: AbortSignal
}

export interface MessageChannel<In, Out> extends AsyncIterable<In> {
  readonly frames: FrameStream
  /** Sends one message; waits while the stream is congested. */
  send: (msg: Out, options?: { signal?: AbortSignal }) => Promise<void>
  /** The next valid message, or undefined once the remote has finished sending. */
  receive: (options?: { signal?: AbortSignal }) => Promise<In | undefined>
  messages: () => AsyncGenerator<In, void, undefined>
  /** Half-closes once queued messages are sent: tells the remote nothing more will come. */
  close: (options?: { signal?: AbortSignal }) => Promise<void>
  abort: (err: Error) => void
}

/** Wraps a stream in a typed channel. Invalid input throws PROTOCOL from receive() after resetting the stream. */
export function openChannel<In, Out> (stream: Stream, options: ChannelOptions<In>): MessageChannel<In, Out> {
  const maxFrameBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES
  const frameOptions: FrameStreamOptions = { maxFrameBytes }
  if (options.peer !== undefined) frameOptions.peer = options.peer
  if (options.signal !== undefined) frameOptions.signal = options.signal
  const frames = new FrameStream(stream, frameOptions)
  const decoder = new TextDecoder('utf-8', { fatal: true })
  const label = `${stream.protocol === '' ? 'stream' : stream.protocol}${options.peer === undefined ? '' : ` from ${options.peer}`}`

  const protocolError = (detail: string): never => {
    const err = new PipemeshError('PROTOCOL', `invalid message on ${label}: ${detail}`)
    frames.abort(err)
    throw err
  }
  const receive = async (opts: { signal?: AbortSignal } = {}): Promise<In | undefined> => {
    const frame = await frames.next(opts)
    if (frame === null) return undefined
    let value: unknown
    try {
      value = JSON.parse(decoder.decode(frame))
    } catch {
      return protocolError('not UTF-8 JSON')
    }
    const parsed = options.inSchema.safeParse(value)
    if (!parsed.success) return protocolError(describeIssues(parsed.error))
    return parsed.data
  }
  async function * messages (): AsyncGenerator<In, void, undefined> {
    for (;;) {
      const msg = await receive()
      if (msg === undefined) return
      yield msg
    }
  }
  return {
    frames,
    send: async (msg, opts) => { await frames.send(Buffer.from(JSON.stringify(msg)), opts) },
    receive,
    messages,
    [Symbol.asyncIterator]: messages,
    close: async (opts) => { await frames.close(opts) },
    abort: (err) => { frames.abort(err) }
  }
}

function describeIssues (error: z.ZodError): string {
  const shown = error.issues.slice(0, 5).map(i => `${i.path.length === 0 ? '(message)' : i.path.join('.')}: ${i.message}`)
  const more = error.issues.length > 5 ? ` (and ${error.issues.length - 5} more)` : ''
  return shown.join('; ') + more
}

export type DialTarget = string | PeerId | Multiaddr | Multiaddr[]

/** A string that starts with '/' is a multiaddr, anything else a peer id. */
export function toDialTarget (target: DialTarget): PeerId | Multiaddr | Multiaddr[] {
  if (typeof target !== 'string') return target
  try {
    return target.startsWith('/') ? multiaddr(target) : peerIdFromString(target)
  } catch (err) {
    throw new PipemeshError('INVALID_ARGUMENT', `"${target}" is neither a multiaddr nor a peer id`, { cause: err })
  }
}

export interface RequestOptions<In> {
  inSchema: z.ZodType<In>
  signal?: AbortSignal
  /** Default 30 s, covering dial, send and reply. */
  timeoutMs?: number
  maxMessageBytes?: number
}

/** One-shot exchange: opens a stream, sends `msg`, half-closes, returns the single reply. */
export async function request<In, Out> (node: Libp2p, target: DialTarget, protocol: string, msg: Out, options: RequestOptions<In>): Promise<In> {
  const timeoutMs = options.timeoutMs ?? 30_000
  const timeout = AbortSignal.timeout(timeoutMs)
  const signal = options.signal === undefined ? timeout : AbortSignal.any([options.signal, timeout])
  const where = targetLabel(target)
  const timedOut = (): PipemeshError =>
    new PipemeshError('TIMEOUT', `${protocol} request to ${where} got no reply within ${timeoutMs} ms`, { retryable: true })
  const dialTarget = toDialTarget(target)
  let stream: Stream
  try {
    stream = await node.dialProtocol(dialTarget, protocol, { signal })
  } catch (err) {
    if (timeout.aborted) throw timedOut()
    if (options.signal?.aborted === true) throw new CancelledError(`${protocol} request to ${where} cancelled`)
    throw new PipemeshError('UNREACHABLE', `cannot open ${protocol} to ${where}: ${(err as Error).message}`, { retryable: true, cause: err })
  }
  // The signal goes to each call, not the channel: a channel would keep listening to it (and
  // reset the finished stream when the timeout fires later).
  const channelOptions: ChannelOptions<In> = { inSchema: options.inSchema, peer: where }
  if (options.maxMessageBytes !== undefined) channelOptions.maxMessageBytes = options.maxMessageBytes
  const channel = openChannel<In, Out>(stream, channelOptions)
  try {
    await channel.send(msg, { signal })
    await channel.close({ signal })
    const reply = await channel.receive({ signal })
    if (reply === undefined) throw new PipemeshError('PROTOCOL', `${where} closed ${protocol} without replying`, { retryable: true })
    return reply
  } catch (err) {
    channel.abort(err instanceof Error ? err : new Error(String(err)))
    if (timeout.aborted) throw timedOut()
    throw err
  }
}

function targetLabel (target: DialTarget): string {
  if (Array.isArray(target)) return target.map(String).join(', ')
  return isMultiaddr(target) ? target.toString() : String(target)
}
