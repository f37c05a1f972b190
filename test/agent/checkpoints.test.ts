// The checkpoint saver against a real store: a save that saw the directory change while it was
// taken is not reported, and is tried again; an unchanged directory is not saved twice.

import type { Stats } from 'node:fs'
import { mkdir, mkdtemp, readFile, readdir, rm, stat, utimes, writeFile, appendFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { CheckpointSaver } from '../../agent/checkpoints.js'
import { ContentStore } from '../../src/store/content-store.js'
import type { ArtifactRef } from '../../src/store/types.js'
import { waitFor } from '../helpers/wait.js'

let dir: string
let ckpt: string
let store: ContentStore

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pm-ckpt-'))
  store = await ContentStore.open(join(dir, 'store'))
  ckpt = join(dir, 'ckpt')
  await mkdir(ckpt)
})
afterEach(async () => {
  await store.close()
  await rm(dir, { recursive: true, force: true })
})

/** The store, with a step writing to the checkpoint file in the middle of the first `n` saves. */
function writingDuring (n: number): { ingest: ContentStore['ingest'], calls: () => number } {
  let calls = 0
  return {
    calls: () => calls,
    ingest: async (path, options) => {
      if (calls++ < n) await appendFile(join(ckpt, 'weights'), `more ${calls}\n`)
      return await store.ingest(path, options)
    }
  }
}

/**
 * Waits until every file in the checkpoint directory last changed over a second ago: only then
 * does a save vouch for them (file times are coarse), and a change time cannot be set back.
 */
async function settled (): Promise<void> {
  await waitFor('the checkpoint files to be a second old', async () => {
    for (const name of await readdir(ckpt)) if ((await stat(join(ckpt, name))).ctimeMs > Date.now() - 1100) return undefined
    return true
  }, 10_000)
}

async function text (ref: ArtifactRef): Promise<string> {
  const out = join(dir, `out-${Math.random()}`)
  await store.materialize(ref.digest, out)
  return await readFile(join(out, 'weights'), 'utf8')
}

describe('CheckpointSaver', () => {
  it('drops a save that saw a file change and tries again, reporting only the consistent one', async () => {
    await writeFile(join(ckpt, 'weights'), 'start\n')
    const writer = writingDuring(2)
    const saves: ArtifactRef[] = []
    const saver = new CheckpointSaver({ dir: ckpt, everyMs: 20, store: writer, label: 'checkpoint of test', onSaved: ref => { saves.push(ref) } })
    saver.start()
    await waitFor('a consistent save', () => saves.length > 0 ? true : undefined, 20_000)
    await saver.stop()
    expect(writer.calls()).toBeGreaterThanOrEqual(3)
    expect(await text(saves[0]!)).toBe('start\nmore 1\nmore 2\n')
    // Nothing changed since: no second save of the same content, and none when it ends.
    expect(saves).toHaveLength(1)
    expect(await saver.finish()).toBeUndefined()
  })

  it('skips a round when the directory changes during every try, and saves at the end', async () => {
    await writeFile(join(ckpt, 'weights'), 'start\n')
    const writer = writingDuring(1000)
    const saves: ArtifactRef[] = []
    const problems: string[] = []
    const saver = new CheckpointSaver({ dir: ckpt, everyMs: 10_000_000, store: writer, label: 'checkpoint of test', onSaved: ref => { saves.push(ref) }, onProblem: text => { problems.push(text) } })
    // One periodic round, made to happen now.
    await (saver as unknown as { periodic: () => Promise<void> }).periodic()
    expect(writer.calls()).toBe(3)
    expect(saves).toEqual([])
    expect(problems).toEqual(['the checkpoint directory changed during each of 3 tries to save it, so no save was kept this time; write checkpoint files under a temporary name, then rename them into place'])
    // At the end the step is gone; the one try of the last save sees what the store stored.
    const last = writingDuring(0)
    const final = new CheckpointSaver({ dir: ckpt, everyMs: 10_000_000, store: last, label: 'checkpoint of test', onSaved: () => {} })
    const ref = await final.finish()
    expect(ref).toBeDefined()
    expect(await text(ref!)).toBe('start\nmore 1\nmore 2\nmore 3\n')
  })

  it('does not read a directory again while nothing in it changed since a save, except for the last save', async () => {
    await writeFile(join(ckpt, 'weights'), 'epoch 1\n')
    await settled()
    const counted = writingDuring(0)
    const saves: ArtifactRef[] = []
    const saver = new CheckpointSaver({ dir: ckpt, everyMs: 10_000_000, store: counted, label: 'checkpoint of test', onSaved: ref => { saves.push(ref) } })
    const round = async (): Promise<void> => { await (saver as unknown as { periodic: () => Promise<void> }).periodic() }
    await round()
    await round()
    await round()
    expect(counted.calls()).toBe(1)
    expect(saves).toHaveLength(1)
    // A change is seen by its size, inode or times, and saved.
    await writeFile(join(ckpt, 'weights'), 'epoch 22\n')
    await round()
    expect(counted.calls()).toBe(2)
    expect(await text(saves[1]!)).toBe('epoch 22\n')
    // The last save always looks (it is the one a resume depends on), finding nothing new.
    expect(await saver.finish()).toBeUndefined()
    expect(counted.calls()).toBe(3)
  })

  it('reads only the files changed since the last save, and sees one rewritten in place with its time set back', async () => {
    const fill = async (name: string, byte: number): Promise<void> => { await writeFile(join(ckpt, name), Buffer.alloc(3 * 1024 * 1024, byte)) }
    for (const epoch of [1, 2, 3]) await fill(`epoch-${epoch}.bin`, epoch)
    await settled()
    // The store, counting the files the saver's memo let it skip.
    let skipped: string[] = []
    const watching = {
      ingest: async (p: string, o: Parameters<ContentStore['ingest']>[1] = {}) => {
        const memo = o.memo
        const counting = memo === undefined ? undefined : { set: memo.set.bind(memo), get: (abs: string, st: Stats) => { const f = memo.get(abs, st); if (f !== undefined) skipped.push(basename(abs)); return f } }
        return await store.ingest(p, { ...o, ...(counting === undefined ? {} : { memo: counting }) })
      }
    }
    const saves: ArtifactRef[] = []
    const saver = new CheckpointSaver({ dir: ckpt, everyMs: 10_000_000, store: watching, label: 'checkpoint of test', onSaved: ref => { saves.push(ref) } })
    const round = async (): Promise<void> => { await (saver as unknown as { periodic: () => Promise<void> }).periodic() }
    await round()
    expect(skipped).toEqual([])
    // epoch-1.bin rewritten in place, its modification time set back as tar or touch -r would;
    // epoch-4.bin is new. Only those two are read.
    const { mtime } = await stat(join(ckpt, 'epoch-1.bin'))
    await fill('epoch-1.bin', 9)
    await utimes(join(ckpt, 'epoch-1.bin'), mtime, mtime)
    await fill('epoch-4.bin', 4)
    skipped = []
    await round()
    expect(skipped.sort()).toEqual(['epoch-2.bin', 'epoch-3.bin'])
    expect(saves).toHaveLength(2)
    const out = join(dir, 'restored')
    await store.materialize(saves[1]!.digest, out)
    expect((await readFile(join(out, 'epoch-1.bin'))).equals(Buffer.alloc(3 * 1024 * 1024, 9))).toBe(true)
    expect((await readFile(join(out, 'epoch-4.bin'))).equals(Buffer.alloc(3 * 1024 * 1024, 4))).toBe(true)
    expect((await readFile(join(out, 'epoch-2.bin')))[0]).toBe(2)
  })

  it('does not report the restored save again when the step did not change it', async () => {
    await writeFile(join(ckpt, 'weights'), 'restored\n')
    const restored = await store.ingest(ckpt)
    const saves: ArtifactRef[] = []
    const counted = writingDuring(0)
    const saver = new CheckpointSaver({ dir: ckpt, everyMs: 10, store: counted, label: 'checkpoint of test', initial: restored.digest, onSaved: ref => { saves.push(ref) } })
    saver.start()
    await waitFor('three periodic saves to be taken', () => counted.calls() >= 3 ? true : undefined, 20_000)
    expect(await saver.finish()).toBeUndefined()
    expect(saves).toEqual([])
  })
})
