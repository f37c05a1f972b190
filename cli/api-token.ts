// Reading credentials without leaking them: API token files and secret values from stdin.

import { readFile, stat } from 'node:fs/promises'
import { PipemeshError } from '../src/errors.js'

/** Reads a bearer token file; refuses an empty one and warns about loose permissions. */
export async function readApiToken (file: string): Promise<string> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new PipemeshError('INVALID_ARGUMENT', `cannot read the API token file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
  }
  const token = text.trim()
  if (token.length < 16) throw new PipemeshError('INVALID_ARGUMENT', `the API token in ${file} is ${token.length === 0 ? 'empty' : 'too short'}: use at least 16 random characters, e.g. \`openssl rand -hex 32 > ${file}\``)
  const mode = (await stat(file)).mode & 0o077
  if (mode !== 0) process.stderr.write(`warning: ${file} is readable by other users (chmod 600 ${file})\n`)
  return token
}

/** A secret's value from standard input (piped), or typed at a prompt without echo. */
export async function readSecretValue (name: string): Promise<string> {
  const chunks: Buffer[] = []
  if (process.stdin.isTTY === true) {
    process.stderr.write(`value for ${name} (input hidden, end with Enter): `)
    process.stdin.setRawMode(true)
    const value = await new Promise<string>((resolve) => {
      let text = ''
      const onData = (data: Buffer): void => {
        for (const ch of data.toString('utf8')) {
          if (ch === '\r' || ch === '\n') { process.stdin.off('data', onData); resolve(text); return }
          if (ch === '\u0003') process.exit(130)
          text = ch === '\u007f' ? text.slice(0, -1) : text + ch
        }
      }
      process.stdin.on('data', onData)
    })
    process.stdin.setRawMode(false)
    process.stdin.pause()
    process.stderr.write('\n')
    return value
  }
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  const value = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
  if (value === '') throw new PipemeshError('INVALID_ARGUMENT', `no value for secret ${name} on standard input (e.g. \`printf %s "$TOKEN" | pipemesh secret set ${name}\`)`)
  return value
}
