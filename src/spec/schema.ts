// The pipeline file format as zod schemas: the single source for field-level validation (with
// the messages users see) and for the JSON Schema that `pipemesh schema` publishes to editors.
// Cross-field and cross-step rules (references, cycles, placeholders, files) live in validate.ts.

import { closest, distance } from 'fastest-levenshtein'
import { z } from 'zod'
import type { ValidationIssue } from '../errors.js'
import { parseBytes, parseDuration } from '../util/units.js'

export const NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_-]*$/
export const PIPELINE_NAME_PATTERN = /^[A-Za-z0-9_.-]+$/
export const ENV_VAR_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/

const NAME_RULE = 'letters, digits, "_" and "-", starting with a letter or "_"'

function describeInput (input: unknown): string {
  if (input === undefined) return 'nothing'
  if (input === null) return 'null'
  if (Array.isArray(input)) return 'a list'
  if (typeof input === 'object') return 'a mapping'
  if (typeof input === 'string') return `"${input.length > 40 ? input.slice(0, 40) + '…' : input}"`
  return `${typeof input} ${String(input)}`
}

/** A zod error callback producing `expected X, got Y` (or `required: X` when the key is missing). */
function expected (what: string): { error: (iss: { input?: unknown }) => string } {
  return { error: iss => iss.input === undefined ? `required: expected ${what}` : `expected ${what}, got ${describeInput(iss.input)}` }
}

export const nameSchema = z.string(expected('a name')).regex(NAME_PATTERN, { error: `expected a name made of ${NAME_RULE}` })
const envVarSchema = z.string(expected('an environment variable name'))
  .regex(ENV_VAR_PATTERN, { error: 'expected an environment variable name (letters, digits and "_", not starting with a digit)' })

/** Params, env values and labels are scalars; env values and labels are used as strings. */
const scalarSchema = z.union([z.string(), z.number(), z.boolean()], expected('a string, number or boolean'))
const stringLikeSchema = scalarSchema.transform(v => String(v))

function units<T> (what: string, parse: (v: string | number) => T, check?: (v: T) => string | undefined) {
  return z.union([z.string(), z.number()], expected(what)).transform((raw, ctx) => {
    try {
      const value = parse(raw)
      const problem = check?.(value)
      if (problem === undefined) return value
      ctx.issues.push({ code: 'custom', message: problem, input: raw })
    } catch (err) {
      ctx.issues.push({ code: 'custom', message: err instanceof Error ? err.message : String(err), input: raw })
    }
    return z.NEVER
  })
}

const bytesSchema = units('a size such as 512MiB, 2GiB or a number of bytes', parseBytes)
const timeoutSchema = units('a duration such as 30s, 10m or 1h30m', parseDuration,
  ms => ms > 0 ? undefined : 'expected a duration greater than zero')
const backoffSchema = units('a duration such as 500ms or 5s', parseDuration)

const countSchema = (what: string, max: number) => z.number(expected(what)).int({ error: `expected ${what}` })
  .min(0, { error: `expected ${what}` }).max(max, { error: `expected at most ${max}` })

export const resourcesSchema = z.strictObject({
  cpu: z.number(expected('a number of CPU cores (fractions allowed)')).positive({ error: 'expected a number of CPU cores greater than zero' }).max(4096).default(1)
    .describe('CPU cores the step needs; fractions allowed (0.5).'),
  memory: bytesSchema.default(0).describe('Memory the step needs: bytes or a size such as 512MiB.'),
  gpu: countSchema('a whole number of GPUs', 1024).default(0).describe('Whole GPU devices the step needs.'),
  gpuMemory: bytesSchema.default(0).describe('Minimum memory per GPU, e.g. 16GiB; 0 when any GPU will do.'),
  labels: z.record(z.string().min(1), stringLikeSchema, expected('a mapping of labels')).default({}).describe('Labels the agent must carry with these values.')
}, expected('a mapping such as { cpu: 1, memory: 512MiB, gpu: 0 }'))

export const retrySchema = z.strictObject({
  max: countSchema('a whole number of retries, 0 or more', 100).default(0).describe('Retries after the first attempt.'),
  backoff: backoffSchema.default(1000).describe('Delay before the first retry, doubled after each.'),
  nonRetryableExitCodes: z.array(z.number().int().min(0).max(255), expected('a list of exit codes (0-255)')).default([])
    .describe('Exit codes that mean "do not retry".')
}, expected('a mapping such as { max: 2, backoff: 5s }'))

const commandSchema = z.union([
  z.string().refine(s => s.trim() !== '', { error: 'expected a non-empty command' }),
  z.array(z.string(), expected('a list of strings')).min(1, { error: 'expected a non-empty argv list' })
], {
  error: iss => iss.input === undefined
    ? 'a step needs a command: a string (run by /bin/sh) or a list of strings (argv)'
    : `expected a command: a string (run by /bin/sh) or a list of strings (argv), got ${describeInput(iss.input)}`
})

const checkpointPathSchema = z.string(expected('a relative directory path such as ckpt')).min(1, { error: 'expected a relative directory path such as ckpt' })

/** Default time between two snapshots of a step's checkpoint directory. */
export const DEFAULT_CHECKPOINT_EVERY_MS = 10 * 60_000

export const checkpointSchema = z.union([
  checkpointPathSchema,
  z.strictObject({
    path: checkpointPathSchema.describe('The directory, relative to the working directory, that the step keeps its state in.'),
    every: timeoutSchema.optional().describe('Time between snapshots while the step runs, e.g. 10m (default 10m).'),
    copy: z.boolean(expected('true or false')).optional()
      .describe('false: keep the saves on the agent that made them only (they are then lost with that machine). Default true: a second agent keeps a copy.')
  })
], expected('a directory such as ckpt, or a mapping such as { path: ckpt, every: 10m }'))

const stringList = (what: string) => z.array(z.string(expected(what)).min(1, { error: `expected ${what}` }), expected(`a list of ${what}s`))

export const stepSchema = z.strictObject({
  command: commandSchema.describe('A string run by /bin/sh, or an argv list. Placeholders: ${{inputs.X}}, ${{outputs.X}}, ${{params.X}}.'),
  code: stringList('a relative path').default([]).describe('Files or directories copied into the working directory; relative to the pipeline file.'),
  inputs: z.record(nameSchema, z.string(expected('${{pipeline.inputs.NAME}} or ${{steps.STEP.outputs.NAME}}')), expected('a mapping of input names'))
    .default({}).describe('Input name -> ${{pipeline.inputs.NAME}} or ${{steps.STEP.outputs.NAME}}; materialized at inputs/NAME.'),
  outputs: z.array(nameSchema, expected('a list of output names')).default([]).describe('Outputs written at outputs/NAME (a file or a directory).'),
  after: z.array(z.string(expected('a step name')), expected('a list of step names')).default([]).describe('Order-only dependencies.'),
  env: z.record(envVarSchema, stringLikeSchema, expected('a mapping of environment variables')).default({})
    .describe('Environment variables; values may use ${{params.X}}.'),
  environment: z.string(expected('an environment name')).optional().describe('Name of an entry of `environments`.'),
  resources: resourcesSchema.optional(),
  retries: countSchema('a whole number of retries, 0 or more', 100).optional().describe('Shorthand for retry.max.'),
  retry: retrySchema.optional(),
  timeout: timeoutSchema.optional().describe('Per-attempt timeout, e.g. 10m; the process tree is killed.'),
  cache: z.boolean(expected('true or false')).default(true).describe('false: always run, never reuse.'),
  secrets: z.array(envVarSchema, expected('a list of secret names')).default([]).describe('Secrets passed as environment variables.'),
  checkpoint: checkpointSchema.optional()
    .describe('A directory of the working directory saved while the step runs and when it fails; a retry, or a later run of the same step unchanged, starts with it restored.')
}, expected('a step: a mapping with at least "command"'))

export const environmentSchema = z.strictObject({
  files: stringList('a relative path').default([]).describe('Files the environment is built from; relative to the pipeline file.'),
  setup: z.string(expected('a setup command')).refine(s => s.trim() !== '', { error: 'expected a non-empty setup command' })
    .describe('Shell command that builds the environment in a directory holding its files.')
}, expected('an environment: a mapping with "files" and "setup"'))

/** The whole file. Its top-level `shape` is what validate.ts walks field by field. */
export const pipelineSchema = z.strictObject({
  name: z.string(expected('a pipeline name')).regex(PIPELINE_NAME_PATTERN, { error: 'expected a pipeline name made of letters, digits, ".", "_" and "-"' }),
  params: z.record(nameSchema, scalarSchema, expected('a mapping of param names to values')).default({})
    .describe('Pipeline parameters; override at submit with --param NAME=VALUE.'),
  inputs: z.record(nameSchema, z.string(expected('a path')).min(1, { error: 'expected a path' }), expected('a mapping of input names to paths')).default({})
    .describe('Data sources: a file or directory, relative to the pipeline file.'),
  timeout: timeoutSchema.optional().describe('Whole-run timeout.'),
  environments: z.record(nameSchema, environmentSchema, expected('a mapping of environment names')).default({}),
  steps: z.record(nameSchema, stepSchema, expected('a mapping of step names to steps'))
}).describe('A pipemesh pipeline')

export type RawStep = z.output<typeof stepSchema>
export type RawEnvironment = z.output<typeof environmentSchema>

/** JSON Schema of the pipeline file, for editors (`pipemesh schema`). */
export function pipelineJsonSchema (): Record<string, unknown> {
  const schema = z.toJSONSchema(pipelineSchema, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' }) as Record<string, unknown>
  return { ...schema, title: 'pipemesh pipeline' }
}

/** ` (did you mean "x"?)` when a candidate is close enough to be the intended word, else ''. */
export function suggestion (word: string, candidates: readonly string[]): string {
  if (candidates.length === 0) return ''
  const best = closest(word, candidates)
  const limit = Math.max(2, Math.floor(word.length / 3))
  return distance(word, best) <= limit ? ` (did you mean "${best}"?)` : ''
}

export function joinPath (base: string, segment: string | number): string {
  if (typeof segment === 'number') return `${base}[${segment}]`
  return base === '' ? segment : `${base}.${segment}`
}

function isPlainObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * Parses `value` with `schema`, descending into objects and records itself so that one bad field
 * costs only that field: the result keeps every field that parsed (a partial value, defaults
 * applied) and every problem is added to `issues`. Unknown keys get a spelling suggestion.
 * Returns undefined only when the value at this level is unusable as a whole.
 */
export function parseLeniently (schema: z.ZodType, value: unknown, path: string, issues: ValidationIssue[]): unknown {
  // YAML writes "key with no value" as null; where the field may be absent, read it that way.
  if (value === null && schema.safeParse(undefined).success) value = undefined
  let inner: z.ZodType = schema
  while (inner instanceof z.ZodDefault || inner instanceof z.ZodOptional) inner = inner.unwrap() as z.ZodType
  // A field written either as a scalar or as a mapping (checkpoint): a mapping is checked as the
  // mapping form, field by field, so that its problems are named as precisely as any other's.
  if (value !== undefined && inner instanceof z.ZodUnion && isPlainObject(value)) {
    const mapping = (inner.options as z.ZodType[]).filter(o => o instanceof z.ZodObject)
    if (mapping.length === 1) inner = mapping[0] as z.ZodType
  }
  if (value !== undefined && inner instanceof z.ZodObject && isPlainObject(value)) {
    const shape = inner.shape as Record<string, z.ZodType>
    const known = Object.keys(shape)
    const out: Record<string, unknown> = {}
    for (const key of Object.keys(value)) {
      if (!Object.hasOwn(shape, key)) {
        const hint = suggestion(key, known)
        issues.push({ path, message: `unknown key "${key}"${hint === '' ? ` (expected one of: ${known.join(', ')})` : hint}` })
      }
    }
    for (const key of known) {
      const parsed = parseLeniently(shape[key] as z.ZodType, value[key], joinPath(path, key), issues)
      if (parsed !== undefined) out[key] = parsed
    }
    return out
  }
  if (value !== undefined && inner instanceof z.ZodRecord && isPlainObject(value)) {
    const out: Record<string, unknown> = {}
    for (const [key, entry] of Object.entries(value)) {
      const at = joinPath(path, key)
      if (key === '__proto__') {
        issues.push({ path: at, message: 'reserved name "__proto__"' })
        continue
      }
      const name = (inner.keyType as z.ZodType).safeParse(key)
      if (!name.success) issues.push({ path: at, message: `invalid name "${key}": ${name.error.issues[0]?.message ?? 'not allowed'}` })
      const parsed = parseLeniently(inner.valueType as z.ZodType, entry, at, issues)
      if (parsed !== undefined) out[key] = parsed
    }
    return out
  }
  const result = schema.safeParse(value, { reportInput: true })
  if (result.success) return result.data
  for (const issue of result.error.issues) {
    const at = issue.path.reduce<string>((p, s) => joinPath(p, typeof s === 'symbol' ? String(s) : s), path)
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) issues.push({ path: at, message: `unknown key "${key}"` })
    } else {
      issues.push({ path: at, message: issue.message })
    }
  }
  return undefined
}
