// Values of command-line flags that carry units, parsed with the flag's name in any error: a
// user who mistyped one of several flags should not have to guess which.

import { PipemeshError } from '../src/errors.js'
import { parseBytes, parseDuration } from '../src/util/units.js'

/** Milliseconds from a flag such as `--lease 15s`. */
export function durationFlag (flag: string, value: string): number {
  try {
    return parseDuration(value)
  } catch (err) {
    throw new PipemeshError('INVALID_ARGUMENT', `${flag}: ${(err as Error).message}`)
  }
}

/** Bytes from a flag such as `--max-log-size 64MiB`; must be more than zero. */
export function sizeFlag (flag: string, value: string): number {
  try {
    const bytes = parseBytes(value)
    if (bytes > 0) return bytes
  } catch {}
  throw new PipemeshError('INVALID_ARGUMENT', `${flag} "${value}" must be a positive size such as 512MiB or 10GiB`)
}
