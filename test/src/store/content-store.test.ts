import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'
import { Level } from 'level'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { CorruptContentError, MissingContentError, UnsafePathError } from '../../../src/errors.js'
import { ContentStore } from '../../../src/store/content-store.js'
import { encodeManifest, sha256Digest } from '../../../src/store/manifest.js'
import type { Digest } from '../../../src/store/types.js'
import { bodiesOf, describeTree, removeDir, tempDir } from './helpers.js'

const KiB = 1024
// Small chunks keep the data small while still exercising multi-chunk files and chunk files.
const CHUNK = 64 * KiB

let dir: string
let stores: ContentStore[]

async function openStore (name: string, options: { maxArtifactBytes?: number, packRewriteMaxBytes?: number } = {}): Promise<ContentStore> {
  const s = await ContentStore.open(path.join(dir, name), { chunkSize: CHUNK, ...options })
  stores.push(s)
  return s
}

/** Total length of the store's pack files (live bodies and dead space alike). */
async function packBytes (storeDir: string): Promise<number> {
  let total = 0
  for (const name of await fs.readdir(path.join(storeDir, 'packs'))) total += (await fs.stat(path.join(storeDir, 'packs', name))).size
  return total
}

/** Flips one byte of a stored body. */
async function flipByte (body: { file: string, offset: number }, at: number): Promise<void> {
  const fh = await fs.open(body.file, 'r+')
  try {
    const b = Buffer.alloc(1)
    await fh.read(b, 0, 1, body.offset + at)
    b[0] = b[0]! ^ 0xff
    await fh.write(b, 0, 1, body.offset + at)
  } finally {
    await fh.close()
  }
}

async function makeTree (root: string, big: Buffer): Promise<void> {
  await fs.mkdir(path.join(root, 'bin'), { recursive: true })
  await fs.mkdir(path.join(root, 'data/deep/er'), { recursive: true })
  await fs.mkdir(path.join(root, 'empty'))
  await fs.writeFile(path.join(root, 'bin/run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 })
  await fs.writeFile(path.join(root, 'data/big.bin'), big)
  await fs.writeFile(path.join(root, 'data/deep/er/empty.txt'), '')
  await fs.writeFile(path.join(root, 'README'), 'hello\n')
  await fs.symlink('../README', path.join(root, 'data/readme-link'))
  await fs.symlink('deep/er', path.join(root, 'data/er-link'))
}

beforeEach(async () => {
  dir = await tempDir()
  stores = []
})

afterEach(async () => {
  for (const s of stores) await s.close().catch(() => {})
  await removeDir(dir)
})

describe('ContentStore round trips', () => {
  it('a store deleted and made again at the same path, in the same process, takes new chunks', async () => {
    const data = randomBytes(5 * CHUNK + 1)
    await fs.writeFile(path.join(dir, 'f.bin'), data)
    const first = await openStore('again')
    await first.ingest(path.join(dir, 'f.bin'))
    await first.close()
    await removeDir(path.join(dir, 'again'))
    // The chunk workers outlive the store and remember the fan-out directories they made.
    const second = await openStore('again')
    const ref = await second.ingest(path.join(dir, 'f.bin'))
    await second.materialize(ref.digest, path.join(dir, 'back.bin'))
    expect((await fs.readFile(path.join(dir, 'back.bin'))).equals(data)).toBe(true)
  })

  it('stores and materializes a multi-chunk file byte for byte', async () => {
    const store = await openStore('s')
    const data = randomBytes(5 * CHUNK + 1234)
    await fs.writeFile(path.join(dir, 'f.bin'), data)
    let progress = 0
    const ref = await store.ingest(path.join(dir, 'f.bin'), { onProgress: b => { progress = b } })
    expect(ref).toMatchObject({ kind: 'file', size: data.length })
    expect(progress).toBe(data.length)
    expect(await store.has(ref.digest)).toBe(true)
    expect(await store.stat(ref.digest)).toEqual(ref)
    expect((await store.listChunks(ref.digest)).length).toBe(6)
    await store.materialize(ref.digest, path.join(dir, 'out/f.bin'))
    expect((await fs.readFile(path.join(dir, 'out/f.bin'))).equals(data)).toBe(true)
  })

  it('stores an empty file and an empty directory', async () => {
    const store = await openStore('s')
    await fs.writeFile(path.join(dir, 'empty'), '')
    await fs.mkdir(path.join(dir, 'emptydir'))
    const file = await store.ingest(path.join(dir, 'empty'))
    const tree = await store.ingest(path.join(dir, 'emptydir'))
    expect(file).toMatchObject({ kind: 'file', size: 0 })
    expect(tree).toMatchObject({ kind: 'tree', size: 0 })
    await store.materialize(file.digest, path.join(dir, 'o1'))
    await store.materialize(tree.digest, path.join(dir, 'o2'))
    expect((await fs.readFile(path.join(dir, 'o1'))).length).toBe(0)
    expect(await fs.readdir(path.join(dir, 'o2'))).toEqual([])
  })

  it('keeps a nested tree with exec bits, empty dirs and inside symlinks; readOnly locks it', async () => {
    const store = await openStore('s')
    const src = path.join(dir, 'src')
    await makeTree(src, randomBytes(3 * CHUNK + 7))
    const ref = await store.ingest(src, { label: 'tree' })
    expect(ref.kind).toBe('tree')
    await store.materialize(ref.digest, path.join(dir, 'out'))
    expect(await describeTree(path.join(dir, 'out'))).toEqual(await describeTree(src))
    await store.materialize(ref.digest, path.join(dir, 'ro'), { readOnly: true })
    expect((await fs.stat(path.join(dir, 'ro/README'))).mode & 0o777).toBe(0o444)
    expect((await fs.stat(path.join(dir, 'ro/bin/run.sh'))).mode & 0o777).toBe(0o555)
    expect((await fs.stat(path.join(dir, 'ro/data'))).mode & 0o777).toBe(0o555)
    expect((await fs.stat(path.join(dir, 'ro'))).mode & 0o777).toBe(0o555)
    const held = []
    for await (const r of store.roots()) held.push(r)
    expect(held).toEqual([expect.objectContaining({ digest: ref.digest, kind: 'tree', label: 'tree' })])
  })

  it('survives a close and reopen', async () => {
    let store = await openStore('s')
    await fs.writeFile(path.join(dir, 'f'), randomBytes(2 * CHUNK))
    const ref = await store.ingest(path.join(dir, 'f'))
    await store.close()
    store = await openStore('s')
    expect(await store.has(ref.digest)).toBe(true)
    expect(await store.stats()).toMatchObject({ artifacts: 1, chunks: 2, bytes: 2 * CHUNK, logicalBytes: 2 * CHUNK })
  })

  it('refuses to materialize onto an existing path and leaves it alone', async () => {
    const store = await openStore('s')
    await fs.writeFile(path.join(dir, 'f'), 'x')
    const ref = await store.ingest(path.join(dir, 'f'))
    await fs.writeFile(path.join(dir, 'taken'), 'mine')
    await expect(store.materialize(ref.digest, path.join(dir, 'taken'))).rejects.toMatchObject({ code: 'CONFLICT' })
    expect(await fs.readFile(path.join(dir, 'taken'), 'utf8')).toBe('mine')
    await expect(store.materialize(`sha256:${'0'.repeat(64)}`, path.join(dir, 'nope'))).rejects.toBeInstanceOf(MissingContentError)
  })

  it('stops when the signal is aborted', async () => {
    const store = await openStore('s')
    await fs.writeFile(path.join(dir, 'f'), randomBytes(4 * CHUNK))
    const ac = new AbortController()
    ac.abort()
    await expect(store.ingest(path.join(dir, 'f'), { signal: ac.signal })).rejects.toMatchObject({ code: 'CANCELLED' })
    expect((await store.stats()).artifacts).toBe(0)
  })
})

describe('deduplication', () => {
  it('stores a file shared by two trees once, with the same digest as the file alone', async () => {
    const store = await openStore('s')
    const big = randomBytes(4 * CHUNK)
    for (const t of ['t1', 't2']) {
      await fs.mkdir(path.join(dir, t))
      await fs.writeFile(path.join(dir, t, 'shared.bin'), big)
      await fs.writeFile(path.join(dir, t, 'own.txt'), `only in ${t}`)
    }
    await fs.writeFile(path.join(dir, 'alone.bin'), big)
    const a = await store.ingest(path.join(dir, 't1'))
    const b = await store.ingest(path.join(dir, 't2'))
    const alone = await store.ingest(path.join(dir, 'alone.bin'))
    expect(a.digest).not.toBe(b.digest)
    const stats = await store.stats()
    // 4 chunks of the shared file + one small chunk per own.txt.
    expect(stats.chunks).toBe(6)
    expect(stats.bytes).toBe(4 * CHUNK + 'only in t1'.length * 2)
    expect(stats.logicalBytes).toBe(2 * a.size + alone.size)
    const places = await bodiesOf(store, alone.digest)
    expect(new Set(places.map(p => `${p.file}@${p.offset}`)).size).toBe(4)
    const snapshot = await store.ingestFiles(path.join(dir, 't1'), ['shared.bin'])
    expect(snapshot.files).toEqual({ 'shared.bin': alone.digest })
    // Stored once on disk too: the later ingests wrote their copies to packs of their own, which
    // kept nothing and were deleted when the ingest ended.
    expect(await packBytes(path.join(dir, 's'))).toBe(4 * CHUNK)
    await store.gc([a.digest, b.digest, alone.digest, snapshot.ref.digest])
    expect(await packBytes(path.join(dir, 's'))).toBe(4 * CHUNK)
    for (const ref of [a, b, alone]) {
      await store.materialize(ref.digest, path.join(dir, 'after-gc', ref.digest.slice(7, 19)))
    }
    expect((await fs.readFile(path.join(dir, 'after-gc', alone.digest.slice(7, 19)))).equals(big)).toBe(true)
  })

  it('snapshots listed files at their relative paths, with their parent directories', async () => {
    const store = await openStore('s')
    const base = path.join(dir, 'proj')
    await fs.mkdir(path.join(base, 'lib/util'), { recursive: true })
    await fs.writeFile(path.join(base, 'train.mjs'), 'train')
    await fs.writeFile(path.join(base, 'lib/util/a.mjs'), 'a')
    await fs.writeFile(path.join(base, 'lib/util/b.mjs'), 'b')
    await fs.writeFile(path.join(base, 'unlisted.mjs'), 'no')
    const { ref, files } = await store.ingestFiles(base, ['./train.mjs', 'lib/util/'])
    expect(Object.keys(files).sort()).toEqual(['lib/util/a.mjs', 'lib/util/b.mjs', 'train.mjs'])
    await store.materialize(ref.digest, path.join(dir, 'snap'))
    expect((await describeTree(path.join(dir, 'snap'))).map(e => e.path)).toEqual(['lib', 'lib/util', 'lib/util/a.mjs', 'lib/util/b.mjs', 'train.mjs'])
    await expect(store.ingestFiles(base, ['../outside'])).rejects.toBeInstanceOf(UnsafePathError)
  })
})

describe('a memo of file digests', () => {
  it('takes a file the memo knows as the digest it gives, without reading it, while the store has that manifest', async () => {
    const store = await openStore('s')
    await fs.mkdir(path.join(dir, 't'))
    await fs.writeFile(path.join(dir, 't', 'a.txt'), 'what the file holds now')
    await fs.writeFile(path.join(dir, 'b.txt'), 'what the memo says')
    const b = await store.ingest(path.join(dir, 'b.txt'))
    const known = { digest: b.digest, size: b.size, executable: false }
    const memo = { get: (abs: string) => abs.endsWith('a.txt') ? known : undefined, set: () => {} }
    // The memo is believed: the tree holds b's bytes under a's name, which shows a was not read.
    const tree = await store.ingest(path.join(dir, 't'), { memo })
    await store.materialize(tree.digest, path.join(dir, 'out'))
    expect(await fs.readFile(path.join(dir, 'out', 'a.txt'), 'utf8')).toBe('what the memo says')
    // A digest this store lacks is not believed: the file is read.
    const unknown = { get: () => ({ digest: sha256Digest(Buffer.from('elsewhere')), size: 9, executable: false }), set: () => {} }
    const again = await store.ingest(path.join(dir, 't'), { memo: unknown })
    await store.materialize(again.digest, path.join(dir, 'out2'))
    expect(await fs.readFile(path.join(dir, 'out2', 'a.txt'), 'utf8')).toBe('what the file holds now')
  })
})

describe('corruption', () => {
  it('detects a flipped byte on materialize, quarantines the chunk and writes nothing', async () => {
    const store = await openStore('s')
    const src = path.join(dir, 'src')
    await makeTree(src, randomBytes(3 * CHUNK))
    const ref = await store.ingest(src)
    const [victim] = await bodiesOf(store, ref.digest)
    await flipByte(victim!, 100)
    await expect(store.materialize(ref.digest, path.join(dir, 'out', 'x'))).rejects.toBeInstanceOf(CorruptContentError)
    expect(await fs.readdir(path.join(dir, 'out'))).toEqual([])
    expect(await store.has(ref.digest)).toBe(false)
    expect((await fs.readdir(path.join(dir, 's', 'quarantine'))).length).toBe(1)
    expect(await store.chunkLocation(victim!.digest)).toBeUndefined()
    // Ingesting the same content again heals the store.
    await store.ingest(src)
    expect(await store.has(ref.digest)).toBe(true)
  })

  it('detects a corrupt small chunk kept inside LevelDB', async () => {
    let store = await openStore('s')
    await fs.writeFile(path.join(dir, 'small.txt'), 'a small file kept inline')
    const ref = await store.ingest(path.join(dir, 'small.txt'))
    const [chunk] = await store.listChunks(ref.digest)
    await store.close()
    const raw = new Level<string, unknown>(path.join(dir, 's', 'index'))
    await raw.sublevel<string, Uint8Array>('i', { valueEncoding: 'view' }).put(chunk!.digest, Buffer.from('a small file kept inlinE'))
    await raw.close()
    store = await openStore('s')
    await expect(store.readChunk(chunk!.digest)).rejects.toBeInstanceOf(CorruptContentError)
    expect(await store.has(ref.digest)).toBe(false)
    expect((await fs.readdir(path.join(dir, 's', 'quarantine'))).length).toBe(1)
    await expect(store.materialize(ref.digest, path.join(dir, 'out'))).rejects.toBeInstanceOf(MissingContentError)
  })

  it('a pack cut short by a crash: verify quarantines the bodies past its end, ingesting again restores them and keeps the good one', async () => {
    const store = await openStore('s')
    const data = randomBytes(9 * CHUNK)
    await fs.writeFile(path.join(dir, 'f'), data)
    const ref = await store.ingest(path.join(dir, 'f'))
    // Two bodies in one pack (ingest spreads a file's chunks over a pack per worker).
    const stored = await bodiesOf(store, ref.digest)
    const inPack = stored.filter(b => b.file === stored[0]!.file).sort((x, y) => x.offset - y.offset)
    expect(inPack.length).toBeGreaterThanOrEqual(2)
    const good = inPack[0]
    const cut = inPack.at(-1)
    // Power lost before writeback: the pack ends 100 bytes into the body written last.
    await fs.truncate(cut!.file, cut!.offset + 100)
    const report = await store.verify()
    expect(report.corrupt).toEqual([cut!.digest])
    await store.ingest(path.join(dir, 'f'))
    expect(await store.chunkLocation(good!.digest)).toEqual({ file: good!.file, offset: good!.offset, size: CHUNK })
    expect(await store.chunkLocation(cut!.digest)).not.toEqual({ file: cut!.file, offset: cut!.offset, size: CHUNK })
    await store.materialize(ref.digest, path.join(dir, 'out'))
    expect((await fs.readFile(path.join(dir, 'out'))).equals(data)).toBe(true)
  })

  it('stores a peer chunk given as the pieces it arrived in, and refuses pieces that hash otherwise', async () => {
    const store = await openStore('s')
    const bytes = randomBytes(CHUNK)
    const digest = sha256Digest(bytes)
    const pieces = (b: Buffer): Buffer[] => [b.subarray(0, 1), b.subarray(1, CHUNK / 2), b.subarray(CHUNK / 2)]
    const wrong = Buffer.from(bytes)
    wrong[CHUNK - 1] = wrong[CHUNK - 1]! ^ 1
    await expect(store.writeChunk(digest, pieces(wrong))).rejects.toBeInstanceOf(CorruptContentError)
    expect(await store.hasChunk(digest)).toBe(false)
    await store.writeChunk(digest, pieces(bytes))
    expect(Buffer.from(await store.readChunk(digest)).equals(bytes)).toBe(true)
    // A small chunk lives in the index, not as a file; it may come in pieces too.
    const tiny = Buffer.from('a small chunk, stored inline')
    await store.writeChunk(sha256Digest(tiny), [tiny.subarray(0, 5), tiny.subarray(5)])
    expect(Buffer.from(await store.readChunk(sha256Digest(tiny))).equals(tiny)).toBe(true)
  })

  it('refuses a peer chunk that does not match its digest and writes no body', async () => {
    const store = await openStore('s')
    const bytes = randomBytes(CHUNK)
    const digest = sha256Digest(bytes)
    const wrong = Buffer.from(bytes)
    wrong[7] = wrong[7]! ^ 1
    await expect(store.writeChunk(digest, wrong)).rejects.toBeInstanceOf(CorruptContentError)
    expect(await store.hasChunk(digest)).toBe(false)
    // Nor is the refused body left on disk: the pack it went to held nothing else, and goes
    // once it is sealed.
    await store.close()
    expect(await fs.readdir(path.join(dir, 's', 'packs'))).toEqual([])
    const again = await openStore('s')
    await again.writeChunk(digest, bytes)
    expect(Buffer.from(await again.readChunk(digest)).equals(bytes)).toBe(true)
  })

  it('verify finds corrupt chunks and repair refetches them from a peer', async () => {
    const store = await openStore('s')
    const peer = await openStore('peer')
    const data = randomBytes(4 * CHUNK)
    await fs.writeFile(path.join(dir, 'f'), data)
    const ref = await store.ingest(path.join(dir, 'f'))
    await peer.ingest(path.join(dir, 'f'))
    for (const body of (await bodiesOf(store, ref.digest)).slice(0, 2)) await flipByte(body, 0)
    const seen: Array<{ chunks: number, bytes: number, totalChunks: number, totalBytes: number }> = []
    const clean = await store.verify({ onProgress: p => { seen.push({ ...p }) } })
    expect(clean.chunksChecked).toBe(4)
    // Progress counts every chunk checked, the corrupt ones too, out of what the index held.
    expect(seen.map(p => p.chunks)).toEqual([1, 2, 3, 4])
    expect(seen.at(-1)).toEqual({ chunks: 4, bytes: 4 * CHUNK, totalChunks: 4, totalBytes: 4 * CHUNK })
    expect(clean.corrupt).toHaveLength(2)
    expect(clean.repaired).toEqual([])
    expect(await store.has(ref.digest)).toBe(false)
    const fixed = await store.verify({ repair: async d => await peer.readChunk(d) })
    // The quarantined chunks are now missing from a held artifact; repair fetches them.
    expect(fixed.missing.sort()).toEqual(clean.corrupt.sort())
    expect(fixed.repaired.sort()).toEqual(clean.corrupt.sort())
    expect(await store.has(ref.digest)).toBe(true)
    await store.materialize(ref.digest, path.join(dir, 'out'))
    expect((await fs.readFile(path.join(dir, 'out'))).equals(data)).toBe(true)
    expect((await store.verify()).corrupt).toEqual([])
  })
})

describe('hostile paths', () => {
  it('putManifestBytes refuses escaping paths, bad hashes and keeps nothing', async () => {
    const store = await openStore('s')
    for (const entries of [
      [{ path: '../evil', type: 'dir' }],
      [{ path: '/etc/cron.d', type: 'dir' }],
      [{ path: 'l', type: 'symlink', target: '../../etc/passwd' }],
      [{ path: 'l', type: 'symlink', target: '/etc/passwd' }]
    ]) {
      const bytes = Buffer.from(JSON.stringify({ entries, type: 'tree' }))
      const d = sha256Digest(bytes)
      await expect(store.putManifestBytes(d, bytes)).rejects.toBeInstanceOf(UnsafePathError)
      expect(await store.getManifestBytes(d)).toBeUndefined()
    }
    const ok = encodeManifest({ type: 'tree', entries: [] })
    await expect(store.putManifestBytes(`sha256:${'1'.repeat(64)}`, ok)).rejects.toBeInstanceOf(CorruptContentError)
  })

  it('materialize re-checks paths of a manifest that got into the index anyway', async () => {
    const storeDir = path.join(dir, 's')
    let store = await openStore('s')
    await store.close()
    const bytes = Buffer.from(JSON.stringify({ entries: [{ path: '../escaped', type: 'dir' }], type: 'tree' }))
    const d = sha256Digest(bytes)
    const raw = new Level<string, unknown>(path.join(storeDir, 'index'))
    await raw.sublevel<string, Uint8Array>('m', { valueEncoding: 'view' }).put(d, bytes)
    await raw.close()
    store = await openStore('s')
    await expect(store.materialize(d, path.join(dir, 'out', 'x'))).rejects.toBeInstanceOf(UnsafePathError)
    await expect(fs.access(path.join(dir, 'out', 'escaped'))).rejects.toThrow()
    await expect(fs.access(path.join(dir, 'escaped'))).rejects.toThrow()
  })

  it('ingest refuses symlinks leaving the tree, absolute symlinks, FIFOs and a symlink root', async () => {
    const store = await openStore('s')
    const cases: Array<[string, (root: string) => Promise<void>]> = [
      ['up', async r => { await fs.symlink('../../etc/passwd', path.join(r, 'l')) }],
      ['abs', async r => { await fs.symlink('/etc/passwd', path.join(r, 'l')) }],
      ['through', async r => { await fs.mkdir(path.join(r, 'd')); await fs.symlink('x/../../..', path.join(r, 'd/l')) }],
      ['fifo', async r => { execFileSync('mkfifo', [path.join(r, 'p')]) }]
    ]
    for (const [name, make] of cases) {
      const root = path.join(dir, name)
      await fs.mkdir(root)
      await fs.writeFile(path.join(root, 'ok.txt'), 'ok')
      await make(root)
      await expect(store.ingest(root), name).rejects.toBeInstanceOf(UnsafePathError)
    }
    await fs.symlink(path.join(dir, 'up', 'ok.txt'), path.join(dir, 'rootlink'))
    await expect(store.ingest(path.join(dir, 'rootlink'))).rejects.toBeInstanceOf(UnsafePathError)
    expect((await store.stats()).artifacts).toBe(0)
  })
})

describe('limits', () => {
  it('refuses artifacts over maxArtifactBytes, on ingest and from a peer', async () => {
    const store = await openStore('s', { maxArtifactBytes: 1000 })
    await fs.writeFile(path.join(dir, 'f'), randomBytes(2000))
    await expect(store.ingest(path.join(dir, 'f'))).rejects.toThrow(/2000 bytes, over the store's artifact size limit of 1000/)
    await fs.mkdir(path.join(dir, 't'))
    await fs.writeFile(path.join(dir, 't/a'), randomBytes(600))
    await fs.writeFile(path.join(dir, 't/b'), randomBytes(600))
    await expect(store.ingest(path.join(dir, 't'))).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED' })
    const big = encodeManifest({ type: 'file', size: 5000, chunks: [{ digest: `sha256:${'2'.repeat(64)}`, size: 5000 }] })
    await expect(store.putManifestBytes(sha256Digest(big), big)).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED' })
    expect(await store.stats()).toMatchObject({ artifacts: 0, chunks: 0 })
  })
})

describe('peer transfer API', () => {
  it('copies a tree from one store to another chunk by chunk', async () => {
    const a = await openStore('a')
    const b = await openStore('b')
    const src = path.join(dir, 'src')
    await makeTree(src, randomBytes(2 * CHUNK + 5))
    const ref = await a.ingest(src)
    await b.putManifestBytes(ref.digest, (await a.getManifestBytes(ref.digest))!)
    await expect(b.addRoot(ref.digest)).rejects.toBeInstanceOf(MissingContentError)
    for (const m of await b.missingManifests(ref.digest)) await b.putManifestBytes(m, (await a.getManifestBytes(m))!)
    const missing = await b.missingChunks(ref.digest)
    expect(missing.map(c => c.digest).sort()).toEqual((await a.listChunks(ref.digest)).map(c => c.digest).sort())
    const first = missing[0]!.digest
    await expect(b.writeChunk(first, Buffer.from('not it'))).rejects.toBeInstanceOf(CorruptContentError)
    for (const c of missing) await b.writeChunk(c.digest, await a.readChunk(c.digest))
    expect(await b.missingChunks(ref.digest)).toEqual([])
    const held = await b.addRoot(ref.digest, { label: 'from a' })
    expect(held).toMatchObject({ digest: ref.digest, kind: 'tree', size: ref.size, label: 'from a' })
    await b.materialize(ref.digest, path.join(dir, 'out'))
    expect(await describeTree(path.join(dir, 'out'))).toEqual(await describeTree(src))
  })
})

describe('stores written before packs', () => {
  it('reads chunk files of the old layout, keeps them while referenced, and gc removes them after', async () => {
    let store = await openStore('s')
    const data = randomBytes(3 * CHUNK)
    await fs.writeFile(path.join(dir, 'f'), data)
    const ref = await store.ingest(path.join(dir, 'f'))
    const stored = await bodiesOf(store, ref.digest)
    await store.close()
    // Rewrite the store as the old version left it: one file per chunk, records without a pack.
    const raw = new Level<string, unknown>(path.join(dir, 's', 'index'))
    const records = raw.sublevel<string, unknown>('c', { valueEncoding: 'json' })
    const loose: string[] = []
    for (const body of stored) {
      const bytes = Buffer.alloc(body.size)
      const fh = await fs.open(body.file, 'r')
      await fh.read(bytes, 0, body.size, body.offset)
      await fh.close()
      const hex = body.digest.slice('sha256:'.length)
      const file = path.join(dir, 's', 'chunks', hex.slice(0, 2), hex)
      await fs.mkdir(path.dirname(file), { recursive: true })
      await fs.writeFile(file, bytes)
      loose.push(file)
      await records.put(body.digest, { size: body.size, inline: false })
    }
    await raw.close()
    await fs.rm(path.join(dir, 's', 'packs'), { recursive: true })

    store = await openStore('s')
    expect(await store.verify()).toMatchObject({ corrupt: [], missing: [], chunksChecked: 3 })
    await store.materialize(ref.digest, path.join(dir, 'out'))
    expect((await fs.readFile(path.join(dir, 'out'))).equals(data)).toBe(true)
    expect((await store.gc([ref.digest])).freedBytes).toBe(0)
    for (const file of loose) await fs.access(file)
    expect(await store.gc([])).toMatchObject({ removedChunks: 3, freedBytes: 3 * CHUNK })
    for (const file of loose) await expect(fs.access(file)).rejects.toThrow()
  })
})

describe('adopting files given up by the caller (a step\'s outputs)', () => {
  /** The pack files on disk, by name. */
  async function packFiles (storeDir: string): Promise<string[]> {
    return (await fs.readdir(path.join(storeDir, 'packs'))).sort()
  }

  it('moves a multi-chunk file in as a pack of its own: same digest as a copy, nothing copied, its path left empty', async () => {
    const copied = await openStore('copied')
    const adopting = await openStore('adopting')
    // Five whole chunks and a tail small enough to go inline in the index.
    const data = randomBytes(5 * CHUNK + 100)
    const file = path.join(dir, 'model.bin')
    await fs.writeFile(file, data)
    const byCopy = await copied.ingest(file)
    const ino = (await fs.stat(file)).ino
    const adopted = await adopting.ingest(file, { adopt: true })
    expect(adopted).toEqual(byCopy)
    await expect(fs.access(file)).rejects.toThrow(/ENOENT/)
    // The file itself is the store's only pack, its chunks where they always were in it.
    const [pack] = await packFiles(path.join(dir, 'adopting'))
    const packFile = path.join(dir, 'adopting', 'packs', pack!)
    expect((await fs.stat(packFile)).ino).toBe(ino)
    expect(await packFiles(path.join(dir, 'adopting'))).toHaveLength(1)
    expect((await bodiesOf(adopting, adopted.digest)).map(b => [b.file, b.offset])).toEqual([0, 1, 2, 3, 4].map(i => [packFile, i * CHUNK]))
    const out = path.join(dir, 'out')
    await adopting.materialize(adopted.digest, out)
    expect((await fs.readFile(out)).equals(data)).toBe(true)
    expect(await adopting.verify()).toMatchObject({ corrupt: [] })
  })

  it('in a directory, adopts large files with one link and copies the rest, leaving those in place', async () => {
    const store = await openStore('s')
    const tree = path.join(dir, 'outputs')
    await fs.mkdir(path.join(tree, 'sub'), { recursive: true })
    // Executable: the bit travels in the tree, from the mode the file had before it was moved.
    await fs.writeFile(path.join(tree, 'sub/big.bin'), randomBytes(3 * CHUNK), { mode: 0o755 })
    await fs.writeFile(path.join(tree, 'small.txt'), 'a small file\n')
    // A second name for a large file: whoever holds it could still change the bytes.
    await fs.writeFile(path.join(dir, 'elsewhere.bin'), randomBytes(2 * CHUNK))
    await fs.link(path.join(dir, 'elsewhere.bin'), path.join(tree, 'linked.bin'))
    const expected = await describeTree(tree)
    const ref = await store.ingest(tree, { adopt: true })
    expect(existsSync(path.join(tree, 'sub/big.bin'))).toBe(false)
    expect(existsSync(path.join(tree, 'small.txt'))).toBe(true)
    expect(existsSync(path.join(tree, 'linked.bin'))).toBe(true)
    await store.materialize(ref.digest, path.join(dir, 'back'))
    expect(await describeTree(path.join(dir, 'back'))).toEqual(expected)
  })

  it('does not keep a file the store mostly had: its new chunk is copied and the file deleted; a duplicate costs nothing', async () => {
    const store = await openStore('s')
    const data = randomBytes(4 * CHUNK)
    await fs.writeFile(path.join(dir, 'v1'), data)
    await store.ingest(path.join(dir, 'v1'))
    const before = await packBytes(path.join(dir, 's'))
    // One chunk of four changed: a pack of the whole file would be three quarters dead.
    const v2 = Buffer.from(data)
    randomBytes(CHUNK).copy(v2, 3 * CHUNK)
    await fs.writeFile(path.join(dir, 'v2'), v2)
    const ref = await store.ingest(path.join(dir, 'v2'), { adopt: true })
    await expect(fs.access(path.join(dir, 'v2'))).rejects.toThrow(/ENOENT/)
    expect(await packBytes(path.join(dir, 's'))).toBe(before + CHUNK)
    await store.materialize(ref.digest, path.join(dir, 'v2-back'))
    expect((await fs.readFile(path.join(dir, 'v2-back'))).equals(v2)).toBe(true)
    await fs.writeFile(path.join(dir, 'v1-again'), data)
    await store.ingest(path.join(dir, 'v1-again'), { adopt: true })
    expect(await packBytes(path.join(dir, 's'))).toBe(before + CHUNK)
  })

  it('puts the file back, bytes and mode, when storing it fails', async () => {
    const store = await openStore('s', { maxArtifactBytes: 3 * CHUNK })
    const data = randomBytes(4 * CHUNK)
    const file = path.join(dir, 'too-big')
    await fs.writeFile(file, data, { mode: 0o600 })
    await expect(store.ingest(file, { adopt: true })).rejects.toThrow(/over the store's artifact size limit/)
    expect((await fs.readFile(file)).equals(data)).toBe(true)
    expect((await fs.stat(file)).mode & 0o777).toBe(0o600)
    expect(await packFiles(path.join(dir, 's'))).toEqual([])
  })

  it('an output being adopted waits outside the pack directory: a crash before it is indexed leaves nothing once the store reopens', async () => {
    const store = await openStore('s')
    await fs.writeFile(path.join(dir, 'out'), randomBytes(3 * CHUNK))
    // What a crash while hashing leaves: the file staged, never placed nor settled.
    const pack = await store['chunks'].files.packs.adopt(path.join(dir, 'out'), await fs.lstat(path.join(dir, 'out')))
    expect(pack).toBeDefined()
    expect(await fs.readdir(path.join(dir, 's', 'packs'))).toEqual([])
    expect(await fs.readdir(path.join(dir, 's', 'tmp'))).toHaveLength(1)
    await pack!.handle.close()
    stores.pop()
    await store.close().catch(() => {})
    await openStore('s')
    await expect(fs.readdir(path.join(dir, 's', 'tmp'))).rejects.toThrow(/ENOENT/)
    expect(await fs.readdir(path.join(dir, 's', 'packs'))).toEqual([])
  })

  it('a second opening of a store in use is refused before it touches the outputs being adopted', async () => {
    const store = await openStore('s')
    await fs.writeFile(path.join(dir, 'out'), randomBytes(3 * CHUNK))
    const pack = await store['chunks'].files.packs.adopt(path.join(dir, 'out'), await fs.lstat(path.join(dir, 'out')))
    // `pipemesh store stats` on an agent's data dir while the agent stores an output.
    await expect(ContentStore.open(path.join(dir, 's'), { chunkSize: CHUNK })).rejects.toThrow(/in use by another process/)
    expect(await fs.readdir(path.join(dir, 's', 'tmp'))).toHaveLength(1)
    await store['chunks'].files.packs.settleAdopted(pack!, 0, path.join(dir, 'out'))
    expect((await fs.stat(path.join(dir, 'out'))).size).toBe(3 * CHUNK)
  })

  it('copies a file on another filesystem than the store, and leaves it where it is', async () => {
    // /dev/shm is a tmpfs on Linux: a rename from there into the store could only fail.
    const elsewhere = await fs.mkdtemp('/dev/shm/pipemesh-test-')
    try {
      expect((await fs.stat(elsewhere)).dev, '/dev/shm should be another filesystem than the test\'s temp dir').not.toBe((await fs.stat(dir)).dev)
      const data = randomBytes(3 * CHUNK)
      const file = path.join(elsewhere, 'out')
      await fs.writeFile(file, data)
      const copied = await (await openStore('copied')).ingest(file)
      const store = await openStore('s')
      expect(await store.ingest(file, { adopt: true })).toEqual(copied)
      expect((await fs.readFile(file)).equals(data)).toBe(true)
      await store.materialize(copied.digest, path.join(dir, 'back'))
      expect((await fs.readFile(path.join(dir, 'back'))).equals(data)).toBe(true)
    } finally {
      await fs.rm(elsewhere, { recursive: true, force: true })
    }
  })

  it('copies a file that cannot be moved out of its directory, and leaves it where it is', async () => {
    const outputs = path.join(dir, 'outputs')
    await fs.mkdir(outputs)
    const data = randomBytes(3 * CHUNK)
    const file = path.join(outputs, 'out')
    await fs.writeFile(file, data)
    // A step that made its output directory read-only. Root renames out of one regardless, so
    // there the directory is made immutable instead (ext4, tmpfs, xfs and btrfs all have the flag).
    const root = process.getuid?.() === 0
    const lock = (on: boolean): void => {
      if (root) execFileSync('chattr', [on ? '+i' : '-i', outputs])
      else execFileSync('chmod', [on ? '555' : '755', outputs])
    }
    lock(true)
    try {
      await expect(fs.rename(file, path.join(dir, 'moved')), 'the test could not stop renames out of its directory').rejects.toThrow(/EPERM|EACCES/)
      const store = await openStore('s')
      const ref = await store.ingest(file, { adopt: true })
      expect((await fs.readFile(file)).equals(data)).toBe(true)
      // Copied into the store's own pack, and the staging directory left empty.
      expect(await fs.readdir(path.join(dir, 's', 'tmp')).catch(() => [])).toEqual([])
      await store.materialize(ref.digest, path.join(dir, 'back'))
      expect((await fs.readFile(path.join(dir, 'back'))).equals(data)).toBe(true)
      expect(ref.digest).toBe((await (await openStore('copied')).ingest(file)).digest)
    } finally {
      lock(false)
    }
  })

  it('gc deletes an adopted file once nothing references it', async () => {
    const store = await openStore('s')
    await fs.writeFile(path.join(dir, 'out'), randomBytes(3 * CHUNK))
    await store.ingest(path.join(dir, 'out'), { adopt: true })
    expect(await packFiles(path.join(dir, 's'))).toHaveLength(1)
    expect(await store.gc([])).toMatchObject({ removedArtifacts: 1, removedChunks: 3, freedBytes: 3 * CHUNK })
    expect(await packFiles(path.join(dir, 's'))).toEqual([])
  })
})

describe('gc', () => {
  it('removes unreferenced artifacts and orphan files, keeps referenced ones and shared chunks', async () => {
    const store = await openStore('s')
    const shared = randomBytes(2 * CHUNK)
    await fs.mkdir(path.join(dir, 'keep'))
    await fs.mkdir(path.join(dir, 'drop'))
    await fs.writeFile(path.join(dir, 'keep/shared'), shared)
    await fs.writeFile(path.join(dir, 'drop/shared'), shared)
    await fs.writeFile(path.join(dir, 'drop/own'), randomBytes(8 * CHUNK))
    const keep = await store.ingest(path.join(dir, 'keep'))
    const drop = await store.ingest(path.join(dir, 'drop'))
    // What a crash can leave: a loose chunk file of an older store, a pack nothing points into.
    const orphan = path.join(dir, 's', 'chunks', 'ab', `ab${'c'.repeat(62)}`)
    await fs.mkdir(path.dirname(orphan), { recursive: true })
    await fs.writeFile(orphan, 'left by a crash')
    const orphanPack = path.join(dir, 's', 'packs', 'p0-0123456789ab')
    await fs.writeFile(orphanPack, Buffer.alloc(CHUNK, 1))
    // Written: keep's 2 chunks, drop's copies of them (dead on arrival) and its own 8; the orphan pack.
    expect(await packBytes(path.join(dir, 's'))).toBe(13 * CHUNK)
    const report = await store.gc([keep.digest])
    // Freed: the orphans, and packs deleted or rewritten down to keep's 2 chunks (however many
    // lanes wrote them: each pack is all dead, or big enough and mostly dead).
    expect(report).toEqual({ removedArtifacts: 1, removedChunks: 8, freedBytes: 11 * CHUNK + 'left by a crash'.length })
    expect(await store.has(drop.digest)).toBe(false)
    expect(await store.has(keep.digest)).toBe(true)
    expect(await store.stats()).toMatchObject({ artifacts: 1, chunks: 2, bytes: 2 * CHUNK })
    expect(await packBytes(path.join(dir, 's'))).toBe(2 * CHUNK)
    await expect(fs.access(orphan)).rejects.toThrow()
    await store.materialize(keep.digest, path.join(dir, 'out'))
    expect((await fs.readFile(path.join(dir, 'out/shared'))).equals(shared)).toBe(true)
    expect((await store.gc([])).removedArtifacts).toBe(1)
    expect(await store.stats()).toEqual({ artifacts: 0, chunks: 0, bytes: 0, logicalBytes: 0, packs: 0, packBytes: 0 })
  })

  it('rewrites a pack that is mostly dead: its live chunks move to a new pack and stay readable', async () => {
    const store = await openStore('s')
    const small = randomBytes(CHUNK)
    await fs.mkdir(path.join(dir, 'tree'))
    await fs.writeFile(path.join(dir, 'tree/small'), small)
    await fs.writeFile(path.join(dir, 'tree/big'), randomBytes(9 * CHUNK))
    const tree = await store.ingest(path.join(dir, 'tree'))
    // The small file on its own: its one chunk is the one that stays live.
    await fs.writeFile(path.join(dir, 'small'), small)
    const alone = await store.ingest(path.join(dir, 'small'))
    const [before] = await bodiesOf(store, alone.digest)
    expect(await packBytes(path.join(dir, 's'))).toBe(10 * CHUNK)
    const report = await store.gc([alone.digest])
    expect(report).toMatchObject({ removedArtifacts: 1, removedChunks: 9, freedBytes: 9 * CHUNK })
    expect(await packBytes(path.join(dir, 's'))).toBe(CHUNK)
    const [after] = await bodiesOf(store, alone.digest)
    expect(after!.file).not.toBe(before!.file)
    await store.materialize(alone.digest, path.join(dir, 'out'))
    expect((await fs.readFile(path.join(dir, 'out'))).equals(small)).toBe(true)
    expect(await store.has(tree.digest)).toBe(false)
  })

  it('moves no more than its budget out of mostly dead packs in one run, the deadest first; the next run goes on', async () => {
    const store = await openStore('s', { packRewriteMaxBytes: 1 })
    const kept: Array<{ digest: Digest, data: Buffer }> = []
    // Two trees, each a one-chunk file that stays and a big one that goes; the second's big file
    // is twice the size, so its packs are the deader.
    for (const [i, bigChunks] of [[1, 9], [2, 19]] as const) {
      const data = randomBytes(CHUNK)
      await fs.mkdir(path.join(dir, `tree${i}`))
      await fs.writeFile(path.join(dir, `tree${i}/small`), data)
      await fs.writeFile(path.join(dir, `tree${i}/big`), randomBytes(bigChunks * CHUNK))
      await store.ingest(path.join(dir, `tree${i}`))
      await fs.writeFile(path.join(dir, `small${i}`), data)
      kept.push({ digest: (await store.ingest(path.join(dir, `small${i}`))).digest, data })
    }
    const place = async (i: number): Promise<string> => {
      const [body] = await bodiesOf(store, kept[i]!.digest)
      return `${body!.file}@${body!.offset}`
    }
    const first = [await place(0), await place(1)]
    await store.gc(kept.map(k => k.digest))
    expect(await place(1)).not.toBe(first[1])
    expect(await place(0)).toBe(first[0])
    await store.gc(kept.map(k => k.digest))
    expect(await place(0)).not.toBe(first[0])
    expect(await packBytes(path.join(dir, 's'))).toBe(2 * CHUNK)
    for (const [i, k] of kept.entries()) {
      await store.materialize(k.digest, path.join(dir, `out${i}`))
      expect((await fs.readFile(path.join(dir, `out${i}`))).equals(k.data)).toBe(true)
    }
  })

  it('drains a pack with more live bytes than its budget a part at a time, and deletes it when the last part moves', async () => {
    const store = await openStore('s', { packRewriteMaxBytes: 2 * CHUNK })
    // An adopted output of ten chunks: one pack of its own.
    const data = randomBytes(10 * CHUNK)
    await fs.writeFile(path.join(dir, 'model'), data)
    await store.ingest(path.join(dir, 'model'), { adopt: true })
    const [adopted] = await fs.readdir(path.join(dir, 's', 'packs'))
    // Another artifact made of its first four chunks keeps those alive when the model goes.
    await fs.writeFile(path.join(dir, 'head'), data.subarray(0, 4 * CHUNK))
    const head = await store.ingest(path.join(dir, 'head'))
    const inAdopted = async (): Promise<number> => (await bodiesOf(store, head.digest)).filter(b => path.basename(b.file) === adopted).length
    expect(await inAdopted()).toBe(4)
    await store.gc([head.digest])
    // Two chunks moved, within the budget; the pack stays for the other two.
    expect(await inAdopted()).toBe(2)
    expect(await packBytes(path.join(dir, 's'))).toBe(12 * CHUNK)
    await store.gc([head.digest])
    expect(await inAdopted()).toBe(0)
    expect(await fs.readdir(path.join(dir, 's', 'packs'))).not.toContain(adopted)
    expect(await packBytes(path.join(dir, 's'))).toBe(4 * CHUNK)
    await store.materialize(head.digest, path.join(dir, 'head-back'))
    expect((await fs.readFile(path.join(dir, 'head-back'))).equals(data.subarray(0, 4 * CHUNK))).toBe(true)
  })

  it('waits for an ingest in flight instead of collecting its chunks', async () => {
    const store = await openStore('s')
    const reference = await openStore('ref')
    const data = randomBytes(8 * 1024 * KiB)
    await fs.writeFile(path.join(dir, 'f'), data)
    const { digest } = await reference.ingest(path.join(dir, 'f'))
    let gc: Promise<unknown> | undefined
    const ingest = store.ingest(path.join(dir, 'f'), { onProgress: b => { if (b >= data.length / 2) gc ??= store.gc([digest]) } })
    await ingest
    await gc
    expect(gc).toBeDefined()
    await store.materialize(digest, path.join(dir, 'out'))
    expect((await fs.readFile(path.join(dir, 'out'))).equals(data)).toBe(true)
  })

  it('dropRoots removes only the listed roots made before the cut-off, and what only they reached', async () => {
    const store = await openStore('s')
    const shared = randomBytes(2 * CHUNK)
    await fs.writeFile(path.join(dir, 'old'), Buffer.concat([shared, randomBytes(CHUNK)]))
    await fs.writeFile(path.join(dir, 'other'), Buffer.concat([shared, randomBytes(CHUNK)]))
    await fs.writeFile(path.join(dir, 'fresh'), randomBytes(CHUNK))
    const old = await store.ingest(path.join(dir, 'old'))
    const other = await store.ingest(path.join(dir, 'other'))
    const cutoff = Date.now() + 1
    while (Date.now() <= cutoff) await new Promise(resolve => setTimeout(resolve, 1))
    const fresh = await store.ingest(path.join(dir, 'fresh'))
    // `fresh` is listed too, but was made after the cut-off: the coordinator cannot know of it yet.
    const report = await store.dropRoots([old.digest, fresh.digest], cutoff)
    expect(report.removedRoots).toEqual([old.digest])
    // Its one chunk of its own is no longer indexed; the disk it takes is freed when its pack,
    // 4 of whose 7 bodies are still live, is mostly dead and gets rewritten.
    expect(report).toMatchObject({ removedArtifacts: 1, removedChunks: 1, freedBytes: 0 })
    expect(await store.has(old.digest)).toBe(false)
    expect(await store.has(other.digest)).toBe(true)
    expect(await store.has(fresh.digest)).toBe(true)
    await store.materialize(other.digest, path.join(dir, 'out'))
    expect((await fs.readFile(path.join(dir, 'out'))).subarray(0, 2 * CHUNK).equals(shared)).toBe(true)
  })

  it('does not collect a manifest a transfer is still filling', async () => {
    const a = await openStore('a')
    const b = await openStore('b')
    await fs.writeFile(path.join(dir, 'f'), randomBytes(2 * CHUNK))
    const ref = await a.ingest(path.join(dir, 'f'))
    await b.putManifestBytes(ref.digest, (await a.getManifestBytes(ref.digest))!)
    const [c1] = await b.missingChunks(ref.digest)
    await b.writeChunk(c1!.digest, await a.readChunk(c1!.digest))
    await b.gc([])
    expect(await b.getManifestBytes(ref.digest)).toBeDefined()
    expect(await b.hasChunk(c1!.digest)).toBe(true)
  })
})

describe('errors', () => {
  it('says which store is in use when it is opened twice', async () => {
    await openStore('s')
    await expect(ContentStore.open(path.join(dir, 's'))).rejects.toMatchObject({
      code: 'CONFLICT', message: expect.stringContaining(path.join(dir, 's')) as unknown
    })
  })
})
