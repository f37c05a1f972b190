// The client's hash-only digests (what `pipemesh run --coordinator` asks the mesh about before it
// opens a store) must equal what a ContentStore gives the same files, for files of every shape and
// for trees, and its digest cache must never answer for content that changed.

import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { CHUNK_SIZE, ContentHasher, DigestCache } from '../../../src/client/digests.js'
import { prepareSubmission } from '../../../src/client/prepare.js'
import { parsePipeline } from '../../../src/spec/parse.js'
import { ContentStore, DEFAULT_CHUNK_SIZE } from '../../../src/store/content-store.js'
import { removeDir, tempDir } from '../store/helpers.js'

let dir: string
let store: ContentStore

beforeEach(async () => {
  dir = await tempDir('pm-digests-')
  store = await ContentStore.open(path.join(dir, 'store'))
})
afterEach(async () => {
  await store.close()
  await removeDir(dir)
})

async function makeFiles (root: string): Promise<void> {
  await fs.mkdir(path.join(root, 'bin'), { recursive: true })
  await fs.mkdir(path.join(root, 'data/deep/er'), { recursive: true })
  await fs.mkdir(path.join(root, 'empty'))
  await fs.writeFile(path.join(root, 'bin/run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 })
  await fs.writeFile(path.join(root, 'data/exact.bin'), randomBytes(2 * CHUNK_SIZE))
  await fs.writeFile(path.join(root, 'data/odd.bin'), randomBytes(2 * CHUNK_SIZE + 17))
  await fs.writeFile(path.join(root, 'data/under.bin'), randomBytes(CHUNK_SIZE - 1))
  await fs.writeFile(path.join(root, 'data/deep/er/empty.txt'), '')
  await fs.writeFile(path.join(root, 'README'), 'hello\n')
  await fs.symlink('er/empty.txt', path.join(root, 'data/deep/link'))
}

describe('ContentHasher', () => {
  it('chunks as a default ContentStore does', () => {
    expect(CHUNK_SIZE).toBe(DEFAULT_CHUNK_SIZE)
  })

  it('gives files, trees and listed files the digests the store gives them', async () => {
    const src = path.join(dir, 'src')
    await makeFiles(src)
    const hasher = new ContentHasher()
    for (const rel of ['README', 'bin/run.sh', 'data/exact.bin', 'data/odd.bin', 'data/under.bin', 'data/deep/er/empty.txt', 'data', '.']) {
      expect(await hasher.ingest(path.join(src, rel)), rel).toEqual(await store.ingest(path.join(src, rel)))
    }
    for (const listed of [['README'], ['bin/run.sh', 'data/deep'], ['data'], ['.'], ['data/deep/link', 'README', 'empty']]) {
      expect(await hasher.ingestFiles(src, listed), listed.join(',')).toEqual(await store.ingestFiles(src, listed))
    }
  })

  it('tells apart content that differs only in its executable bit', async () => {
    const src = path.join(dir, 'src')
    await makeFiles(src)
    const hasher = new ContentHasher()
    const before = await hasher.ingestFiles(src, ['bin'])
    await fs.chmod(path.join(src, 'bin/run.sh'), 0o644)
    const after = await hasher.ingestFiles(src, ['bin'])
    expect(after.ref.digest).not.toBe(before.ref.digest)
    expect(after).toEqual(await store.ingestFiles(src, ['bin']))
  })

  it('prepares the same submission as the store', async () => {
    const src = path.join(dir, 'src')
    await makeFiles(src)
    await fs.writeFile(path.join(src, 'env.json'), '{}')
    const pipeline = parsePipeline([
      'name: p',
      'inputs: { big: data/odd.bin, tree: data }',
      'environments: { e: { files: [env.json, README], setup: "true" } }',
      'steps:',
      '  a: { command: "sh bin/run.sh", code: [bin/run.sh, README], environment: e }',
      '  b: { command: "true", code: [data/deep] }',
      '  c: { command: "true", code: [bin/run.sh, README] }',
      '  d: { command: "true" }'
    ].join('\n'), { file: path.join(src, 'p.yaml'), baseDir: src })
    // Progress: running totals across everything read; both end at every byte read, the same.
    const progress = { hashed: [] as Array<[number, number]>, stored: [] as Array<[number, number]> }
    const hashed = await prepareSubmission(pipeline, new ContentHasher(), { onBytes: (b, t) => { progress.hashed.push([b, t]) } })
    const stored = await prepareSubmission(pipeline, store, { onBytes: (b, t) => { progress.stored.push([b, t]) } })
    expect(hashed.artifacts).toEqual(stored.artifacts)
    // Read: both inputs (the odd file twice: alone and in the tree), each code snapshot and the environment.
    const { code, environments, inputs } = hashed.artifacts
    const read = inputs.big!.size + inputs.tree!.size + code.a!.ref.size + code.b!.ref.size + environments.e!.files.size
    for (const seen of [progress.hashed, progress.stored]) {
      expect(seen.at(-1)).toEqual([read, read])
      expect(seen.every(([b, t], i) => b <= t && (i === 0 || b >= seen[i - 1]![0]))).toBe(true)
    }
    // Read concurrently, assembled per step in pipeline order; steps listing the same files share a snapshot.
    expect(Object.keys(hashed.artifacts.code)).toEqual(['a', 'b', 'c'])
    expect(hashed.artifacts.code.c).toEqual(hashed.artifacts.code.a)
    expect(hashed.artifacts.code.b).toEqual(await new ContentHasher().ingestFiles(src, ['data/deep']))
    expect(hashed.artifacts.code.a).toEqual(await new ContentHasher().ingestFiles(src, ['bin/run.sh', 'README']))
    expect(Object.keys(hashed.artifacts.inputs)).toEqual(['big', 'tree'])
    expect(hashed.artifacts.inputs.tree).toEqual(await new ContentHasher().ingest(path.join(src, 'data')))
  })
})

describe('DigestCache', () => {
  async function bigFile (name: string, ageMs: number): Promise<string> {
    const file = path.join(dir, name)
    await fs.writeFile(file, randomBytes(CHUNK_SIZE + 5))
    const t = new Date(Date.now() - ageMs)
    await fs.utimes(file, t, t)
    return file
  }

  it('remembers digests of settled large files across loads, and notices any change', async () => {
    const cacheFile = path.join(dir, 'client', 'digests.json')
    const file = await bigFile('big.bin', 0)
    // The file's ctime is now (utimes sets it): too recent to be remembered safely.
    let cache = await DigestCache.load(cacheFile)
    const first = await new ContentHasher(cache).ingest(file)
    await cache.save()
    await expect(fs.stat(cacheFile)).rejects.toMatchObject({ code: 'ENOENT' })
    expect(first).toEqual(await store.ingest(file))

    // Once settled, it is remembered, and a fresh load answers from the cache.
    await new Promise(resolve => setTimeout(resolve, 2100))
    cache = await DigestCache.load(cacheFile)
    expect(await new ContentHasher(cache).ingest(file)).toEqual(first)
    await cache.save()
    const saved = JSON.parse(await fs.readFile(cacheFile, 'utf8')) as { entries: Record<string, unknown> }
    expect(Object.keys(saved.entries)).toEqual([file])

    // Same size, same mtime, new content: the ctime moved, so it is hashed again.
    const mtime = (await fs.stat(file)).mtime
    const changed = randomBytes(CHUNK_SIZE + 5)
    await fs.writeFile(file, changed)
    await fs.utimes(file, mtime, mtime)
    cache = await DigestCache.load(cacheFile)
    const again = await new ContentHasher(cache).ingest(file)
    expect(again.digest).not.toBe(first.digest)
    expect(again).toEqual(await store.ingest(file))
  }, 20_000)

  it('treats an unreadable cache file as empty', async () => {
    const cacheFile = path.join(dir, 'digests.json')
    await fs.writeFile(cacheFile, '{"version": 1, "entries": {"/x": {"digest": "nope"}}')
    const file = await bigFile('big.bin', 10_000)
    const cache = await DigestCache.load(cacheFile)
    expect(await new ContentHasher(cache).ingest(file)).toEqual(await store.ingest(file))
  })
})
