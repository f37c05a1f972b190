// Reading a pipeline file: bytes -> YAML -> plain data -> validated Pipeline. YAML is hostile
// input (pipelines are submitted by users, possibly remotely), so size, nesting depth and alias
// expansion are bounded before any recursive work is done, and duplicate keys are errors.

import { readFile, stat } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { Composer, isAlias, isMap, isPair, isScalar, isSeq, Lexer, Parser, type CST, type Node as YamlNode } from 'yaml'
import { PipelineValidationError, throwIfAborted, type ValidationIssue } from '../errors.js'
import { formatBytes } from '../util/units.js'
import type { Pipeline } from './types.js'
import { validatePipeline } from './validate.js'

export const MAX_PIPELINE_BYTES = 1024 * 1024
/** Alias expansions allowed when converting to data (yaml's own measure); legit files use a handful. */
export const MAX_ALIAS_COUNT = 100
export const MAX_NESTING_DEPTH = 64

export interface ParseOptions {
  /** Directory code, environment files and inputs resolve from (absolute, or resolved from cwd). */
  baseDir: string
  /** The file the text came from, for messages and Pipeline.file. */
  file?: string
  /** `--param NAME=VALUE` overrides, coerced to each declared param's type. */
  params?: Record<string, string>
  /** Check that code, environment files and inputs exist (default true). */
  checkFiles?: boolean
}

/**
 * Remembers what YAML text parsed to. Parsing is most of what validating a large pipeline costs
 * (~0.1 s for 500 steps), and the same file is submitted again and again; the text itself is the
 * key, so an edit is simply a miss.
 */
export interface YamlCache {
  get: (text: string) => unknown
  set: (text: string, data: unknown) => void
}

export interface LoadOptions {
  params?: Record<string, string>
  signal?: AbortSignal
  cache?: YamlCache
}

/** A pipeline file as read: its text, the data its YAML denotes, and the validated pipeline. */
export interface PipelineSource {
  pipeline: Pipeline
  text: string
  data: unknown
}

/** Reads, parses and validates a pipeline file; throws PipelineValidationError listing every problem. */
export async function loadPipeline (file: string, options: LoadOptions = {}): Promise<Pipeline> {
  return (await readPipelineFile(file, options)).pipeline
}

/** As loadPipeline, and also returns the text and the parsed data (what a client submits). */
export async function readPipelineFile (file: string, options: LoadOptions = {}): Promise<PipelineSource> {
  const abs = resolve(file)
  let text: string
  try {
    const info = await stat(abs)
    if (!info.isFile()) throw new PipelineValidationError([{ path: '', message: 'not a file: expected a pipeline YAML file' }], file)
    if (info.size > MAX_PIPELINE_BYTES) throw tooLarge(info.size, file)
    text = await readFile(abs, { encoding: 'utf8', ...(options.signal === undefined ? {} : { signal: options.signal }) })
  } catch (err) {
    if (err instanceof PipelineValidationError) throw err
    throwIfAborted(options.signal)
    const code = (err as NodeJS.ErrnoException).code
    const why = code === 'ENOENT' ? 'file not found' : `cannot read the file (${code ?? String(err)})`
    throw new PipelineValidationError([{ path: '', message: why }], file)
  }
  const parseOptions: ParseOptions = { baseDir: dirname(abs), file: abs, checkFiles: true }
  if (options.params !== undefined) parseOptions.params = options.params
  const bytes = Buffer.byteLength(text, 'utf8')
  if (bytes > MAX_PIPELINE_BYTES) throw tooLarge(bytes, abs)
  let data = options.cache?.get(text)
  let issues: ValidationIssue[] = []
  if (data === undefined) {
    ({ data, issues } = readYaml(text))
    // Only clean YAML, and only what JSON keeps exactly: the cache stores JSON.
    if (data !== undefined && issues.length === 0 && isJsonExact(data)) options.cache?.set(text, data)
  }
  return { pipeline: validateOrThrow(data, issues, parseOptions), text, data }
}

/** Parses and validates pipeline YAML text; throws PipelineValidationError listing every problem. */
export function parsePipeline (text: string, options: ParseOptions): Pipeline {
  const bytes = Buffer.byteLength(text, 'utf8')
  if (bytes > MAX_PIPELINE_BYTES) throw tooLarge(bytes, options.file)
  const { data, issues } = readYaml(text)
  return validateOrThrow(data, issues, options)
}

/**
 * Validates pipeline data that was YAML once and came as JSON (a submit request): the same rules
 * as parsePipeline, without the YAML step.
 */
export function parsePipelineData (data: unknown, options: ParseOptions): Pipeline {
  const bytes = jsonBytes(data)
  if (bytes > MAX_PIPELINE_BYTES) {
    throw new PipelineValidationError([{ path: '', message: `the pipeline's data is ${formatBytes(bytes)} as JSON: pipelines are limited to ${formatBytes(MAX_PIPELINE_BYTES)}` }], options.file)
  }
  return validateOrThrow(data, [], options)
}

/**
 * True when a client may submit `data` in place of its YAML: JSON keeps it exactly and it is
 * within the size limit (anchors expanded, it can outgrow its text).
 */
export function sendableAsData (data: unknown): boolean {
  return isJsonExact(data) && jsonBytes(data) <= MAX_PIPELINE_BYTES
}

function jsonBytes (data: unknown): number {
  return Buffer.byteLength(JSON.stringify(data) ?? '', 'utf8')
}

function validateOrThrow (data: unknown, issues: ValidationIssue[], options: ParseOptions): Pipeline {
  if (data === undefined) throw new PipelineValidationError(issues, options.file)
  return validatePipeline(data, { ...options, baseDir: resolve(options.baseDir) }, issues)
}

/**
 * True when JSON would give back `data` unchanged: YAML can also denote .inf and .nan, which JSON
 * turns into null. (Core-schema YAML yields nothing else JSON lacks.)
 */
export function isJsonExact (data: unknown): boolean {
  const stack: unknown[] = [data]
  while (stack.length > 0) {
    const v = stack.pop()
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) return false
    } else if (Array.isArray(v)) {
      for (const item of v) stack.push(item)
    } else if (typeof v === 'object' && v !== null) {
      const proto: unknown = Object.getPrototypeOf(v)
      if (proto !== Object.prototype && proto !== null) return false
      for (const item of Object.values(v)) stack.push(item)
    } else if (v !== null && typeof v !== 'string' && typeof v !== 'boolean') {
      return false
    }
  }
  return true
}

function tooLarge (bytes: number, file: string | undefined): PipelineValidationError {
  return new PipelineValidationError([{
    path: '',
    message: `file is ${formatBytes(bytes)}: pipeline files are limited to ${formatBytes(MAX_PIPELINE_BYTES)}`
  }], file)
}

/** YAML text -> plain data, or undefined with the reasons. Duplicate keys are reported but not fatal. */
export function readYaml (text: string): { data: unknown, issues: ValidationIssue[] } {
  const issues: ValidationIssue[] = []
  const at = (offset: number): string => {
    const before = text.slice(0, offset)
    const lineStart = before.lastIndexOf('\n') + 1
    let line = 1
    for (let i = before.indexOf('\n'); i >= 0; i = before.indexOf('\n', i + 1)) line++
    return `line ${line}, column ${offset - lineStart + 1}`
  }
  // Lex and parse incrementally, watching the parser's stack: refusing deep nesting here keeps
  // the recursive composer (and everything after it) away from pathological input.
  const parser = new Parser()
  const tokens: CST.Token[] = []
  let offset = 0
  for (const lexeme of new Lexer().lex(text)) {
    for (const token of parser.next(lexeme)) tokens.push(token)
    offset += lexeme.length
    if (parser.stack.length > MAX_NESTING_DEPTH + 2) {
      issues.push({ path: '', message: `nesting deeper than ${MAX_NESTING_DEPTH} levels at ${at(offset)}: refused` })
      return { data: undefined, issues }
    }
  }
  for (const token of parser.end()) tokens.push(token)

  const composer = new Composer({ version: '1.2', schema: 'core', merge: false, uniqueKeys: false, strict: true })
  const docs = [...composer.compose(tokens, true, text.length)]
  if (docs.length > 1) {
    issues.push({ path: '', message: 'expected a single YAML document, found several (remove the "---" separators)' })
    return { data: undefined, issues }
  }
  const doc = docs[0]
  if (doc === undefined) return { data: undefined, issues: [{ path: '', message: 'the file is empty' }] }
  if (doc.errors.length > 0) {
    // One syntax error usually cascades into dozens. The commonest cause, an unquoted `${{`
    // in a flow map or list, is named alone: the parser's own errors for it only confuse.
    const unquoted = /[{[][^\n"']*\$\{\{/.exec(text)
    if (unquoted !== null) {
      issues.push({ path: '', message: `a placeholder inside { } or [ ] at ${at(unquoted.index)} must be quoted, e.g. { data: "\${{steps.prep.outputs.train}}" }, or written in block style on its own line (the YAML parser reports ${doc.errors.length} syntax errors from there)` })
    } else {
      // Otherwise the first few say where to look.
      for (const error of doc.errors.slice(0, 5)) issues.push({ path: '', message: `YAML syntax error at ${at(error.pos[0])}: ${error.message.split('\n')[0] ?? ''}` })
      if (doc.errors.length > 5) issues.push({ path: '', message: `… and ${doc.errors.length - 5} more YAML syntax errors after those` })
    }
  }
  if (issues.length > 0) return { data: undefined, issues }
  if (doc.contents !== null) findDuplicateKeys(doc.contents as YamlNode, '', issues, at)

  let data: unknown
  try {
    data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT })
  } catch (err) {
    const message = err instanceof ReferenceError && /alias/i.test(err.message)
      ? `YAML aliases expand too much (more than ${MAX_ALIAS_COUNT} alias expansions): refused as a possible alias bomb`
      : `cannot read the YAML: ${err instanceof Error ? err.message : String(err)}`
    issues.push({ path: '', message })
    return { data: undefined, issues }
  }
  if (data === null || data === undefined) {
    issues.push({ path: '', message: 'the file is empty: expected a mapping with at least "name" and "steps"' })
    return { data: undefined, issues }
  }
  return { data, issues }
}

/** Reports keys written twice in one mapping; yaml would otherwise keep the last silently. */
function findDuplicateKeys (node: YamlNode, path: string, issues: ValidationIssue[], at: (offset: number) => string): void {
  if (isMap(node)) {
    const seen = new Set<string>()
    for (const pair of node.items) {
      if (!isPair(pair)) continue
      const key = isScalar(pair.key) ? String(pair.key.value) : undefined
      const child = key === undefined ? path : path === '' ? key : `${path}.${key}`
      if (key !== undefined) {
        if (seen.has(key)) {
          const offset = isScalar(pair.key) ? pair.key.range?.[0] : undefined
          issues.push({ path: child, message: `duplicate key "${key}"${offset === undefined ? '' : ` at ${at(offset)}`}` })
        }
        seen.add(key)
      }
      if (pair.value !== null && !isAlias(pair.value)) findDuplicateKeys(pair.value as YamlNode, child, issues, at)
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => {
      if (item !== null && !isAlias(item)) findDuplicateKeys(item as YamlNode, `${path}[${i}]`, issues, at)
    })
  }
}
