// The systems pipemesh is compared with, measured in the same run: GNU make -j2 (W0–W6), `cp`
// (S1), and for T1 a 1 GiB stream between two processes over raw TCP and over node:tls. The T1
// functions need nothing from pipemesh; the mesh variant's agent-to-agent figure goes next to them.

import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { mkdtemp, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ensureOk, lastJsonLine, timed } from './exec.js'
import type { TransferReport } from './transfer-child.js'

export interface MakeRun {
  ms: number
  /** Recipe lines make printed (it echoes each command it runs), e.g. "sh mid_2.sh …" or "true". */
  recipes: string[]
}

/** `make -j2` in `dir`; a non-zero exit throws. */
export async function runMake (dir: string, target?: string): Promise<MakeRun> {
  const args = ['-j2', '--no-print-directory', ...target === undefined ? [] : [target]]
  const result = ensureOk('make -j2', await timed('make', args, { cwd: dir, timeoutMs: 120_000 }))
  const recipes = result.stdout.split('\n').filter(line => line !== '' && !line.startsWith('make'))
  return { ms: result.ms, recipes }
}

/** `cp src dest`, wall time in ms. */
export async function runCp (src: string, dest: string): Promise<number> {
  return ensureOk('cp', await timed('cp', [src, dest], { timeoutMs: 300_000 })).ms
}

/** Flushes dirty pages so that one measurement's writeback does not slow the next one down. */
export async function sync (): Promise<void> {
  await timed('sync', [], { timeoutMs: 120_000 })
}

/** Raw TCP, TLS 1.3, or one libp2p stream (tcp + noise + yamux, as the agents build it). */
export type TransferKind = 'tcp' | 'tls' | 'libp2p'

export interface TransferResult {
  kind: TransferKind
  bytes: number
  /** Receiver's view: from the connection's first byte to its end. */
  ms: number
  mibPerSec: number
  senderMaxRssBytes: number
  receiverMaxRssBytes: number
}

const CHILD = fileURLToPath(new URL('./transfer-child.js', import.meta.url))

/** A self-signed certificate for 127.0.0.1, for the node:tls baseline. Needs the openssl CLI. */
export async function makeTlsCert (scratch: string): Promise<string> {
  const dir = await mkdtemp(join(scratch, 'tls-'))
  try {
    ensureOk('openssl req', await timed('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=localhost', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')
    ], { timeoutMs: 30_000 }))
  } catch (err) {
    await rm(dir, { recursive: true, force: true })
    throw err
  }
  return dir
}

/**
 * Streams `bytes` from one process to another over 127.0.0.1 (raw TCP, TLS 1.3 with the cert in
 * `certDir`, or one libp2p stream), in 1 MiB writes with backpressure. Both processes are started here and report
 * their own peak RSS.
 */
export async function transferBaseline (kind: TransferKind, bytes: number, certDir?: string): Promise<TransferResult> {
  const tlsArgs = kind === 'tls' ? [certDir ?? ''] : []
  if (kind === 'tls' && certDir === undefined) throw new Error('the node:tls baseline needs a certificate directory (makeTlsCert)')
  const receiver = spawn(process.execPath, [CHILD, 'recv', kind, String(bytes), ...tlsArgs], { stdio: ['ignore', 'pipe', 'pipe'] })
  try {
    const lines = createInterface({ input: receiver.stdout })[Symbol.asyncIterator]()
    const stderr: Buffer[] = []
    receiver.stderr.on('data', (b: Buffer) => stderr.push(b))
    const first = await lines.next()
    if (first.done === true) throw new Error(`T1 ${kind} receiver exited before listening: ${Buffer.concat(stderr).toString().trim()}`)
    const { port, multiaddr } = JSON.parse(first.value) as { port?: number, multiaddr?: string }
    const target = kind === 'libp2p' ? multiaddr ?? '' : String(port)
    const sending = timed(process.execPath, [CHILD, 'send', kind, String(bytes), target, ...tlsArgs], { timeoutMs: 300_000 })
    const reportLine = await lines.next()
    const sender = ensureOk(`T1 ${kind} sender`, await sending)
    if (reportLine.done === true) throw new Error(`T1 ${kind} receiver exited without a report: ${Buffer.concat(stderr).toString().trim()}`)
    const received = JSON.parse(reportLine.value) as TransferReport
    const sent = lastJsonLine<TransferReport>(`T1 ${kind} sender`, sender.stdout)
    if (received.bytes !== bytes) throw new Error(`T1 ${kind}: received ${received.bytes} bytes, expected ${bytes}`)
    return {
      kind,
      bytes,
      ms: received.ms,
      mibPerSec: bytes / 1048576 / (received.ms / 1000),
      senderMaxRssBytes: sent.maxRssBytes,
      receiverMaxRssBytes: received.maxRssBytes
    }
  } finally {
    if (receiver.exitCode === null) receiver.kill('SIGKILL')
  }
}
