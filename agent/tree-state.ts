// What a directory tree looks like on disk, entry by entry, cheaply: enough to tell that a step
// wrote, replaced, added or removed something in it (its read-only inputs; its checkpoint
// directory while a save was being taken), without reading any file's content.

import { lstat, readdir } from 'node:fs/promises'
import { join, relative } from 'node:path'

/**
 * Every entry under `dir` with what changes when it is written, replaced, added or removed. The
 * change time counts as well as the modification time: a program can set the latter back (touch
 * -r, tar, rsync), never the former.
 */
export async function snapshotTree (dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  const walk = async (abs: string): Promise<void> => {
    for (const d of await readdir(abs, { withFileTypes: true })) {
      const p = join(abs, d.name)
      const st = await lstat(p, { bigint: true })
      out.set(relative(dir, p), `${st.mode}:${st.size}:${st.mtimeNs}:${st.ino}:${st.ctimeNs}`)
      if (st.isDirectory()) await walk(p)
    }
  }
  await walk(dir)
  return out
}

/** Paths that differ between two snapshots of the same tree, sorted. */
export function diffTrees (before: Map<string, string>, after: Map<string, string>): string[] {
  const changed: string[] = []
  for (const [p, v] of before) if (after.get(p) !== v) changed.push(p)
  for (const p of after.keys()) if (!before.has(p)) changed.push(p)
  return changed.sort()
}

/** The newest change time among a snapshot's entries, in ms since the epoch (0 when empty). */
export function newestChange (state: Map<string, string>): number {
  let newest = 0n
  for (const entry of state.values()) {
    const ns = BigInt(entry.split(':')[4] ?? '0')
    if (ns > newest) newest = ns
  }
  return Number(newest / 1_000_000n)
}
