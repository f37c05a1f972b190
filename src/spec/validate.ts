// Turns parsed YAML data into a validated Pipeline. Field rules come from schema.ts; here are the
// rules that span fields and steps: references, placeholders, cycles, param overrides, paths and
// files. Every problem is collected (a bad field never hides a problem elsewhere) and thrown once.

import { statSync, realpathSync } from 'node:fs'
import { isAbsolute, posix, resolve, sep } from 'node:path'
import { findCycles } from '../dag.js'
import { PipelineValidationError, type ValidationIssue } from '../errors.js'
import { commandPlaceholder, scanPlaceholders } from './placeholders.js'
import { DEFAULT_CHECKPOINT_EVERY_MS, joinPath, parseLeniently, pipelineSchema, suggestion, type RawEnvironment, type RawStep } from './schema.js'
import { INPUTS_DIR, OUTPUTS_DIR, type CheckpointSpec, type EnvironmentSpec, type InputSource, type ParamValue, type Pipeline, type StepSpec } from './types.js'

export interface ValidateOptions {
  /** Absolute directory the pipeline's relative paths resolve from. */
  baseDir: string
  file?: string
  params?: Record<string, string>
  checkFiles?: boolean
}

type Loose<T> = { [K in keyof T]?: T[K] }
interface LooseRoot {
  name?: string
  params?: Record<string, ParamValue>
  inputs?: Record<string, string>
  timeout?: number
  environments?: Record<string, Loose<RawEnvironment>>
  steps?: Record<string, Loose<RawStep>>
}

const PLACEHOLDER_FORMS = '${{inputs.NAME}}, ${{outputs.NAME}} or ${{params.NAME}}'
const INPUT_FORMS = '${{pipeline.inputs.NAME}} or ${{steps.STEP.outputs.NAME}}'

function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function ownKeys (value: unknown): string[] {
  return isObject(value) ? Object.keys(value).filter(k => k !== '__proto__') : []
}

/** Validates and builds the Pipeline; throws PipelineValidationError with `prior` plus every problem found. */
export function validatePipeline (data: unknown, options: ValidateOptions, prior: ValidationIssue[] = []): Pipeline {
  const issues = [...prior]
  const add = (path: string, message: string): void => { issues.push({ path, message }) }
  if (!isObject(data)) {
    add('', 'expected a mapping with at least "name" and "steps"')
    throw new PipelineValidationError(issues, options.file)
  }
  const root = (parseLeniently(pipelineSchema, data, '', issues) ?? {}) as LooseRoot

  // Names come from the raw data, so a step or param whose body is invalid still counts as
  // declared and its consumers get no second, misleading "unknown" error.
  const stepIds = ownKeys(data.steps)
  const paramNames = ownKeys(data.params)
  const inputNames = ownKeys(data.inputs)
  const environmentNames = ownKeys(data.environments)
  if (isObject(data.steps) && stepIds.length === 0) add('steps', 'a pipeline needs at least one step')

  const params = { ...(root.params ?? {}) }
  for (const [name, text] of Object.entries(options.params ?? {})) {
    const declared = Object.hasOwn(params, name) ? params[name] : undefined
    if (!paramNames.includes(name)) {
      const known = paramNames.length === 0 ? 'the pipeline declares no params' : `declared: ${paramNames.join(', ')}`
      add(joinPath('params', name), `unknown param "${name}" given with --param${suggestion(name, paramNames)}; ${known}`)
    } else if (declared !== undefined) {
      const value = coerceParam(text, declared)
      if (value === undefined) add(joinPath('params', name), `--param ${name}=${text}: expected ${typeof declared === 'number' ? 'a number' : 'true or false'}, like the declared value ${String(declared)}`)
      else params[name] = value
    }
  }

  const rawSteps = isObject(data.steps) ? data.steps : {}
  const outputsOf = (id: string): string[] | undefined => {
    const parsed = root.steps?.[id]?.outputs
    if (parsed !== undefined) return parsed
    // The step or its outputs were unusable (and reported): trust what can be read, and skip
    // reference checks when nothing can.
    const step = rawSteps[id]
    if (!isObject(step)) return undefined
    if (step.outputs === undefined || step.outputs === null) return []
    return Array.isArray(step.outputs) ? step.outputs.filter((o): o is string => typeof o === 'string') : undefined
  }

  const exists = options.checkFiles === false ? undefined : fileChecker(options.baseDir, add)
  for (const [name, p] of Object.entries(root.inputs ?? {})) exists?.(joinPath('inputs', name), p, false)

  const steps: Record<string, StepSpec> = {}
  for (const id of stepIds) {
    const raw = root.steps?.[id]
    if (raw === undefined) continue
    steps[id] = buildStep(id, raw, { add, stepIds, paramNames, inputNames, environmentNames, outputsOf, exists })
  }
  for (const cycle of findCycles(steps)) {
    add(joinPath('steps', cycle[0] as string), `dependency cycle: ${cycle.join(' -> ')}`)
  }

  const environments: Record<string, EnvironmentSpec> = {}
  for (const [name, env] of Object.entries(root.environments ?? {})) {
    const files = checkRelativePaths(env.files ?? [], joinPath(joinPath('environments', name), 'files'), add, false, exists)
    environments[name] = { name, files, setup: env.setup ?? '' }
  }

  if (issues.length > 0) throw new PipelineValidationError(issues, options.file)

  const pipeline: Pipeline = {
    name: root.name as string,
    baseDir: options.baseDir,
    params,
    inputs: { ...root.inputs },
    environments,
    steps
  }
  if (options.file !== undefined) pipeline.file = resolve(options.file)
  if (root.timeout !== undefined) pipeline.timeoutMs = root.timeout
  return pipeline
}

function coerceParam (text: string, declared: ParamValue): ParamValue | undefined {
  if (typeof declared === 'string') return text
  if (typeof declared === 'number') {
    const n = Number(text)
    return text.trim() !== '' && Number.isFinite(n) ? n : undefined
  }
  const lower = text.trim().toLowerCase()
  return lower === 'true' ? true : lower === 'false' ? false : undefined
}

interface StepContext {
  add: (path: string, message: string) => void
  stepIds: string[]
  paramNames: string[]
  inputNames: string[]
  environmentNames: string[]
  outputsOf: (id: string) => string[] | undefined
  exists: FileCheck | undefined
}

/** Reports `p` (resolved from the pipeline directory) missing or, when `inside`, reaching outside it. */
type FileCheck = (where: string, p: string, inside: boolean) => void

function buildStep (id: string, raw: Loose<RawStep>, ctx: StepContext): StepSpec {
  const { add } = ctx
  const at = joinPath('steps', id)
  const outputs = raw.outputs ?? []
  const seenOutputs = new Set<string>()
  outputs.forEach((name, i) => {
    if (seenOutputs.has(name)) add(joinPath(joinPath(at, 'outputs'), i), `duplicate output "${name}"`)
    seenOutputs.add(name)
  })

  const inputs: Record<string, InputSource> = {}
  for (const [name, text] of Object.entries(raw.inputs ?? {})) {
    const where = joinPath(joinPath(at, 'inputs'), name)
    if (seenOutputs.has(name)) add(where, `"${name}" is both an input and an output of this step: give them different names`)
    const source = parseInputSource(text, where, ctx)
    if (source !== undefined) inputs[name] = source
  }

  const after: string[] = []
  ;(raw.after ?? []).forEach((dep, i) => {
    if (!ctx.stepIds.includes(dep)) add(joinPath(joinPath(at, 'after'), i), `unknown step "${dep}"${suggestion(dep, ctx.stepIds)}`)
    else if (!after.includes(dep)) after.push(dep)
  })

  const command = raw.command ?? ''
  if (Array.isArray(command) && command[0]?.trim() === '') add(joinPath(joinPath(at, 'command'), 0), 'expected the program to run, got an empty string')
  const inputNames = Object.keys(raw.inputs ?? {})
  const checkText = (text: string, where: string, allowed: 'all' | 'params'): void => {
    checkPlaceholders(text, where, allowed, { inputNames, outputs, paramNames: ctx.paramNames }, add)
  }
  if (typeof command === 'string') checkText(command, joinPath(at, 'command'), 'all')
  else command.forEach((arg, i) => { checkText(arg, joinPath(joinPath(at, 'command'), i), 'all') })

  const env = raw.env ?? {}
  for (const [name, value] of Object.entries(env)) {
    const where = joinPath(joinPath(at, 'env'), name)
    if (name.startsWith('PIPEMESH_')) add(where, 'names starting with PIPEMESH_ are reserved for pipemesh')
    checkText(value, where, 'params')
  }
  const secrets: string[] = []
  ;(raw.secrets ?? []).forEach((name, i) => {
    const where = joinPath(joinPath(at, 'secrets'), i)
    if (secrets.includes(name)) add(where, `duplicate secret "${name}"`)
    else if (Object.hasOwn(env, name)) add(where, `secret "${name}" is also set in env: a variable can come from one of them only`)
    else if (name.startsWith('PIPEMESH_')) add(where, 'names starting with PIPEMESH_ are reserved for pipemesh')
    else secrets.push(name)
  })

  if (raw.environment !== undefined && !ctx.environmentNames.includes(raw.environment)) {
    const known = ctx.environmentNames.length === 0 ? '; the pipeline declares no environments' : suggestion(raw.environment, ctx.environmentNames)
    add(joinPath(at, 'environment'), `unknown environment "${raw.environment}"${known}`)
  }

  const resources = { cpu: 1, memory: 0, gpu: 0, gpuMemory: 0, labels: {}, ...raw.resources }
  if (resources.gpuMemory > 0 && resources.gpu === 0) add(joinPath(joinPath(at, 'resources'), 'gpuMemory'), 'gpuMemory needs gpu: 1 or more')
  if (raw.retries !== undefined && raw.retry !== undefined) add(at, 'use either "retries" or "retry", not both')
  const retry = {
    max: raw.retry?.max ?? raw.retries ?? 0,
    backoffMs: raw.retry?.backoff ?? 1000,
    nonRetryableExitCodes: raw.retry?.nonRetryableExitCodes ?? []
  }

  const code = checkRelativePaths(raw.code ?? [], joinPath(at, 'code'), add, true, ctx.exists)
  const checkpoint = raw.checkpoint === undefined ? undefined : checkpointSpec(raw.checkpoint, joinPath(at, 'checkpoint'), code, add)
  const step: StepSpec = {
    id, command, code, inputs, outputs: [...seenOutputs], after, env, resources, retry, cache: raw.cache ?? true, secrets
  }
  if (raw.environment !== undefined) step.environment = raw.environment
  if (raw.timeout !== undefined) step.timeoutMs = raw.timeout
  if (checkpoint !== undefined) step.checkpoint = checkpoint
  return step
}

/** Names a step's working directory holds that a checkpoint directory may not be or be in. */
const NOT_CHECKPOINT = [INPUTS_DIR, OUTPUTS_DIR, 'node_modules']

function checkpointSpec (raw: string | Loose<Exclude<RawStep['checkpoint'], string | undefined>>, at: string, code: string[], add: (path: string, message: string) => void): CheckpointSpec | undefined {
  const p = typeof raw === 'string' ? raw : raw.path
  const where = typeof raw === 'string' ? at : joinPath(at, 'path')
  const everyMs = typeof raw === 'string' ? DEFAULT_CHECKPOINT_EVERY_MS : raw.every ?? DEFAULT_CHECKPOINT_EVERY_MS
  const copy = typeof raw === 'string' ? true : raw.copy ?? true
  // A mapping whose path was missing or invalid was partly parsed, and reported.
  if (typeof p !== 'string') return undefined
  if (p.includes('\0')) { add(where, 'path contains a NUL byte'); return undefined }
  if (isAbsolute(p)) { add(where, `expected a directory relative to the step's working directory, got the absolute path "${p}"`); return undefined }
  const normalized = posix.normalize(p).replace(/\/+$/, '')
  if (normalized === '.' || normalized === '') { add(where, 'expected a directory inside the working directory, not the working directory itself (e.g. ckpt)'); return undefined }
  if (normalized === '..' || normalized.startsWith('../')) { add(where, `"${p}" escapes the step's working directory: expected a directory inside it, e.g. ckpt`); return undefined }
  const first = normalized.split('/')[0] as string
  if (NOT_CHECKPOINT.includes(first)) { add(where, `"${p}" is inside the step's ${first}/ directory, which pipemesh manages: use another directory, e.g. ckpt`); return undefined }
  // The code snapshot is copied in first; a restored checkpoint must not land on top of it.
  const clash = code.find(c => c === normalized || c.startsWith(normalized + '/') || normalized.startsWith(c + '/'))
  if (clash !== undefined) { add(where, `"${p}" overlaps the step's code "${clash}": keep the checkpoint directory apart from the code`); return undefined }
  return { path: normalized, everyMs, copy }
}

function parseInputSource (text: string, where: string, ctx: StepContext): InputSource | undefined {
  const trimmed = text.trim()
  const [match] = scanPlaceholders(trimmed)
  const parts = match?.raw === trimmed ? match.parts : undefined
  if (parts?.length === 3 && parts[0] === 'pipeline' && parts[1] === 'inputs') {
    const input = parts[2] as string
    if (ctx.inputNames.includes(input)) return { kind: 'pipeline', input }
    const known = ctx.inputNames.length === 0 ? '; the pipeline declares no inputs' : suggestion(input, ctx.inputNames)
    ctx.add(where, `unknown pipeline input "${input}"${known}`)
    return undefined
  }
  if (parts?.length === 4 && parts[0] === 'steps' && parts[2] === 'outputs') {
    const step = parts[1] as string
    const output = parts[3] as string
    if (!ctx.stepIds.includes(step)) {
      ctx.add(where, `unknown step "${step}"${suggestion(step, ctx.stepIds)}`)
      return undefined
    }
    const outputs = ctx.outputsOf(step)
    if (outputs !== undefined && !outputs.includes(output)) {
      const known = outputs.length === 0 ? 'it declares no outputs' : `its outputs: ${outputs.join(', ')}`
      ctx.add(where, `step "${step}" has no output "${output}"${suggestion(output, outputs)}; ${known}`)
      return undefined
    }
    return { kind: 'step', step, output }
  }
  const hint = trimmed.includes('${{') ? '' : ' (data files are declared under the top-level inputs and referenced from here)'
  ctx.add(where, `expected ${INPUT_FORMS}, got "${text}"${hint}`)
  return undefined
}

function checkPlaceholders (text: string, where: string, allowed: 'all' | 'params',
  names: { inputNames: string[], outputs: string[], paramNames: string[] }, add: (path: string, message: string) => void): void {
  for (const match of scanPlaceholders(text)) {
    const ref = commandPlaceholder(match)
    if (!match.raw.endsWith('}}')) {
      add(where, `unterminated placeholder "${match.raw}": expected ${PLACEHOLDER_FORMS}`)
    } else if (match.parts?.[0] === 'pipeline' || match.parts?.[0] === 'steps') {
      add(where, `placeholder ${match.raw} belongs in the step's inputs: declare an input with it and use \${{inputs.NAME}} here`)
    } else if (ref === undefined) {
      add(where, `bad placeholder "${match.raw}": expected ${allowed === 'all' ? PLACEHOLDER_FORMS : '${{params.NAME}}'}`)
    } else if (allowed === 'params' && ref.kind !== 'params') {
      add(where, `placeholder ${match.raw} is not allowed here: env values may only use \${{params.NAME}}`)
    } else if (ref.kind === 'params' && !names.paramNames.includes(ref.name)) {
      add(where, `placeholder ${match.raw}: no param "${ref.name}" is declared${suggestion(ref.name, names.paramNames)}`)
    } else if (ref.kind === 'inputs' && !names.inputNames.includes(ref.name)) {
      add(where, `placeholder ${match.raw}: the step has no input "${ref.name}"${suggestion(ref.name, names.inputNames)}`)
    } else if (ref.kind === 'outputs' && !names.outputs.includes(ref.name)) {
      add(where, `placeholder ${match.raw}: the step has no output "${ref.name}"${suggestion(ref.name, names.outputs)}`)
    }
  }
}

/**
 * Normalizes paths that must stay inside the pipeline directory and reports the ones that would
 * not (absolute, `../`), duplicates, and code paths that would land on the step's inputs/ or
 * outputs/ directory.
 */
function checkRelativePaths (paths: string[], at: string, add: (path: string, message: string) => void, isCode: boolean,
  exists: FileCheck | undefined): string[] {
  const out: string[] = []
  paths.forEach((p, i) => {
    const where = joinPath(at, i)
    if (p.includes('\0')) { add(where, 'path contains a NUL byte'); return }
    if (isAbsolute(p)) { add(where, `expected a path relative to the pipeline file, got the absolute path "${p}"`); return }
    const normalized = posix.normalize(p).replace(/\/+$/, '') || '.'
    if (normalized === '..' || normalized.startsWith('../')) { add(where, `"${p}" escapes the pipeline directory: expected a path inside it`); return }
    const first = normalized.split('/')[0]
    if (isCode && (first === INPUTS_DIR || first === OUTPUTS_DIR)) {
      add(where, `"${p}" would be copied over the step's ${first}/ directory: move or rename it`)
      return
    }
    if (out.includes(normalized)) { add(where, `"${p}" is listed twice`); return }
    out.push(normalized)
    exists?.(where, p, true)
  })
  return out
}

function fileChecker (baseDir: string, add: (path: string, message: string) => void): FileCheck {
  let realBase: string | undefined
  try {
    realBase = realpathSync(baseDir)
  } catch {
    add('', `the pipeline directory ${baseDir} does not exist`)
  }
  return (where, p, inside) => {
    if (realBase === undefined) return
    const abs = resolve(baseDir, p)
    let info
    try {
      info = statSync(abs)
    } catch {
      add(where, `"${p}" not found (looked for ${abs})`)
      return
    }
    if (!info.isFile() && !info.isDirectory()) { add(where, `"${p}" is neither a file nor a directory`); return }
    if (inside) {
      const real = realpathSync(abs)
      if (real !== realBase && !real.startsWith(realBase + sep)) add(where, `"${p}" resolves to ${real}, outside the pipeline directory (through a symbolic link)`)
    }
  }
}
