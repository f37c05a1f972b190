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

function capabilities (diskFree: number, gpus: number): WireCapabilities {
  const devices = Array.from({ length: gpus }, (_, index) => ({ index, vendor: 'NVIDIA', model: 'GPU', memory: 24 * GiB }))
  return {
    hostname: 'h', os: 'linux', arch: 'x64', cpu: { model: 'cpu', cores: 4 }, memory: 8 * GiB, gpus: devices, diskFree,
    capacity: { cpu: 4, memory: 8 * GiB, gpus: devices }, labels: {}, detectedAt: 0
  }
}

/** Agents by name: free disk, and GPUs (none when not given). */
function registryWith (agents: Record<string, number | [number, number]>): { registry: AgentRegistry, sent: Map<string, CoordinatorMessage[]> } {
  const registry = new AgentRegistry()
  const sent = new Map<string, CoordinatorMessage[]>()
  for (const [name, spec] of Object.entries(agents)) {
    const [diskFree, gpus] = typeof spec === 'number' ? [spec, 0] : spec
    sent.set(name, [])
    registry.connect({ id: `id-${name}`, name, version: 'test', revision: 2, addrs: [], capabilities: capabilities(diskFree, gpus), send: msg => { sent.get(name)?.push(msg) } })
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

  it('go to a CPU-only agent before a GPU machine with more room', async () => {
    const { registry, sent } = registryWith({ 'gpu-box': [500 * GiB, 1], cpu: 20 * GiB })
    const broker = new UploadBroker(registry, pino({ level: 'silent' }))
    void broker.upload([ref('a', 5 * GiB)], { peerId: 'client', addrs: [] }).catch(() => {})
    expect(sent.get('cpu')?.[0]?.type).toBe('fetch')
    expect(sent.get('gpu-box')).toEqual([])
    broker.agentGone('id-cpu')
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
