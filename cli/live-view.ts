// Shows a run as it moves: on a terminal, one redrawn line per step with its state and elapsed
// time, the inputs its agent is still fetching from peers and the outputs it is storing (bytes,
// rate); elsewhere (pipes, CI logs), one printed line per state change, per input fetched and
// per large output stored.

import logUpdate from 'log-update'
import { describeSource as inputLabel } from '../src/protocol/messages.js'
import { PLACING_REASON, type RunEvent, type StepStatus, type StepSummary } from '../src/run/types.js'
import { formatBytes, formatDuration } from '../src/util/units.js'
import { headline } from '../src/errors.js'
import { saveName } from '../src/run/saves.js'

type FetchEvent = Extract<RunEvent, { type: 'fetch' }>
type StoreEvent = Extract<RunEvent, { type: 'store' }>
/** Bytes moved so far and how long it took: a fetch's or a store's progress. */
type Moving = Pick<FetchEvent, 'bytes' | 'totalBytes' | 'elapsedMs'>

const SYMBOL: Record<StepStatus, string> = {
  pending: '·',
  queued: '…',
  running: '▶',
  succeeded: '✔',
  reused: '♻',
  failed: '✖',
  skipped: '-',
  cancelled: '■'
}

export class LiveView {
  private readonly steps = new Map<string, StepSummary>()
  /** Inputs being fetched and outputs being stored, per step: the latest progress of each. */
  private readonly moving = new Map<string, Map<string, FetchEvent | StoreEvent>>()
  private readonly tty: boolean
  private timer: NodeJS.Timeout | undefined
  private runStatus = 'running'
  private runId: string | undefined

  constructor (private readonly title: string, options: { tty?: boolean } = {}) {
    this.tty = options.tty ?? process.stdout.isTTY === true
    if (this.tty) {
      this.timer = setInterval(() => { this.render() }, 200)
      this.timer.unref()
    } else {
      process.stdout.write(`${title}\n`)
    }
  }

  update (event: RunEvent): void {
    if (event.type === 'log') return
    this.runId = event.runId
    if (event.type === 'run') {
      this.runStatus = event.status
      if (this.tty) this.render()
      return
    }
    if (event.type === 'fetch' || event.type === 'store') {
      this.moved(event)
      return
    }
    // A step that moved on is no longer moving its inputs or outputs (nor is a retry of it, yet).
    if (event.step.status !== 'running') this.moving.delete(event.step.id)
    const before = this.steps.get(event.step.id)
    this.steps.set(event.step.id, event.step)
    if (this.tty) return
    if (before?.status === event.step.status && before.reason === event.step.reason) return
    // Ready and about to be placed: the next line says where it runs, or why it waits.
    if (event.step.status === 'queued' && event.step.reason === PLACING_REASON) return
    process.stdout.write(`${new Date(event.at).toISOString().slice(11, 19)} ${this.describe(event.step)}\n`)
  }

  /** Stops redrawing and leaves the final state on screen. */
  done (): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    if (this.tty) { this.render(); logUpdate.done() }
  }

  /** An input fetched or an output stored: shown with its step while it moves, printed when done. */
  private moved (event: FetchEvent | StoreEvent): void {
    const key = event.type === 'fetch' ? `input ${event.input}` : `output ${event.output}`
    let moving = this.moving.get(event.stepId)
    if (moving === undefined) { moving = new Map(); this.moving.set(event.stepId, moving) }
    if (event.done) moving.delete(key)
    else moving.set(key, event)
    if (!this.tty && event.done) {
      process.stdout.write(`${new Date(event.at).toISOString().slice(11, 19)} ${SYMBOL.running} ${event.stepId} ${event.type === 'fetch' ? 'fetched' : 'stored'} ${what(event)}: ${formatBytes(event.totalBytes)} in ${formatDuration(event.elapsedMs)}${rate(event)}\n`)
    }
  }

  private render (): void {
    const lines = [`${this.title}  [${this.runStatus}]`]
    for (const step of this.steps.values()) lines.push(`  ${this.describe(step)}`)
    logUpdate(lines.join('\n'))
  }

  private describe (step: StepSummary): string {
    let text = `${SYMBOL[step.status]} ${step.id} ${step.status}`
    // Elapsed time on a redrawn terminal only: a printed line is written as the step starts.
    if (step.status === 'running' && step.startedAt !== undefined && this.tty) text += ` ${formatDuration(Date.now() - step.startedAt)}`
    else if ((step.status === 'succeeded' || step.status === 'failed') && step.startedAt !== undefined && step.finishedAt !== undefined) text += ` in ${formatDuration(step.finishedAt - step.startedAt)}`
    if (step.agent !== null && (step.status === 'running' || step.status === 'succeeded' || step.status === 'failed')) text += ` on ${step.agent}`
    if (step.attempts > 1) text += ` (attempt ${step.attempts})`
    if (step.status === 'running' && step.resumedFrom !== undefined) {
      text += `, resumed from the checkpoint of ${saveName(step.resumedFrom, this.runId)}`
    }
    if (step.status === 'running') {
      for (const m of this.moving.get(step.id)?.values() ?? []) {
        text += `, ${m.type === 'fetch' ? 'fetching' : 'storing'} ${what(m)} ${formatBytes(m.bytes)} of ${formatBytes(m.totalBytes)}${rate(m)}`
      }
    }
    if (step.status === 'queued' || step.status === 'failed' || step.status === 'skipped') {
      if (step.reason !== undefined) text += `: ${firstLine(step.reason)}`
    }
    return text
  }
}

function what (event: FetchEvent | StoreEvent): string {
  return event.type === 'fetch' ? inputLabel(event.input) : `output ${event.output}`
}

function rate (f: Moving): string {
  return f.elapsedMs > 0 ? ` at ${formatBytes(f.bytes / (f.elapsedMs / 1000))}/s` : ''
}

function firstLine (text: string): string {
  const line = headline(text)
  return line.length > 200 ? `${line.slice(0, 197)}...` : line
}
