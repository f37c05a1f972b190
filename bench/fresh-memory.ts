// Levels one effect of the machine out of the comparisons that write a gigabyte. On this VM (its
// virtio balloon reports free pages to the host), the first write into memory the guest has not
// used lately runs at ~300-400 MiB/s, because the host backs each page on first touch, while
// memory freed a moment ago is fast again (1.2-2 GB/s). Measured here: `dd` of 1 GiB at 396, 293
// and 304 MB/s, then at 1.2 GB/s right after one of those files was deleted; a store
// materializing 1 GiB at 213 MiB/s, then at 1170 and 1294 MiB/s into the pages the previous
// copy freed. A `cp` in a loop always writes into the pages its previous copy freed, and a store
// writing new chunk files does not: the comparison measured the hypervisor. So before each timed
// write, either side first writes as many bytes to a scratch file and deletes it (untimed).

import { open, rm } from 'node:fs/promises'
import { join } from 'node:path'

const BLOCK = 4 * 1024 * 1024

/** Writes `bytes` into a scratch file in `dir` and deletes it, leaving that much memory just freed. */
export async function recycleMemory (dir: string, bytes: number): Promise<void> {
  const file = join(dir, `.recycle-${process.pid}`)
  const block = Buffer.alloc(BLOCK, 0x5a)
  const handle = await open(file, 'w')
  try {
    for (let done = 0; done < bytes; done += BLOCK) await handle.write(block, 0, Math.min(BLOCK, bytes - done))
  } finally {
    await handle.close()
    // Deleted before writeback: its pages go back to the free lists without touching the disk.
    await rm(file, { force: true })
  }
}

/**
 * What a timed copy of `bytes` gets before it starts, cp and the store alike (S1): twice its size
 * freed. With only its size freed, `cp` ran at its steady rate, but an ingest of 1 GiB (which
 * also allocates for its workers, LevelDB and the pages it reads) still wrote partly into fresh
 * memory: 515-800 ms per GiB in alternating runs, against a steady 513-563 ms with 2 GiB freed.
 */
export async function levelMemoryFor (dir: string, bytes: number): Promise<void> {
  await recycleMemory(dir, 2 * bytes)
}
