// The validated, resolved form of a pipeline file. Everything downstream (fingerprints, the
// coordinator, the CLI) works on these types and trusts them; only src/spec/ sees raw YAML.

export type ParamValue = string | number | boolean

/** Where a step input comes from. */
export type InputSource =
  | { kind: 'pipeline', input: string }
  | { kind: 'step', step: string, output: string }

export interface Resources {
  /** CPU cores the step needs (fractions allowed, e.g. 0.5). */
  cpu: number
  /** Memory in bytes. */
  memory: number
  /** Number of whole GPU devices. */
  gpu: number
  /** Minimum memory per GPU device, in bytes; 0 when any GPU will do. */
  gpuMemory: number
  /** Labels the agent must carry with exactly these values. */
  labels: Record<string, string>
}

export interface RetryPolicy {
  /** Retries after the first attempt (0 = run once). */
  max: number
  /** Delay before the first retry in ms; doubled each time, with jitter. */
  backoffMs: number
  /** Exit codes that mean "do not retry". */
  nonRetryableExitCodes: number[]
}

/**
 * A directory the step keeps its progress in (a training's checkpoints). The agent saves it to
 * the store every `everyMs` while the step runs and once more when an attempt fails or is
 * stopped; the next attempt, or a later run of the step with the same fingerprint, starts with
 * the last save restored there. Not part of the fingerprint: it changes how a step resumes, not
 * what it computes.
 */
export interface CheckpointSpec {
  /** Relative to the working directory, normalized (no `..`, not inputs/ or outputs/). */
  path: string
  everyMs: number
  /** False: saves stay on the agent that made them, never copied to a second one. */
  copy: boolean
}

export interface StepSpec {
  id: string
  /** As written: a shell string or an argv array, placeholders not yet substituted. */
  command: string | string[]
  /** Files or directories, relative to the pipeline file's directory, in the order written. */
  code: string[]
  inputs: Record<string, InputSource>
  outputs: string[]
  /** Order-only dependencies. */
  after: string[]
  env: Record<string, string>
  environment?: string
  resources: Resources
  retry: RetryPolicy
  /** Undefined: no timeout. */
  timeoutMs?: number
  cache: boolean
  secrets: string[]
  checkpoint?: CheckpointSpec
}

export interface EnvironmentSpec {
  name: string
  /** Relative to the pipeline file's directory. */
  files: string[]
  setup: string
}

export interface Pipeline {
  name: string
  /** Absolute path of the directory holding the pipeline file; code and inputs resolve from here. */
  baseDir: string
  /** Absolute path of the pipeline file, when it came from one. */
  file?: string
  params: Record<string, ParamValue>
  /** Data sources: name -> path relative to baseDir. */
  inputs: Record<string, string>
  environments: Record<string, EnvironmentSpec>
  /** In file order. */
  steps: Record<string, StepSpec>
  /** Whole-run timeout in ms, if any. */
  timeoutMs?: number
}

/**
 * Where a step finds its inputs and writes its outputs, relative to its working directory.
 * Fixed so the resolved command (and thus the fingerprint) does not depend on the agent.
 */
export const INPUTS_DIR = 'inputs'
export const OUTPUTS_DIR = 'outputs'
