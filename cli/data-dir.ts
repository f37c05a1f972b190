// Where the CLI keeps its state. Its own module, light on imports, because every command asks for
// it and most must not pay for loading the embedded coordinator and agent to learn a path.

import { homedir } from 'node:os'
import { join, resolve } from 'node:path'

export function defaultDataDir (flag?: string): string {
  return resolve(flag ?? process.env.PIPEMESH_HOME ?? join(homedir(), '.pipemesh'))
}
