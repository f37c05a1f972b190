// Line splitting across the chunks a pipe delivers: a \r at the end of one chunk and a \n at the
// start of the next are one line break (\r\n), not a progress-bar redraw followed by an empty line.

import { describe, expect, it } from 'vitest'
import { PassThrough } from 'node:stream'
import { LogCapture } from '../../agent/log-capture.js'
import type { LogLine } from '../../src/protocol/task.js'

async function capture (chunks: string[], maxLogBytes?: number): Promise<string[]> {
  const lines: LogLine[] = []
  const log = new LogCapture({ onLine: l => lines.push(l), ...(maxLogBytes === undefined ? {} : { maxLogBytes }) })
  const source = new PassThrough()
  log.attach(source, 'stdout')
  for (const c of chunks) source.write(c)
  source.end()
  await new Promise(resolve => source.once('close', resolve))
  await log.close()
  return lines.map(l => l.line)
}

describe('LogCapture', () => {
  it('reads \\r\\n split across chunks as one line break, and never thins such lines', async () => {
    expect(await capture(['a\r', '\nb\r', '\nc\r\nd\r\n'])).toEqual(['a', 'b', 'c', 'd'])
  })

  it('reads a bare \\r at a chunk end as a redraw once the next chunk shows no \\n', async () => {
    const lines = await capture(['10%\r', '20%\r', '30%\r', 'done\n'])
    expect(lines[0]).toBe('10%')
    expect(lines).toContain('done')
    expect(lines.at(-1)).toMatch(/^\[pipemesh\] 2 progress-bar redraw\(s\)/)
  })

  it('keeps the first and the last lines of a log far over its cap, and accounts for every line', async () => {
    const total = 50_000
    const lines = await capture([Array.from({ length: total }, (_, i) => `line ${i}\n`).join('')], 40_000)
    const notes = lines.filter(l => l.startsWith('[pipemesh]'))
    expect(notes).toHaveLength(2)
    const [, dropped, kept] = /(\d+) line\(s\), \d+ bytes of output were dropped here; the last (\d+) line\(s\) follow/.exec(notes[1] ?? '') ?? []
    const head = lines.indexOf(notes[0]!)
    expect(lines[0]).toBe('line 0')
    expect(head + Number(dropped) + Number(kept)).toBe(total)
    expect(lines.slice(-Number(kept))).toEqual(Array.from({ length: Number(kept) }, (_, i) => `line ${total - Number(kept) + i}`))
  })
})
