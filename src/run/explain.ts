// Why a step ran or was reused, in words: the pure part of `pipemesh explain`. It compares the
// step's fingerprint parts with the closest earlier execution of the same step of the same
// pipeline and names each difference, and adds placement and attempt history.

import { diffFingerprints, describeChange, type FingerprintChange, type FingerprintParts } from '../fingerprint.js'
import type { Digest } from '../store/types.js'
import type { AttemptRecord, PlacementRecord, StepRecord } from './types.js'
import type { StepSpec } from '../spec/types.js'

export interface PriorExecution {
  runId: string
  stepId: string
  fingerprint: Digest
  parts: FingerprintParts
  at: number
}

export interface Explanation {
  runId: string
  stepId: string
  status: StepRecord['status']
  fingerprint: Digest | null
  /** One sentence: what happened and why. */
  summary: string
  /** Each difference from the execution compared with, in words. */
  changes: string[]
  comparedWith?: { runId: string, at: number, fingerprint: Digest }
  placement?: PlacementRecord
  attempts: AttemptRecord[]
}

export interface ExplainInput {
  runId: string
  step: StepRecord
  spec: StepSpec | undefined
  /** All steps of the same run, to say which producers reran. */
  steps: StepRecord[]
  /** Earlier executions of this step, newest first (excluding this run). */
  history: PriorExecution[]
}

export function explainStep (input: ExplainInput): Explanation {
  const { step, spec } = input
  const base: Explanation = {
    runId: input.runId,
    stepId: step.id,
    status: step.status,
    fingerprint: step.fingerprint ?? null,
    summary: '',
    changes: [],
    attempts: step.attempts
  }
  if (step.placement !== undefined) base.placement = step.placement

  if (step.status === 'reused') {
    const from = step.reusedFrom
    base.summary = from === undefined
      ? 'reused: its fingerprint matched an earlier execution'
      : `reused: command, code, parameters, environment and input contents are identical to step ${from.stepId} of run ${from.runId}, whose outputs are still held in the mesh`
    const cutoff = upstreamReruns(input)
    if (cutoff.length > 0) base.summary += `; ${cutoff.join(', ')} ran again but produced byte-identical outputs (early cut-off)`
    return base
  }
  if (step.status === 'skipped' || step.status === 'cancelled' || step.status === 'pending') {
    base.summary = `${step.status}${step.reason !== undefined ? `: ${step.reason}` : ''}`
    return base
  }
  if (step.fingerprintParts === undefined) {
    base.summary = `${step.status}${step.reason !== undefined ? `: ${step.reason}` : ''}`
    return base
  }

  const ran = step.status === 'queued' ? 'will run' : 'ran'
  if (spec !== undefined && !spec.cache) {
    base.summary = `${ran} because the step sets cache: false (reuse disabled)`
    return base
  }
  const same = input.history.find(h => h.fingerprint === step.fingerprint)
  if (same !== undefined) {
    base.summary = `${ran} although step ${same.stepId} of run ${same.runId} had the same fingerprint: its outputs are no longer held by any connected agent`
    base.comparedWith = { runId: same.runId, at: same.at, fingerprint: same.fingerprint }
    return base
  }
  if (input.history.length === 0) {
    base.summary = `${ran}: no earlier execution of this step to reuse`
    return base
  }
  // The closest earlier execution is the one with the fewest differences (newest wins ties).
  let best: { prior: PriorExecution, changes: FingerprintChange[] } | undefined
  for (const prior of input.history) {
    const changes = diffFingerprints(prior.parts, step.fingerprintParts)
    if (best === undefined || changes.length < best.changes.length) best = { prior, changes }
  }
  const chosen = best!
  base.comparedWith = { runId: chosen.prior.runId, at: chosen.prior.at, fingerprint: chosen.prior.fingerprint }
  base.changes = chosen.changes.map(change => annotate(describeChange(change), change, input))
  base.summary = `${ran} because ${base.changes.length === 1 ? 'this changed' : `${base.changes.length} things changed`} since run ${chosen.prior.runId}`
  return base
}

/** For a changed input fed by another step, say whether that step ran or was reused. */
function annotate (text: string, change: FingerprintChange, input: ExplainInput): string {
  if (change.kind !== 'input' || input.spec === undefined) return text
  const source = input.spec.inputs[change.name]
  if (source?.kind !== 'step') return source?.kind === 'pipeline' ? `${text} (pipeline input ${source.input} has new content)` : text
  const producer = input.steps.find(s => s.id === source.step)
  if (producer === undefined) return text
  return producer.status === 'reused'
    ? `${text} (${source.step} was reused from a different earlier execution)`
    : `${text} because ${source.step} ran again`
}

function upstreamReruns (input: ExplainInput): string[] {
  if (input.spec === undefined) return []
  const out: string[] = []
  for (const source of Object.values(input.spec.inputs)) {
    if (source.kind !== 'step') continue
    const producer = input.steps.find(s => s.id === source.step)
    if (producer?.status === 'succeeded' && !out.includes(source.step)) out.push(source.step)
  }
  return out
}
