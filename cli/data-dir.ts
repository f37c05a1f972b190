// Where the CLI keeps its state. Its own module, light on imports, because every command asks for
// it and most must not pay for loading the embedded coordinator and agent to learn a path.

import { existsSync } from 'node:fs'
import { homedir } from 'node:os'
import { join, resolve } from 'node:path'

export function defaultDataDir (flag?: string): string {
  return resolve(flag ?? process.env.PIPEMESH_HOME ?? join(homedir(), '.pipemesh'))
}

/**
 * Whether `dir` is an agent daemon's (it enrolled with a coordinator, or keeps its store at the
 * top) and holds no embedded coordinator state: the runs its artifacts belong to are elsewhere.
 */
export function isAgentDaemonDir (dir: string): boolean {
  const agentSigns = existsSync(join(dir, 'enrollment.json')) || existsSync(join(dir, 'store', 'index'))
  return agentSigns && !existsSync(join(dir, 'coordinator'))
}
