// Whom an agent deals with. It takes control messages only from the coordinator it enrolled with
// (verified by peer id in the Noise handshake), and serves chunks only to peers that coordinator
// lists as current members, or to a client it was told to let in for a while. Enrollment happens
// once, with a join token; the result is remembered in the data dir.

import { readFile, writeFile, rename } from 'node:fs/promises'
import { join } from 'node:path'
import type { Libp2p } from '@libp2p/interface'
import { PipemeshError } from '../src/errors.js'
import { ENROLL_PROTOCOL, MAX_ENROLL_MESSAGE_BYTES, enrollResponseSchema, type EnrollRequest, type EnrollResponse } from '../src/protocol/enroll.js'
import { request } from '../src/protocol/channel.js'

const ENROLLMENT_FILE = 'enrollment.json'

interface Enrollment { coordinator: string, enrolledAt: number }

export class Admission {
  private members = new Set<string>()
  private readonly grants = new Map<string, number>()

  constructor (readonly coordinator: string) {}

  /** The connection gater's question: may this peer connect at all? */
  allowConnection (peerId: string): boolean {
    return peerId === this.coordinator || this.mayFetch(peerId)
  }

  /** May this peer pull chunks from us? */
  mayFetch (peerId: string): boolean {
    if (this.members.has(peerId)) return true
    const until = this.grants.get(peerId)
    if (until === undefined) return false
    if (until > Date.now()) return true
    this.grants.delete(peerId)
    return false
  }

  /** Replaces the member list; returns the peers that lost access (to be disconnected). */
  setMembers (peers: string[]): string[] {
    const next = new Set(peers)
    const gone = [...this.members].filter(p => !next.has(p) && !this.mayFetchByGrant(p))
    this.members = next
    return gone
  }

  grant (peerId: string, ttlMs: number): void {
    this.grants.set(peerId, Math.max(this.grants.get(peerId) ?? 0, Date.now() + ttlMs))
  }

  private mayFetchByGrant (peerId: string): boolean {
    return (this.grants.get(peerId) ?? 0) > Date.now()
  }
}

/**
 * Makes sure this agent is enrolled with `coordinator`: true if it already was; otherwise
 * redeems `token` over the enroll protocol. Throws UNAUTHORIZED, saying what to do, when the
 * agent is not enrolled and has no token, or the coordinator refuses it.
 */
export async function ensureEnrolled (node: Libp2p, dataDir: string, coordinatorAddr: string, coordinator: string, options: { token?: string, name: string, signal?: AbortSignal }): Promise<void> {
  const file = join(dataDir, ENROLLMENT_FILE)
  const existing = await readFile(file, 'utf8').then(t => JSON.parse(t) as Enrollment, () => undefined)
  if (existing?.coordinator === coordinator) return
  if (options.token === undefined) {
    const why = existing === undefined ? 'is not enrolled with any coordinator' : `is enrolled with another coordinator (${existing.coordinator})`
    throw new PipemeshError('UNAUTHORIZED', `this agent ${why}: it needs a join token for ${coordinator}`, {
      hint: 'create one on the coordinator with `pipemesh token create --coordinator <url>` and pass it as --join <token>'
    })
  }
  const { multiaddr } = await import('@multiformats/multiaddr')
  let reply: EnrollResponse
  try {
    reply = await request<EnrollResponse, EnrollRequest>(node, multiaddr(coordinatorAddr), ENROLL_PROTOCOL, { token: options.token, name: options.name }, {
      inSchema: enrollResponseSchema,
      maxMessageBytes: MAX_ENROLL_MESSAGE_BYTES,
      timeoutMs: 15_000,
      ...(options.signal === undefined ? {} : { signal: options.signal })
    })
  } catch (err) {
    // A coordinator with no join token open refuses strangers before any protocol runs, so an
    // expired or spent token looks like a refused connection from here.
    throw new PipemeshError('UNAUTHORIZED', `could not enroll with ${coordinator}: ${(err as Error).message}. If the coordinator is up, the join token has expired or was already used`, {
      hint: 'create a fresh one with `pipemesh token create` and pass it as --join'
    })
  }
  if (!reply.ok) throw new PipemeshError('UNAUTHORIZED', `the coordinator refused to enroll this agent: ${reply.error.message}`, reply.error.hint === undefined ? {} : { hint: reply.error.hint })
  if (reply.coordinator !== coordinator) throw new PipemeshError('UNAUTHORIZED', `enrolled by ${reply.coordinator}, but expected coordinator ${coordinator}`)
  await recordEnrollment(dataDir, coordinator)
}

/** Notes in the agent's data dir that it is enrolled with `coordinator` (a peer id), so that later starts need no token. */
export async function recordEnrollment (dataDir: string, coordinator: string): Promise<void> {
  const file = join(dataDir, ENROLLMENT_FILE)
  const record: Enrollment = { coordinator, enrolledAt: Date.now() }
  await writeFile(`${file}.tmp`, JSON.stringify(record), { mode: 0o600 })
  await rename(`${file}.tmp`, file)
}
