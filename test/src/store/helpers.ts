// Test helpers for the store: temp dirs and a comparable description of a file tree.

import { createHash } from 'node:crypto'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type { ContentStore } from '../../../src/store/content-store.js'
import type { Digest } from '../../../src/store/types.js'

export async function tempDir (prefix = 'pm-store-'): Promise<string> {
  return await fs.mkdtemp(path.join(os.tmpdir(), prefix))
}

/** Removes a temp dir even where read-only materializations made parts unwritable. */
export async function removeDir (dir: string): Promise<void> {
  const makeWritable = async (p: string): Promise<void> => {
    const st = await fs.lstat(p).catch(() => undefined)
    if (st?.isDirectory() !== true) return
    await fs.chmod(p, 0o755)
    for (const name of await fs.readdir(p)) await makeWritable(path.join(p, name))
  }
  await makeWritable(dir)
  await fs.rm(dir, { recursive: true, force: true })
}

export interface Described { path: string, type: string, exec?: boolean, sha?: string, target?: string }

/** Every entry under `root`, sorted, with content hashes, exec bits and link targets. */
export async function describeTree (root: string): Promise<Described[]> {
  const out: Described[] = []
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const name of (await fs.readdir(dir)).sort()) {
      const abs = path.join(dir, name)
      const r = rel === '' ? name : `${rel}/${name}`
      const st = await fs.lstat(abs)
      if (st.isDirectory()) {
        out.push({ path: r, type: 'dir' })
        await walk(abs, r)
      } else if (st.isSymbolicLink()) {
        out.push({ path: r, type: 'symlink', target: await fs.readlink(abs) })
      } else {
        const sha = createHash('sha256').update(await fs.readFile(abs)).digest('hex')
        out.push({ path: r, type: 'file', exec: (st.mode & 0o100) !== 0, sha })
      }
    }
  }
  await walk(root, '')
  return out
}

/** Where an artifact's chunks that are not kept inline lie on disk, in chunk order. */
export async function bodiesOf (store: ContentStore, digest: Digest): Promise<Array<{ digest: Digest, file: string, offset: number, size: number }>> {
  const out = []
  for (const c of await store.listChunks(digest)) {
    const at = await store.chunkLocation(c.digest)
    if (at !== undefined) out.push({ digest: c.digest, ...at })
  }
  return out
}
