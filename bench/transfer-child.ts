// Child process of the T1 baselines (see baselines.ts): `recv tcp|tls BYTES [CERTDIR]` listens on
// 127.0.0.1 and prints {"port"}, then a report once BYTES arrived; `send tcp|tls BYTES PORT
// [CERTDIR]` streams BYTES in 1 MiB writes, waiting for 'drain' so memory stays bounded.
// `recv libp2p BYTES` / `send libp2p BYTES MULTIADDR` do the same over one libp2p stream, with the
// node pipemesh's agents use (tcp + noise + yamux, src/net/node.ts) and no store: the transport's
// own share of the mesh's T1.

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

const PROTOCOL = '/pipemesh-bench/t1/1.0.0'

async function libp2pNode (): Promise<import('@libp2p/interface').Libp2p> {
  await import('../src/util/polyfill.js')
  const { createNode } = await import('../src/net/node.js')
  const { generateKeyPair } = await import('@libp2p/crypto/keys')
  return await createNode({ privateKey: await generateKeyPair('Ed25519') })
}

async function receiveLibp2p (expected: number): Promise<void> {
  const node = await libp2pNode()
  await node.handle(PROTOCOL, async (stream) => {
    let bytes = 0
    let start = 0
    for await (const chunk of stream) {
      if (start === 0) start = performance.now()
      bytes += chunk.byteLength
    }
    report(bytes, performance.now() - start)
    await stream.close().catch(() => {})
    await node.stop()
  })
  process.stdout.write(JSON.stringify({ multiaddr: node.getMultiaddrs()[0]?.toString(), expected }) + '\n')
}

async function sendLibp2p (total: number, target: string): Promise<void> {
  const { multiaddr } = await import('@multiformats/multiaddr')
  const node = await libp2pNode()
  const buffer = randomFillSync(Buffer.alloc(WRITE_BYTES))
  const start = performance.now()
  const stream = await node.dialProtocol(multiaddr(target), PROTOCOL)
  let sent = 0
  while (sent < total) {
    const n = Math.min(WRITE_BYTES, total - sent)
    sent += n
    // send() always queues; past its high-water mark wait for 'drain' (not onDrain(): see
    // shared/notes/platform.md).
    if (!stream.send(n === WRITE_BYTES ? buffer : buffer.subarray(0, n))) {
      await new Promise<void>(resolve => { stream.addEventListener('drain', () => { resolve() }, { once: true }) })
    }
  }
  await stream.close()
  // close() resolves once the stream has handed its data to the connection, not once the data
  // left this process: stopping the node now cut the last MiB off about one run in fifteen. The
  // receiver closes its side when it has counted everything; that end is what we wait for.
  for await (const _ of stream) { /* the receiver sends nothing */ }
  report(sent, performance.now() - start)
  await node.stop()
}

const [mode, kind, bytesArg, ...rest] = process.argv.slice(2)
const bytes = Number(bytesArg)
if ((kind !== 'tcp' && kind !== 'tls' && kind !== 'libp2p') || !Number.isSafeInteger(bytes) || bytes <= 0) {
  process.stderr.write('usage: transfer-child recv|send tcp|tls|libp2p BYTES [PORT|MULTIADDR] [CERTDIR]\n')
  process.exit(2)
}
const fail = (err: unknown): void => { process.stderr.write(`${mode ?? ''} libp2p: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`); process.exit(1) }
if (kind === 'libp2p' && mode === 'recv') receiveLibp2p(bytes).catch(fail)
else if (kind === 'libp2p' && mode === 'send') sendLibp2p(bytes, rest[0] ?? '').catch(fail)
else if (mode === 'recv') receive(kind, bytes, rest[0])
else if (mode === 'send') send(kind, bytes, Number(rest[0]), rest[1])
else { process.stderr.write(`unknown mode ${mode ?? ''}\n`); process.exit(2) }
