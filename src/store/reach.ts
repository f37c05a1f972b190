// What an artifact consists of: its manifest, the file manifests a tree refers to, and the
// chunks of those files. has, transfers, materialize, verify and gc all start from here.

import type { Chunks } from './chunks.js'
import type { StoreDb } from './db.js'
import { decodeManifest, type ChunkRef, type Manifest } from './manifest.js'
import type { Digest } from './types.js'

export interface Closure {
  /** Every manifest found, the artifact's own included. */
  manifests: Map<Digest, Manifest>
  /** File manifests a tree refers to that are not in the store. */
  missingManifests: Digest[]
  /** Chunk digest -> size, deduplicated, for the manifests found. */
  chunks: Map<Digest, number>
}

/** Manifests from the store are re-checked on every load: this is defense in depth. */
export async function loadManifest (db: StoreDb, digest: Digest): Promise<Manifest | undefined> {
  const bytes = await db.manifests.get(digest)
  return bytes === undefined ? undefined : decodeManifest(bytes)
}

/** The closure as far as its manifests are present; empty when the artifact's own is absent. */
export async function closureOf (db: StoreDb, digest: Digest): Promise<Closure> {
  const closure: Closure = { manifests: new Map(), missingManifests: [], chunks: new Map() }
  const root = await loadManifest(db, digest)
  if (root === undefined) return closure
  closure.manifests.set(digest, root)
  const files: Manifest[] = []
  if (root.type === 'file') {
    files.push(root)
  } else {
    const wanted = [...new Set(root.entries.flatMap(e => e.type === 'file' ? [e.digest] : []))]
    for (let i = 0; i < wanted.length; i += 1000) {
      const group = wanted.slice(i, i + 1000)
      const values = await db.manifests.getMany(group)
      values.forEach((bytes, j) => {
        const d = group[j]!
        if (bytes === undefined) {
          closure.missingManifests.push(d)
          return
        }
        const m = decodeManifest(bytes)
        closure.manifests.set(d, m)
        files.push(m)
      })
    }
  }
  for (const m of files) {
    if (m.type === 'file') for (const c of m.chunks) closure.chunks.set(c.digest, c.size)
  }
  return closure
}

/** The closure's chunks that are not indexed, looked up in batches. */
export async function absentChunks (chunks: Chunks, closure: Closure): Promise<ChunkRef[]> {
  const all = [...closure.chunks]
  const absent: ChunkRef[] = []
  for (let i = 0; i < all.length; i += 1000) {
    const group = all.slice(i, i + 1000)
    const present = await chunks.hasMany(group.map(([d]) => d))
    group.forEach(([d, size], j) => { if (present[j] !== true) absent.push({ digest: d, size }) })
  }
  return absent
}
