// Progress over bytes on stderr: a bar on a terminal, one summary line otherwise, and nothing at
// all for an operation that asked to stay quiet while it is quick, that failed, or under --json.

import { describe, expect, it } from 'vitest'
import { byteProgress, withReadingProgress } from '../../cli/progress.js'
import { waitFor } from '../helpers/wait.js'

/** What a stream was given; a terminal one answers the cursor calls the bar makes. */
function fakeStream (tty: boolean): NodeJS.WriteStream & { text: () => string } {
  const out: string[] = []
  const stream = {
    isTTY: tty,
    columns: 100,
    write: (chunk: string | Uint8Array) => { out.push(String(chunk)); return true },
    cursorTo: () => true,
    clearLine: () => true,
    moveCursor: () => true,
    clearScreenDown: () => true,
    on: () => stream,
    removeListener: () => stream,
    text: () => out.join('')
  }
  return stream as unknown as NodeJS.WriteStream & { text: () => string }
}

const GiB = 1024 ** 3

describe('byteProgress', () => {
  it('prints one line at the end when not on a terminal, and nothing after a failure or when disabled', () => {
    const stream = fakeStream(false)
    const shown = byteProgress({ doing: 'fetching', done: 'fetched', enabled: true, stream })
    shown.update(GiB, 2 * GiB)
    shown.finish(2 * GiB)
    expect(stream.text()).toMatch(/^fetched 2 GiB in \d+\.\d+ s \(\S+ \S+\/s\)\n$/)

    const failed = fakeStream(false)
    byteProgress({ doing: 'fetching', done: 'fetched', enabled: true, stream: failed }).finish(undefined)
    const off = fakeStream(true)
    const disabled = byteProgress({ doing: 'fetching', done: 'fetched', enabled: false, stream: off })
    disabled.update(GiB, 2 * GiB)
    disabled.finish(2 * GiB)
    expect(failed.text() + off.text()).toBe('')
  })

  it('stays quiet for an operation quicker than quietUnderMs, on a terminal or not', () => {
    for (const tty of [true, false]) {
      const stream = fakeStream(tty)
      const shown = byteProgress({ doing: 'storing', done: 'stored', enabled: true, quietUnderMs: 60_000, stream })
      shown.update(GiB, 2 * GiB)
      shown.finish(2 * GiB)
      expect(stream.text(), `tty ${String(tty)}`).toBe('')
    }
  })

  it('draws a bar with bytes, total and rate on a terminal, and no summary line', async () => {
    const stream = fakeStream(true)
    const shown = byteProgress({ doing: 'verifying', done: 'rehashed', enabled: true, stream })
    shown.update(GiB, 4 * GiB)
    await waitFor('the bar to be drawn', () => stream.text().includes('1 GiB of 4 GiB') ? true : undefined, 10_000)
    expect(stream.text()).toMatch(/verifying .* 25% \| 1 GiB of 4 GiB \| \S+ \S+\/s/)
    shown.finish(4 * GiB)
    expect(stream.text()).not.toContain('rehashed')
  })
})

describe('withReadingProgress', () => {
  it('returns what the read gives and passes its failure on', async () => {
    expect(await withReadingProgress('hashing', false, async onBytes => { onBytes(1, 2); return 'digests' })).toBe('digests')
    await expect(withReadingProgress('storing', false, async () => { throw new Error('disk full') })).rejects.toThrow('disk full')
  })
})
