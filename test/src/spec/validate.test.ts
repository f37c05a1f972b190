// Pipeline validation: every kind of problem is reported with the field's path and what was
// expected, all of them at once, and a valid file produces the documented defaults.

import { describe, expect, it } from 'vitest'
import { PipelineValidationError } from '../../../src/errors.js'
import { parsePipeline } from '../../../src/spec/index.js'
import { expectIssue, issuesOf } from './helpers.js'

const VALID = `
name: iris
params:
  trees: 50
  fast: false
  label: species
inputs:
  raw: data/iris.csv
timeout: 2h
environments:
  node-ml:
    files: [env/package.json, env/package-lock.json]
    setup: npm ci --omit=dev
steps:
  prep:
    command: node prep.mjs \${{inputs.raw}} \${{outputs.train}} \${{outputs.test}}
    code: [prep.mjs]
    inputs:
      raw: \${{pipeline.inputs.raw}}
    outputs: [train, test]
  train:
    command: node train.mjs --trees \${{ params.trees }} \${{inputs.data}} \${{outputs.model}}
    code: [./train.mjs, lib/]
    environment: node-ml
    inputs:
      data: \${{steps.prep.outputs.train}}
    outputs: [model]
    after: [prep]
    env: { SEED: 7, FAST: "\${{params.fast}}" }
    resources: { cpu: 0.5, memory: 512MiB, gpu: 1, gpuMemory: 16GiB, labels: { zone: lab2 } }
    retries: 2
    timeout: 10m
    cache: false
    secrets: [HF_TOKEN]
  evaluate:
    command: [node, eval.mjs, "--model=\${{inputs.model}}", "\${{inputs.test}}"]
    inputs:
      model: \${{steps.train.outputs.model}}
      test: \${{steps.prep.outputs.test}}
    retry: { max: 3, backoff: 5s, nonRetryableExitCodes: [3] }
`

describe('a valid pipeline', () => {
  it('is built with resolved references and the documented defaults', () => {
    const p = parsePipeline(VALID, { baseDir: '/srv/iris', file: '/srv/iris/pipeline.yaml', checkFiles: false })
    expect(p.name).toBe('iris')
    expect(p.baseDir).toBe('/srv/iris')
    expect(p.file).toBe('/srv/iris/pipeline.yaml')
    expect(p.timeoutMs).toBe(2 * 3600_000)
    expect(p.params).toEqual({ trees: 50, fast: false, label: 'species' })
    expect(Object.keys(p.steps)).toEqual(['prep', 'train', 'evaluate'])
    expect(p.environments['node-ml']).toEqual({ name: 'node-ml', files: ['env/package.json', 'env/package-lock.json'], setup: 'npm ci --omit=dev' })

    const prep = p.steps.prep!
    expect(prep.inputs).toEqual({ raw: { kind: 'pipeline', input: 'raw' } })
    expect(prep.resources).toEqual({ cpu: 1, memory: 0, gpu: 0, gpuMemory: 0, labels: {} })
    expect(prep.retry).toEqual({ max: 0, backoffMs: 1000, nonRetryableExitCodes: [] })
    expect(prep.cache).toBe(true)
    expect(prep.after).toEqual([])
    expect(prep.env).toEqual({})
    expect(prep.secrets).toEqual([])
    expect(prep.timeoutMs).toBeUndefined()
    expect(prep.environment).toBeUndefined()

    const train = p.steps.train!
    expect(train.code).toEqual(['train.mjs', 'lib'])
    expect(train.inputs).toEqual({ data: { kind: 'step', step: 'prep', output: 'train' } })
    expect(train.env).toEqual({ SEED: '7', FAST: '${{params.fast}}' })
    expect(train.resources).toEqual({ cpu: 0.5, memory: 512 * 1024 ** 2, gpu: 1, gpuMemory: 16 * 1024 ** 3, labels: { zone: 'lab2' } })
    expect(train.retry).toEqual({ max: 2, backoffMs: 1000, nonRetryableExitCodes: [] })
    expect(train.timeoutMs).toBe(600_000)
    expect(train.cache).toBe(false)
    expect(train.secrets).toEqual(['HF_TOKEN'])
    expect(train.environment).toBe('node-ml')

    const evaluate = p.steps.evaluate!
    expect(evaluate.command).toEqual(['node', 'eval.mjs', '--model=${{inputs.model}}', '${{inputs.test}}'])
    expect(evaluate.retry).toEqual({ max: 3, backoffMs: 5000, nonRetryableExitCodes: [3] })
  })

  it('coerces --param overrides to the declared type', () => {
    const p = parsePipeline(VALID, { baseDir: '/srv', checkFiles: false, params: { trees: '100', fast: 'TRUE', label: '42' } })
    expect(p.params).toEqual({ trees: 100, fast: true, label: '42' })
  })
})

describe('validation errors', () => {
  it('refuses an unknown key with a suggestion, at every level', () => {
    const issues = issuesOf(`
name: x
stepz: {}
steps:
  prep:
    comand: echo hi
    resources: { memroy: 1GiB }
    retry: { maxx: 2 }
environments:
  e: { setup: true, filez: [] }
`)
    expectIssue(issues, '', 'unknown key "stepz" (did you mean "steps"?)')
    expectIssue(issues, 'steps.prep', 'unknown key "comand" (did you mean "command"?)')
    expectIssue(issues, 'steps.prep.resources', 'unknown key "memroy" (did you mean "memory"?)')
    expectIssue(issues, 'steps.prep.retry', 'unknown key "maxx" (did you mean "max"?)')
    expectIssue(issues, 'environments.e', 'unknown key "filez" (did you mean "files"?)')
    expectIssue(issues, 'environments.e.setup', 'expected a setup command')
    // The typo also leaves the step without a command.
    expectIssue(issues, 'steps.prep.command', 'a step needs a command')
  })

  it('lists the expected keys when no known key is close', () => {
    expectIssue(issuesOf('name: x\nsteps:\n  a:\n    command: echo\n    zzzzzzzz: 1\n'), 'steps.a', /unknown key "zzzzzzzz" \(expected one of: command, code,/)
  })

  it('refuses a step with no command, or an empty one', () => {
    const issues = issuesOf(`
name: x
steps:
  a: { outputs: [o] }
  b: { command: "  " }
  c: { command: [] }
  d: { command: ["", x] }
  e: { command: 42 }
`)
    expectIssue(issues, 'steps.a.command', 'a step needs a command: a string (run by /bin/sh) or a list of strings (argv)')
    expectIssue(issues, 'steps.b.command', 'non-empty command')
    expectIssue(issues, 'steps.c.command', 'expected a non-empty argv list')
    expectIssue(issues, 'steps.d.command[0]', 'expected the program to run')
    expectIssue(issues, 'steps.e.command', 'got number 42')
  })

  it('refuses unknown steps, outputs and pipeline inputs in inputs and after', () => {
    const issues = issuesOf(`
name: x
inputs: { raw: data.csv }
steps:
  prep:
    command: echo
    outputs: [train, test]
  train:
    command: echo
    inputs:
      a: \${{steps.prpe.outputs.train}}
      b: \${{steps.prep.outputs.trian}}
      c: \${{pipeline.inputs.rwa}}
      d: data.csv
      e: \${{steps.prep}}
    after: [prep, evaluat]
  evaluate: { command: echo }
`)
    expectIssue(issues, 'steps.train.inputs.a', 'unknown step "prpe" (did you mean "prep"?)')
    expectIssue(issues, 'steps.train.inputs.b', 'step "prep" has no output "trian" (did you mean "train"?); its outputs: train, test')
    expectIssue(issues, 'steps.train.inputs.c', 'unknown pipeline input "rwa" (did you mean "raw"?)')
    expectIssue(issues, 'steps.train.inputs.d', 'expected ${{pipeline.inputs.NAME}} or ${{steps.STEP.outputs.NAME}}, got "data.csv"')
    expectIssue(issues, 'steps.train.inputs.e', 'expected ${{pipeline.inputs.NAME}} or ${{steps.STEP.outputs.NAME}}')
    expectIssue(issues, 'steps.train.after[1]', 'unknown step "evaluat" (did you mean "evaluate"?)')
    expect(issues).toHaveLength(6)
  })

  it('refuses an unknown environment', () => {
    const issues = issuesOf(`
name: x
environments: { node-ml: { setup: npm ci } }
steps:
  a: { command: echo, environment: node-m1 }
`)
    expectIssue(issues, 'steps.a.environment', 'unknown environment "node-m1" (did you mean "node-ml"?)')
  })

  it('prints each dependency cycle as a -> b -> a', () => {
    const issues = issuesOf(`
name: x
steps:
  a: { command: echo, inputs: { i: "\${{steps.c.outputs.o}}" }, outputs: [o] }
  b: { command: echo, inputs: { i: "\${{steps.a.outputs.o}}" }, outputs: [o] }
  c: { command: echo, after: [b], outputs: [o] }
  d: { command: echo, after: [d] }
  e: { command: echo, after: [a] }
`)
    expectIssue(issues, 'steps.a', 'dependency cycle: a -> b -> c -> a')
    expectIssue(issues, 'steps.d', 'dependency cycle: d -> d')
    expect(issues).toHaveLength(2)
  })

  it('refuses duplicate names: YAML keys, outputs, and an input named like an output', () => {
    const issues = issuesOf(`
name: x
steps:
  a:
    command: echo
    outputs: [o, p, o]
  b:
    command: echo
    command: echo again
    inputs: { o: "\${{steps.a.outputs.o}}" }
    outputs: [o]
  a:
    command: echo
`)
    expectIssue(issues, 'steps.a', 'duplicate key "a" at line 12, column 3')
    expectIssue(issues, 'steps.b.command', 'duplicate key "command" at line 9, column 5')
    expectIssue(issues, 'steps.b.inputs.o', '"o" is both an input and an output of this step')
  })

  it('refuses duplicate outputs in one step', () => {
    expectIssue(issuesOf('name: x\nsteps:\n  a: { command: echo, outputs: [o, p, o] }\n'), 'steps.a.outputs[2]', 'duplicate output "o"')
  })

  it('refuses placeholders with nothing to bind to, and bad placeholder syntax', () => {
    const issues = issuesOf(`
name: x
params: { trees: 5 }
steps:
  a:
    command: run \${{inputs.data}} \${{outputs.model}} \${{params.tres}} \${{ foo }} \${{params.trees
    outputs: [o]
  b:
    command: ["\${{pipeline.inputs.raw}}", "\${{params.a.b}}", "\${{ secrets.X }}"]
    env: { A: "\${{inputs.x}}", B: "\${{params.nope}}", C: "\${{params.trees}}" }
`)
    expectIssue(issues, 'steps.a.command', 'placeholder ${{inputs.data}}: the step has no input "data"')
    expectIssue(issues, 'steps.a.command', 'placeholder ${{outputs.model}}: the step has no output "model"')
    expectIssue(issues, 'steps.a.command', 'no param "tres" is declared (did you mean "trees"?)')
    expectIssue(issues, 'steps.a.command', 'bad placeholder "${{ foo }}": expected ${{inputs.NAME}}, ${{outputs.NAME}} or ${{params.NAME}}')
    expectIssue(issues, 'steps.a.command', 'unterminated placeholder "${{params.trees"')
    expectIssue(issues, 'steps.b.command[0]', 'belongs in the step\'s inputs')
    expectIssue(issues, 'steps.b.command[1]', 'bad placeholder "${{params.a.b}}"')
    expectIssue(issues, 'steps.b.command[2]', 'bad placeholder "${{ secrets.X }}"')
    expectIssue(issues, 'steps.b.env.A', 'env values may only use ${{params.NAME}}')
    expectIssue(issues, 'steps.b.env.B', 'no param "nope" is declared')
    expect(issues).toHaveLength(10)
  })

  it('refuses invalid resource, timeout and retry values', () => {
    const issues = issuesOf(`
name: x
timeout: soon
steps:
  a:
    command: echo
    resources: { cpu: 0, memory: 12XB, gpu: 1.5, gpuMemory: -1, labels: { zone: [1] } }
    timeout: 0s
    retries: -1
  b:
    command: echo
    resources: { gpuMemory: 8GiB }
    retries: 2
    retry: { max: 2.5, backoff: forever, nonRetryableExitCodes: [300] }
  c: { command: echo, timeout: 10 minutes, cache: "yes" }
`)
    expectIssue(issues, 'timeout', 'invalid duration "soon": expected')
    expectIssue(issues, 'steps.a.resources.cpu', 'greater than zero')
    expectIssue(issues, 'steps.a.resources.memory', 'invalid size "12XB"')
    expectIssue(issues, 'steps.a.resources.gpu', 'whole number of GPUs')
    expectIssue(issues, 'steps.a.resources.gpuMemory', 'invalid size -1')
    expectIssue(issues, 'steps.a.resources.labels.zone', 'expected a string, number or boolean')
    expectIssue(issues, 'steps.a.timeout', 'greater than zero')
    expectIssue(issues, 'steps.a.retries', 'whole number of retries')
    expectIssue(issues, 'steps.b.resources.gpuMemory', 'needs gpu: 1 or more')
    expectIssue(issues, 'steps.b', 'use either "retries" or "retry", not both')
    expectIssue(issues, 'steps.b.retry.max', 'whole number of retries')
    expectIssue(issues, 'steps.b.retry.backoff', 'invalid duration "forever"')
    expectIssue(issues, 'steps.b.retry.nonRetryableExitCodes[0]', /255/)
    expectIssue(issues, 'steps.c.timeout', 'invalid duration "10 minutes"')
    expectIssue(issues, 'steps.c.cache', 'expected true or false')
  })

  it('reads a checkpoint directory, short or with its interval, and leaves it out when absent', () => {
    const p = parsePipeline(`
name: ck
steps:
  short: { command: echo, checkpoint: ckpt/ }
  long:
    command: echo
    checkpoint: { path: ./state/ckpt, every: 90s }
  private: { command: echo, checkpoint: { path: ckpt, copy: false } }
  none: { command: echo }
`, { baseDir: '/nonexistent-pipemesh-test', checkFiles: false })
    expect(p.steps.short?.checkpoint).toEqual({ path: 'ckpt', everyMs: 10 * 60_000, copy: true })
    expect(p.steps.long?.checkpoint).toEqual({ path: 'state/ckpt', everyMs: 90_000, copy: true })
    expect(p.steps.private?.checkpoint).toEqual({ path: 'ckpt', everyMs: 10 * 60_000, copy: false })
    expect(p.steps.none?.checkpoint).toBeUndefined()
  })

  it('refuses checkpoint directories outside the working directory or on what pipemesh manages', () => {
    const issues = issuesOf(`
name: x
steps:
  a: { command: echo, checkpoint: /var/ckpt }
  b: { command: echo, checkpoint: ../ckpt }
  c: { command: echo, checkpoint: outputs/ckpt }
  d: { command: echo, checkpoint: . }
  e: { command: echo, code: [lib], checkpoint: lib/state }
  f: { command: echo, checkpoint: { path: ckpt, every: 0s } }
  g: { command: echo, checkpoint: { every: 5m } }
  h: { command: echo, checkpoint: { path: ckpt, evry: 5m } }
  i: { command: echo, checkpoint: 5 }
  j: { command: echo, checkpoint: { path: ckpt, copy: "no" } }
`)
    expectIssue(issues, 'steps.a.checkpoint', 'got the absolute path "/var/ckpt"')
    expectIssue(issues, 'steps.b.checkpoint', 'escapes the step\'s working directory')
    expectIssue(issues, 'steps.c.checkpoint', 'inside the step\'s outputs/ directory')
    expectIssue(issues, 'steps.d.checkpoint', 'not the working directory itself')
    expectIssue(issues, 'steps.e.checkpoint', 'overlaps the step\'s code "lib"')
    expectIssue(issues, 'steps.f.checkpoint.every', 'greater than zero')
    expectIssue(issues, 'steps.g.checkpoint.path', 'required')
    expectIssue(issues, 'steps.h.checkpoint', 'unknown key "evry" (did you mean "every"?)')
    expectIssue(issues, 'steps.i.checkpoint', 'expected a directory such as ckpt')
    expectIssue(issues, 'steps.j.checkpoint.copy', 'expected true or false')
  })

  it('refuses bad names and reserved ones', () => {
    const issues = issuesOf(`
name: "my pipeline"
params: { 9lives: 1 }
steps:
  bad step: { command: echo }
  a:
    command: echo
    outputs: [ok, "no/slash"]
    env: { PIPEMESH_STEP: x, "1X": y }
    secrets: [HF_TOKEN, HF_TOKEN, "bad-name"]
  __proto__: { command: echo }
`)
    expectIssue(issues, 'name', 'expected a pipeline name made of letters, digits')
    expectIssue(issues, 'params.9lives', 'invalid name "9lives"')
    expectIssue(issues, 'steps.bad step', 'invalid name "bad step": expected a name made of letters, digits')
    expectIssue(issues, 'steps.a.outputs[1]', 'expected a name')
    expectIssue(issues, 'steps.a.env.PIPEMESH_STEP', 'reserved')
    expectIssue(issues, 'steps.a.env.1X', 'invalid name "1X"')
    expectIssue(issues, 'steps.a.secrets[2]', 'environment variable name')
    expectIssue(issues, 'steps.__proto__', 'reserved name')
  })

  it('refuses a secret that is also set in env, and duplicate secrets', () => {
    const issues = issuesOf('name: x\nsteps:\n  a: { command: echo, env: { TOKEN: x }, secrets: [TOKEN, K, K] }\n')
    expectIssue(issues, 'steps.a.secrets[0]', 'also set in env')
    expectIssue(issues, 'steps.a.secrets[2]', 'duplicate secret "K"')
  })

  it('refuses code paths that leave the pipeline directory or land on inputs/ or outputs/', () => {
    const issues = issuesOf(`
name: x
environments: { e: { files: [../secret/package.json], setup: npm ci } }
steps:
  a: { command: echo, code: [/etc/passwd, ../up.mjs, lib/../../x, outputs/model, ./inputs, a.mjs, a.mjs] }
`)
    expectIssue(issues, 'environments.e.files[0]', 'escapes the pipeline directory')
    expectIssue(issues, 'steps.a.code[0]', 'expected a path relative to the pipeline file, got the absolute path "/etc/passwd"')
    expectIssue(issues, 'steps.a.code[1]', 'escapes the pipeline directory')
    expectIssue(issues, 'steps.a.code[2]', 'escapes the pipeline directory')
    expectIssue(issues, 'steps.a.code[3]', 'outputs/ directory')
    expectIssue(issues, 'steps.a.code[4]', 'inputs/ directory')
    expectIssue(issues, 'steps.a.code[6]', 'listed twice')
  })

  it('refuses a pipeline without name or steps, and a file that is not a mapping', () => {
    const issues = issuesOf('params: {}\n')
    expectIssue(issues, 'name', 'required: expected a pipeline name')
    expectIssue(issues, 'steps', 'required: expected a mapping of step names to steps')
    expectIssue(issuesOf('name: x\nsteps: {}\n'), 'steps', 'at least one step')
    expectIssue(issuesOf('- a\n- b\n'), '', 'expected a mapping')
    expectIssue(issuesOf('name: x\nsteps: [a, b]\n'), 'steps', 'expected a mapping of step names to steps, got a list')
    expectIssue(issuesOf('name: x\nsteps:\n  a: echo hi\n'), 'steps.a', 'expected a step: a mapping with at least "command", got "echo hi"')
  })

  it('refuses non-scalar params and bad --param overrides', () => {
    const issues = issuesOf('name: x\nparams: { a: [1], b: 5, c: true, d: }\nsteps:\n  s: { command: echo }\n',
      { params: { b: 'five', c: 'maybe', nope: '1', trees: '2' } })
    expectIssue(issues, 'params.a', 'expected a string, number or boolean, got a list')
    expectIssue(issues, 'params.d', 'got null')
    expectIssue(issues, 'params.b', '--param b=five: expected a number')
    expectIssue(issues, 'params.c', '--param c=maybe: expected true or false')
    expectIssue(issues, 'params.nope', 'unknown param "nope" given with --param')
    expectIssue(issues, 'params.trees', 'declared: a, b, c, d')
  })

  it('reports problems from different steps and fields together, without follow-on errors', () => {
    const issues = issuesOf(`
name: x
steps:
  prep:
    comand: echo
    outputs: [train]
    resources: { memory: lots }
  train:
    command: train \${{inputs.data}}
    inputs: { data: "\${{steps.prep.outputs.train}}" }
    timeout: never
    environment: nope
`)
    expect(issues.map(i => i.path).sort()).toEqual([
      'steps.prep', 'steps.prep.command', 'steps.prep.resources.memory', 'steps.train.environment', 'steps.train.timeout'
    ])
    // A step that is not even a mapping still counts as declared for its consumers.
    const broken = issuesOf('name: x\nsteps:\n  a: echo\n  b: { command: echo, inputs: { i: "${{steps.a.outputs.o}}" }, after: [a] }\n')
    expect(broken.map(i => i.path)).toEqual(['steps.a'])
  })

  it('names the file and every problem in the thrown error', () => {
    let error: unknown
    try {
      parsePipeline('name: x\nsteps:\n  a: { comand: echo }\n', { baseDir: '/tmp', file: '/tmp/p.yaml', checkFiles: false })
    } catch (err) { error = err }
    expect(error).toBeInstanceOf(PipelineValidationError)
    const e = error as PipelineValidationError
    expect(e.code).toBe('INVALID_PIPELINE')
    expect(e.file).toBe('/tmp/p.yaml')
    expect(e.message).toContain('/tmp/p.yaml has 2 problems')
    expect(e.message).toContain('steps.a: unknown key "comand" (did you mean "command"?)')
  })
})
