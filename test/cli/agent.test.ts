import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runCli, tempDir } from '../helpers/cli.js'

describe('pipemesh agent with bad input', () => {
  it('refuses a coordinator address it cannot use, naming it and showing the expected form (exit 2)', async () => {
    const work = await tempDir()
    try {
      for (const [address, problem] of [['nope', 'is not a multiaddr'], ['/ip4/127.0.0.1/tcp/7071', 'has no /p2p/<peer id> part']] as const) {
        const r = await runCli(['--data', join(work.path, 'agent'), 'agent', '--coordinator', address])
        expect(r.exitCode, r.stderr).toBe(2)
        expect(r.stderr).toContain(`coordinator address "${address}" ${problem}`)
        expect(r.stderr).toContain('/p2p/12D3KooW')
        expect(r.stderr).toContain('copy the libp2p address the coordinator printed')
      }
    } finally {
      await work.cleanup()
    }
  })

  it('refuses a --stop-grace it cannot read before it starts', async () => {
    const work = await tempDir()
    try {
      const r = await runCli(['--data', join(work.path, 'agent'), 'agent', '--coordinator', '/ip4/127.0.0.1/tcp/9/p2p/12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK', '--stop-grace', 'a while'])
      expect(r.exitCode, r.stderr).toBe(2)
      expect(r.stderr).toContain('--stop-grace: invalid duration "a while"')
    } finally {
      await work.cleanup()
    }
  })
})
