// The HTTP API: loopback by default; beyond loopback only with a bearer token, which every
// request must then carry.

import { describe, expect, it } from 'vitest'
import { writeFile } from 'node:fs/promises'
import { request } from 'node:http'
import { join } from 'node:path'
import { execa } from 'execa'
import { CLI, runCli, tempDir } from '../helpers/cli.js'
import { waitFor } from '../helpers/wait.js'

describe('the coordinator HTTP API', () => {
  it('refuses to listen beyond loopback without a token', async () => {
    const work = await tempDir()
    try {
      const result = await runCli(['--data', work.path, 'coordinator', '--api', '0.0.0.0:0'], { timeoutMs: 30_000 })
      expect(result.exitCode).toBe(2)
      expect(result.stderr).toMatch(/without a bearer token/)
      expect(result.stderr).toMatch(/--api-token-file/)
    } finally {
      await work.cleanup()
    }
  })

  it('bound beyond loopback, refuses requests without the token and accepts them with it', async () => {
    const work = await tempDir()
    const tokenFile = join(work.path, 'api.token')
    const token = 'c0ffee'.repeat(8)
    await writeFile(tokenFile, token + '\n', { mode: 0o600 })
    const proc = execa(process.execPath, [CLI, '--data', join(work.path, 'c'), 'coordinator', '--api', '0.0.0.0:0', '--api-token-file', tokenFile], { reject: false, all: true, stdin: 'ignore' })
    let out = ''
    proc.all?.on('data', (d: Buffer) => { out += d.toString() })
    try {
      const port = await waitFor('the coordinator to print its API address', () => /http api:\s+http:\/\/[^:]+:(\d+)/.exec(out)?.[1], 30_000, () => out)
      // Traffic stays on loopback even though the API listens on every address.
      const url = `http://127.0.0.1:${port}`
      const anonymous = await fetch(`${url}/v1/runs`)
      expect(anonymous.status).toBe(401)
      expect((await anonymous.json() as { error: { code: string } }).error.code).toBe('UNAUTHORIZED')
      const wrong = await fetch(`${url}/v1/runs`, { headers: { authorization: 'Bearer nope' } })
      expect(wrong.status).toBe(401)
      const right = await fetch(`${url}/v1/runs`, { headers: { authorization: `Bearer ${token}` } })
      expect(right.status).toBe(200)
      const cli = await runCli(['runs', '--coordinator', url, '--json'], { env: { PIPEMESH_API_TOKEN: token } })
      expect(cli.exitCode, cli.stderr).toBe(0)
      const noToken = await runCli(['runs', '--coordinator', url])
      expect(noToken.exitCode).toBe(1)
      expect(noToken.stderr).toMatch(/bearer token/)
      // A body over the 16 MiB limit is refused from its declared length, before it is read. (The
      // client only announces it: sending 17 MiB races the 413 and the server's close, and the
      // writer may see EPIPE before it reads the answer.)
      expect(await postStatusAnnouncing(`${url}/v1/runs`, 17 * 1024 * 1024, token)).toBe(413)
    } finally {
      proc.kill('SIGKILL')
      await proc
      await work.cleanup()
    }
  })
})

/** POSTs headers declaring a JSON body of `length` bytes, sends none of it, and returns the status of the answer. */
async function postStatusAnnouncing (url: string, length: number, token: string): Promise<number> {
  return await new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': length } })
    req.on('response', (res) => { resolve(res.statusCode ?? 0); res.resume(); req.destroy() })
    req.on('error', reject)
    req.flushHeaders()
  })
}
