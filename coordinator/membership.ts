// Who belongs to the mesh. Administrators mint single-use join tokens; an agent presents one once
// (over the enroll protocol) and from then on is recognized by its peer id alone. Revoking a member
// cuts it off at once. Kept in its own LevelDB, apart from run state: only hashes of tokens are
// stored, so a copied database does not let anyone join.

import { createHash, randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { Level } from 'level'
import { PipemeshError } from '../src/errors.js'

export interface Member {
  peerId: string
  name: string
  enrolledAt: number
  revokedAt?: number
}

interface TokenRecord {
  hash: string
  createdAt: number
  expiresAt: number
  usedAt?: number
  usedBy?: string
}

export const TOKEN_PREFIX = 'pmj_'

export class Membership {
  /** Emits 'changed' whenever the member list changes (agents get the new list). */
  readonly events = new EventEmitter()
  private readonly members = new Map<string, Member>()
  /** Unexpired, unused tokens: while any exists, unknown peers may open the enroll protocol. */
  private openTokens = 0
  private nextExpiry = Infinity

  private constructor (private readonly db: Level<string, unknown>) {}

  static async open (dir: string): Promise<Membership> {
    const db = new Level<string, unknown>(dir, { valueEncoding: 'json' })
    await db.open()
    const membership = new Membership(db)
    for await (const value of db.values({ gte: 'member:', lt: 'member;' })) {
      const member = value as Member
      membership.members.set(member.peerId, member)
    }
    await membership.countOpenTokens()
    return membership
  }

  async close (): Promise<void> {
    await this.db.close()
  }

  /** A current (enrolled, not revoked) member. */
  isMember (peerId: string): boolean {
    const member = this.members.get(peerId)
    return member !== undefined && member.revokedAt === undefined
  }

  /** True while some join token can still be redeemed. */
  enrollmentOpen (): boolean {
    if (Date.now() >= this.nextExpiry) void this.countOpenTokens()
    return this.openTokens > 0 && Date.now() < this.nextExpiry
  }

  list (): Member[] {
    return [...this.members.values()]
  }

  current (): string[] {
    return this.list().filter(m => m.revokedAt === undefined).map(m => m.peerId)
  }

  /** Mints a single-use join token valid for `ttlMs`. Only its hash is stored. */
  async createToken (ttlMs: number): Promise<{ token: string, expiresAt: number }> {
    if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new PipemeshError('INVALID_ARGUMENT', `a token's time to live must be positive, got ${ttlMs} ms`)
    const token = TOKEN_PREFIX + randomBytes(32).toString('base64url')
    const now = Date.now()
    const record: TokenRecord = { hash: hashToken(token), createdAt: now, expiresAt: now + ttlMs }
    await this.db.put(`token:${record.hash}`, record)
    await this.countOpenTokens()
    return { token, expiresAt: record.expiresAt }
  }

  /**
   * Redeems a token for a peer: it must exist, be unexpired and unused (or already used by this
   * very peer, so a retried enrollment succeeds). Records the peer as a member.
   */
  async redeem (token: string, peerId: string, name: string): Promise<Member> {
    const hash = hashToken(token)
    // Looked up by the token's hash, so timing reveals nothing about how close a guess was.
    const record = await this.db.get(`token:${hash}`) as TokenRecord | undefined
    if (record === undefined) {
      throw new PipemeshError('UNAUTHORIZED', 'the join token is not known to this coordinator', { hint: 'create one with `pipemesh token create`' })
    }
    if (record.usedAt !== undefined && record.usedBy !== peerId) throw new PipemeshError('UNAUTHORIZED', 'the join token was already used by another agent; tokens are single-use', { hint: 'create a new one with `pipemesh token create`' })
    if (record.usedAt === undefined && Date.now() >= record.expiresAt) throw new PipemeshError('UNAUTHORIZED', `the join token expired at ${new Date(record.expiresAt).toISOString()}`, { hint: 'create a new one with `pipemesh token create --ttl 1h`' })
    const member: Member = { peerId, name, enrolledAt: Date.now() }
    await this.db.batch([
      { type: 'put', key: `token:${hash}`, value: { ...record, usedAt: record.usedAt ?? Date.now(), usedBy: peerId } },
      { type: 'put', key: `member:${peerId}`, value: member }
    ])
    this.members.set(peerId, member)
    await this.countOpenTokens()
    this.events.emit('changed')
    return member
  }

  /** Adds a member directly (the agent embedded in the same process as its coordinator). */
  async admit (peerId: string, name: string): Promise<void> {
    if (this.isMember(peerId)) return
    const member: Member = { peerId, name, enrolledAt: Date.now() }
    await this.db.put(`member:${peerId}`, member)
    this.members.set(peerId, member)
    this.events.emit('changed')
  }

  async revoke (peerId: string): Promise<Member> {
    const member = this.members.get(peerId)
    if (member === undefined) throw new PipemeshError('NOT_FOUND', `no enrolled agent with peer id ${peerId}`)
    if (member.revokedAt !== undefined) return member
    const revoked = { ...member, revokedAt: Date.now() }
    await this.db.put(`member:${peerId}`, revoked)
    this.members.set(peerId, revoked)
    this.events.emit('changed')
    return revoked
  }

  private async countOpenTokens (): Promise<void> {
    const now = Date.now()
    let open = 0
    let next = Infinity
    for await (const value of this.db.values({ gte: 'token:', lt: 'token;' })) {
      const record = value as TokenRecord
      if (record.usedAt === undefined && record.expiresAt > now) { open++; next = Math.min(next, record.expiresAt) }
    }
    this.openTokens = open
    this.nextExpiry = next
  }
}

function hashToken (token: string): string {
  return createHash('sha256').update(token).digest('hex')
}
