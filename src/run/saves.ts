// How a checkpoint save is named to people, the same in the coordinator's step reasons, the live
// view, `status` and `explain`: by the attempt that took it, and its run when that is another one.

/** "attempt 2", or "attempt 2 of run r-…" when a run other than `runId` took the save. */
export function saveName (save: { attempt: number, runId: string }, runId: string | undefined): string {
  return save.runId === runId ? `attempt ${save.attempt}` : `attempt ${save.attempt} of run ${save.runId}`
}
