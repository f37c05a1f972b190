// The directories an attempt runs in: its working directory, its TMPDIR and its log file. On
// ext4 a mkdir or rmdir costs 0.1–0.2 ms of journalled metadata work, and an attempt used to
// make and remove three directories (its run's, its own, its TMPDIR): on two busy cores that was
// a fifth of a short step's whole cost. So empty directories are kept and handed out again: an
// attempt takes two, and gives them back once it is over; one that it left empty (checked, never
// assumed) is reused as it is, one with anything in it is removed.
// A step sees a directory that is as fresh as a new one: empty, and no other attempt's.

import { lstatSync, mkdirSync, opendirSync, rmSync } from 'node:fs'
import { rmdir, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { removeTree } from './environments.js'

/** Empty directories kept for the next attempts; enough for every slot of a large agent. */
const SPARE_MAX = 32

export interface AttemptDirs {
  /** The working directory. Made already, unless the attempt materializes its code snapshot there. */
  cwd: string
  /** TMPDIR, made already. */
  tmp: string
  /** Where the step's log is written (`${cwd}.log`). */
  log: string
}

export interface WorkdirOptions {
  /**
   * Debugging: each attempt gets `<root>/<run>/<step>.<attempt>` (TMPDIR `….tmp`, log `….log`),
   * and nothing is removed or reused afterwards.
   */
  keep?: boolean
}

export class WorkdirPool {
  private readonly spare: string[] = []
  private next = 0
  private rootMade = false
  /** Permission bits and owner of a directory as this pool makes it (read from the first one). */
  private made: { mode: number, uid: number } | undefined

  constructor (readonly root: string, private readonly options: WorkdirOptions = {}) {}

  /** Whether attempts' directories are kept as they were left (WorkdirOptions.keep). */
  get keeps (): boolean {
    return this.options.keep === true
  }

  /**
   * Directories for one attempt, synchronously (a thread-pool round trip cost more than the
   * mkdir). With `forCode`, `cwd` does not exist yet: the code snapshot is materialized there.
   */
  take (names: { runId: string, stepId: string, attempt: number }, forCode: boolean): AttemptDirs {
    if (this.options.keep === true) {
      const cwd = join(this.root, names.runId, `${names.stepId}.${names.attempt}`)
      // An attempt delivered again finds what its first delivery left: it starts afresh.
      for (const p of [cwd, `${cwd}.tmp`]) rmSync(p, { recursive: true, force: true })
      mkdirSync(join(this.root, names.runId), { recursive: true })
      if (!forCode) mkdirSync(cwd)
      mkdirSync(`${cwd}.tmp`)
      return { cwd, tmp: `${cwd}.tmp`, log: `${cwd}.log` }
    }
    const cwd = forCode ? this.unused() : this.empty()
    return { cwd, tmp: this.empty(), log: `${cwd}.log` }
  }

  /**
   * Takes an attempt's directories back once its process is gone. `known` lists what the
   * executor itself put in the working directory (`outputs`, a `node_modules` link): removed
   * first, so that a step that added nothing leaves a directory fit for reuse.
   */
  async give (dirs: AttemptDirs, options: { known?: readonly string[], logWritten?: boolean } = {}): Promise<void> {
    if (this.options.keep === true) return
    await Promise.all([
      options.logWritten === true ? unlink(dirs.log).catch(() => {}) : undefined,
      this.giveDir(dirs.cwd, options.known ?? []),
      this.giveDir(dirs.tmp, [])
    ])
  }

  /** Removes the spare directories, and the root once empty: a stopped agent leaves none behind. */
  async clear (): Promise<void> {
    const spare = this.spare.splice(0)
    await Promise.all(spare.map(async (dir) => { await rmdir(dir).catch(() => {}) }))
    if (this.rootMade) await rmdir(this.root).catch(() => {})
    this.rootMade = false
  }

  private async giveDir (dir: string, known: readonly string[]): Promise<void> {
    try {
      if (known.length > 0) {
        await Promise.all(known.map(async (name) => {
          await (name === 'node_modules' ? unlink(join(dir, name)) : rmdir(join(dir, name)))
        }))
      }
      if (this.asMade(dir) && isEmpty(dir)) {
        if (this.spare.length < SPARE_MAX) { this.spare.push(dir); return }
        await rmdir(dir)
        return
      }
    } catch { /* something was left behind, or the directory is gone: remove what is there */ }
    await removeTree(dir).catch(() => {})
  }

  /**
   * Whether `dir` is still the directory this pool made: a step may have chmod'ed it (an empty
   * directory the next step cannot write to) or replaced it with a link to somewhere else.
   */
  private asMade (dir: string): boolean {
    const st = lstatSync(dir, { throwIfNoEntry: false })
    return st !== undefined && st.isDirectory() && (st.mode & 0o7777) === this.made?.mode && st.uid === this.made.uid
  }

  /** A spare directory, or a new one. */
  private empty (): string {
    const reused = this.spare.pop()
    if (reused !== undefined) {
      // ~2 µs. Spares vanish only when someone wipes the work directory under a running agent:
      // then none is left, and steps must not fail one by one on them.
      if (lstatSync(reused, { throwIfNoEntry: false })?.isDirectory() === true) return reused
      this.spare.length = 0
      this.rootMade = false
    }
    for (let tries = 0; ; tries++) {
      const dir = this.unused()
      try {
        mkdirSync(dir)
        if (this.made === undefined) {
          const st = lstatSync(dir)
          this.made = { mode: st.mode & 0o7777, uid: st.uid }
        }
        return dir
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        // EEXIST: left by someone else under the same root, so skip the name; ENOENT: the root
        // itself was removed (a wiped data directory), so make it again.
        if (tries >= 100 || (code !== 'EEXIST' && code !== 'ENOENT')) throw err
        if (code === 'ENOENT') this.rootMade = false
      }
    }
  }

  /** A path under the root that this pool has not handed out before. */
  private unused (): string {
    if (!this.rootMade) {
      mkdirSync(this.root, { recursive: true })
      this.rootMade = true
    }
    return join(this.root, `w${++this.next}`)
  }
}

/**
 * Whether a directory has no entries. Synchronous, and reading one batch of entries at most: on
 * an empty directory that is ~5 µs, where a readdir through the thread pool cost ~40 µs and woke
 * a thread that took the core from the agent.
 */
function isEmpty (dir: string): boolean {
  const handle = opendirSync(dir)
  try {
    return handle.readSync() === null
  } finally {
    handle.closeSync()
  }
}
