// Step fingerprints decide reuse: they must not depend on incidental things (key order, params a
// step does not use) and must change with anything that changes the work. diffFingerprints must
// name exactly what changed, for `pipemesh explain`.

import { createHash } from 'node:crypto'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { computeFingerprint, describeChange, diffFingerprints, FINGERPRINT_SCHEME, type FingerprintChange, type FingerprintParts } from '../../src/fingerprint.js'
import { resolveCommand, type ParamValue, type StepSpec } from '../../src/spec/index.js'
import { DIGEST_PATTERN, type Digest } from '../../src/store/types.js'

const digest = fc.uint8Array({ minLength: 32, maxLength: 32 }).map(b => `sha256:${Buffer.from(b).toString('hex')}` as Digest)
const name = fc.stringMatching(/^[a-z][a-z0-9_]{0,7}$/)
const relPath = fc.array(name, { minLength: 1, maxLength: 3 }).map(p => p.join('/'))
const paramValue: fc.Arbitrary<ParamValue> = fc.oneof(fc.string({ maxLength: 10 }), fc.integer(), fc.boolean())

const partsArb: fc.Arbitrary<FingerprintParts> = fc.record({
  command: fc.oneof(fc.string({ maxLength: 30 }), fc.array(fc.string({ maxLength: 10 }), { minLength: 1, maxLength: 5 })),
  env: fc.dictionary(name, fc.string({ maxLength: 10 }), { maxKeys: 4 }),
  code: fc.record({ digest: fc.option(digest, { nil: null }), files: fc.dictionary(relPath, digest, { maxKeys: 5 }) }),
  environment: fc.option(digest, { nil: null }),
  inputs: fc.dictionary(name, digest, { maxKeys: 4 }),
  outputs: fc.uniqueArray(name, { maxLength: 4 }),
  params: fc.dictionary(name, paramValue, { maxKeys: 4 })
})

/** The same value with every object's keys in reverse order. */
function reverseKeys<T> (value: T): T {
  if (Array.isArray(value)) return value.map(reverseKeys) as T
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).reverse().map(([k, v]) => [k, reverseKeys(v)])) as T
  }
  return value
}

function otherDigest (d: Digest): Digest {
  return `sha256:${createHash('sha256').update(d).digest('hex')}`
}

function trainStep (): StepSpec {
  return {
    id: 'train', command: 'node train.mjs --trees ${{params.trees}} ${{inputs.data}} ${{outputs.model}}',
    code: ['train.mjs'], inputs: { data: { kind: 'step', step: 'prep', output: 'train' } }, outputs: ['model'], after: [],
    env: { SEED: '${{params.seed}}' }, resources: { cpu: 1, memory: 0, gpu: 0, gpuMemory: 0, labels: {} },
    retry: { max: 0, backoffMs: 1000, nonRetryableExitCodes: [] }, cache: true, secrets: []
  }
}

/** Parts as the coordinator builds them: command and env resolved from the step and params. */
function partsFor (params: Record<string, ParamValue>, code: Digest, data: Digest): FingerprintParts {
  const step = trainStep()
  const resolved = resolveCommand(step, params)
  return {
    command: resolved.command, env: resolved.env, params: resolved.params, template: step.command,
    code: { digest: code, files: { 'train.mjs': code } }, environment: null, inputs: { data }, outputs: step.outputs
  }
}

describe('computeFingerprint', () => {
  it('is a sha256 digest, pinned for a known input so scheme changes are deliberate', () => {
    const d = 'sha256:' + 'ab'.repeat(32) as Digest
    const fp = computeFingerprint({ command: 'echo hi', env: { A: '1' }, code: { digest: d, files: { 'a.mjs': d } }, environment: null, inputs: { x: d }, outputs: ['o'], params: {} })
    expect(fp).toMatch(DIGEST_PATTERN)
    // The canonical JSON of these parts, checked by hand with sha256sum. If this changes, what is
    // hashed changed: bump FINGERPRINT_SCHEME and update the value.
    expect(FINGERPRINT_SCHEME).toBe(1)
    expect(fp).toBe('sha256:02f27c405eff9cef7184dc076160ea3fe7f79c79e164caba6043329a16fc100c')
  })

  it('does not depend on object key order or output order', () => {
    fc.assert(fc.property(partsArb, parts => {
      const shuffled = reverseKeys(parts)
      shuffled.outputs = [...parts.outputs].reverse()
      expect(computeFingerprint(shuffled)).toBe(computeFingerprint(parts))
    }))
  })

  it('does not change with params alone, nor with informational fields', () => {
    fc.assert(fc.property(partsArb, fc.dictionary(name, paramValue), (parts, params) => {
      expect(computeFingerprint({ ...parts, params, template: 'x', scheme: 99 })).toBe(computeFingerprint(parts))
    }))
  })

  it('changes with any change to code, env, inputs, environment, outputs or command', () => {
    const mutation = fc.constantFrom('code-file', 'code-file-added', 'code-digest', 'env', 'env-added', 'input', 'input-added', 'environment', 'output', 'command')
    fc.assert(fc.property(partsArb, mutation, name, digest, (parts, kind, key, fresh) => {
      const next = structuredClone(parts)
      const files = Object.keys(next.code.files)
      const envs = Object.keys(next.env)
      const inputs = Object.keys(next.inputs)
      switch (kind) {
        case 'code-file':
          if (files.length === 0) return
          next.code.files[files[0]!] = otherDigest(next.code.files[files[0]!]!)
          break
        case 'code-file-added': next.code.files[`new/${key}`] = fresh; break
        case 'code-digest': next.code.digest = next.code.digest === null ? fresh : otherDigest(next.code.digest); break
        case 'env':
          if (envs.length === 0) return
          next.env[envs[0]!] += 'x'
          break
        case 'env-added': next.env[`NEW_${key}`] = ''; break
        case 'input':
          if (inputs.length === 0) return
          next.inputs[inputs[0]!] = otherDigest(next.inputs[inputs[0]!]!)
          break
        case 'input-added': next.inputs[`new_${key}`] = fresh; break
        case 'environment': next.environment = next.environment === null ? fresh : otherDigest(next.environment); break
        case 'output': next.outputs.push(`new_${key}`); break
        case 'command': next.command = typeof next.command === 'string' ? `${next.command} ` : [...next.command, '']; break
      }
      expect(computeFingerprint(next)).not.toBe(computeFingerprint(parts))
    }))
  })

  it('changes when a param the step uses changes, through its command or env', () => {
    fc.assert(fc.property(paramValue, paramValue, paramValue, digest, digest, (trees, other, seed, code, data) => {
      fc.pre(String(trees) !== String(other))
      expect(computeFingerprint(partsFor({ trees: other, seed }, code, data))).not.toBe(computeFingerprint(partsFor({ trees, seed }, code, data)))
      expect(computeFingerprint(partsFor({ trees, seed: other }, code, data))).not.toBe(computeFingerprint(partsFor({ trees, seed: trees }, code, data)))
    }))
  })
})

describe('diffFingerprints', () => {
  it('finds nothing between equal parts', () => {
    fc.assert(fc.property(partsArb, parts => {
      expect(diffFingerprints(parts, reverseKeys(parts))).toEqual([])
    }))
  })

  it('finds exactly the change made', () => {
    const mutation = fc.constantFrom('code-file', 'code-file-removed', 'env', 'env-removed', 'input', 'input-added', 'environment', 'outputs')
    fc.assert(fc.property(partsArb, mutation, name, digest, (parts, kind, key, fresh) => {
      const next = structuredClone(parts)
      let expected: FingerprintChange
      const file = Object.keys(next.code.files)[0]
      const env = Object.keys(next.env)[0]
      const input = Object.keys(next.inputs)[0]
      switch (kind) {
        case 'code-file':
          if (file === undefined) return
          next.code.files[file] = otherDigest(next.code.files[file]!)
          // A file change changes the snapshot digest too; it is explained by the file.
          next.code.digest = fresh
          expected = { kind: 'code-file', path: file, change: 'changed' }
          break
        case 'code-file-removed':
          if (file === undefined) return
          delete next.code.files[file]
          expected = { kind: 'code-file', path: file, change: 'removed' }
          break
        case 'env':
          if (env === undefined) return
          next.env[env] = `${parts.env[env]!}x`
          expected = { kind: 'env', name: env, change: 'changed', from: parts.env[env]!, to: next.env[env] }
          break
        case 'env-removed':
          if (env === undefined) return
          delete next.env[env]
          expected = { kind: 'env', name: env, change: 'removed', from: parts.env[env]! }
          break
        case 'input':
          if (input === undefined) return
          next.inputs[input] = otherDigest(next.inputs[input]!)
          expected = { kind: 'input', name: input, change: 'changed' }
          break
        case 'input-added':
          if (Object.hasOwn(next.inputs, key)) return
          next.inputs[key] = fresh
          expected = { kind: 'input', name: key, change: 'added' }
          break
        case 'environment':
          next.environment = next.environment === null ? fresh : otherDigest(next.environment)
          expected = { kind: 'environment', from: parts.environment, to: next.environment }
          break
        default:
          next.outputs = [...next.outputs, `new_${key}`]
          expected = { kind: 'outputs', from: [...parts.outputs].sort(), to: [...next.outputs].sort() }
      }
      expect(diffFingerprints(parts, next)).toEqual([expected])
    }))
  })

  it('explains a param change as the param, not as a command edit', () => {
    fc.assert(fc.property(fc.integer(), fc.integer(), digest, digest, (from, to, code, data) => {
      fc.pre(from !== to)
      const changes = diffFingerprints(partsFor({ trees: from, seed: 7 }, code, data), partsFor({ trees: to, seed: 7 }, code, data))
      expect(changes).toEqual([{ kind: 'param', name: 'trees', from, to }])
    }))
  })

  it('reports a command edit when the command as written changed', () => {
    const d = 'sha256:' + '00'.repeat(32) as Digest
    const before = partsFor({ trees: 50, seed: 7 }, d, d)
    const after = { ...before, template: 'python train.py', command: 'python train.py' }
    expect(diffFingerprints(before, after)).toEqual([{ kind: 'command', from: before.command, to: 'python train.py' }])
    // Without recorded templates, a command difference no param explains is an edit.
    const { template: _t, ...bare } = before
    expect(diffFingerprints(bare, { ...bare, command: 'other' })).toEqual([{ kind: 'command', from: bare.command, to: 'other' }])
  })

  it('reports a scheme change', () => {
    const d = 'sha256:' + '00'.repeat(32) as Digest
    const parts = partsFor({ trees: 1, seed: 2 }, d, d)
    expect(diffFingerprints({ ...parts, scheme: 0 }, parts)).toEqual([{ kind: 'scheme', from: 0, to: FINGERPRINT_SCHEME }])
  })
})

describe('describeChange', () => {
  it('writes one readable line per change', () => {
    const a = 'sha256:' + '00'.repeat(32) as Digest
    const b = 'sha256:' + '11'.repeat(32) as Digest
    expect(describeChange({ kind: 'code-file', path: 'train.mjs', change: 'changed' })).toBe('code file train.mjs changed')
    expect(describeChange({ kind: 'param', name: 'trees', from: 50, to: 100 })).toBe('param trees 50 -> 100')
    expect(describeChange({ kind: 'param', name: 'model', from: 'rf', to: 'knn' })).toBe('param model "rf" -> "knn"')
    expect(describeChange({ kind: 'input', name: 'data', change: 'changed' })).toBe('input data changed')
    expect(describeChange({ kind: 'env', name: 'SEED', change: 'changed', from: '7', to: '8' })).toBe('env SEED changed ("7" -> "8")')
    expect(describeChange({ kind: 'env', name: 'SEED', change: 'added', to: '7' })).toBe('env SEED added')
    expect(describeChange({ kind: 'environment', from: a, to: b })).toBe('environment changed')
    expect(describeChange({ kind: 'outputs', from: ['a'], to: ['a', 'b'] })).toBe('outputs changed: [a] -> [a, b]')
    expect(describeChange({ kind: 'command', from: 'echo a', to: 'echo b' })).toBe('command changed: echo a -> echo b')
    expect(describeChange({ kind: 'scheme', from: 0, to: 1 })).toContain('fingerprint scheme 0 -> 1')
    expect(describeChange({ kind: 'code', from: a, to: b })).toBe('code changed')
  })
})
