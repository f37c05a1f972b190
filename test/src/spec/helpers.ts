// Shared helpers for the spec tests: parse YAML text and collect the validation issues it raises.

import { expect } from 'vitest'
import { PipelineValidationError, type ValidationIssue } from '../../../src/errors.js'
import { parsePipeline, type ParseOptions } from '../../../src/spec/index.js'

export function issuesOf (yaml: string, options: Partial<ParseOptions> = {}): ValidationIssue[] {
  try {
    parsePipeline(yaml, { baseDir: '/nonexistent-pipemesh-test', checkFiles: false, ...options })
  } catch (err) {
    if (err instanceof PipelineValidationError) return err.issues
    throw err
  }
  throw new Error('expected the pipeline to be refused, but it validated')
}

/** Asserts one issue has exactly this path and a message containing `fragment`. */
export function expectIssue (issues: ValidationIssue[], path: string, fragment: string | RegExp): void {
  const match = issues.find(i => i.path === path && (typeof fragment === 'string' ? i.message.includes(fragment) : fragment.test(i.message)))
  expect(match, `no issue at "${path}" matching ${String(fragment)}; got:\n${issues.map(i => `${i.path}: ${i.message}`).join('\n')}`).toBeDefined()
}
