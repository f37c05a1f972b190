// Before a queued step is placed: is everything it reads (inputs, code snapshot, environment
// files) still held by a connected agent? If not, the answer says what to do instead of placing
// a step that can only fail: wait while a holder may come back (disconnected within its lease, or
// agents still reconnecting after a coordinator restart), rerun the step that made a lost output,
// or fail when content that only a client uploaded is gone. Pure: the run manager applies it.

import { DONE_STEP_STATUSES, type StepRecord, type SubmissionArtifacts } from '../src/run/types.js'
import type { StepSpec } from '../src/spec/types.js'
import type { ArtifactRef, Digest } from '../src/store/types.js'

export interface HolderView {
  /** Connected agents holding the artifact. */
  holdersOf: (digest: Digest) => string[]
  /** Disconnected agents holding it that may still come back. */
  awayHolders: (digest: Digest) => string[]
  nameOf: (agentId: string) => string
}

export interface PlacedInput { name: string, ref: ArtifactRef, holders: string[] }

export type ContentVerdict =
  | { kind: 'ok', inputs: PlacedInput[] }
  /** A producer is running again to rebuild what this step reads: back to pending. */
  | { kind: 'pending', reason: string }
  /** Stay queued; `until` is when to look again (nothing else will wake the step). */
  | { kind: 'wait', reason: string, until?: number }
  | { kind: 'rebuild', producer: string, output: string, reason: string }
  | { kind: 'fail', reason: string }

export interface ContentCheck {
  spec: StepSpec
  steps: ReadonlyMap<string, StepRecord>
  artifacts: SubmissionArtifacts
  holders: HolderView
  now: number
  /** Until then, content without connected holders may still be announced by reconnecting agents. */
  graceUntil: number
}

interface Needed { what: string, digest: Digest, producer?: { step: string, output: string } }

export function checkContent (c: ContentCheck): ContentVerdict {
  const { spec, steps } = c
  const inputs: PlacedInput[] = []
  const needed: Needed[] = []
  for (const [name, source] of Object.entries(spec.inputs)) {
    let ref: ArtifactRef | undefined
    if (source.kind === 'step') {
      const producer = steps.get(source.step)
      if (producer === undefined || !DONE_STEP_STATUSES.has(producer.status)) {
        return { kind: 'pending', reason: `waiting for ${source.step} to make its output ${source.output} again` }
      }
      ref = producer.outputs[source.output]
      if (ref === undefined) return { kind: 'fail', reason: `step ${source.step} has no output ${source.output} recorded` }
      needed.push({ what: `input ${name} (output ${source.output} of step ${source.step})`, digest: ref.digest, producer: { step: source.step, output: source.output } })
    } else {
      ref = c.artifacts.inputs[source.input]
      if (ref === undefined) return { kind: 'fail', reason: `pipeline input ${source.input} was never uploaded` }
      needed.push({ what: `input ${name} (pipeline input ${source.input})`, digest: ref.digest })
    }
    inputs.push({ name, ref, holders: c.holders.holdersOf(ref.digest) })
  }
  const code = c.artifacts.code[spec.id]
  if (code !== undefined) needed.push({ what: 'its code snapshot', digest: code.ref.digest })
  if (spec.environment !== undefined) {
    const env = c.artifacts.environments[spec.environment]
    if (env !== undefined) needed.push({ what: `the files of environment ${spec.environment}`, digest: env.files.digest })
  }

  for (const n of needed) {
    const held = inputs.find(i => i.ref.digest === n.digest)?.holders ?? c.holders.holdersOf(n.digest)
    if (held.length > 0) continue
    const away = c.holders.awayHolders(n.digest)
    if (away.length > 0) {
      const names = away.map(id => c.holders.nameOf(id)).join(', ')
      return { kind: 'wait', reason: `${n.what} is held only by ${names}, now disconnected: waiting for it to come back or for its lease to expire` }
    }
    if (c.now < c.graceUntil) {
      return { kind: 'wait', reason: `${n.what} is not held by any agent that has reconnected since the coordinator restarted; waiting for the others`, until: c.graceUntil }
    }
    if (n.producer !== undefined) {
      return { kind: 'rebuild', producer: n.producer.step, output: n.producer.output, reason: `${n.what} was lost with the agents that held it` }
    }
    return { kind: 'fail', reason: `${n.what} (${n.digest}) is no longer held by any agent, and no step of the run makes it: submit the run again to upload it` }
  }
  return { kind: 'ok', inputs }
}
