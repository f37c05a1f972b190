// Placeholder substitution: the resolved command a step runs with. Values substituted into a
// shell string must reach the program as one literal word, checked against the real /bin/sh.

import { execFile } from 'node:child_process'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PipemeshError } from '../../../src/errors.js'
import { parsePipeline, resolveCommand, shellQuote, type StepSpec } from '../../../src/spec/index.js'

const run = promisify(execFile)

/** Runs `script` with /bin/sh in `cwd` and returns what it printed. */
async function sh (script: string, cwd: string): Promise<string> {
  const { stdout } = await run('/bin/sh', ['-c', script], { cwd, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
  return stdout
}

const PIPELINE = `
name: q
params: { trees: 50, p: "x", flag: true, rate: 0.25 }
steps:
  prep:
    command: node prep.mjs \${{inputs.raw}} \${{ outputs.train }}
    inputs: { raw: "\${{pipeline.inputs.raw}}" }
    outputs: [train]
  train:
    command: node train.mjs --trees \${{ params.trees }} --rate=\${{params.rate}} \${{inputs.data}} \${{outputs.model}}
    inputs: { data: "\${{steps.prep.outputs.train}}" }
    outputs: [model]
    env: { FAST: "\${{params.flag}}", NOTE: "p is \${{params.p}}", PLAIN: "1" }
  argv:
    command: [printf, "%s|", "\${{params.p}}", "--out=\${{outputs.o}}"]
    outputs: [o]
  echo:
    command: printf %s \${{params.p}}
inputs: { raw: data.csv }
`

function stepsOf (params: Record<string, string> = {}): { steps: Record<string, StepSpec>, params: Record<string, string | number | boolean> } {
  const p = parsePipeline(PIPELINE, { baseDir: '/tmp', checkFiles: false, params })
  return { steps: p.steps, params: p.params }
}

describe('resolveCommand', () => {
  let dir: string
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'pipemesh-quote-')) })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  it('substitutes inputs, outputs and params, and reports the params the step uses', () => {
    const { steps, params } = stepsOf()
    expect(resolveCommand(steps.prep!, params)).toEqual({
      command: 'node prep.mjs inputs/raw outputs/train', env: {}, params: {}
    })
    expect(resolveCommand(steps.train!, params)).toEqual({
      command: 'node train.mjs --trees 50 --rate=0.25 inputs/data outputs/model',
      env: { FAST: 'true', NOTE: 'p is x', PLAIN: '1' },
      params: { trees: 50, rate: 0.25, flag: true, p: 'x' }
    })
  })

  it('keeps a hostile param a single literal word under /bin/sh', async () => {
    const hostile = `; touch PWNED; $(touch PWNED2) \`touch PWNED3\` 'q' "d" \\ ~root * && exit 7 | !x\n# end`
    const { steps, params } = stepsOf({ p: hostile })
    const { command } = resolveCommand(steps.echo!, params)
    expect(await sh(command as string, dir)).toBe(hostile)
    expect(await readdir(dir)).toEqual([])
  })

  it('substitutes verbatim in argv form, where no shell is involved', () => {
    const { steps, params } = stepsOf({ p: "a b; 'c'" })
    expect(resolveCommand(steps.argv!, params).command).toEqual(['printf', '%s|', "a b; 'c'", '--out=outputs/o'])
  })

  it('quotes any string into a word the shell reads back unchanged', async () => {
    // Arguments are strings of Unicode scalar values without NUL (which no argv can hold).
    const text = fc.string({ unit: 'binary', maxLength: 40 }).map(s => s.replace(/\0/g, ''))
    const tricky = fc.string({ unit: fc.constantFrom("'", '"', '\\', '$', '`', '!', '~', ' ', '\n', '*', ';', '&', '#', '=', '-', 'a', '\u0001'), maxLength: 12 })
    await fc.assert(fc.asyncProperty(fc.array(fc.oneof(text, tricky), { minLength: 1, maxLength: 60 }), async samples => {
      // One shell run checks a whole batch: each argument is printed followed by a NUL byte,
      // which no argument can contain.
      const printed = await sh(`printf '%s\\0' ${samples.map(shellQuote).join(' ')}`, dir)
      expect(printed.split('\0').slice(0, -1)).toEqual(samples)
    }), { numRuns: 20 })
    for (const word of ['', '-n', '--', '~', "'", "it's", '$HOME', '*']) {
      expect(await sh(`printf %s ${shellQuote(word)}`, dir)).toBe(word)
    }
  })

  it('leaves safe values readable and quotes the rest', () => {
    expect(shellQuote('50')).toBe('50')
    expect(shellQuote('inputs/data')).toBe('inputs/data')
    expect(shellQuote('--rate=0.25')).toBe('--rate=0.25')
    expect(shellQuote('')).toBe("''")
    expect(shellQuote('a b')).toBe("'a b'")
    expect(shellQuote("it's")).toBe("'it'\\''s'")
  })

  it('refuses to resolve a step whose placeholders were never validated', () => {
    const { steps, params } = stepsOf()
    const broken: StepSpec = { ...steps.echo!, command: 'echo ${{inputs.ghost}}' }
    expect(() => resolveCommand(broken, params)).toThrow(PipemeshError)
    expect(() => resolveCommand(steps.echo!, {})).toThrow(/no value for param "p"/)
  })
})
