import { randomBytes } from 'node:crypto'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { MissingContentError } from '../../../src/errors.js'
import { ChunkFiles } from '../../../src/store/chunk-files.js'
import { Chunks } from '../../../src/store/chunks.js'
import { StoreDb } from '../../../src/store/db.js'
import { sha256Digest } from '../../../src/store/manifest.js'
import { removeDir, tempDir } from './helpers.js'

let dir: string
let db: StoreDb
let chunks: Chunks

beforeEach(async () => {
  dir = await tempDir('pm-chunks-')
  const files = await ChunkFiles.open(dir)
  db = await StoreDb.open(path.join(dir, 'index'), dir)
  chunks = new Chunks(db, files)
})

afterEach(async () => {
  await chunks.files.packs.sealAll()
  await db.close()
  await removeDir(dir)
})

/** Stores `bytes` in a write group of its own, sealed, and returns its record. */
async function storeAlone (bytes: Buffer): Promise<NonNullable<Awaited<ReturnType<Chunks['record']>>>> {
  const digest = sha256Digest(bytes)
  const group = chunks.files.newGroup()
  await db.write(await chunks.storeBody(digest, bytes, group), 'test')
  await chunks.files.endGroup(group)
  return (await chunks.record(digest))!
}

describe('a reader whose body moved', () => {
  it('finds it at the place the index gives now (gc rewrote its pack meanwhile)', async () => {
    const bytes = randomBytes(100_000)
    const digest = sha256Digest(bytes)
    const old = await storeAlone(bytes)
    const moved = await storeAlone(bytes)
    expect(moved.pack).not.toBe(old.pack)
    await chunks.files.packs.remove(old.pack!)
    // Read with the record taken before the move: the body is found where the index says now.
    expect((await chunks.readRecorded(digest, old)).equals(bytes)).toBe(true)
    expect(await chunks.record(digest)).toEqual(moved)
  })

  it('is told the chunk is missing when the index still names the lost place, and the entry goes', async () => {
    const bytes = randomBytes(100_000)
    const digest = sha256Digest(bytes)
    const record = await storeAlone(bytes)
    await chunks.files.packs.remove(record.pack!)
    await expect(chunks.readRecorded(digest, record)).rejects.toBeInstanceOf(MissingContentError)
    await expect(chunks.readRaw(digest)).rejects.toThrow(/not in store/)
    expect(await chunks.record(digest)).toBeUndefined()
  })

  it('is told the chunk is missing when its new place is gone too, and the entry naming it goes', async () => {
    const bytes = randomBytes(100_000)
    const digest = sha256Digest(bytes)
    const stale = await storeAlone(bytes)
    const current = await storeAlone(bytes)
    await chunks.files.packs.remove(stale.pack!)
    await chunks.files.packs.remove(current.pack!)
    await expect(chunks.readRecorded(digest, stale)).rejects.toBeInstanceOf(MissingContentError)
    expect(await chunks.record(digest)).toBeUndefined()
  })
})
