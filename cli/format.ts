// Plain-text renderings of API results for people; --json prints the objects themselves.

import type { RunSummary } from '../src/run/types.js'
import type { Explanation } from '../src/run/explain.js'
import type { AgentListEntry, RunListEntry } from '../src/client/api.js'
import { formatBytes, formatDuration } from '../src/util/units.js'
import { headline } from '../src/errors.js'
import { saveName as describeSave } from '../src/run/saves.js'

export function table (rows: string[][]): string {
  const widths: number[] = []
  for (const row of rows) row.forEach((cell, i) => { widths[i] = Math.max(widths[i] ?? 0, cell.length) })
  return rows.map(row => row.map((cell, i) => i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)).join('  ')).join('\n')
}

export function formatRun (run: RunSummary): string {
  const took = run.finishedAt === undefined ? '' : ` in ${formatDuration(run.finishedAt - run.createdAt)}`
  const head = `run ${run.runId} of ${run.pipeline}: ${run.status}${took}`
  const rows = [['STEP', 'STATUS', 'ATTEMPTS', 'AGENT', 'EXIT', 'DETAIL']]
  for (const s of run.steps) {
    rows.push([s.id, s.status, String(s.attempts), s.agent ?? '-', s.exitCode === null ? '-' : String(s.exitCode), headline(s.reason ?? '')])
  }
  const counts = new Map<string, number>()
  for (const s of run.steps) counts.set(s.status, (counts.get(s.status) ?? 0) + 1)
  const tally = [...counts].map(([k, v]) => `${v} ${k}`).join(', ')
  // Steps that needed more than one attempt (retries, lost agents, rebuilt outputs), each attempt.
  const history: string[] = []
  for (const s of run.steps) {
    if (s.history === undefined) continue
    history.push(`attempts of ${s.id}:`)
    for (const a of s.history) {
      const took = a.durationMs === null ? 'running' : formatDuration(a.durationMs)
      const resumed = a.resumedFrom === undefined ? '' : `, resumed from ${describeSave(a.resumedFrom, run.runId)}`
      history.push(`  ${a.number}. ${a.agent}: ${a.state}, exit ${a.exitCode ?? '-'}, ${took}${resumed}${a.error === undefined ? '' : ` (${a.error})`}`)
    }
  }
  // Steps that did not finish and have a save to resume from: where a rerun would start.
  for (const s of run.steps) {
    if (s.checkpoint === undefined || s.status === 'succeeded' || s.status === 'reused') continue
    history.push(`checkpoint of ${s.id}: ${formatBytes(s.checkpoint.size)} saved by ${describeSave(s.checkpoint, run.runId)} on ${s.checkpoint.agent}, ${new Date(s.checkpoint.at).toISOString()}`)
  }
  return `${head}\n${table(rows)}\n${tally}${history.length === 0 ? '' : `\n${history.join('\n')}`}${run.error === undefined ? '' : `\nerror: ${run.error}`}`
}

export function formatRuns (runs: RunListEntry[]): string {
  if (runs.length === 0) return 'no runs yet'
  const rows = [['RUN', 'PIPELINE', 'STATUS', 'STEPS', 'STARTED']]
  for (const r of runs) rows.push([r.runId, r.pipeline, r.status, String(r.steps), new Date(r.createdAt).toISOString()])
  return table(rows)
}

export function formatAgents (agents: AgentListEntry[]): string {
  if (agents.length === 0) return 'no agents connected'
  const rows = [['AGENT', 'NAME', 'VERSION', 'STATE', 'CPU', 'MEMORY', 'GPUS', 'DISK FREE', 'RUNNING', 'SERVED', 'FETCHED', 'LABELS']]
  for (const a of agents) {
    const cap = a.capabilities.capacity
    rows.push([
      a.id.slice(-12),
      a.name,
      a.version,
      a.connected ? (a.draining ? 'draining' : 'connected') : 'disconnected',
      `${a.allocated.cpu}/${cap.cpu}`,
      `${formatBytes(a.allocated.memory)}/${formatBytes(cap.memory)}`,
      cap.gpus.length === 0 ? '-' : `${a.allocated.gpus.length}/${cap.gpus.length} ${describeGpus(cap.gpus)}`,
      formatBytes(a.capabilities.diskFree),
      String(a.running),
      a.transfers === undefined ? '-' : formatBytes(a.transfers.bytesServed),
      a.transfers === undefined ? '-' : formatBytes(a.transfers.bytesFetched),
      Object.entries(a.capabilities.labels).map(([k, v]) => `${k}=${v}`).join(',')
    ])
  }
  return table(rows)
}

/** "2x NVIDIA A100 40 GiB, 1x NVIDIA T4 15 GiB": equal devices counted, memory where known. */
function describeGpus (gpus: AgentListEntry['capabilities']['capacity']['gpus']): string {
  const counts = new Map<string, number>()
  for (const g of gpus) {
    const key = g.memory > 0 ? `${g.model} ${formatBytes(g.memory)}` : g.model
    counts.set(key, (counts.get(key) ?? 0) + 1)
  }
  return [...counts].map(([what, n]) => `${n}x ${what}`).join(', ')
}

export function formatExplanation (e: Explanation): string {
  const lines = [`${e.stepId} in run ${e.runId}: ${e.summary}`]
  for (const change of e.changes) lines.push(`  - ${change}`)
  if (e.fingerprint !== null) lines.push(`fingerprint: ${e.fingerprint}`)
  if (e.comparedWith !== undefined) lines.push(`compared with: run ${e.comparedWith.runId} (${new Date(e.comparedWith.at).toISOString()})`)
  if (e.placement !== undefined) {
    // The reason names the agent (and its devices) first: "gpu-box on GPU 0 (…): why".
    lines.push(`placed on ${e.placement.reason}`)
    const waited = e.placement.waited
    if (waited !== undefined && (waited.reason !== undefined || waited.ms >= 1000)) {
      lines.push(`  after ${formatDuration(waited.ms)} in the queue${waited.reason === undefined ? '' : `, last ${waited.reason}`}`)
    }
    for (const c of e.placement.candidates) if (c.verdict !== 'chosen') lines.push(`  - ${c.name}: ${c.verdict}, ${c.reason}`)
  }
  for (const a of e.attempts) {
    const took = a.finishedAt === undefined ? 'running' : formatDuration(a.finishedAt - a.startedAt)
    lines.push(`attempt ${a.number} on ${a.agentName}: ${a.state}, exit ${a.exitCode ?? '-'}, ${took}${a.error === undefined ? '' : ` (${headline(a.error.message)})`}`)
    if (a.resumedFrom !== undefined) {
      const save = a.resumedFrom
      lines.push(`  resumed from the checkpoint saved by ${describeSave(save, e.runId)} on ${save.agentName} at ${new Date(save.at).toISOString()} (${formatBytes(save.ref.size)})`)
    }
  }
  return lines.join('\n')
}
