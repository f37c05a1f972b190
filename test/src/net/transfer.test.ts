import { createHash, randomBytes } from 'node:crypto'
import { mkdir, open, readdir, readFile, symlink, truncate, writeFile } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Libp2p } from '@libp2p/interface'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { CorruptContentError, MissingContentError } from '../../../src/errors.js'
import { createNode } from '../../../src/net/node.js'
import { CHUNKS_PROTOCOL, fetchArtifact, serveArtifacts, transferStats, type Holder, type ServableStore } from '../../../src/net/transfer.js'
import { FrameStream } from '../../../src/protocol/channel.js'
import { ContentStore } from '../../../src/store/content-store.js'
import type { ArtifactRef, Digest } from '../../../src/store/types.js'
import { bodiesOf, describeTree, removeDir, tempDir } from '../store/helpers.js'

const MiB = 1024 * 1024

interface Peer { node: Libp2p, store: ContentStore, id: string, holder: Holder }
let dir: string
let peers: Peer[]
beforeEach(async () => { dir = await tempDir('pm-transfer-'); peers = [] })
afterEach(async () => {
  await Promise.all(peers.map(async p => { await p.node.stop(); await p.store.close() }))
  await removeDir(dir)
})

async function peer (name: string): Promise<Peer> {
  const node = await createNode({ privateKey: await generateKeyPair('Ed25519') })
  const store = await ContentStore.open(join(dir, name))
  const id = node.peerId.toString()
  const p = { node, store, id, holder: { peerId: id, addrs: node.getMultiaddrs().map(String) } }
  peers.push(p)
  return p
}

async function writeRandomFile (name: string, bytes: number): Promise<string> {
  const path = join(dir, name)
  await writeFile(path, randomBytes(bytes))
  return path
}

async function holderWith (name: string, source: string, store?: ServableStore): Promise<{ p: Peer, ref: ArtifactRef }> {
  const p = await peer(name)
  const ref = await p.store.ingest(source)
  await serveArtifacts(p.node, store ?? p.store)
  return { p, ref }
}

async function sha (path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex')
}

async function materialized (p: Peer, digest: Digest): Promise<string> {
  const out = join(dir, `out-${p.id.slice(-6)}-${digest.slice(7, 15)}`)
  await p.store.materialize(digest, out)
  return out
}

describe('artifact transfer', () => {
  it('moves a multi-MiB file byte for byte and counts who served it', async () => {
    const src = await writeRandomFile('big.bin', 6 * MiB + 12345)
    const { p: a, ref } = await holderWith('a', src)
    const b = await peer('b')
    const progress: number[] = []
    const result = await fetchArtifact(b.node, b.store, ref.digest, [a.holder], { onProgress: p => progress.push(p.bytes) })

    expect(result.bytes).toBe(ref.size)
    expect(result.fromPeers).toEqual({ [a.id]: ref.size })
    expect(progress.at(-1)).toBe(ref.size)
    expect(await b.store.has(ref.digest)).toBe(true)
    expect(await sha(await materialized(b, ref.digest))).toBe(await sha(src))
    expect(result.manifestBytes).toBeGreaterThan(0)
    const moved = ref.size + result.manifestBytes
    expect(transferStats(a.node).servedTo(b.id)).toBe(moved)
    expect(transferStats(b.node).fetchedFrom(a.id)).toBe(moved)
    expect(transferStats(b.node).bytesServed).toBe(0)

    // Already held: nothing moves.
    const again = await fetchArtifact(b.node, b.store, ref.digest, [a.holder])
    expect(again).toEqual({ bytes: 0, manifestBytes: 0, fromPeers: {} })
    expect(transferStats(a.node).servedTo(b.id)).toBe(moved)
  })

  it('moves a tree with directories, an executable and a symlink', async () => {
    const tree = join(dir, 'tree')
    await mkdir(join(tree, 'sub', 'deeper'), { recursive: true })
    await writeFile(join(tree, 'sub', 'deeper', 'weights.bin'), randomBytes(3 * MiB))
    await writeFile(join(tree, 'run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 })
    await writeFile(join(tree, 'empty.txt'), '')
    await writeFile(join(tree, 'sub', 'same-as-run.sh'), '#!/bin/sh\necho hi\n')
    await symlink('sub/deeper/weights.bin', join(tree, 'link'))
    await mkdir(join(tree, 'empty-dir'))
    const { p: a, ref } = await holderWith('a', tree)
    expect(ref.kind).toBe('tree')
    const b = await peer('b')
    const result = await fetchArtifact(b.node, b.store, ref.digest, [a.holder])
    expect(result.bytes).toBeGreaterThanOrEqual(3 * MiB)
    expect(await describeTree(await materialized(b, ref.digest))).toEqual(await describeTree(tree))
  })

  it('splits the chunks between two holders and counts both', async () => {
    const src = await writeRandomFile('shared.bin', 24 * MiB)
    const { p: a, ref } = await holderWith('a', src)
    const { p: c } = await holderWith('c', src)
    const b = await peer('b')
    const result = await fetchArtifact(b.node, b.store, ref.digest, [a.holder, c.holder])
    expect(result.fromPeers[a.id]).toBeGreaterThan(0)
    expect(result.fromPeers[c.id]).toBeGreaterThan(0)
    expect(result.fromPeers[a.id]! + result.fromPeers[c.id]!).toBe(ref.size)
    expect(transferStats(a.node).servedTo(b.id) + transferStats(c.node).servedTo(b.id)).toBe(ref.size + result.manifestBytes)
    expect(await sha(await materialized(b, ref.digest))).toBe(await sha(src))
  })

  it('drops a holder that sends wrong bytes and takes its share from another', async () => {
    const src = await writeRandomFile('file.bin', 8 * MiB)
    const liarStoreOf = (store: ContentStore): ServableStore => ({
      getManifestBytes: async d => await store.getManifestBytes(d),
      readChunk: async d => { const bytes = Buffer.from(await store.readChunk(d)); bytes[100] = bytes[100]! ^ 0xff; return bytes },
      // Told of the bad bytes, it says its copy is fine.
      checkChunk: async () => 'ok'
    })
    const liar = await peer('liar')
    const ref = await liar.store.ingest(src)
    await serveArtifacts(liar.node, liarStoreOf(liar.store))
    const { p: honest } = await holderWith('honest', src)

    const b = await peer('b')
    const result = await fetchArtifact(b.node, b.store, ref.digest, [liar.holder, honest.holder])
    expect(result.fromPeers[liar.id]).toBeUndefined()
    expect(result.fromPeers[honest.id]).toBe(ref.size)
    expect(await sha(await materialized(b, ref.digest))).toBe(await sha(src))

    const d = await peer('d')
    const err = await fetchArtifact(d.node, d.store, ref.digest, [liar.holder]).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(CorruptContentError)
    expect((err as Error).message).toContain(liar.id)
    expect(await d.store.has(ref.digest)).toBe(false)
  })

  it('a holder told that a chunk it sent rotted on its disk quarantines it; another holder supplies it', async () => {
    const src = await writeRandomFile('file.bin', 4 * MiB)
    const { p: a, ref } = await holderWith('a', src)
    const { p: c } = await holderWith('c', src)
    // Corrupt one chunk body on a's disk.
    const [victim] = await bodiesOf(a.store, ref.digest)
    const fh = await open(victim!.file, 'r+')
    try {
      const first = Buffer.alloc(1)
      await fh.read(first, 0, 1, victim!.offset)
      await fh.write(Buffer.from([first[0]! ^ 0xff]), 0, 1, victim!.offset)
    } finally {
      await fh.close()
    }
    const victimDigest = victim!.digest
    expect(await a.store.hasChunk(victimDigest)).toBe(true)

    // a sends the body as it is on disk; the peer refuses it and tells a, which checks its copy
    // and quarantines it before the fetch fails.
    const alone = await peer('alone')
    const err = await fetchArtifact(alone.node, alone.store, ref.digest, [a.holder]).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(CorruptContentError)
    expect((err as Error).message).toContain(victimDigest)
    expect((err as Error).message).toContain(a.id)
    expect(await a.store.hasChunk(victimDigest)).toBe(false)
    expect((await readdir(join(a.store.dir, 'quarantine'))).filter(f => f.startsWith(victimDigest.slice(7)))).toHaveLength(1)
    expect(await alone.store.hasChunk(victimDigest)).toBe(false)

    const b = await peer('b')
    const result = await fetchArtifact(b.node, b.store, ref.digest, [a.holder, c.holder], { parallel: 1 })
    expect(result.fromPeers[a.id]).toBe(ref.size - MiB)
    expect(result.fromPeers[c.id]).toBe(MiB)
    expect(await sha(await materialized(b, ref.digest))).toBe(await sha(src))
  })

  it('a holder never sends a body cut short: it quarantines it and says it lacks it', async () => {
    const src = await writeRandomFile('file.bin', 3 * MiB)
    const { p: a, ref } = await holderWith('a', src)
    // The pack ends 1000 bytes into the body written last (a crash before writeback).
    const victim = (await bodiesOf(a.store, ref.digest)).sort((x, y) => y.offset - x.offset)[0]!
    await truncate(victim.file, victim.offset + 1000)
    const victimDigest = victim.digest

    const b = await peer('b')
    const err = await fetchArtifact(b.node, b.store, ref.digest, [a.holder]).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(MissingContentError)
    expect((err as Error).message).toContain(victimDigest)
    expect(await a.store.hasChunk(victimDigest)).toBe(false)
    expect((await readdir(join(a.store.dir, 'quarantine'))).filter(f => f.startsWith(victimDigest.slice(7)))).toHaveLength(1)
  })

  it('resumes an interrupted transfer, fetching only the chunks still missing', async () => {
    const src = await writeRandomFile('resume.bin', 32 * MiB)
    const { p: a, ref } = await holderWith('a', src)
    const b = await peer('b')
    const controller = new AbortController()
    const first = await fetchArtifact(b.node, b.store, ref.digest, [a.holder], {
      signal: controller.signal,
      onProgress: p => { if (p.bytes >= 8 * MiB) controller.abort() }
    }).catch((e: unknown) => e)
    expect(first).toMatchObject({ code: 'CANCELLED' })
    const missing = await b.store.missingChunks(ref.digest)
    const missingBytes = missing.reduce((n, c) => n + c.size, 0)
    expect(missingBytes).toBeLessThan(ref.size - 8 * MiB + 1)
    expect(missingBytes).toBeGreaterThan(0)

    const second = await fetchArtifact(b.node, b.store, ref.digest, [a.holder])
    expect(second.bytes).toBe(missingBytes)
    expect(second.manifestBytes).toBe(0)
    expect(await sha(await materialized(b, ref.digest))).toBe(await sha(src))
  })

  it('refuses peers that serveArtifacts is told not to serve', async () => {
    const src = await writeRandomFile('secret.bin', 2 * MiB)
    const a = await peer('a')
    const ref = await a.store.ingest(src)
    const b = await peer('b')
    const member = await peer('member')
    await serveArtifacts(a.node, a.store, { authorize: id => id === member.id })

    const err = await fetchArtifact(b.node, b.store, ref.digest, [a.holder]).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(MissingContentError)
    expect((err as Error).message).toMatch(/may not fetch artifacts/)
    expect(await b.store.getManifestBytes(ref.digest)).toBeUndefined()
    expect(transferStats(a.node).bytesServed).toBe(0)

    const ok = await fetchArtifact(member.node, member.store, ref.digest, [a.holder])
    expect(ok.bytes).toBe(ref.size)
  })

  it('resets a stream carrying a malformed request and keeps serving others', async () => {
    const src = await writeRandomFile('f.bin', MiB + 1)
    const { p: a, ref } = await holderWith('a', src)
    const b = await peer('b')
    const target = a.node.getMultiaddrs()[0]!
    const cases = [Buffer.from('not json'), Buffer.from(JSON.stringify({ type: 'chunks', digests: ['../../etc/passwd'] })), Buffer.alloc(200_000)]
    for (const frame of cases) {
      const frames = new FrameStream(await b.node.dialProtocol(target, CHUNKS_PROTOCOL), { maxFrameBytes: 1 << 20 })
      await frames.send(frame)
      await expect(frames.next()).rejects.toMatchObject({ code: 'UNREACHABLE' })
    }
    const result = await fetchArtifact(b.node, b.store, ref.digest, [a.holder])
    expect(result.bytes).toBe(ref.size)
  })

  it('says which artifact no holder has', async () => {
    const a = await peer('a')
    await serveArtifacts(a.node, a.store)
    const b = await peer('b')
    const unknown = `sha256:${'ab'.repeat(32)}` as Digest
    await expect(fetchArtifact(b.node, b.store, unknown, [a.holder])).rejects.toMatchObject({ code: 'MISSING_CONTENT', message: expect.stringContaining(unknown) })
    await expect(fetchArtifact(b.node, b.store, unknown, [])).rejects.toMatchObject({ code: 'MISSING_CONTENT', message: expect.stringContaining('no holder was given') })
  })
})
