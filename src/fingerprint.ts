// A step's fingerprint: the identity of "this exact work", computed before the step runs. Two
// executions with equal fingerprints would produce the same outputs, so the later one is reused.
// Also explains a rerun by diffing the parts of two fingerprints.
//
// In the digest: the resolved command (params substituted), resolved env, code snapshot digest
// and per-file digests, environment digest, input content digests, output names, and the scheme.
// Not in it: `params` (kept for explanations only: a param affects the work exactly through the
// command and env text it is substituted into, so hashing it again would only make a param the
// step does not use force a rerun), resources, retries, timeout, the agent, secrets.

import { createHash } from 'node:crypto'
import type { ParamValue } from './spec/types.js'
import type { Digest } from './store/types.js'

/** Bumped whenever what goes into the digest changes, so old reuse entries stop matching. */
export const FINGERPRINT_SCHEME = 1

export interface FingerprintParts {
  /** Resolved: placeholders substituted. */
  command: string | string[]
  /** Resolved env (no secrets). */
  env: Record<string, string>
  code: { digest: Digest | null, files: Record<string, Digest> }
  /** Digest of the step's prepared environment, null when it has none. */
  environment: Digest | null
  /** Input name -> digest of the artifact's content. */
  inputs: Record<string, Digest>
  outputs: string[]
  /** Params the step references; informational, not hashed (see above). */
  params: Record<string, ParamValue>
  /** The command as written, placeholders kept; informational, lets explain tell a param change from an edit. */
  template?: string | string[]
  /** Scheme these parts were recorded under; absent means FINGERPRINT_SCHEME. Not hashed (the constant is). */
  scheme?: number
}

/** JSON with object keys sorted at every level, so equal content always gives equal text. */
export function canonicalJson (value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (value !== null && typeof value === 'object') {
    const entries = Object.keys(value).sort()
      .filter(k => (value as Record<string, unknown>)[k] !== undefined)
      .map(k => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`)
    return `{${entries.join(',')}}`
  }
  return JSON.stringify(value) ?? 'null'
}

export function computeFingerprint (parts: FingerprintParts): Digest {
  const hashed = {
    scheme: FINGERPRINT_SCHEME,
    command: parts.command,
    env: parts.env,
    code: { digest: parts.code.digest, files: parts.code.files },
    environment: parts.environment,
    inputs: parts.inputs,
    // Output names form a set: their order in the file does not change the work.
    outputs: [...parts.outputs].sort()
  }
  return `sha256:${createHash('sha256').update(canonicalJson(hashed)).digest('hex')}`
}

export type ChangeKind = 'added' | 'removed' | 'changed'

export type FingerprintChange =
  | { kind: 'scheme', from: number, to: number }
  | { kind: 'command', from: string | string[], to: string | string[] }
  | { kind: 'param', name: string, from: ParamValue | undefined, to: ParamValue | undefined }
  | { kind: 'code-file', path: string, change: ChangeKind }
  /** The code snapshot differs though no file digest does (a mode bit, or per-file digests not recorded). */
  | { kind: 'code', from: Digest | null, to: Digest | null }
  | { kind: 'env', name: string, change: ChangeKind, from?: string, to?: string }
  | { kind: 'input', name: string, change: ChangeKind }
  | { kind: 'environment', from: Digest | null, to: Digest | null }
  | { kind: 'outputs', from: string[], to: string[] }

function sameJson (a: unknown, b: unknown): boolean {
  return canonicalJson(a) === canonicalJson(b)
}

function keyChanges<T> (from: Record<string, T>, to: Record<string, T>, same: (a: T, b: T) => boolean): Array<{ key: string, change: ChangeKind }> {
  const keys = [...new Set([...Object.keys(from), ...Object.keys(to)])].sort()
  const changes: Array<{ key: string, change: ChangeKind }> = []
  for (const key of keys) {
    const a = Object.hasOwn(from, key) ? from[key] : undefined
    const b = Object.hasOwn(to, key) ? to[key] : undefined
    if (a === undefined && b !== undefined) changes.push({ key, change: 'added' })
    else if (a !== undefined && b === undefined) changes.push({ key, change: 'removed' })
    else if (a !== undefined && b !== undefined && !same(a, b)) changes.push({ key, change: 'changed' })
  }
  return changes
}

/**
 * What differs between two executions' parts, most explanatory first. A command difference is
 * reported as the param changes that explain it, and as a command change only when the command
 * as written changed too (or, without templates, when no param changed).
 */
export function diffFingerprints (previous: FingerprintParts, current: FingerprintParts): FingerprintChange[] {
  const changes: FingerprintChange[] = []
  const fromScheme = previous.scheme ?? FINGERPRINT_SCHEME
  const toScheme = current.scheme ?? FINGERPRINT_SCHEME
  if (fromScheme !== toScheme) changes.push({ kind: 'scheme', from: fromScheme, to: toScheme })

  const paramChanges = keyChanges(previous.params, current.params, (a, b) => a === b)
  for (const { key } of paramChanges) {
    changes.push({ kind: 'param', name: key, from: previous.params[key], to: current.params[key] })
  }
  if (!sameJson(previous.command, current.command)) {
    const templates = previous.template !== undefined && current.template !== undefined
    const edited = templates ? !sameJson(previous.template, current.template) : paramChanges.length === 0
    if (edited || (templates && paramChanges.length === 0)) changes.push({ kind: 'command', from: previous.command, to: current.command })
  }

  const fileChanges = keyChanges(previous.code.files, current.code.files, (a, b) => a === b)
  for (const { key, change } of fileChanges) changes.push({ kind: 'code-file', path: key, change })
  if (fileChanges.length === 0 && previous.code.digest !== current.code.digest) {
    changes.push({ kind: 'code', from: previous.code.digest, to: current.code.digest })
  }

  for (const { key, change } of keyChanges(previous.env, current.env, (a, b) => a === b)) {
    const entry: FingerprintChange = { kind: 'env', name: key, change }
    if (Object.hasOwn(previous.env, key)) entry.from = previous.env[key]
    if (Object.hasOwn(current.env, key)) entry.to = current.env[key]
    changes.push(entry)
  }
  if (previous.environment !== current.environment) changes.push({ kind: 'environment', from: previous.environment, to: current.environment })
  for (const { key, change } of keyChanges(previous.inputs, current.inputs, (a, b) => a === b)) changes.push({ kind: 'input', name: key, change })
  const fromOutputs = [...previous.outputs].sort()
  const toOutputs = [...current.outputs].sort()
  if (!sameJson(fromOutputs, toOutputs)) changes.push({ kind: 'outputs', from: fromOutputs, to: toOutputs })
  return changes
}

function show (value: ParamValue | undefined): string {
  if (value === undefined) return '(unset)'
  return typeof value === 'string' ? JSON.stringify(value) : String(value)
}

function showCommand (command: string | string[]): string {
  const text = typeof command === 'string' ? command : JSON.stringify(command)
  return text.length > 80 ? `${text.slice(0, 77)}...` : text
}

/** One line for `pipemesh explain`: `code file train.mjs changed`, `param trees 50 -> 100`. */
export function describeChange (change: FingerprintChange): string {
  switch (change.kind) {
    case 'scheme': return `fingerprint scheme ${change.from} -> ${change.to} (pipemesh was upgraded)`
    case 'command': return `command changed: ${showCommand(change.from)} -> ${showCommand(change.to)}`
    case 'param':
      if (change.from === undefined) return `param ${change.name} now used (${show(change.to)})`
      if (change.to === undefined) return `param ${change.name} no longer used (was ${show(change.from)})`
      return `param ${change.name} ${show(change.from)} -> ${show(change.to)}`
    case 'code-file': return `code file ${change.path} ${change.change}`
    case 'code': return 'code changed'
    case 'env':
      if (change.change === 'changed') return `env ${change.name} changed (${JSON.stringify(change.from)} -> ${JSON.stringify(change.to)})`
      return `env ${change.name} ${change.change}`
    case 'environment':
      if (change.from === null) return 'environment added'
      if (change.to === null) return 'environment removed'
      return 'environment changed'
    case 'input': return `input ${change.name} ${change.change}`
    case 'outputs': return `outputs changed: [${change.from.join(', ')}] -> [${change.to.join(', ')}]`
  }
}
