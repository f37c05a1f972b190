// `pipemesh coordinator` and `pipemesh agent`: long-running daemons that stop cleanly on SIGINT
// and SIGTERM (an agent first lets its running steps finish or hands them back).

import { hostname } from 'node:os'
import { PipemeshError } from '../../src/errors.js'
import { durationFlag, sizeFlag } from '../flags.js'
import { createLogger } from '../logger.js'

export async function runCoordinatorDaemon (options: { dataDir: string, listen: string, api: string, lease: string, gcEvery?: string | undefined, keepRuns: number, apiTokenFile?: string | undefined, logLevel?: string | undefined }): Promise<void> {
  const logger = createLogger(options.logLevel, 'info')
  const [host, portText] = splitHostPort(options.api)
  const { readApiToken } = await import('../api-token.js')
  const apiToken = options.apiTokenFile === undefined ? undefined : await readApiToken(options.apiTokenFile)
  if (apiToken === undefined && !isLoopback(host)) {
    throw new PipemeshError('INVALID_ARGUMENT', `the HTTP API would listen on ${host}, beyond this machine, without a bearer token`, {
      hint: 'create one (`openssl rand -hex 32 > api.token; chmod 600 api.token`) and pass --api-token-file api.token'
    })
  }
  const { Coordinator } = await import('../../coordinator/coordinator.js')
  const { startApiServer } = await import('../../coordinator/api.js')
  const gcEveryMs = options.gcEvery === undefined ? undefined : durationFlag('--gc-every', options.gcEvery)
  if (gcEveryMs !== undefined && gcEveryMs < 1000) throw new PipemeshError('INVALID_ARGUMENT', `--gc-every ${options.gcEvery ?? ''} is too often: a collection reads every run record; give 1s or more (1h suits most meshes)`)
  const gc = gcEveryMs === undefined ? {} : { gc: { keepRuns: options.keepRuns, everyMs: gcEveryMs } }
  const coordinator = await Coordinator.start({ dataDir: options.dataDir, listen: [options.listen], logger, leaseMs: durationFlag('--lease', options.lease), ...gc })
  const { server, url } = await startApiServer({
    api: coordinator, host, port: Number(portText), logger,
    ...(apiToken === undefined ? {} : { token: apiToken }),
    health: () => ({ peerId: coordinator.peerId, multiaddrs: coordinator.multiaddrs() })
  })
  // Signal handlers before the banner: whoever waits for the banner may stop the daemon at once.
  const stopped = waitForStop(async () => {
    await server.close()
    await coordinator.stop()
  })
  const addrs = coordinator.multiaddrs()
  process.stdout.write([
    `pipemesh coordinator ${coordinator.peerId}`,
    `  data:      ${options.dataDir}`,
    `  libp2p:    ${addrs.join(' ')}`,
    `  http api:  ${url}`,
    '',
    'point the CLI at it with:',
    `  export PIPEMESH_COORDINATOR=${url}${apiToken === undefined ? '' : ` PIPEMESH_API_TOKEN=$(cat ${options.apiTokenFile ?? ''})`}`,
    'and start an agent on each machine with a join token (single use, valid 1 hour):',
    `  pipemesh agent --coordinator ${addrs[0] ?? ''} --join $(pipemesh token create) --data <agent data dir>`,
    ''
  ].join('\n'))
  await stopped
}

export async function runAgentDaemon (options: { dataDir: string, coordinator: string, listen: string, name?: string, join?: string, resources?: string, label: string[], maxArtifactSize?: string, maxLogSize?: string, stopGrace: string, logLevel?: string | undefined }): Promise<void> {
  // Checked before anything starts: a typo must not surface only when the agent is stopped.
  const stopGraceMs = durationFlag('--stop-grace', options.stopGrace)
  const logger = createLogger(options.logLevel, 'info')
  const { parseResourceOverrides, parseLabels } = await import('../../agent/capabilities.js')
  const { Agent } = await import('../../agent/agent.js')
  const agentOptions: Parameters<typeof Agent.start>[0] = {
    dataDir: options.dataDir,
    coordinator: options.coordinator,
    listen: [options.listen],
    logger,
    name: options.name ?? hostname(),
    ...(options.join === undefined ? {} : { join: options.join }),
    labels: parseLabels(options.label)
  }
  if (options.resources !== undefined) agentOptions.resources = parseResourceOverrides(options.resources)
  if (options.maxArtifactSize !== undefined) agentOptions.maxArtifactBytes = sizeFlag('--max-artifact-size', options.maxArtifactSize)
  if (options.maxLogSize !== undefined) agentOptions.maxLogBytes = sizeFlag('--max-log-size', options.maxLogSize)
  const agent = await Agent.start(agentOptions)
  const stopped = waitForStop(async () => { await agent.stop({ graceMs: stopGraceMs }) })
  process.stdout.write(`pipemesh agent ${agent.peerId} (${agent.name})\n  data:   ${options.dataDir}\n  libp2p: ${agent.multiaddrs().join(' ')}\n`)
  await stopped
}

function isLoopback (host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host)
}

function splitHostPort (value: string): [string, string] {
  const i = value.lastIndexOf(':')
  if (i <= 0 || !/^\d+$/.test(value.slice(i + 1))) throw new PipemeshError('INVALID_ARGUMENT', `--api "${value}" must look like host:port, e.g. 127.0.0.1:7070 (port 0 picks a free one)`)
  return [value.slice(0, i), value.slice(i + 1)]
}

/**
 * Resolves after SIGINT/SIGTERM once `stop` has run; a second signal exits at once. The handlers
 * are in place when this returns.
 */
async function waitForStop (stop: () => Promise<void>): Promise<void> {
  await new Promise<void>((resolve) => {
    let stopping = false
    const onSignal = (): void => {
      if (stopping) process.exit(130)
      stopping = true
      void stop().finally(resolve)
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
  })
}
