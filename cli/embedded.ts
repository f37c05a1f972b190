// Embedded mode: a coordinator and one agent started in this process, talking libp2p over
// 127.0.0.1 exactly as they do across machines. `pipemesh run` without --coordinator uses it.
// The two start side by side (the agent opens its store and detects capabilities while the
// coordinator opens its databases and starts listening), since every embedded run pays for both.

import { join } from 'node:path'
import type { Logger } from 'pino'
import { Coordinator } from '../coordinator/coordinator.js'
import { Agent } from '../agent/agent.js'

export interface Embedded {
  coordinator: Coordinator
  agent: Agent
  close: () => Promise<void>
}

export async function startEmbedded (dataDir: string, logger: Logger, options: { signal?: AbortSignal } = {}): Promise<Embedded> {
  const starting = Coordinator.start({ dataDir: join(dataDir, 'coordinator'), logger: logger.child({ component: 'coordinator' }) })
  const address = starting.then(coordinator => {
    const first = `${coordinator.multiaddrs()[0] ?? ''}`
    return first.includes('/p2p/') ? first : `${first}/p2p/${coordinator.peerId}`
  })
  // Agent.start awaits it; an agent that fails before that must not leave it unhandled.
  address.catch(() => {})
  const [coordinatorStarted, agentStarted] = await Promise.allSettled([
    starting,
    Agent.start({
      dataDir: join(dataDir, 'agent'),
      coordinator: address,
      logger: logger.child({ component: 'agent' }),
      // The agent in this process is a member by construction: no join token needed.
      onIdentity: async (peerId) => { await (await starting).membership.admit(peerId, 'embedded') }
    })
  ])
  if (coordinatorStarted.status === 'rejected' || agentStarted.status === 'rejected') {
    if (agentStarted.status === 'fulfilled') await agentStarted.value.stop({ graceMs: 0 })
    if (coordinatorStarted.status === 'fulfilled') await coordinatorStarted.value.stop()
    throw coordinatorStarted.status === 'rejected' ? coordinatorStarted.reason : (agentStarted as PromiseRejectedResult).reason
  }
  const coordinator = coordinatorStarted.value
  const agent = agentStarted.value
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
