// Turns a step's stdout/stderr byte streams into timestamped, redacted lines for the live view
// (onLine) and the log file that is stored as the step's log. Memory stays bounded whatever the
// step prints: lines are capped, the file is capped, and every drop is announced by a note line.
// A capped log keeps its beginning and its end: past the cap, the latest lines are held back
// (up to TAIL_BYTES) and appended when the step ends, since how a week-long step ended is what
// its log is read for.

import { createWriteStream, type WriteStream } from 'node:fs'
import type { Readable } from 'node:stream'
import type { LogLine } from '../src/protocol/task.js'

export interface LogCaptureOptions {
  /** Where the log goes, one `ISO-time stream text` line per captured line; created on the first line. */
  logFile?: string
  onLine?: (line: LogLine) => void
  /** Secret strings replaced by `***` before a line is written, shown or kept in the tail. */
  redact?: string[]
  /**
   * Bytes of log (file and onLine) to keep, with a note where lines were dropped: the first lines
   * up to this less the tail, then the last lines of the output. Default 64 MiB.
   */
  maxLogBytes?: number
  /** Longer lines are cut, with a marker. Default 64 KiB. */
  maxLineBytes?: number
  /** How many of the last stderr lines to keep for error messages. Default 20. */
  tailLines?: number
}

export const DEFAULT_MAX_LOG_BYTES = 64 * 1024 * 1024
export const DEFAULT_MAX_LINE_BYTES = 64 * 1024
/** The end of a capped log kept: held in memory while the step runs, so kept small. */
const TAIL_BYTES = 1024 * 1024
const TAIL_LINE_CHARS = 1000
const NOTE_PREFIX = '[pipemesh]'

/** One log file line: `2024-05-01T12:00:00.000Z stdout text`. Lines never contain \n or \r. */
export function formatLogLine (line: LogLine): string {
  return `${new Date(line.t).toISOString()} ${line.stream} ${line.line}\n`
}

const LOG_LINE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (stdout|stderr) (.*)$/s

/** Inverse of formatLogLine (without the newline); undefined for a line not in that shape. */
export function parseLogLine (text: string): LogLine | undefined {
  const m = LOG_LINE.exec(text)
  if (m === null) return undefined
  return { t: Date.parse(m[1] as string), stream: m[2] as LogLine['stream'], line: m[3] as string }
}

/** Replaces every occurrence of each secret; longer secrets first so a secret containing another is hidden whole. */
export function makeRedactor (secrets: readonly string[] | undefined): ((text: string) => string) | undefined {
  if (secrets === undefined) return undefined
  const all = new Set<string>()
  for (const s of secrets) {
    if (s === '') continue
    all.add(s)
    // Output is split into lines, so a multi-line secret (a PEM key) is matched line by line too.
    if (/[\r\n]/.test(s)) for (const part of s.split(/\r?\n|\r/)) if (part.trim().length >= 4) all.add(part)
  }
  if (all.size === 0) return undefined
  const list = [...all].sort((a, b) => b.length - a.length)
  return (text) => {
    let out = text
    for (const s of list) if (out.includes(s)) out = out.split(s).join('***')
    return out
  }
}

interface StreamState {
  parts: Buffer[]
  length: number
  /** Inside an over-long line whose start was already emitted: drop bytes until the line ends. */
  skipping: boolean
  /** A line that ended in \r at the end of the last chunk: a \n opening the next makes it \r\n. */
  held: Buffer | undefined
  /** The latest progress-bar redraw not shown yet, and when the last one was. */
  redraw: { text: string, t: number } | undefined
  lastRedrawAt: number
}

/**
 * Output ending in a bare \r is a progress bar redrawing its line (tqdm, curl, pip), often many
 * times a second for days: one redraw per this interval is kept, with the last one before the
 * bar ends, so a training's log and its live view show progress without filling the log cap.
 */
const REDRAW_INTERVAL_MS = 2000

export class LogCapture {
  readonly stderrTail: string[] = []
  /** Bytes of log lines delivered (file and onLine), notes included. */
  bytesLogged = 0
  linesDropped = 0
  /** Set when the log file could not be written (a full disk); capture goes on for onLine. */
  writeError: Error | undefined

  private readonly opts: LogCaptureOptions
  private readonly redact: ((text: string) => string) | undefined
  private readonly maxLog: number
  private readonly maxLine: number
  private readonly tailMax: number
  private file: WriteStream | undefined
  private capped = false
  private bytesDropped = 0
  private redrawsLeftOut = 0
  /** Bytes of log before the cap; the rest of maxLog is for the tail. */
  private readonly headMax: number
  /** The latest lines past the cap, oldest first from `tailStart`, and their bytes in the log file. */
  private tail: Array<{ entry: LogLine, size: number }> = []
  private tailStart = 0
  private tailBytes = 0
  private readonly tailMaxBytes: number
  private readonly sources: Readable[] = []
  private waitingDrain = false

  constructor (options: LogCaptureOptions = {}) {
    this.opts = options
    this.redact = makeRedactor(options.redact)
    this.maxLog = options.maxLogBytes ?? DEFAULT_MAX_LOG_BYTES
    this.tailMaxBytes = Math.min(TAIL_BYTES, Math.floor(this.maxLog / 4))
    this.headMax = this.maxLog - this.tailMaxBytes
    this.maxLine = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES
    this.tailMax = options.tailLines ?? 20
  }

  /** True once at least one line went to the log file. */
  get wroteFile (): boolean { return this.file !== undefined && this.writeError === undefined }

  attach (source: Readable, stream: LogLine['stream']): void {
    const state: StreamState = { parts: [], length: 0, skipping: false, held: undefined, redraw: undefined, lastRedrawAt: -Infinity }
    this.sources.push(source)
    source.on('data', (chunk: Buffer) => { this.onData(state, stream, chunk) })
    const flush = (): void => { this.flushPartial(state, stream, Date.now()) }
    // 'close' too: a pipe destroyed while a process outside the group still held it never ends.
    source.once('end', flush)
    source.once('close', flush)
  }

  /** A line from pipemesh itself (not the step), marked so that readers can tell. */
  note (text: string, stream: LogLine['stream'] = 'stderr'): void {
    this.deliver({ t: Date.now(), stream, line: `${NOTE_PREFIX} ${text}` }, true)
  }

  /** Ends capture: announces dropped output, appends the tail and closes the file. Call after the sources ended. */
  async close (): Promise<void> {
    if (this.redrawsLeftOut > 0) {
      this.note(`${this.redrawsLeftOut} progress-bar redraw(s) (output ending in a carriage return) were left out: one is kept every ${REDRAW_INTERVAL_MS / 1000} s, and the last`)
    }
    if (this.capped) {
      const kept = this.tail.length - this.tailStart
      this.note(`log cap of ${this.maxLog} bytes reached: ${this.linesDropped} line(s), ${this.bytesDropped} bytes of output were dropped here${kept > 0 ? `; the last ${kept} line(s) follow` : ''}`)
      for (const { entry, size } of this.tail.slice(this.tailStart)) this.keep(entry, formatLogLine(entry), size)
      this.tail = []
      this.tailStart = 0
      this.tailBytes = 0
    }
    const file = this.file
    if (file === undefined) return
    await new Promise<void>((resolve) => {
      if (file.destroyed) { resolve(); return }
      file.end(() => { resolve() })
      file.once('error', () => { resolve() })
    })
  }

  private onData (state: StreamState, stream: LogLine['stream'], chunk: Buffer): void {
    const t = Date.now()
    let start = 0
    if (state.held !== undefined) {
      const held = state.held
      state.held = undefined
      const crlf = chunk[0] === 10
      this.finishLine(state, stream, held, t, crlf)
      if (crlf) start = 1
    }
    const n = chunk.length
    let nextLF = chunk.indexOf(10, start)
    let nextCR = chunk.indexOf(13, start)
    while (nextLF !== -1 || nextCR !== -1) {
      const isCR = nextCR !== -1 && (nextLF === -1 || nextCR < nextLF)
      const at = isCR ? nextCR : nextLF
      const line = this.takeLine(state, chunk.subarray(start, at))
      if (isCR && at + 1 === n) {
        // \r or \r\n? The next chunk tells.
        if (line !== undefined) state.held = line
        start = n
        break
      }
      const crlf = isCR && chunk[at + 1] === 10
      this.finishLine(state, stream, line, t, !isCR || crlf)
      start = at + (crlf ? 2 : 1)
      if (nextLF !== -1 && nextLF < start) nextLF = chunk.indexOf(10, start)
      if (nextCR !== -1 && nextCR < start) nextCR = chunk.indexOf(13, start)
    }
    if (start < n) this.addPartial(state, stream, chunk.subarray(start), t)
  }

  /** The whole line ending with `piece`, or undefined when its start was already cut and emitted. */
  private takeLine (state: StreamState, piece: Buffer): Buffer | undefined {
    if (state.skipping) {
      state.skipping = false
      return undefined
    }
    if (state.length === 0) return piece
    state.parts.push(piece)
    const bytes = Buffer.concat(state.parts, state.length + piece.length)
    state.parts = []
    state.length = 0
    return bytes
  }

  /** A line ended by \n (or \r\n), or a progress-bar redraw ended by a bare \r. */
  private finishLine (state: StreamState, stream: LogLine['stream'], bytes: Buffer | undefined, t: number, lineFeed: boolean): void {
    if (bytes === undefined) return
    // A bare \r with nothing before it is a progress bar clearing its line, not an empty line.
    if (bytes.length === 0 && !lineFeed) return
    const text = bytes.length > this.maxLine ? truncated(bytes, this.maxLine) : bytes.toString('utf8')
    if (state.redraw !== undefined) {
      // Superseded: by a newer redraw, or by the line that ends the bar.
      state.redraw = undefined
      this.redrawsLeftOut++
    }
    if (lineFeed || t - state.lastRedrawAt >= REDRAW_INTERVAL_MS) {
      if (!lineFeed) state.lastRedrawAt = t
      this.emit(stream, text, t)
    } else {
      state.redraw = { text, t }
    }
  }

  private addPartial (state: StreamState, stream: LogLine['stream'], rest: Buffer, t: number): void {
    if (state.skipping) return
    state.parts.push(rest)
    state.length += rest.length
    if (state.length > this.maxLine) {
      const bytes = Buffer.concat(state.parts, state.length)
      state.parts = []
      state.length = 0
      state.skipping = true
      this.emit(stream, truncated(bytes, this.maxLine), t)
    }
  }

  private flushPartial (state: StreamState, stream: LogLine['stream'], t: number): void {
    if (state.held !== undefined) {
      this.finishLine(state, stream, state.held, t, false)
      state.held = undefined
    }
    if (state.length > 0 && !state.skipping) {
      // The stream's last words, without a newline: they end whatever bar was drawing.
      this.finishLine(state, stream, Buffer.concat(state.parts, state.length), t, true)
    } else if (state.redraw !== undefined) {
      // A bar that never ended its line: its last state is how it ended.
      this.emit(stream, state.redraw.text, state.redraw.t)
    }
    state.redraw = undefined
    state.parts = []
    state.length = 0
    state.skipping = false
  }

  private emit (stream: LogLine['stream'], text: string, t: number): void {
    const line = this.redact === undefined ? text : this.redact(text)
    if (stream === 'stderr') {
      this.stderrTail.push(line.length > TAIL_LINE_CHARS ? `${line.slice(0, TAIL_LINE_CHARS)}…` : line)
      if (this.stderrTail.length > this.tailMax) this.stderrTail.shift()
    }
    this.deliver({ t, stream, line }, false)
  }

  private deliver (entry: LogLine, isNote: boolean): void {
    const text = formatLogLine(entry)
    const size = Buffer.byteLength(text)
    if (!isNote && (this.capped || this.bytesLogged + size > this.headMax)) {
      if (!this.capped) {
        this.capped = true
        this.note(`log cap of ${this.maxLog} bytes reached: output from here on is dropped, except the last lines, kept for the end of the log`)
      }
      // Held back for the end; what no longer fits in the tail is dropped, oldest first.
      this.tail.push({ entry, size })
      this.tailBytes += size
      while (this.tailBytes > this.tailMaxBytes && this.tailStart < this.tail.length) {
        const old = this.tail[this.tailStart++] as { entry: LogLine, size: number }
        this.tailBytes -= old.size
        this.linesDropped++
        this.bytesDropped += Buffer.byteLength(old.entry.line)
      }
      // Array#shift moves every element: a chatty step past its cap would pay that per line.
      if (this.tailStart > 4096 && this.tailStart * 2 > this.tail.length) {
        this.tail = this.tail.slice(this.tailStart)
        this.tailStart = 0
      }
      return
    }
    this.keep(entry, text, size)
  }

  private keep (entry: LogLine, text: string, size: number): void {
    this.bytesLogged += size
    this.opts.onLine?.(entry)
    this.write(text)
  }

  private write (text: string): void {
    if (this.opts.logFile === undefined || this.writeError !== undefined) return
    if (this.file === undefined) {
      this.file = createWriteStream(this.opts.logFile, { flags: 'w' })
      this.file.on('error', (err) => {
        this.writeError = err
        this.resumeSources()
      })
    }
    if (!this.file.write(text) && !this.waitingDrain) {
      // The disk is slower than the step: pause the pipes so the child blocks instead of us buffering.
      this.waitingDrain = true
      for (const s of this.sources) s.pause()
      this.file.once('drain', () => { this.resumeSources() })
    }
  }

  private resumeSources (): void {
    if (!this.waitingDrain) return
    this.waitingDrain = false
    for (const s of this.sources) s.resume()
  }
}

function truncated (bytes: Buffer, max: number): string {
  return `${bytes.subarray(0, max).toString('utf8')} ${NOTE_PREFIX} [line cut at ${max} bytes]`
}
