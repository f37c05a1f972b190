// A node's persistent libp2p identity: an Ed25519 key kept in `<dataDir>/identity.key` (protobuf,
// as @libp2p/crypto marshals it), readable by its owner only. The peer id derived from it is how
// coordinator and agents recognize each other across restarts, so it is never silently replaced.

import { randomBytes } from 'node:crypto'
import { chmod, link, mkdir, open, readFile, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { PipemeshError } from '../errors.js'

export const IDENTITY_FILE = 'identity.key'

/**
 * Loads the node's key from `<dataDir>/identity.key`, creating it (mode 0600) on first start.
 * A key file readable by group or others is tightened to 0600; a corrupt one is an error,
 * never replaced, since a new key would be a new peer id that no enrolled peer recognizes.
 */
export async function loadOrCreatePrivateKey (dataDir: string): Promise<PrivateKey> {
  const path = join(dataDir, IDENTITY_FILE)
  const existing = await readKey(path)
  if (existing !== undefined) return existing

  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  const key = await generateKeyPair('Ed25519')
  // Written to a temporary name, flushed, then linked into place: a crash never leaves a torn
  // key file, and of two processes starting at once exactly one key wins (link fails on EEXIST).
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
  const handle = await open(tmp, 'wx', 0o600)
  try {
    await handle.writeFile(privateKeyToProtobuf(key))
    await handle.sync()
  } finally {
    await handle.close()
  }
  try {
    await link(tmp, path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    const winner = await readKey(path)
    if (winner !== undefined) return winner
    throw err
  } finally {
    await unlink(tmp).catch(() => {})
  }
  return key
}

async function readKey (path: string): Promise<PrivateKey | undefined> {
  let bytes: Buffer
  try {
    const info = await stat(path)
    if ((info.mode & 0o077) !== 0) await chmod(path, 0o600)
    bytes = await readFile(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  let key: PrivateKey
  try {
    key = privateKeyFromProtobuf(bytes)
  } catch (err) {
    throw corrupt(path, err instanceof Error ? err.message : String(err), err)
  }
  if (key.type !== 'Ed25519') throw corrupt(path, `it holds a ${key.type} key, expected Ed25519`)
  return key
}

function corrupt (path: string, detail: string, cause?: unknown): PipemeshError {
  return new PipemeshError('INVALID_ARGUMENT', `identity key ${path} is not a valid Ed25519 key: ${detail}`, {
    hint: 'restore the file from a backup; deleting it creates a new identity (a new peer id), which every peer must enroll again',
    cause
  })
}
