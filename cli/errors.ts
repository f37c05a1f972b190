// The edge where errors become messages and exit codes: 2 for bad input (an invalid pipeline,
// a wrong flag), 1 for everything else. Stack traces only with PIPEMESH_DEBUG=1.

import { PipemeshError, PipelineValidationError } from '../src/errors.js'

export const EXIT_OK = 0
export const EXIT_FAILED = 1
export const EXIT_INVALID = 2

export function reportError (err: unknown, json: boolean): number {
  const invalid = err instanceof PipemeshError && (err.code === 'INVALID_PIPELINE' || err.code === 'INVALID_ARGUMENT')
  if (json) {
    const body: Record<string, unknown> = err instanceof PipemeshError
      ? { error: { code: err.code, message: err.message, ...(err.hint === undefined ? {} : { hint: err.hint }) } }
      : { error: { code: 'INTERNAL', message: (err as Error)?.message ?? String(err) } }
    if (err instanceof PipelineValidationError) body.issues = err.issues
    process.stdout.write(JSON.stringify(body, null, 2) + '\n')
  } else if (err instanceof PipemeshError) {
    process.stderr.write(`error: ${err.message}\n`)
    if (err.hint !== undefined) process.stderr.write(`hint: ${err.hint}\n`)
  } else {
    process.stderr.write(`error: ${(err as Error)?.message ?? String(err)}\n`)
  }
  if (process.env.PIPEMESH_DEBUG === '1' && err instanceof Error) process.stderr.write(`${err.stack ?? ''}\n`)
  return invalid ? EXIT_INVALID : EXIT_FAILED
}
