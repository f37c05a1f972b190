// Runs the steps of an example pipeline file the way the pipemesh agent runs them, without
// pipemesh: a fresh working directory per step with its code copied in, inputs copied to
// inputs/<name> (read-only), outputs/ created, placeholders substituted (shell-quoted in a string
// command), the environment's node_modules linked in. Lets the example scripts be tested alone.
import { chmod, cp, mkdir, readFile, readdir, stat, symlink } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { delimiter, dirname, join, resolve } from 'node:path'
import { execa } from 'execa'
import { quote } from 'shell-quote'
import { parse } from 'yaml'

interface RawStep {
  command: string | string[]
  code?: string[]
  inputs?: Record<string, string>
  outputs?: string[]
  after?: string[]
  environment?: string
  checkpoint?: string | { path: string, every?: string }
}

export interface RawPipeline {
  name: string
  params?: Record<string, string | number | boolean>
  inputs?: Record<string, string>
  environments?: Record<string, { files: string[], setup: string }>
  steps: Record<string, RawStep>
}

export interface StepRun {
  id: string
  workDir: string
  exitCode: number
  stdout: string
  stderr: string
  /** Output name -> absolute path, for the outputs the step wrote. */
  outputs: Record<string, string>
}

export interface RunOptions {
  /** Overrides of the pipeline's params, as `--param` would give them. */
  params?: Record<string, string | number>
  /** The node_modules a step with an `environment` gets (a link named node_modules points at it). */
  nodeModules?: string
  signal?: AbortSignal
}

export function loadPipeline (file: string): RawPipeline {
  return parse(readFileSync(file, 'utf8')) as RawPipeline
}

const REF = /^\$\{\{\s*(pipeline\.inputs\.([\w-]+)|steps\.([\w-]+)\.outputs\.([\w-]+))\s*\}\}$/
const PLACEHOLDER = /\$\{\{\s*(inputs|outputs|params)\.([\w-]+)\s*\}\}/g

/** Where a step input comes from: a pipeline input path or another step's output. */
export function inputSource (ref: string): { input: string } | { step: string, output: string } {
  const m = REF.exec(ref)
  if (m === null) throw new Error(`not an input reference: ${ref}`)
  return m[2] !== undefined ? { input: m[2] } : { step: m[3] as string, output: m[4] as string }
}

/**
 * Runs one step in `workDir` (created fresh) with its inputs taken from the given paths.
 * Never throws on a failing command: the caller looks at exitCode/stderr.
 */
export async function runStep (
  file: string, stepId: string, inputPaths: Record<string, string>, workDir: string, opts: RunOptions = {}
): Promise<StepRun> {
  const pipeline = loadPipeline(file)
  const baseDir = dirname(resolve(file))
  const step = pipeline.steps[stepId]
  if (step === undefined) throw new Error(`${file}: no step ${stepId}`)
  await mkdir(join(workDir, 'inputs'), { recursive: true })
  await mkdir(join(workDir, 'outputs'), { recursive: true })
  for (const code of step.code ?? []) {
    await mkdir(dirname(join(workDir, code)), { recursive: true })
    await cp(join(baseDir, code), join(workDir, code), { recursive: true })
  }
  for (const name of Object.keys(step.inputs ?? {})) {
    const from = inputPaths[name]
    if (from === undefined) throw new Error(`step ${stepId}: no path given for input ${name}`)
    await cp(from, join(workDir, 'inputs', name), { recursive: true })
    await makeReadOnly(join(workDir, 'inputs', name))
  }

  const params = { ...pipeline.params, ...opts.params }
  const bind = (kind: string, name: string): string => {
    if (kind === 'inputs' && step.inputs?.[name] !== undefined) return `inputs/${name}`
    if (kind === 'outputs' && step.outputs?.includes(name) === true) return `outputs/${name}`
    const value = kind === 'params' ? params[name] : undefined
    if (value === undefined) throw new Error(`step ${stepId}: placeholder ${kind}.${name} has nothing to bind to`)
    return String(value)
  }
  const env: Record<string, string> = { PIPEMESH_RUN_ID: 'test', PIPEMESH_STEP: stepId, PIPEMESH_ATTEMPT: '1' }
  if (step.checkpoint !== undefined) {
    // An empty checkpoint directory, as a first attempt gets it.
    const dir = join(workDir, typeof step.checkpoint === 'string' ? step.checkpoint : step.checkpoint.path)
    await mkdir(dir, { recursive: true })
    env.PIPEMESH_CHECKPOINT_DIR = dir
  }
  if (step.environment !== undefined) {
    if (opts.nodeModules === undefined) throw new Error(`step ${stepId} needs environment ${step.environment}: pass nodeModules`)
    await symlink(opts.nodeModules, join(workDir, 'node_modules'), 'dir')
    env.PATH = `${join(opts.nodeModules, '.bin')}${delimiter}${process.env.PATH ?? ''}`
    env.NODE_PATH = opts.nodeModules
  }

  const common = { cwd: workDir, env, reject: false, timeout: 60_000, cancelSignal: opts.signal } as const
  const result = typeof step.command === 'string'
    ? await execa('/bin/sh', ['-c', step.command.replace(PLACEHOLDER, (_, k: string, n: string) => quote([bind(k, n)]))], common)
    : await execa(
      bind0(step.command, stepId),
      step.command.slice(1).map((arg) => arg.replace(PLACEHOLDER, (_, k: string, n: string) => bind(k, n))),
      common
    )

  const outputs: Record<string, string> = {}
  if (result.exitCode === 0) {
    for (const name of step.outputs ?? []) {
      const at = join(workDir, 'outputs', name)
      if (await exists(at)) outputs[name] = at
    }
  }
  return { id: stepId, workDir, exitCode: result.exitCode ?? -1, stdout: String(result.stdout), stderr: String(result.stderr), outputs }
}

function bind0 (argv: string[], stepId: string): string {
  const first = argv[0]
  if (first === undefined) throw new Error(`step ${stepId}: empty command`)
  return first
}

/**
 * Runs every step, each as soon as the steps it depends on (by input or `after`) are done, so
 * independent steps run in parallel. Throws, with the step's stderr, when a step fails or does
 * not write a declared output.
 */
export async function runPipeline (file: string, root: string, opts: RunOptions = {}): Promise<Record<string, StepRun>> {
  const pipeline = loadPipeline(file)
  const baseDir = dirname(resolve(file))
  const done: Record<string, StepRun> = {}
  const deps = (s: RawStep): string[] => [
    ...Object.values(s.inputs ?? {}).flatMap((ref) => {
      const src = inputSource(ref)
      return 'step' in src ? [src.step] : []
    }),
    ...(s.after ?? [])
  ]
  let pending = Object.keys(pipeline.steps)
  while (pending.length > 0) {
    const ready = pending.filter((id) => deps(pipeline.steps[id] as RawStep).every((d) => done[d] !== undefined))
    if (ready.length === 0) throw new Error(`${file}: steps ${pending.join(', ')} can never run (cycle or unknown dependency)`)
    await Promise.all(ready.map(async (id) => {
      const step = pipeline.steps[id] as RawStep
      const paths: Record<string, string> = {}
      for (const [name, ref] of Object.entries(step.inputs ?? {})) {
        const src = inputSource(ref)
        if ('input' in src) {
          const rel = pipeline.inputs?.[src.input]
          if (rel === undefined) throw new Error(`step ${id}: unknown pipeline input ${src.input}`)
          paths[name] = resolve(baseDir, rel)
        } else {
          const out = done[src.step]?.outputs[src.output]
          if (out === undefined) throw new Error(`step ${id}: ${src.step} has no output ${src.output}`)
          paths[name] = out
        }
      }
      const run = await runStep(file, id, paths, join(root, id), opts)
      if (run.exitCode !== 0) throw new Error(`step ${id} exited ${run.exitCode}:\n${run.stderr}`)
      const missing = (step.outputs ?? []).filter((o) => run.outputs[o] === undefined)
      if (missing.length > 0) throw new Error(`step ${id} did not write outputs ${missing.join(', ')}`)
      done[id] = run
    }))
    pending = pending.filter((id) => done[id] === undefined)
  }
  return done
}

/** Every file under a path (or the path itself), relative, sorted: for comparing two outputs. */
export async function listFiles (path: string, prefix = ''): Promise<string[]> {
  if (!(await stat(path)).isDirectory()) return [prefix]
  const names = (await readdir(path)).sort()
  const nested = await Promise.all(names.map(async (n) => await listFiles(join(path, n), prefix === '' ? n : `${prefix}/${n}`)))
  return nested.flat()
}

async function makeReadOnly (path: string): Promise<void> {
  // Files only: a read-only directory would stop the temp dir from being removed afterwards.
  if ((await stat(path)).isDirectory()) {
    for (const n of await readdir(path)) await makeReadOnly(join(path, n))
  } else {
    await chmod(path, 0o444)
  }
}

async function exists (path: string): Promise<boolean> {
  return await stat(path).then(() => true, () => false)
}

/** Where a finished run's step wrote an output; throws, naming both, when it wrote none. */
export function outputPath (run: Record<string, StepRun>, step: string, name: string): string {
  const path = run[step]?.outputs[name]
  if (path === undefined) throw new Error(`${step} has no output ${name}`)
  return path
}

export async function readJson (path: string): Promise<any> {
  return JSON.parse(await readFile(path, 'utf8'))
}
