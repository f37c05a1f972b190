import { mkdtemp, readFile, rm, stat, writeFile, chmod } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { PipemeshError } from '../../../src/errors.js'
import { IDENTITY_FILE, loadOrCreatePrivateKey } from '../../../src/net/identity.js'

let dir: string
beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'pm-identity-')) })
afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

describe('loadOrCreatePrivateKey', () => {
  it('creates an Ed25519 key readable by its owner only, and returns the same identity on every start', async () => {
    const dataDir = join(dir, 'nested', 'data')
    const first = await loadOrCreatePrivateKey(dataDir)
    expect(first.type).toBe('Ed25519')
    const info = await stat(join(dataDir, IDENTITY_FILE))
    expect(info.mode & 0o777).toBe(0o600)

    const again = await loadOrCreatePrivateKey(dataDir)
    expect(peerIdFromPrivateKey(again).toString()).toBe(peerIdFromPrivateKey(first).toString())
  })

  it('tightens a key file that others can read', async () => {
    const key = await loadOrCreatePrivateKey(dir)
    await chmod(join(dir, IDENTITY_FILE), 0o644)
    const again = await loadOrCreatePrivateKey(dir)
    expect((await stat(join(dir, IDENTITY_FILE))).mode & 0o777).toBe(0o600)
    expect(peerIdFromPrivateKey(again).equals(peerIdFromPrivateKey(key))).toBe(true)
  })

  it('refuses a corrupt key file with its path, and leaves it in place', async () => {
    const path = join(dir, IDENTITY_FILE)
    await writeFile(path, 'not a key', { mode: 0o600 })
    const err = await loadOrCreatePrivateKey(dir).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(PipemeshError)
    expect((err as PipemeshError).message).toContain(path)
    expect((err as PipemeshError).hint).toMatch(/new identity/)
    expect(await readFile(path, 'utf8')).toBe('not a key')
  })

  it('gives processes starting at once the same identity', async () => {
    const keys = await Promise.all([1, 2, 3, 4].map(async () => await loadOrCreatePrivateKey(dir)))
    const ids = new Set(keys.map(k => peerIdFromPrivateKey(k).toString()))
    expect(ids.size).toBe(1)
  })
})
