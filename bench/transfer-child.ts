// Child process of the T1 baselines (see baselines.ts): `recv tcp|tls BYTES [CERTDIR]` listens on
// 127.0.0.1 and prints {"port"}, then a report once BYTES arrived; `send tcp|tls BYTES PORT
// [CERTDIR]` streams BYTES in 1 MiB writes, waiting for 'drain' so memory stays bounded.

import { randomFillSync } from 'node:crypto'
import { readFileSync } from 'node:fs'
import net from 'node:net'
import { join } from 'node:path'
import tls from 'node:tls'

export interface TransferReport { bytes: number, ms: number, maxRssBytes: number }

const WRITE_BYTES = 1024 * 1024

function report (bytes: number, ms: number): void {
  const out: TransferReport = { bytes, ms, maxRssBytes: process.resourceUsage().maxRSS * 1024 }
  process.stdout.write(JSON.stringify(out) + '\n')
}

function receive (kind: string, expected: number, certDir: string | undefined): void {
  const onSocket = (socket: net.Socket): void => {
    let bytes = 0
    let start = 0
    socket.on('data', (chunk: Buffer) => {
      if (start === 0) start = performance.now()
      bytes += chunk.length
    })
    socket.on('end', () => {
      report(bytes, performance.now() - start)
      socket.end()
      server.close()
    })
    socket.on('error', err => { process.stderr.write(`receiver: ${err.message}\n`); process.exit(1) })
  }
  const server: net.Server = kind === 'tls'
    ? tls.createServer({ key: readFileSync(join(certDir!, 'key.pem')), cert: readFileSync(join(certDir!, 'cert.pem')) }, onSocket)
    : net.createServer(onSocket)
  server.listen(0, '127.0.0.1', () => {
    const address = server.address()
    if (address === null || typeof address === 'string') throw new Error('no TCP address')
    process.stdout.write(JSON.stringify({ port: address.port, expected }) + '\n')
  })
}

function send (kind: string, total: number, port: number, certDir: string | undefined): void {
  const buffer = randomFillSync(Buffer.alloc(WRITE_BYTES))
  const start = performance.now()
  const socket: net.Socket = kind === 'tls'
    ? tls.connect({ host: '127.0.0.1', port, ca: readFileSync(join(certDir!, 'cert.pem')), servername: 'localhost' })
    : net.connect({ host: '127.0.0.1', port })
  let sent = 0
  const pump = (): void => {
    while (sent < total) {
      const n = Math.min(WRITE_BYTES, total - sent)
      sent += n
      if (!socket.write(n === WRITE_BYTES ? buffer : buffer.subarray(0, n))) {
        socket.once('drain', pump)
        return
      }
    }
    socket.end()
  }
  socket.once(kind === 'tls' ? 'secureConnect' : 'connect', pump)
  socket.on('error', err => { process.stderr.write(`sender: ${err.message}\n`); process.exit(1) })
  socket.on('close', () => { report(sent, performance.now() - start) })
  socket.resume()
}

const [mode, kind, bytesArg, ...rest] = process.argv.slice(2)
const bytes = Number(bytesArg)
if ((kind !== 'tcp' && kind !== 'tls') || !Number.isSafeInteger(bytes) || bytes <= 0) {
  process.stderr.write('usage: transfer-child recv|send tcp|tls BYTES [PORT] [CERTDIR]\n')
  process.exit(2)
}
if (mode === 'recv') receive(kind, bytes, rest[0])
else if (mode === 'send') send(kind, bytes, Number(rest[0]), rest[1])
else { process.stderr.write(`unknown mode ${mode ?? ''}\n`); process.exit(2) }
