// Reading pipeline files: hostile YAML is refused within fixed limits, files the pipeline names
// must exist (and stay inside its directory), and loadPipeline resolves paths from the file.

import { mkdtemp, mkdir, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { PipelineValidationError } from '../../../src/errors.js'
import { isJsonExact, loadPipeline, MAX_PIPELINE_BYTES, parsePipeline, parsePipelineData, readPipelineFile, sendableAsData, type YamlCache } from '../../../src/spec/index.js'
import { expectIssue, issuesOf } from './helpers.js'

const BILLION_LAUGHS = `name: bomb
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
steps: { s: { command: echo, env: { X: *i } } }
`

describe('hostile YAML', () => {
  it('refuses an alias bomb quickly', () => {
    const started = performance.now()
    const issues = issuesOf(BILLION_LAUGHS)
    expect(performance.now() - started).toBeLessThan(1000)
    expectIssue(issues, '', 'YAML aliases expand too much')
    expect(issues).toHaveLength(1)
  })

  it('accepts ordinary anchors and aliases', () => {
    const q = parsePipeline('name: x\nsteps:\n  a: { command: &c echo, resources: &r { cpu: 2 }, env: { X: *c } }\n  b: { command: *c, resources: *r }\n',
      { baseDir: '/tmp', checkFiles: false })
    expect(q.steps.a?.env).toEqual({ X: 'echo' })
    expect(q.steps.b?.command).toBe('echo')
    expect(q.steps.b?.resources.cpu).toBe(2)
  })

  it('refuses deep nesting, flow or block, without recursing into it', () => {
    const flow = `name: x\nsteps: ${'['.repeat(500_000)}`
    const started = performance.now()
    expectIssue(issuesOf(flow), '', 'nesting deeper than 64 levels at line 2')
    expect(performance.now() - started).toBeLessThan(2000)

    const block = 'name: x\nsteps:\n' + Array.from({ length: 80 }, (_, i) => `${'  '.repeat(i + 1)}k${i}:`).join('\n') + ' x\n'
    expectIssue(issuesOf(block), '', 'nesting deeper than 64 levels')

    // 30 levels is deep for a pipeline but within the limit: refused only for its content.
    const fine = 'name: x\nsteps:\n  a:\n    command: echo\n    env: { X: ' + '['.repeat(30) + ']'.repeat(30) + ' }\n'
    expectIssue(issuesOf(fine), 'steps.a.env.X', 'expected a string, number or boolean')
  })

  it('refuses a file over 1 MiB', async () => {
    const big = 'name: x\nsteps:\n  a: { command: echo }\n#' + 'x'.repeat(MAX_PIPELINE_BYTES) + '\n'
    expectIssue(issuesOf(big), '', 'pipeline files are limited to 1 MiB')
  })

  it('reports syntax errors with their line, and refuses several documents or an empty file', () => {
    expectIssue(issuesOf('name: x\nsteps:\n  a: { command: echo\n'), '', /YAML syntax error at line \d+, column \d+/)
    expectIssue(issuesOf('name: x\n---\nname: y\n'), '', 'expected a single YAML document')
    expectIssue(issuesOf(''), '', 'the file is empty')
    expectIssue(issuesOf('# only a comment\n'), '', 'the file is empty')
  })

  it('names an unquoted placeholder in a flow map as the cause, without the parser errors it cascades into', () => {
    const issues = issuesOf('name: x\nsteps:\n  a:\n    command: cat ${{inputs.y}}\n    inputs: { y: ${{steps.b.outputs.z}} }\n')
    expectIssue(issues, '', /placeholder inside \{ \} or \[ \] at line 5, column 13 must be quoted/)
    expect(issues.filter(i => i.message.startsWith('YAML syntax error'))).toEqual([])
  })

  it('does not let a __proto__ key reach the prototype', () => {
    const issues = issuesOf('name: x\n__proto__: { polluted: true }\nsteps:\n  a: { command: echo, __proto__: { x: 1 } }\n')
    expectIssue(issues, '', 'unknown key "__proto__"')
    expectIssue(issues, 'steps.a', 'unknown key "__proto__"')
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })
})

describe('files named by the pipeline', () => {
  let dir: string
  beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'pipemesh-spec-')) })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  const PIPELINE = `
name: files
inputs:
  raw: data/iris.csv
  outside: OUTSIDE
environments:
  node-ml: { files: [env/package.json], setup: npm ci }
steps:
  prep:
    command: node prep.mjs \${{inputs.raw}}
    code: [prep.mjs, lib]
    environment: node-ml
    inputs: { raw: "\${{pipeline.inputs.raw}}" }
`

  it('loads a pipeline whose files exist, resolving paths from its directory', async () => {
    const other = await mkdtemp(join(tmpdir(), 'pipemesh-spec-outside-'))
    try {
      await mkdir(join(dir, 'data'))
      await mkdir(join(dir, 'env'))
      await mkdir(join(dir, 'lib'))
      await writeFile(join(dir, 'data/iris.csv'), 'a,b\n')
      await writeFile(join(dir, 'env/package.json'), '{}')
      await writeFile(join(dir, 'prep.mjs'), '')
      // Pipeline inputs may live anywhere (absolute paths allowed); code may not.
      await writeFile(join(dir, 'p.yaml'), PIPELINE.replace('OUTSIDE', other))
      const p = await loadPipeline(join(dir, 'p.yaml'), { params: {} })
      expect(p.baseDir).toBe(dir)
      expect(p.file).toBe(join(dir, 'p.yaml'))
      expect(p.inputs).toEqual({ raw: 'data/iris.csv', outside: other })
      expect(p.steps.prep?.code).toEqual(['prep.mjs', 'lib'])
    } finally {
      await rm(other, { recursive: true, force: true })
    }
  })

  it('reports every missing code, environment and input file', async () => {
    await writeFile(join(dir, 'p.yaml'), PIPELINE.replace('OUTSIDE', 'nowhere/else'))
    const err = await loadPipeline(join(dir, 'p.yaml')).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(PipelineValidationError)
    const issues = (err as PipelineValidationError).issues
    expectIssue(issues, 'inputs.raw', `"data/iris.csv" not found (looked for ${join(dir, 'data/iris.csv')})`)
    expectIssue(issues, 'inputs.outside', '"nowhere/else" not found')
    expectIssue(issues, 'environments.node-ml.files[0]', '"env/package.json" not found')
    expectIssue(issues, 'steps.prep.code[0]', '"prep.mjs" not found')
    expectIssue(issues, 'steps.prep.code[1]', '"lib" not found')
    expect(issues).toHaveLength(5)
  })

  it('refuses code that reaches outside the pipeline directory through a symbolic link', async () => {
    const other = await mkdtemp(join(tmpdir(), 'pipemesh-spec-outside-'))
    try {
      await writeFile(join(other, 'secret.txt'), 'x')
      await symlink(join(other, 'secret.txt'), join(dir, 'prep.mjs'))
      await writeFile(join(dir, 'p.yaml'), 'name: x\nsteps:\n  a: { command: echo, code: [/etc/hostname, prep.mjs] }\n')
      const err = await loadPipeline(join(dir, 'p.yaml')).catch((e: unknown) => e) as PipelineValidationError
      expectIssue(err.issues, 'steps.a.code[0]', 'got the absolute path')
      expectIssue(err.issues, 'steps.a.code[1]', 'outside the pipeline directory (through a symbolic link)')
      expect(err.issues).toHaveLength(2)
    } finally {
      await rm(other, { recursive: true, force: true })
    }
  })

  it('refuses a missing or oversized pipeline file', async () => {
    const missing = await loadPipeline(join(dir, 'nope.yaml')).catch((e: unknown) => e) as PipelineValidationError
    expect(missing).toBeInstanceOf(PipelineValidationError)
    expectIssue(missing.issues, '', 'file not found')

    await writeFile(join(dir, 'big.yaml'), Buffer.alloc(MAX_PIPELINE_BYTES + 1, 0x20))
    const big = await loadPipeline(join(dir, 'big.yaml')).catch((e: unknown) => e) as PipelineValidationError
    expectIssue(big.issues, '', 'pipeline files are limited to 1 MiB')
  })

  it('skips file checks when asked, for pipelines validated away from their files', () => {
    const p = parsePipeline(PIPELINE.replace('OUTSIDE', 'x'), { baseDir: dir, checkFiles: false })
    expect(p.steps.prep?.environment).toBe('node-ml')
  })
})

describe('pipeline data instead of YAML text', () => {
  let dir: string
  beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'pipemesh-spec-')) })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  const TEXT = `name: data
params: { trees: 50, fast: true }
steps:
  a:
    command: echo \${{params.trees}}
    env: &env { X: "1", N: 2.5 }
    resources: { memory: 1GiB }
  b: { command: echo b, env: *env, after: [a] }
`

  /** A cache in memory that counts what it is asked. */
  function memoryCache (): YamlCache & { entries: Map<string, unknown>, hits: number } {
    const entries = new Map<string, unknown>()
    const cache = {
      entries,
      hits: 0,
      get: (text: string) => {
        const v = entries.get(text)
        if (v !== undefined) cache.hits++
        return v === undefined ? undefined : JSON.parse(JSON.stringify(v)) as unknown
      },
      set: (text: string, data: unknown) => { entries.set(text, data) }
    }
    return cache
  }

  it('validates the JSON of what the YAML denotes to the same pipeline as the text', async () => {
    await writeFile(join(dir, 'p.yaml'), TEXT)
    const { pipeline, text, data } = await readPipelineFile(join(dir, 'p.yaml'), { params: { trees: '100' } })
    expect(text).toBe(TEXT)
    const options = { baseDir: dir, file: join(dir, 'p.yaml'), checkFiles: false, params: { trees: '100' } }
    const fromData = parsePipelineData(JSON.parse(JSON.stringify(data)), options)
    expect(fromData).toEqual(parsePipeline(TEXT, options))
    expect(fromData).toEqual(pipeline)
    expect(fromData.params.trees).toBe(100)
  })

  it('reports every problem in data as it does in text', () => {
    const err = (() => { try { parsePipelineData({ name: 'x', steps: { a: { comand: 'echo' }, b: { command: 'echo', after: ['zz'] } } }, { baseDir: dir, checkFiles: false }) } catch (e) { return e } })() as PipelineValidationError
    expect(err).toBeInstanceOf(PipelineValidationError)
    expectIssue(err.issues, 'steps.a', 'unknown key "comand" (did you mean "command"?)')
    expectIssue(err.issues, 'steps.b.after[0]', 'unknown step "zz"')
    const notAMapping = (() => { try { parsePipelineData(null, { baseDir: dir }) } catch (e) { return e } })() as PipelineValidationError
    expectIssue(notAMapping.issues, '', 'expected a mapping')
  })

  it('holds data to the size limit of pipeline files, counted as JSON', () => {
    // Anchors let a file under the limit denote more than it: such a pipeline goes as text.
    const anchor = 'x'.repeat(400 * 1024)
    const text = `name: big\nsteps:\n  a: { command: echo, env: { A: &v "${anchor}" } }\n  b: { command: echo, env: { B: *v } }\n  c: { command: echo, env: { C: *v } }\n`
    expect(Buffer.byteLength(text)).toBeLessThan(MAX_PIPELINE_BYTES)
    const viaText = parsePipeline(text, { baseDir: dir, checkFiles: false })
    expect(viaText.steps.c?.env.C).toHaveLength(anchor.length)
    const data = { name: 'big', steps: { a: { command: 'echo', env: { A: anchor } }, b: { command: 'echo', env: { B: anchor } }, c: { command: 'echo', env: { C: anchor } } } }
    expect(sendableAsData(data)).toBe(false)
    const err = (() => { try { parsePipelineData(data, { baseDir: dir, checkFiles: false }) } catch (e) { return e } })() as PipelineValidationError
    expectIssue(err.issues, '', 'as JSON: pipelines are limited to 1 MiB')
    expect(sendableAsData({ name: 'small', steps: { a: { command: 'echo' } } })).toBe(true)
  })

  it('tells data JSON keeps exactly from data it would change', () => {
    expect(isJsonExact({ a: [1, 'x', true, null, { b: -2.5 }] })).toBe(true)
    expect(isJsonExact({ env: { X: Number.POSITIVE_INFINITY } })).toBe(false)
    expect(isJsonExact({ x: Number.NaN })).toBe(false)
    expect(isJsonExact({ when: new Date(0) })).toBe(false)
    expect(isJsonExact({ m: new Map() })).toBe(false)
  })

  it('uses a cache of parsed YAML by text: the same text skips YAML, an edit does not', async () => {
    const cache = memoryCache()
    await writeFile(join(dir, 'p.yaml'), TEXT)
    const first = await readPipelineFile(join(dir, 'p.yaml'), { cache })
    expect(cache.entries.size).toBe(1)
    expect(cache.hits).toBe(0)
    const second = await readPipelineFile(join(dir, 'p.yaml'), { cache })
    expect(cache.hits).toBe(1)
    expect(second.pipeline).toEqual(first.pipeline)
    // Even a hit is validated: params are applied, and the files are checked again.
    const third = await readPipelineFile(join(dir, 'p.yaml'), { cache, params: { trees: '7' } })
    expect(third.pipeline.params.trees).toBe(7)
    await writeFile(join(dir, 'p.yaml'), TEXT.replace('echo b', 'echo c'))
    const edited = await readPipelineFile(join(dir, 'p.yaml'), { cache })
    expect(cache.hits).toBe(2)
    expect(edited.pipeline.steps.b?.command).toBe('echo c')
    expect(cache.entries.size).toBe(2)
  })

  it('caches neither YAML with problems (duplicate keys) nor data JSON would change', async () => {
    const cache = memoryCache()
    await writeFile(join(dir, 'dup.yaml'), 'name: x\nname: y\nsteps: { a: { command: echo } }\n')
    for (let i = 0; i < 2; i++) {
      const err = await loadPipeline(join(dir, 'dup.yaml'), { cache }).catch((e: unknown) => e) as PipelineValidationError
      expectIssue(err.issues, 'name', 'duplicate key "name"')
    }
    // YAML's .inf is no value a pipeline accepts; the file is refused, and not cached.
    await writeFile(join(dir, 'inf.yaml'), 'name: x\nsteps: { a: { command: echo, env: { X: .inf } } }\n')
    const inf = await loadPipeline(join(dir, 'inf.yaml'), { cache }).catch((e: unknown) => e) as PipelineValidationError
    expectIssue(inf.issues, 'steps.a.env.X', 'got number Infinity')
    expect(cache.entries.size).toBe(0)
  })
})
