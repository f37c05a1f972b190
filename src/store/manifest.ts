// Manifests describe an artifact: a file (its chunks) or a tree (its entries). They are encoded
// canonically (sorted-key JSON, no whitespace) and addressed by the sha256 of that encoding, so
// equal content always has one digest. Every decode validates schema, canonical form and paths,
// because a manifest may have come from another peer.

import { createHash } from 'node:crypto'
import { z } from 'zod'
import { CorruptContentError, PipemeshError } from '../errors.js'
import { assertSafeRelativePath, assertSafeSymlinkTarget } from '../util/safe-path.js'
import { DIGEST_PATTERN, type Digest } from './types.js'

/** Largest manifest accepted (about 700k chunk references or 300k tree entries). */
export const MAX_MANIFEST_BYTES = 64 * 1024 * 1024
/** Largest chunk accepted from a peer; readChunk/writeChunk hold one chunk in memory. */
export const MAX_CHUNK_BYTES = 16 * 1024 * 1024

export interface ChunkRef { digest: Digest, size: number }
export interface FileManifest { type: 'file', size: number, chunks: ChunkRef[] }
export interface FileEntry { path: string, type: 'file', digest: Digest, size: number, executable: boolean }
export interface DirEntry { path: string, type: 'dir' }
export interface SymlinkEntry { path: string, type: 'symlink', target: string }
export type TreeEntry = FileEntry | DirEntry | SymlinkEntry
export interface TreeManifest { type: 'tree', entries: TreeEntry[] }
export type Manifest = FileManifest | TreeManifest

const digestSchema = z.string().regex(DIGEST_PATTERN) as unknown as z.ZodType<Digest>
const sizeSchema = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)

const fileManifestSchema = z.strictObject({
  type: z.literal('file'),
  size: sizeSchema,
  chunks: z.array(z.strictObject({ digest: digestSchema, size: z.number().int().positive().max(MAX_CHUNK_BYTES) }))
})

const treeManifestSchema = z.strictObject({
  type: z.literal('tree'),
  entries: z.array(z.discriminatedUnion('type', [
    z.strictObject({ path: z.string(), type: z.literal('file'), digest: digestSchema, size: sizeSchema, executable: z.boolean() }),
    z.strictObject({ path: z.string(), type: z.literal('dir') }),
    z.strictObject({ path: z.string(), type: z.literal('symlink'), target: z.string() })
  ]))
})

const manifestSchema = z.discriminatedUnion('type', [fileManifestSchema, treeManifestSchema])

/** The one order tree entries are kept in (UTF-16 code units); a parent sorts before its children. */
export function comparePaths (a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

function canonicalJson (value: unknown): string {
  if (Array.isArray(value)) return '[' + value.map(canonicalJson).join(',') + ']'
  if (value !== null && typeof value === 'object') {
    const obj = value as Record<string, unknown>
    const keys = Object.keys(obj).filter(k => obj[k] !== undefined).sort()
    return '{' + keys.map(k => JSON.stringify(k) + ':' + canonicalJson(obj[k])).join(',') + '}'
  }
  return JSON.stringify(value)
}

export function sha256Digest (bytes: Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`
}

/** Canonical bytes of a manifest; the caller is responsible for a valid, sorted manifest. */
export function encodeManifest (manifest: Manifest): Buffer {
  return Buffer.from(canonicalJson(manifest), 'utf8')
}

/** Total bytes of file content the manifest describes. */
export function manifestSize (manifest: Manifest): number {
  if (manifest.type === 'file') return manifest.size
  let total = 0
  for (const e of manifest.entries) if (e.type === 'file') total += e.size
  return total
}

/**
 * Parses and fully checks manifest bytes: the hash (when `expected` is given), size, schema,
 * canonical encoding, chunk sizes, and every tree path and symlink target. Throws
 * CorruptContentError for a hash mismatch, UnsafePathError for an escaping path and
 * PipemeshError('PROTOCOL') for anything else malformed.
 */
export function decodeManifest (bytes: Uint8Array, expected?: Digest): Manifest {
  const label = expected ?? 'manifest'
  if (bytes.byteLength > MAX_MANIFEST_BYTES) {
    throw new PipemeshError('LIMIT_EXCEEDED', `${label} is ${bytes.byteLength} bytes, over the ${MAX_MANIFEST_BYTES}-byte manifest limit`)
  }
  if (expected !== undefined) {
    const actual = sha256Digest(bytes)
    if (actual !== expected) throw new CorruptContentError(expected, `manifest bytes hash to ${actual}`)
  }
  const bad = (why: string): never => { throw new PipemeshError('PROTOCOL', `${label} is not a valid manifest: ${why}`) }
  let json: unknown
  try {
    json = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'))
  } catch (err) {
    bad(`not JSON (${(err as Error).message})`)
  }
  const parsed = manifestSchema.safeParse(json)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    bad(issue === undefined ? 'schema mismatch' : `${issue.path.join('.') || '(root)'}: ${issue.message}`)
  }
  const manifest = (parsed as { data: Manifest }).data
  if (manifest.type === 'file') checkFileManifest(manifest, bad)
  else checkTreeManifest(manifest, bad)
  if (!encodeManifest(manifest).equals(bytes)) bad('not in canonical form (sorted keys, no whitespace)')
  return manifest
}

function checkFileManifest (m: FileManifest, bad: (why: string) => never): void {
  let sum = 0
  for (const c of m.chunks) sum += c.size
  if (sum !== m.size) bad(`chunk sizes add up to ${sum}, but size says ${m.size}`)
}

function checkTreeManifest (m: TreeManifest, bad: (why: string) => never): void {
  const dirs = new Set<string>()
  let previous: string | undefined
  let total = 0
  for (const e of m.entries) {
    assertSafeRelativePath(e.path, 'tree entry path')
    if (previous !== undefined && comparePaths(previous, e.path) >= 0) {
      bad(`entries are not strictly sorted by path ("${previous}" then "${e.path}")`)
    }
    previous = e.path
    const slash = e.path.lastIndexOf('/')
    // Parents must be real directories of the tree: a path under a symlink could be written
    // through that link to anywhere.
    if (slash >= 0 && !dirs.has(e.path.slice(0, slash))) {
      bad(`entry "${e.path}" has no directory entry for its parent "${e.path.slice(0, slash)}"`)
    }
    if (e.type === 'dir') dirs.add(e.path)
    else if (e.type === 'symlink') assertSafeSymlinkTarget(e.path, e.target)
    else total += e.size
  }
  if (total > Number.MAX_SAFE_INTEGER) bad('total size is too large')
}
