// Saves a running step's checkpoint directory into the content store: every `everyMs` while the
// step runs, and once more when the attempt ends without succeeding. Saves are content-addressed,
// so the chunks of files that did not change since the last save are not stored twice.
//
// A step may be writing a file while a save reads it. The directory's entries (size, mtime,
// inode) are compared before and after each save, and a save that saw something change is
// dropped and tried again shortly; after a few such tries the round is skipped. A step that writes
// its checkpoint under a temporary name and renames it into place never trips this, and the
// README recommends it.
//
// Saves cost what changed: a round in which no entry changed reads nothing, and a save reads
// only the files written since the last one (the others' digests are remembered), so that a
// directory of many GiB, or one that gains a file per epoch, is not re-hashed whole each time.

import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import type { Stats } from 'node:fs'
import type { FileDigestMemo, IngestedFile } from '../src/store/content-store.js'
import type { ArtifactRef, Digest } from '../src/store/types.js'
import { formatDuration } from '../src/util/units.js'
import { diffTrees, newestChange, snapshotTree } from './tree-state.js'

export interface CheckpointSaverOptions {
  /** Absolute path of the directory. */
  dir: string
  everyMs: number
  store: { ingest: (path: string, options?: { signal?: AbortSignal, label?: string, memo?: FileDigestMemo, adopt?: boolean }) => Promise<ArtifactRef> }
  /**
   * The last save (finish()) may move the directory's files into the store instead of copying
   * them (IngestOptions.adopt): the directory is deleted with the attempt's working directory.
   */
  adoptLast?: boolean
  /** Store label of each save (shown by `pipemesh store` and in logs). */
  label: string
  /** Digest of what the directory held at start (a restored save): it is not reported again. */
  initial?: Digest
  /** A new save while the step runs, in order; the newest is the one to restore. */
  onSaved: (ref: ArtifactRef) => void
  /** A save that could not be taken, in words for the step's log: its user believes it is saved. */
  onProblem?: (text: string) => void
  log?: Logger
}

const LABEL_PREFIX = 'checkpoint of '

/** The store label of an attempt's saves, by which the agent later knows them for its own. */
export function checkpointLabel (task: { runId: string, stepId: string, attempt: number }): string {
  return `${LABEL_PREFIX}${task.runId}/${task.stepId} attempt ${task.attempt}`
}

/** Whether a stored artifact is a checkpoint save (see checkpointLabel). */
export function isCheckpointLabel (label: string | undefined): boolean {
  return label?.startsWith(LABEL_PREFIX) === true
}

/** Saves taken in a row that each saw the directory change before the round is skipped. */
const TRIES = 3
/** Pause before trying again a save that saw the directory change. */
const RETRY_MS = [300, 1500]

/** How long before a save began its directory's files must have last changed for the save to vouch for them. */
const TRUST_AFTER_MS = 1000

/**
 * The digests of the files this saver's saves read, so that a save reads only the files written
 * since (a directory that gains a file per epoch would otherwise be re-hashed whole each time).
 * A file counts as unchanged while its size, inode, mode and change time are; the change time,
 * unlike the modification time, cannot be set back. It is remembered only when it last changed
 * over TRUST_AFTER_MS before it was read: file times are coarse, and a file rewritten within the
 * same tick would look unchanged.
 */
class SavedFiles implements FileDigestMemo {
  private readonly files = new Map<string, { key: string, file: IngestedFile }>()

  get (abs: string, st: Stats): IngestedFile | undefined {
    const known = this.files.get(abs)
    return known !== undefined && known.key === SavedFiles.key(st) ? known.file : undefined
  }

  set (abs: string, st: Stats, file: IngestedFile): void {
    if (st.ctimeMs < Date.now() - TRUST_AFTER_MS) this.files.set(abs, { key: SavedFiles.key(st), file })
    else this.files.delete(abs)
  }

  private static key (st: Stats): string {
    return `${st.size}:${st.ctimeMs}:${st.ino}:${st.mode}`
  }
}

export class CheckpointSaver {
  private readonly options: CheckpointSaverOptions
  private timer: NodeJS.Timeout | undefined
  private saving: Promise<void> | undefined
  private readonly stopping = new AbortController()
  /** The newest save known to the coordinator (or restored from). */
  private last: Digest | undefined
  /** The directory's entries as that save found them: unchanged since, a round costs no reading. */
  private lastState: Map<string, string> | undefined
  private readonly savedFiles = new SavedFiles()

  constructor (options: CheckpointSaverOptions) {
    this.options = options
    this.last = options.initial
  }

  /** Starts saving every `everyMs`. */
  start (): void {
    this.schedule()
  }

  /** The newest save taken by this saver or restored at start. */
  get latest (): Digest | undefined {
    return this.last
  }

  /**
   * Stops the periodic saves (waiting for one in progress) and takes a last one of the directory
   * as the ended step left it. Resolves with that save when it differs from the newest already
   * reported, else undefined.
   */
  async finish (): Promise<ArtifactRef | undefined> {
    await this.stop()
    // The process tree is gone, so nothing is writing: one try is enough.
    return await this.take(1, undefined, true)
  }

  /** Stops the periodic saves; waits for one in progress. */
  async stop (): Promise<void> {
    this.stopping.abort()
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    await this.saving
  }

  private schedule (): void {
    if (this.stopping.signal.aborted) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.saving = this.periodic().finally(() => { this.saving = undefined; this.schedule() })
    }, this.options.everyMs)
    this.timer.unref()
  }

  private async periodic (): Promise<void> {
    const ref = await this.take(TRIES, this.stopping.signal, false)
    // Reported even when the step ended meanwhile: finish() will not report the same save again.
    if (ref !== undefined) this.options.onSaved(ref)
  }

  /** One consistent save, or undefined when the directory is empty, unchanged or kept changing. */
  private async take (tries: number, signal: AbortSignal | undefined, final: boolean): Promise<ArtifactRef | undefined> {
    const { dir, store, label, log } = this.options
    const aborted = (): boolean => signal?.aborted === true
    for (let i = 0; i < tries; i++) {
      if (aborted()) return undefined
      try {
        const startedAt = Date.now()
        const before = await snapshotTree(dir)
        if (before.size === 0) return undefined
        // Nothing written since the last save: hashing a 20 GiB directory again would find the
        // same. (Not for the last save: the step may have written within a timestamp's tick.)
        if (!final && this.lastState !== undefined && diffTrees(this.lastState, before).length === 0) return undefined
        const adopt = final && this.options.adoptLast === true
        const ref = await store.ingest(dir, { label, memo: this.savedFiles, ...(adopt ? { adopt } : {}), ...(signal === undefined ? {} : { signal }) })
        // The last save's files may have moved into the store; nothing was writing them anyway.
        const changed = adopt ? [] : diffTrees(before, await snapshotTree(dir))
        if (changed.length === 0) {
          // File times are coarse (a few ms): a file rewritten in place, same size, in the same
          // tick as it was last written looks unchanged. Trust the entries only when all were
          // written well before this save began.
          this.lastState = newestChange(before) < startedAt - TRUST_AFTER_MS ? before : undefined
          if (ref.digest === this.last) return undefined
          this.last = ref.digest
          log?.debug({ digest: ref.digest, bytes: ref.size }, 'checkpoint saved')
          return ref
        }
        log?.debug({ changed: changed.slice(0, 5), try: i + 1 }, 'checkpoint directory changed while it was saved; trying again')
      } catch (err) {
        if (aborted()) return undefined
        // The step removed or replaced the directory mid-walk, or the disk is full: the step goes
        // on, and the next round tries again.
        log?.warn({ err: (err as Error).message }, 'saving the checkpoint directory failed')
        this.options.onProblem?.(`saving the checkpoint directory failed (the step goes on; the next save is in ${formatDuration(this.options.everyMs)}): ${(err as Error).message}`)
        return undefined
      }
      if (i + 1 < tries) await sleep(RETRY_MS[i] ?? 1500, undefined, signal === undefined ? {} : { signal }).catch(() => {})
    }
    log?.warn({ tries }, 'the checkpoint directory kept changing while it was saved; skipping this save (write checkpoint files under a temporary name, then rename them)')
    this.options.onProblem?.(`the checkpoint directory changed during each of ${tries} tries to save it, so no save was kept this time; write checkpoint files under a temporary name, then rename them into place`)
    return undefined
  }
}
