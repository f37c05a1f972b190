import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Libp2p } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { afterEach, describe, expect, it } from 'vitest'
import { createNode, type CreateNodeOptions } from '../../../src/net/node.js'

const nodes: Libp2p[] = []
async function node (options: Partial<CreateNodeOptions> = {}): Promise<Libp2p> {
  const n = await createNode({ privateKey: await generateKeyPair('Ed25519'), ...options })
  nodes.push(n)
  return n
}
afterEach(async () => { await Promise.all(nodes.splice(0).map(async n => { await n.stop() })) })

const ECHO = '/pipemesh/test-echo/1.0.0'
async function serveEcho (n: Libp2p, opened: string[] = []): Promise<void> {
  await n.handle(ECHO, async (stream, connection) => {
    opened.push(connection.remotePeer.toString())
    for await (const chunk of stream) stream.send(chunk.subarray())
    await stream.close()
  })
}
async function echo (from: Libp2p, to: Parameters<Libp2p['dialProtocol']>[0], text: string): Promise<string> {
  const stream = await from.dialProtocol(to, ECHO)
  stream.send(Buffer.from(text))
  await stream.close()
  let out = ''
  for await (const chunk of stream) out += Buffer.from(chunk.subarray()).toString()
  return out
}

describe('createNode', () => {
  it('listens on a loopback port under the peer id of its key and opens protocol streams without identify', async () => {
    const key = await generateKeyPair('Ed25519')
    const a = await node({ privateKey: key })
    expect(a.peerId.equals(peerIdFromPrivateKey(key))).toBe(true)
    const addr = a.getMultiaddrs()[0]
    expect(addr?.toString()).toMatch(new RegExp(`^/ip4/127\\.0\\.0\\.1/tcp/[1-9][0-9]*/p2p/${a.peerId.toString()}$`))
    await serveEcho(a)
    const b = await node()
    expect(await echo(b, addr!, 'hello')).toBe('hello')
  })

  it('refuses an unknown peer right after the handshake: its dial fails and no stream opens', async () => {
    const member = await node()
    const stranger = await node()
    const allowed = new Set([member.peerId.toString()])
    const guarded = await node({ gater: { allowPeer: id => allowed.has(id) } })
    const opened: string[] = []
    await serveEcho(guarded, opened)
    const addr = guarded.getMultiaddrs()[0]!

    await expect(echo(stranger, addr, 'let me in')).rejects.toThrow()
    expect(opened).toEqual([])
    expect(guarded.getConnections(stranger.peerId)).toEqual([])

    expect(await echo(member, addr, 'hi')).toBe('hi')
    expect(opened).toEqual([member.peerId.toString()])
  })

  it('does not connect out to a peer it does not allow, even when dialled by address alone', async () => {
    const stranger = await node()
    await serveEcho(stranger)
    const guarded = await node({ gater: { allowPeer: () => false } })
    const bare = multiaddr(stranger.getMultiaddrs()[0]!.toString().replace(/\/p2p\/.*$/, ''))
    await expect(echo(guarded, bare, 'x')).rejects.toThrow()
    expect(guarded.getConnections()).toEqual([])
  })

  it('accepts many new connections from one host at once (agents sharing a machine)', async () => {
    const hub = await node()
    await serveEcho(hub)
    const clients = await Promise.all(Array.from({ length: 12 }, async () => await node()))
    const replies = await Promise.all(clients.map(async (c, i) => await echo(c, hub.getMultiaddrs()[0]!, `client ${i}`)))
    expect(replies).toEqual(clients.map((_, i) => `client ${i}`))
  })
})
