// Only members use the mesh: agents enroll once with a single-use join token; strangers are
// refused right after the Noise handshake; a revoked agent is cut off mid-run.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { createNode } from '../../src/net/node.js'
import { fetchArtifact } from '../../src/net/transfer.js'
import { ContentStore } from '../../src/store/content-store.js'
import { CONTROL_PROTOCOL } from '../../src/protocol/messages.js'
import { runCli, runCliJson, tempDir, writeTree } from '../helpers/cli.js'
import { startMesh, type Mesh } from '../helpers/mesh.js'
import { waitFor, waitForRun } from '../helpers/wait.js'
import type { RunSummary } from '../../src/run/types.js'

describe('admission to the mesh', () => {
  let mesh: Mesh
  let work: Awaited<ReturnType<typeof tempDir>>

  beforeAll(async () => {
    work = await tempDir()
    // A generous lease: on a loaded machine a short one could lose a slow agent and add attempts.
    mesh = await startMesh({ leaseMs: 15_000, agents: { m1: ['--resources', 'cpu=1'], m2: ['--resources', 'cpu=1'] } })
  }, 120_000)

  afterAll(async () => {
    await mesh?.stop()
    await work?.cleanup()
  })

  const agentCli = async (name: string, extra: string[]): Promise<{ exitCode: number, stderr: string }> =>
    await runCli(['--data', join(work.path, name), 'agent', '--coordinator', mesh.multiaddr, '--name', name, ...extra], { timeoutMs: 60_000 })

  it('an agent without a join token is refused and told how to join', async () => {
    const result = await agentCli('stranger', [])
    expect(result.exitCode).not.toBe(0)
    expect(result.stderr).toMatch(/not enrolled/)
    expect(result.stderr).toMatch(/token create/)
    expect((await mesh.client.agents()).map(a => a.name)).not.toContain('stranger')
  })

  it('an expired token and a token used twice are refused', async () => {
    const expired = await runCliJson<{ token: string }>(['token', 'create', '--ttl', '1ms', '--coordinator', mesh.url])
    await new Promise(resolve => setTimeout(resolve, 20))
    const late = await agentCli('late', ['--join', expired.json.token])
    expect(late.exitCode).not.toBe(0)
    expect(late.stderr).toMatch(/expired/)

    const { json: once } = await runCliJson<{ token: string }>(['token', 'create', '--coordinator', mesh.url])
    await mesh.startAgent('first', ['--join', once.token, '--resources', 'cpu=1'])
    await mesh.waitForAgents(3)
    const second = await agentCli('second', ['--join', once.token])
    expect(second.exitCode).not.toBe(0)
    expect(second.stderr).toMatch(/already used/)
  })

  it('a peer that is not a member cannot connect, send tasks or pull chunks', async () => {
    const rogue = await createNode({ privateKey: await generateKeyPair('Ed25519') })
    const store = await ContentStore.open(join(work.path, 'rogue-store'))
    try {
      // The coordinator refuses it (no join token is open now) ...
      await expect(rogue.dialProtocol(multiaddr(mesh.multiaddr), CONTROL_PROTOCOL, { signal: AbortSignal.timeout(10_000) })).rejects.toThrow()
      // ... and so does every agent: no control stream (so no task can be sent), no chunks.
      const agents = await mesh.client.agents()
      const m1 = agents.find(a => a.name === 'm1')!
      await expect(rogue.dialProtocol(multiaddr(m1.addrs[0]!), CONTROL_PROTOCOL, { signal: AbortSignal.timeout(10_000) })).rejects.toThrow()
      const dir = join(work.path, 'p-chunks')
      await writeTree(dir, { 'p.yaml': 'name: chunks\nsteps:\n  make:\n    command: head -c 100000 /dev/urandom > ${{outputs.blob}}\n    outputs: [blob]\n' })
      const { json: run } = await runCliJson<RunSummary>(['--data', join(work.path, 'client'), 'run', join(dir, 'p.yaml'), '--coordinator', mesh.url])
      const digest = run.steps[0]!.outputs.blob!
      const holders = await mesh.client.locate(digest)
      expect(holders.length).toBeGreaterThan(0)
      await expect(fetchArtifact(rogue, store, digest, holders, { signal: AbortSignal.timeout(20_000) })).rejects.toThrow()
      expect(await store.has(digest)).toBe(false)
    } finally {
      await rogue.stop()
      await store.close()
    }
  })

  it('a revoked agent is cut off mid-run and its step finishes on another agent', async () => {
    const dir = join(work.path, 'p-revoke')
    await writeTree(dir, { 'p.yaml': 'name: revoke\nsteps:\n  long:\n    command: sleep 4; echo done > ${{outputs.o}}\n    outputs: [o]\n    cache: false\n' })
    const { json: started } = await runCliJson<RunSummary>(['--data', join(work.path, 'client'), 'run', join(dir, 'p.yaml'), '--coordinator', mesh.url, '--detach'])
    const running = await waitForRun(mesh.client, started.runId, r => r.steps[0]?.status === 'running', 'the step to start')
    const victim = running.steps[0]!.agent!
    const revoke = await runCli(['agents', 'revoke', victim, '--coordinator', mesh.url])
    expect(revoke.exitCode, revoke.stderr).toBe(0)
    const done = await waitForRun(mesh.client, started.runId, r => r.status !== 'running', 'the run to finish after the revocation', 90_000)
    expect(done.status).toBe('succeeded')
    const why = await mesh.client.explain(started.runId, 'long')
    expect(done.steps[0]!.attempts, JSON.stringify(why.attempts, null, 2)).toBe(2)
    expect(done.steps[0]!.agent).not.toBe(victim)
    // The revoked agent stays out: its attempts to reconnect are refused.
    const proc = mesh.agents.get(victim)!
    const before = proc.output().length
    await waitFor('the revoked agent to try to reconnect and be refused', () => /cannot reach the coordinator/.test(proc.output().slice(before)) ? true : undefined, 30_000, () => proc.output())
    expect((await mesh.client.agents()).some(a => a.name === victim && a.connected)).toBe(false)
  })
})
