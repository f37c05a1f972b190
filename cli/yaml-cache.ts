// The CLI's cache of parsed pipeline files: YAML text -> the data it denotes, as JSON files under
// $XDG_CACHE_HOME/pipemesh/pipelines (default ~/.cache/pipemesh), named by the text's sha256.
// Reading YAML is slow here (~0.1 s of CPU for a 500-step file with the `yaml` package, where
// JSON.parse of the same data takes ~1 ms), and a pipeline file is usually submitted many times
// unchanged. Only the YAML step is skipped: the data is validated on every run.
// Anything wrong with the cache (unwritable, corrupt) only means parsing as usual;
// PIPEMESH_CODE_CACHE=0 turns it off with the code cache.

import { createHash } from 'node:crypto'
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import type { YamlCache } from '../src/spec/parse.js'

/** Bump when what readYaml returns for a text could change (its rules, or the yaml package's major version). */
const FORMAT = 'yaml2-core1.2-v1'
/** Entries kept; the oldest go when a new one is written past this. */
const MAX_ENTRIES = 64

export function openYamlCache (env: NodeJS.ProcessEnv = process.env): YamlCache | undefined {
  if (env.PIPEMESH_CODE_CACHE === '0') return undefined
  let dir: string
  try {
    dir = join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'pipemesh', 'pipelines')
  } catch {
    return undefined
  }
  const fileOf = (text: string): string => join(dir, `${createHash('sha256').update(FORMAT).update('\0').update(text).digest('hex')}.json`)
  return {
    get (text) {
      try {
        return JSON.parse(readFileSync(fileOf(text), 'utf8')) as unknown
      } catch {
        return undefined
      }
    },
    set (text, data) {
      const file = fileOf(text)
      const tmp = `${file}.${process.pid}.tmp`
      try {
        mkdirSync(dir, { recursive: true, mode: 0o700 })
        writeFileSync(tmp, JSON.stringify(data), { mode: 0o600 })
        renameSync(tmp, file)
        prune(dir)
      } catch {
        try { rmSync(tmp, { force: true }) } catch {}
      }
    }
  }
}

function prune (dir: string): void {
  const names = readdirSync(dir).filter(n => n.endsWith('.json'))
  if (names.length <= MAX_ENTRIES) return
  const aged = names.map(n => {
    try { return { n, t: statSync(join(dir, n)).mtimeMs } } catch { return { n, t: 0 } }
  }).sort((a, b) => a.t - b.t)
  for (const { n } of aged.slice(0, names.length - MAX_ENTRIES)) rmSync(join(dir, n), { force: true })
}
