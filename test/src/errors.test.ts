// Error messages on one line (status tables, the live view, retry reasons): a failed step's line
// must carry its actual error, not the "last lines of stderr:" that introduces it.

import { describe, expect, it } from 'vitest'
import { headline } from '../../src/errors.js'

describe('headline', () => {
  it('keeps a one-line message as it is, and the first line of a plain multi-line one', () => {
    expect(headline('step "a" exceeded its timeout of 10m')).toBe('step "a" exceeded its timeout of 10m')
    expect(headline('first\nsecond')).toBe('first')
  })

  it('adds the last line that a first line ending in ":" introduces', () => {
    const message = 'step "train" exited with code 1; last lines of stderr:\n  loading data\n  CUDA error: an illegal memory access was encountered\n'
    expect(headline(message)).toBe('step "train" exited with code 1; last lines of stderr: … CUDA error: an illegal memory access was encountered')
    expect(headline('nothing follows:\n\n')).toBe('nothing follows')
  })
})
