import fs from 'node:fs/promises'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { PACK_BYTES, Packs } from '../../../src/store/packs.js'
import { removeDir, tempDir } from './helpers.js'

let dir: string
let packs: Packs

beforeEach(async () => {
  dir = await tempDir('pm-packs-')
  packs = new Packs(dir)
  await packs.init()
})

afterEach(async () => {
  await packs.sealAll()
  await removeDir(dir)
})

async function onDisk (): Promise<string[]> {
  return (await fs.readdir(path.join(dir, 'packs'))).sort()
}

describe('packs', () => {
  it('hands out consecutive regions of one pack per lane, and each lane its own pack', async () => {
    const a1 = await packs.reserve(100, 'w0')
    const a2 = await packs.reserve(50, 'w0')
    const b1 = await packs.reserve(70, 'w1')
    expect(a2.pack).toBe(a1.pack)
    expect([a1.at, a2.at]).toEqual([0, 100])
    expect(b1.pack).not.toBe(a1.pack)
    expect(b1.at).toBe(0)
    for (const r of [a1, a2, b1]) await packs.release(r, true)
    expect((await onDisk()).length).toBe(2)
  })

  it('starts a new pack when the next region would take the open one past its size', async () => {
    const first = await packs.reserve(PACK_BYTES - 10, 'w0')
    const next = await packs.reserve(20, 'w0')
    expect(next.pack).not.toBe(first.pack)
    expect(next.at).toBe(0)
    // A region larger than a pack still gets one, alone.
    const huge = await packs.reserve(PACK_BYTES + 1, 'w0')
    expect(huge.at).toBe(0)
    for (const r of [first, next, huge]) await packs.release(r, true)
  })

  it('deletes a sealed pack in which no region was kept, once its last region is released', async () => {
    const dead = await packs.reserve(10, 'm0')
    await fs.writeFile(dead.pack.file, 'refused bytes')
    const live = await packs.reserve(10, 'm1')
    await packs.release(live, true)
    await packs.sealAll()
    // Still reserved: not closed or deleted under its writer.
    expect(await onDisk()).toEqual([dead.pack.name, live.pack.name].sort())
    expect(packs.isOpen(dead.pack.name)).toBe(true)
    await packs.release(dead, false)
    expect(await onDisk()).toEqual([live.pack.name])
    expect(packs.isOpen(dead.pack.name)).toBe(false)
  })

  it('never resolves a pack name to a path outside its directory', () => {
    expect(() => packs.pathOf('../index')).toThrow(/not a pack name/)
    expect(Packs.isName('p0-0123456789ab')).toBe(true)
  })
})
