// Secrets for steps (API keys, tokens): set by an administrator, handed to the steps that list
// them as environment variables, and nowhere else. Values are encrypted at rest (AES-256-GCM)
// with a key kept beside the database with mode 0600, so a copied database alone reveals nothing.

import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { chmod, readFile, writeFile } from 'node:fs/promises'
import { Level } from 'level'
import { PipemeshError } from '../src/errors.js'

export const SECRET_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/
const MAX_SECRET_BYTES = 64 * 1024

interface StoredSecret { iv: string, tag: string, data: string, updatedAt: number }

export class SecretStore {
  private constructor (private readonly db: Level<string, StoredSecret>, private readonly key: Buffer) {}

  static async open (dir: string, keyFile: string): Promise<SecretStore> {
    const key = await loadOrCreateKey(keyFile)
    const db = new Level<string, StoredSecret>(dir, { valueEncoding: 'json' })
    await db.open()
    return new SecretStore(db, key)
  }

  async close (): Promise<void> {
    await this.db.close()
  }

  async set (name: string, value: string): Promise<void> {
    if (!SECRET_NAME.test(name)) throw new PipemeshError('INVALID_ARGUMENT', `secret name "${name}" must be an environment variable name (letters, digits, _; not starting with a digit)`)
    if (Buffer.byteLength(value) > MAX_SECRET_BYTES) throw new PipemeshError('LIMIT_EXCEEDED', `secret ${name} is larger than ${MAX_SECRET_BYTES} bytes`)
    if (value === '') throw new PipemeshError('INVALID_ARGUMENT', `secret ${name} is empty`)
    const iv = randomBytes(12)
    const cipher = createCipheriv('aes-256-gcm', this.key, iv)
    cipher.setAAD(Buffer.from(name))
    const data = Buffer.concat([cipher.update(value, 'utf8'), cipher.final()])
    await this.db.put(name, { iv: iv.toString('base64'), tag: cipher.getAuthTag().toString('base64'), data: data.toString('base64'), updatedAt: Date.now() })
  }

  async delete (name: string): Promise<boolean> {
    const existed = await this.db.get(name) !== undefined
    await this.db.del(name)
    return existed
  }

  /** Names and update times only: values never leave through listings. */
  async list (): Promise<Array<{ name: string, updatedAt: number }>> {
    const out: Array<{ name: string, updatedAt: number }> = []
    for await (const [name, value] of this.db.iterator()) out.push({ name, updatedAt: value.updatedAt })
    return out
  }

  /** The values of the named secrets; throws naming every one that is not set. */
  async resolve (names: string[]): Promise<Record<string, string>> {
    const out: Record<string, string> = {}
    const missing: string[] = []
    for (const name of names) {
      const stored = await this.db.get(name)
      if (stored === undefined) { missing.push(name); continue }
      const decipher = createDecipheriv('aes-256-gcm', this.key, Buffer.from(stored.iv, 'base64'))
      decipher.setAAD(Buffer.from(name))
      decipher.setAuthTag(Buffer.from(stored.tag, 'base64'))
      out[name] = Buffer.concat([decipher.update(Buffer.from(stored.data, 'base64')), decipher.final()]).toString('utf8')
    }
    if (missing.length > 0) {
      throw new PipemeshError('NOT_FOUND', `secret${missing.length > 1 ? 's' : ''} ${missing.join(', ')} not set on the coordinator`, { hint: `set with \`pipemesh secret set ${missing[0] ?? 'NAME'}\`` })
    }
    return out
  }
}

async function loadOrCreateKey (file: string): Promise<Buffer> {
  try {
    const key = await readFile(file)
    if (key.length !== 32) throw new PipemeshError('INTERNAL', `secret key file ${file} is damaged (expected 32 bytes, found ${key.length})`)
    await chmod(file, 0o600)
    return key
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    const key = randomBytes(32)
    await writeFile(file, key, { mode: 0o600, flag: 'wx' })
    return key
  }
}
