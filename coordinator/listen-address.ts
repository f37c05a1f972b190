// A coordinator restarted on the same data dir listens where it did before. Agents keep redialling
// the multiaddr they were given; with the default `--listen .../tcp/0` a restart would otherwise
// pick a new port and strand every agent. The ports bound last time are kept in the data dir and
// tried first; if they are taken now, the addresses asked for are used as given.

import { readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import type { Libp2p } from '@libp2p/interface'

const FILE = 'listen.json'

interface Remembered { requested: string[], bound: string[] }

export async function listenWhereLastTime (dataDir: string, requested: string[], start: (listen: string[]) => Promise<Libp2p>): Promise<Libp2p> {
  const file = join(dataDir, FILE)
  const last = await readFile(file, 'utf8').then(text => JSON.parse(text) as Remembered, () => undefined)
  let node: Libp2p | undefined
  if (last !== undefined && sameList(last.requested, requested) && !sameList(last.bound, requested)) {
    node = await start(last.bound).catch(() => undefined)
  }
  node ??= await start(requested)
  const bound = boundAddresses(requested, node)
  const tmp = `${file}.${process.pid}.tmp`
  await writeFile(tmp, JSON.stringify({ requested, bound } satisfies Remembered))
  await rename(tmp, file)
  return node
}

/** Each requested address with port 0 replaced by the port the node got for that address family. */
function boundAddresses (requested: string[], node: Libp2p): string[] {
  const actual = node.getMultiaddrs().map(a => hostAndPort(a.toString())).filter(a => a !== undefined)
  return requested.map(text => {
    const want = hostAndPort(text)
    if (want === undefined || want.port !== '0') return text
    const match = actual.find(a => a.family === want.family && (a.host === want.host || isWildcard(want.host)))
    return match === undefined ? text : text.replace(/\/tcp\/0(?=\/|$)/, `/tcp/${match.port}`)
  })
}

function hostAndPort (text: string): { family: string, host: string, port: string } | undefined {
  try {
    const parts = multiaddr(text).getComponents()
    const ip = parts.find(c => c.name === 'ip4' || c.name === 'ip6')
    const tcp = parts.find(c => c.name === 'tcp')
    if (ip?.value === undefined || tcp?.value === undefined) return undefined
    return { family: ip.name, host: ip.value, port: tcp.value }
  } catch {
    return undefined
  }
}

function isWildcard (host: string): boolean {
  return host === '0.0.0.0' || host === '::'
}

function sameList (a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}
