// The checkpoint saver against a real store: a save that saw the directory change while it was
// taken is not reported, and is tried again; an unchanged directory is not saved twice.

import { mkdir, mkdtemp, readFile, rm, utimes, writeFile, appendFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
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
    const old = new Date(Date.now() - 60_000)
    await utimes(join(ckpt, 'weights'), old, old)
    const counted = writingDuring(0)
    const saves: ArtifactRef[] = []
    const saver = new CheckpointSaver({ dir: ckpt, everyMs: 10_000_000, store: counted, label: 'checkpoint of test', onSaved: ref => { saves.push(ref) } })
    const round = async (): Promise<void> => { await (saver as unknown as { periodic: () => Promise<void> }).periodic() }
    await round()
    await round()
    await round()
    expect(counted.calls()).toBe(1)
    expect(saves).toHaveLength(1)
    // A change (even one as old as the last) is seen by its size, inode or time, and saved.
    await writeFile(join(ckpt, 'weights'), 'epoch 22\n')
    await round()
    expect(counted.calls()).toBe(2)
    expect(await text(saves[1]!)).toBe('epoch 22\n')
    // The last save always looks (it is the one a resume depends on), finding nothing new.
    expect(await saver.finish()).toBeUndefined()
    expect(counted.calls()).toBe(3)
  })

  it('reads only the files written since the last save', async () => {
    const old = new Date(Date.now() - 60_000)
    const put = async (name: string, fill: number): Promise<void> => {
      await writeFile(join(ckpt, name), Buffer.alloc(3 * 1024 * 1024, fill))
      await utimes(join(ckpt, name), old, old)
    }
    for (const epoch of [1, 2, 3]) await put(`epoch-${epoch}.bin`, epoch)
    const saves: ArtifactRef[] = []
    const saver = new CheckpointSaver({ dir: ckpt, everyMs: 10_000_000, store, label: 'checkpoint of test', onSaved: ref => { saves.push(ref) } })
    const round = async (): Promise<void> => { await (saver as unknown as { periodic: () => Promise<void> }).periodic() }
    await round()
    // epoch-1.bin rewritten in place with its size and time kept (inode too): the next save
    // takes it as unchanged, without reading it, which shows that it was not read.
    await writeFile(join(ckpt, 'epoch-1.bin'), Buffer.alloc(3 * 1024 * 1024, 9))
    await utimes(join(ckpt, 'epoch-1.bin'), old, old)
    await put('epoch-4.bin', 4)
    await round()
    expect(saves).toHaveLength(2)
    const out = join(dir, 'restored')
    await store.materialize(saves[1]!.digest, out)
    expect((await readFile(join(out, 'epoch-4.bin'))).equals(Buffer.alloc(3 * 1024 * 1024, 4))).toBe(true)
    expect((await readFile(join(out, 'epoch-1.bin')))[0]).toBe(1)
    // A file written since is read again, at the last save too.
    await writeFile(join(ckpt, 'epoch-2.bin'), Buffer.alloc(3 * 1024 * 1024, 7))
    const last = await saver.finish()
    const out2 = join(dir, 'restored-2')
    await store.materialize(last!.digest, out2)
    expect((await readFile(join(out2, 'epoch-2.bin')))[0]).toBe(7)
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
