// Polling helpers that wait for a state instead of sleeping, and fail saying what never happened.

import type { RunSummary } from '../../src/run/types.js'
import type { CoordinatorApi } from '../../src/client/api.js'

export async function waitFor<T> (what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000, describe?: () => Promise<string> | string): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${describe === undefined ? '' : `\n${await describe()}`}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

export async function waitForRun (api: Pick<CoordinatorApi, 'getRun'>, runId: string, ok: (r: RunSummary) => boolean, what: string, timeoutMs = 60_000): Promise<RunSummary> {
  let last: RunSummary | undefined
  return await waitFor(what, async () => {
    last = await api.getRun(runId)
    return ok(last) ? last : undefined
  }, timeoutMs, () => `last state of run ${runId}: ${JSON.stringify(last, null, 2)}`)
}

export function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
