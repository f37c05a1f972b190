// Plain data the placement logic works on: what the coordinator knows about each agent, what a
// step asks for, and the verdict with its reasons. No behaviour here, so the coordinator, the HTTP
// API and the CLI can share these shapes without pulling in the ranking code.

import type { Resources } from '../spec/types.js'

/** One GPU device as an agent reports it. */
export interface GpuInfo {
  /** Device index as `CUDA_VISIBLE_DEVICES` takes it (nvidia-smi / PCI bus order). */
  index: number
  vendor: string
  model: string
  /** Device memory in bytes; 0 when unknown (a declared stand-in without `gpuMemory`). */
  memory: number
  driver?: string
  /** Stable device id (nvidia-smi's `GPU-…` UUID), when known. */
  uuid?: string
}

/** The coordinator's view of one connected agent: what it offers and what is handed out. */
export interface AgentView {
  id: string
  name: string
  /** What the agent offers in total, after its `--resources` overrides. */
  capacity: { cpu: number, memory: number, gpus: GpuInfo[] }
  labels: Record<string, string>
  /** What running steps hold now; `gpus` lists device indices in use. */
  allocated: { cpu: number, memory: number, gpus: number[] }
  /** Steps running on it now. */
  running: number
  /** 1-minute load average divided by cores, from heartbeats. */
  load?: number
  /** A draining agent finishes what it runs but takes nothing new. */
  draining?: boolean
  /** Free bytes in its data dir's file system, from heartbeats; unknown when absent. */
  diskFree?: number
}

export interface PlacementInput {
  name: string
  /** Bytes of the artifact. */
  size: number
  /** Agent ids that hold it whole. */
  holders: string[]
}

export interface PlacementRequest {
  stepId: string
  resources: Resources
  inputs: PlacementInput[]
}

/**
 * How one agent fared: `chosen`; `eligible` (could run it now, ranked lower); `busy` (could run it
 * once capacity frees, or is draining); `never` (fails a hard constraint).
 */
export type CandidateVerdict = 'chosen' | 'eligible' | 'busy' | 'never'

export interface CandidateReport {
  agentId: string
  name: string
  verdict: CandidateVerdict
  reason: string
}

export type Placement =
  | { kind: 'placed', agentId: string, gpus: number[], reason: string, candidates: CandidateReport[] }
  | { kind: 'queued', reason: string, candidates: CandidateReport[] }
  | { kind: 'unschedulable', reason: string, candidates: CandidateReport[] }
