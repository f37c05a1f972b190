// Clean-up inside the bench's scratch directory, deferred to the end of the run. On this VM's
// filesystem (ext4 without a journal) the kernel, allocating an inode, skips the inodes freed in
// the last one to six minutes in that block group, reading each one's inode-table entry to tell
// (recently_deleted() in ext4's ialloc.c). After a workload had deleted a few thousand files,
// every file created near them cost ~0.5 ms of kernel time (perf: find_inode_bit,
// recently_deleted, find_get_block_common): a store writing a GiB as 1024 chunk files paid ~0.5 s
// for the previous rep's clean-up, and halved S1's ingest rate, while cp, writing one file, paid
// nothing. So workloads set their directories aside, which keeps their inodes in use, and
// main.ts deletes the whole scratch directory once, after the last workload.

import { randomBytes } from 'node:crypto'
import { rename } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

/** Moves `dir` out of the way (beside itself, under a hidden name) until the scratch directory goes. */
export async function discard (dir: string): Promise<void> {
  try {
    await rename(dir, join(dirname(dir), `.discarded-${basename(dir)}-${randomBytes(4).toString('hex')}`))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
}
