// Embedded mode: a coordinator and one agent started in this process, talking libp2p over
// 127.0.0.1 exactly as they do across machines. `pipemesh run` without --coordinator uses it.

import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Logger } from 'pino'
import { Coordinator } from '../coordinator/coordinator.js'
import { Agent } from '../agent/agent.js'

export function defaultDataDir (flag?: string): string {
  return resolve(flag ?? process.env.PIPEMESH_HOME ?? join(homedir(), '.pipemesh'))
}

export interface Embedded {
  coordinator: Coordinator
  agent: Agent
  close: () => Promise<void>
}

export async function startEmbedded (dataDir: string, logger: Logger, options: { signal?: AbortSignal } = {}): Promise<Embedded> {
  const coordinator = await Coordinator.start({ dataDir: join(dataDir, 'coordinator'), logger: logger.child({ component: 'coordinator' }) })
  let agent: Agent
  try {
    const address = `${coordinator.multiaddrs()[0] ?? ''}`
    agent = await Agent.start({
      dataDir: join(dataDir, 'agent'),
      coordinator: address.includes('/p2p/') ? address : `${address}/p2p/${coordinator.peerId}`,
      logger: logger.child({ component: 'agent' }),
      // The agent in this process is a member by construction: no join token needed.
      onIdentity: async (peerId) => { await coordinator.membership.admit(peerId, 'embedded') }
    })
  } catch (err) {
    await coordinator.stop()
    throw err
  }
  const close = async (): Promise<void> => {
    await agent.stop({ graceMs: 0 })
    await coordinator.stop()
  }
  try {
    const wait = options.signal === undefined ? {} : { signal: options.signal }
    await Promise.all([agent.connected(wait), coordinator.waitForAgent(agent.peerId, wait)])
  } catch (err) {
    await close()
    throw err
  }
  return { coordinator, agent, close }
}

/** Opens only the coordinator's database, for queries about past runs. */
export async function openOffline (dataDir: string, logger: Logger): Promise<Coordinator> {
  return await Coordinator.start({ dataDir: join(dataDir, 'coordinator'), logger, network: false })
}
