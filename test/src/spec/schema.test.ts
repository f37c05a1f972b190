// The JSON Schema published by `pipemesh schema`, which editors use to check pipeline files.

import { describe, expect, it } from 'vitest'
import { pipelineJsonSchema } from '../../../src/spec/index.js'

interface Obj { [key: string]: any }

describe('pipelineJsonSchema', () => {
  const schema = JSON.parse(JSON.stringify(pipelineJsonSchema())) as Obj

  it('is a standalone JSON Schema of the top level', () => {
    expect(schema.$schema).toMatch(/json-schema\.org/)
    expect(schema.type).toBe('object')
    expect(schema.required).toEqual(['name', 'steps'])
    expect(schema.additionalProperties).toBe(false)
    expect(Object.keys(schema.properties)).toEqual(['name', 'params', 'inputs', 'timeout', 'environments', 'steps'])
  })

  it('describes steps strictly, so editors flag typos like "comand"', () => {
    const steps = schema.properties.steps
    expect(steps.propertyNames.pattern).toBe('^[A-Za-z_][A-Za-z0-9_-]*$')
    const step = steps.additionalProperties
    expect(step.additionalProperties).toBe(false)
    expect(step.required).toEqual(['command'])
    expect(Object.keys(step.properties)).toEqual(expect.arrayContaining(['command', 'code', 'inputs', 'outputs', 'after', 'env', 'environment', 'resources', 'retries', 'retry', 'timeout', 'cache', 'secrets']))
    expect(step.properties.command.anyOf).toHaveLength(2)
    // Sizes and durations are written as text or numbers.
    expect(step.properties.resources.properties.memory.type).toEqual(expect.arrayContaining(['string', 'number']))
    expect(step.properties.timeout.type).toEqual(expect.arrayContaining(['string', 'number']))
    expect(step.properties.cache.type).toBe('boolean')
    expect(step.properties.command.description).toContain('${{inputs.X}}')
  })
})
