// Which checkpoint save a step resumes from: the coordinator's bookkeeping of a step's saves
// (the newest, and the one before it to fall back on) and the choice among them, as pure
// functions over the step's record. Copies on a second agent are checkpoint-replicas.ts's.

import type { CheckpointRecord, StepRecord } from '../src/run/types.js'
import type { Digest } from '../src/store/types.js'
import { saveName } from '../src/run/saves.js'

export type Save = Omit<CheckpointRecord, 'older'>

/**
 * The step's checkpoint record once `save` arrived: it becomes the newest, and the newest so
 * far is kept as the fallback (unless it is the same save reported again).
 */
export function withSave (current: CheckpointRecord | undefined, save: Save): CheckpointRecord {
  if (current === undefined) return { ...save }
  const { older, ...newest } = current
  const fallback = newest.ref.digest !== save.ref.digest ? newest : older
  return fallback === undefined ? { ...save } : { ...save, older: fallback }
}

/**
 * The save a step's next attempt starts from: the newest that a connected agent holds. The
 * newest may be held only by an agent that is going away (the last save it took as it stopped),
 * before a copy was made; then the one before it.
 */
export function resumableSave (step: Pick<StepRecord, 'checkpoint'>, isAvailable: (digest: Digest) => boolean): Save | undefined {
  if (step.checkpoint === undefined) return undefined
  const { older, ...newest } = step.checkpoint
  return [newest, older].find((c): c is Save => c !== undefined && isAvailable(c.ref.digest))
}

/** How a step's line says which save an attempt resumes: ", resuming from … attempt 2 [of run r]". */
export function resumingFrom (save: Save, runId: string): string {
  return `, resuming from the checkpoint saved by ${saveName(save, runId)}`
}
