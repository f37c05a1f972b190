// Runs the built `pipemesh` CLI as a real process, and makes throwaway directories.

import { mkdtemp, rm, mkdir, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
// The bundled bin, exactly what users run.
export const CLI = join(ROOT, 'dist', 'pipemesh.mjs')

export interface CliResult { exitCode: number, stdout: string, stderr: string }

export async function runCli (args: string[], options: { cwd?: string, env?: Record<string, string>, timeoutMs?: number } = {}): Promise<CliResult> {
  const result = await execa(CLI, args, {
    cwd: options.cwd ?? ROOT,
    // A developer's own coordinator settings must not leak into a test (empty means unset).
    env: { PIPEMESH_LOG_LEVEL: 'warn', PIPEMESH_COORDINATOR: '', PIPEMESH_API_TOKEN: '', ...options.env },
    reject: false,
    timeout: options.timeoutMs ?? 120_000,
    stdin: 'ignore'
  })
  if (result.timedOut) throw new Error(`pipemesh ${args.join(' ')} did not finish within ${options.timeoutMs ?? 120_000} ms\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`)
  return { exitCode: result.exitCode ?? -1, stdout: result.stdout, stderr: result.stderr }
}

/** Runs the CLI with --json and parses stdout, failing with the whole output when it is not JSON. */
export async function runCliJson<T> (args: string[], options: Parameters<typeof runCli>[1] = {}): Promise<{ exitCode: number, json: T, stderr: string }> {
  const result = await runCli([...args, '--json'], options)
  try {
    return { exitCode: result.exitCode, json: JSON.parse(result.stdout) as T, stderr: result.stderr }
  } catch {
    throw new Error(`pipemesh ${args.join(' ')} --json printed no JSON (exit ${result.exitCode})\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`)
  }
}

export async function tempDir (prefix = 'pipemesh-test-'): Promise<{ path: string, cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix))
  return { path, cleanup: async () => { await rm(path, { recursive: true, force: true }) } }
}

/** Writes files (path -> content) under a directory, creating folders. */
export async function writeTree (root: string, files: Record<string, string>): Promise<void> {
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true })
    await writeFile(join(root, path), content)
  }
}
