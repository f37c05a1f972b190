// Which agent receives a client's upload: one with room on its disk for it, or none, with a
// message that says how much was needed and the most any agent has.

import { describe, expect, it } from 'vitest'
import { pino } from 'pino'
import { AgentRegistry } from '../../coordinator/agents.js'
import { UploadBroker } from '../../coordinator/uploads.js'
import type { CoordinatorMessage, WireCapabilities } from '../../src/protocol/messages.js'
import type { ArtifactRef, Digest } from '../../src/store/types.js'

const GiB = 2 ** 30
const ref = (c: string, size: number): ArtifactRef => ({ digest: `sha256:${c.repeat(64)}` as Digest, kind: 'file', size })

function capabilities (diskFree: number): WireCapabilities {
  return {
    hostname: 'h', os: 'linux', arch: 'x64', cpu: { model: 'cpu', cores: 4 }, memory: 8 * GiB, gpus: [], diskFree,
    capacity: { cpu: 4, memory: 8 * GiB, gpus: [] }, labels: {}, detectedAt: 0
  }
}

function registryWith (agents: Record<string, number>): { registry: AgentRegistry, sent: Map<string, CoordinatorMessage[]> } {
  const registry = new AgentRegistry()
  const sent = new Map<string, CoordinatorMessage[]>()
  for (const [name, diskFree] of Object.entries(agents)) {
    sent.set(name, [])
    registry.connect({ id: `id-${name}`, name, addrs: [], capabilities: capabilities(diskFree), send: msg => { sent.get(name)?.push(msg) } })
  }
  return { registry, sent }
}

describe('client uploads', () => {
  it('go to an agent with room for them, passing over a fuller one', async () => {
    const { registry, sent } = registryWith({ small: 1 * GiB, big: 100 * GiB })
    const broker = new UploadBroker(registry, pino({ level: 'silent' }))
    const upload = broker.upload([ref('a', 5 * GiB)], { peerId: 'client', addrs: [] })
    const request = sent.get('big')?.[0]
    expect(request?.type).toBe('fetch')
    expect(sent.get('small')).toEqual([])
    if (request?.type !== 'fetch') return
    broker.onFetched('id-big', { type: 'fetched', requestId: request.requestId, refs: [ref('a', 5 * GiB)] })
    expect(await upload).toMatchObject({ agent: 'big' })
  })

  it('are refused when no agent has room, naming what was needed and the most on offer', async () => {
    const { registry, sent } = registryWith({ a: 1 * GiB, b: 2 * GiB })
    const broker = new UploadBroker(registry, pino({ level: 'silent' }))
    await expect(broker.upload([ref('a', 5 * GiB)], { peerId: 'client', addrs: [] })).rejects.toMatchObject({
      code: 'LIMIT_EXCEEDED',
      message: 'no connected agent has room for the upload: it needs 5 GiB (and 256 MiB to spare); the most free on any agent is 2 GiB (agent b)'
    })
    expect([...sent.values()].flat()).toEqual([])
  })
})
