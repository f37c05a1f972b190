// Typed errors shared by every component. Each error has a stable `code` that tests, the CLI and
// the HTTP API switch on; messages are written for the person who will read them. Errors cross
// process boundaries (libp2p, HTTP) only through toWireError/fromWireError.

export type ErrorCode =
  | 'INVALID_PIPELINE'
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'CORRUPT_CONTENT'
  | 'MISSING_CONTENT'
  | 'UNSAFE_PATH'
  | 'STEP_FAILED'
  | 'MISSING_OUTPUT'
  | 'TIMEOUT'
  | 'CANCELLED'
  | 'ENVIRONMENT_FAILED'
  | 'PROTOCOL'
  | 'UNREACHABLE'
  | 'UNSCHEDULABLE'
  | 'LIMIT_EXCEEDED'
  | 'UNAUTHORIZED'
  | 'CONFLICT'
  | 'INTERNAL'

export interface ErrorOptions {
  /** True when trying the same thing again may succeed (a lost peer, a full queue). */
  retryable?: boolean
  /** What the reader can do about it. */
  hint?: string
  cause?: unknown
}

export class PipemeshError extends Error {
  readonly code: ErrorCode
  readonly retryable: boolean
  readonly hint?: string

  constructor (code: ErrorCode, message: string, options: ErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'PipemeshError'
    this.code = code
    this.retryable = options.retryable ?? false
    if (options.hint !== undefined) this.hint = options.hint
  }
}

/** One problem found while validating a pipeline: where it is and what was expected. */
export interface ValidationIssue {
  /** Dotted location in the pipeline file, e.g. `steps.train.resources.memory`. */
  path: string
  message: string
}

/** A pipeline that failed validation; carries every problem found, not just the first. */
export class PipelineValidationError extends PipemeshError {
  readonly issues: ValidationIssue[]
  readonly file?: string

  constructor (issues: ValidationIssue[], file?: string) {
    const where = file === undefined ? 'the pipeline' : file
    const lines = issues.map(i => `  - ${i.path === '' ? '' : `${i.path}: `}${i.message}`)
    super('INVALID_PIPELINE', `${where} has ${issues.length} problem${issues.length === 1 ? '' : 's'}:\n${lines.join('\n')}`)
    this.name = 'PipelineValidationError'
    this.issues = issues
    if (file !== undefined) this.file = file
  }
}

/** Stored or received bytes whose hash does not match their address. Never handed to a step. */
export class CorruptContentError extends PipemeshError {
  readonly digest: string
  constructor (digest: string, detail: string, options: ErrorOptions = {}) {
    super('CORRUPT_CONTENT', `content ${digest} is corrupt: ${detail}`, { retryable: true, ...options })
    this.name = 'CorruptContentError'
    this.digest = digest
  }
}

export class MissingContentError extends PipemeshError {
  readonly digest: string
  constructor (digest: string, detail = 'not in the store', options: ErrorOptions = {}) {
    super('MISSING_CONTENT', `content ${digest} is missing: ${detail}`, options)
    this.name = 'MissingContentError'
    this.digest = digest
  }
}

export class UnsafePathError extends PipemeshError {
  constructor (path: string, why: string) {
    super('UNSAFE_PATH', `refused path "${path}": ${why}`)
    this.name = 'UnsafePathError'
  }
}

export class CancelledError extends PipemeshError {
  constructor (message = 'cancelled') {
    super('CANCELLED', message)
    this.name = 'CancelledError'
  }
}

/** The shape an error takes on the wire (libp2p messages, HTTP bodies). */
export interface WireError {
  code: ErrorCode
  message: string
  retryable?: boolean
  hint?: string
}

export function toWireError (err: unknown): WireError {
  if (err instanceof PipemeshError) {
    const wire: WireError = { code: err.code, message: err.message, retryable: err.retryable }
    if (err.hint !== undefined) wire.hint = err.hint
    return wire
  }
  const message = err instanceof Error ? err.message : String(err)
  return { code: 'INTERNAL', message }
}

export function fromWireError (wire: WireError): PipemeshError {
  const opts: ErrorOptions = { retryable: wire.retryable ?? false }
  if (wire.hint !== undefined) opts.hint = wire.hint
  return new PipemeshError(wire.code, wire.message, opts)
}

/** Throws the signal's reason as a CancelledError when it is aborted. */
export function throwIfAborted (signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) {
    const reason: unknown = signal.reason
    if (reason instanceof PipemeshError) throw reason
    throw new CancelledError(reason instanceof Error ? reason.message : 'cancelled')
  }
}

/**
 * A multi-line message on one line, for tables and status lines: its first line, and when that
 * line introduces the rest ("…; last lines of stderr:"), the last of the lines that follow, which
 * for a failed step is usually its error ("CUDA error: out of memory").
 */
export function headline (message: string): string {
  const lines = message.split('\n')
  const first = lines[0] ?? ''
  if (!first.trimEnd().endsWith(':')) return first
  const last = lines.slice(1).map(l => l.trim()).filter(l => l !== '').at(-1)
  return last === undefined ? first.trimEnd().slice(0, -1) : `${first.trimEnd()} … ${last}`
}
