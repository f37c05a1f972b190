import { createHash } from 'node:crypto'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { EnvironmentManager, READY_MARKER } from '../../agent/environments.js'
import { runProcess } from '../../agent/process.js'
import { ContentStore } from '../../src/store/content-store.js'
import type { LogLine, TaskEnvironment } from '../../src/protocol/task.js'
import type { Digest } from '../../src/store/types.js'

let dir: string
let store: ContentStore

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pm-env-'))
  store = await ContentStore.open(join(dir, 'store'))
})
afterEach(async () => {
  await store.close()
  await rm(dir, { recursive: true, force: true })
})

/** An environment like a pipeline's: files ingested as a tree, digest over files and setup. */
async function makeEnv (files: Record<string, string>, setup: string, name = 'node-ml'): Promise<TaskEnvironment> {
  const src = await mkdtemp(join(dir, 'src-'))
  for (const [rel, content] of Object.entries(files)) {
    await mkdir(join(src, rel, '..'), { recursive: true })
    await writeFile(join(src, rel), content)
  }
  const { ref } = await store.ingestFiles(src, Object.keys(files))
  const digest = `sha256:${createHash('sha256').update(`${ref.digest}\n${setup}`).digest('hex')}` as Digest
  return { name, digest, files: ref.digest, setup }
}

function envPath (env: TaskEnvironment): string {
  return join(dir, 'envs', env.digest.slice('sha256:'.length))
}

async function lines (file: string): Promise<string[]> {
  return existsSync(file) ? (await readFile(file, 'utf8')).split('\n').filter(l => l !== '') : []
}

describe('EnvironmentManager', () => {
  it('prune removes environments unused since the cut-off, never one a step is using', async () => {
    const envs = new EnvironmentManager({ dir: join(dir, 'envs'), store })
    const old = await makeEnv({ 'package.json': '{"v":1}' }, 'head -c 100000 /dev/zero > blob')
    const busy = await makeEnv({ 'package.json': '{"v":2}' }, 'true')
    const recent = await makeEnv({ 'package.json': '{"v":3}' }, 'true')
    const week = 7 * 24 * 3600 * 1000
    const longAgo = new Date(Date.now() - 2 * week)
    envs.release(await envs.prepare(old))
    const inUse = await envs.prepare(busy)
    envs.release(await envs.prepare(recent))
    for (const env of [old, busy]) await utimes(join(envPath(env), READY_MARKER), longAgo, longAgo)

    const first = await envs.prune(Date.now() - week)
    expect(first.removed).toBe(1)
    expect(first.freedBytes).toBeGreaterThanOrEqual(100000)
    expect(existsSync(envPath(old))).toBe(false)
    expect(existsSync(envPath(busy))).toBe(true)
    expect(existsSync(envPath(recent))).toBe(true)

    envs.release(inUse)
    expect((await envs.prune(Date.now() - week)).removed).toBe(1)
    expect(existsSync(envPath(busy))).toBe(false)
    // A pruned environment is simply built again when a step wants it.
    expect(existsSync(join((await envs.prepare(old)).dir, 'blob'))).toBe(true)
  })

  it('builds an environment once for concurrent prepares, also across managers sharing the directory', async () => {
    const counter = join(dir, 'builds')
    const env = await makeEnv({ 'package.json': '{}' }, `echo built >> ${counter}; mkdir -p node_modules/.bin bin`)
    const a = new EnvironmentManager({ dir: join(dir, 'envs'), store })
    const b = new EnvironmentManager({ dir: join(dir, 'envs'), store })
    const results = await Promise.all([a.prepare(env), a.prepare(env), b.prepare(env)])
    expect(await lines(counter)).toEqual(['built'])
    for (const r of results) {
      expect(r.dir).toBe(envPath(env))
      expect(r.binDirs).toEqual([join(envPath(env), 'node_modules/.bin'), join(envPath(env), 'bin')])
      expect(r.nodeModules).toBe(join(envPath(env), 'node_modules'))
    }
    expect(existsSync(join(envPath(env), READY_MARKER))).toBe(true)
    expect(existsSync(join(envPath(env), 'package.json'))).toBe(true)
    // Later prepares, even from a new manager (an agent restart), reuse the build.
    await new EnvironmentManager({ dir: join(dir, 'envs'), store }).prepare(env)
    expect(await lines(counter)).toEqual(['built'])
  })

  it('rebuilds a directory left without the ready marker (a crashed build)', async () => {
    const counter = join(dir, 'builds')
    const env = await makeEnv({ 'requirements.txt': 'x' }, `echo built >> ${counter}; touch done`)
    await mkdir(join(envPath(env), 'half'), { recursive: true })
    await chmod(join(envPath(env), 'half'), 0o555)
    const prepared = await new EnvironmentManager({ dir: join(dir, 'envs'), store }).prepare(env)
    expect(await lines(counter)).toEqual(['built'])
    expect((await readdir(prepared.dir)).sort()).toEqual([READY_MARKER, 'done', 'requirements.txt'])
  })

  it('takes over a lock whose owner died', async () => {
    const env = await makeEnv({ 'a.txt': 'a' }, 'true')
    const dead = spawn('true')
    await new Promise(resolve => dead.once('exit', resolve))
    await mkdir(`${envPath(env)}.lock`, { recursive: true })
    await writeFile(join(`${envPath(env)}.lock`, 'owner'), JSON.stringify({ pid: dead.pid, host: (await import('node:os')).hostname() }))
    const prepared = await new EnvironmentManager({ dir: join(dir, 'envs'), store }).prepare(env)
    expect(existsSync(join(prepared.dir, READY_MARKER))).toBe(true)
    expect(existsSync(`${envPath(env)}.lock`)).toBe(false)
  })

  it('takes over a lock whose owner pid now belongs to another process', async () => {
    const env = await makeEnv({ 'a.txt': 'a' }, 'true')
    const other = spawn('sleep', ['300'], { stdio: 'ignore' })
    try {
      await mkdir(`${envPath(env)}.lock`, { recursive: true })
      await writeFile(join(`${envPath(env)}.lock`, 'owner'), JSON.stringify({ pid: other.pid, host: (await import('node:os')).hostname(), start: '1' }))
      const prepared = await new EnvironmentManager({ dir: join(dir, 'envs'), store }).prepare(env)
      expect(existsSync(join(prepared.dir, READY_MARKER))).toBe(true)
    } finally {
      other.kill('SIGKILL')
    }
  })

  it('reports a failing setup with its exit code and last stderr lines, and retries it next time', async () => {
    const flag = join(dir, 'fixed')
    const env = await makeEnv({ 'package.json': '{}' }, `echo "npm ERR! 404 no-such-package" >&2; test -f ${flag} || exit 7`)
    const manager = new EnvironmentManager({ dir: join(dir, 'envs'), store })
    const seen: LogLine[] = []
    const err = await manager.prepare(env, { onLine: l => seen.push(l) }).catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'ENVIRONMENT_FAILED' })
    const message = (err as Error).message
    expect(message).toContain('environment "node-ml"')
    expect(message).toContain('exited with code 7')
    expect(message).toContain('npm ERR! 404 no-such-package')
    expect(seen.map(l => l.line)).toEqual(['npm ERR! 404 no-such-package'])
    expect(existsSync(envPath(env))).toBe(false)
    await writeFile(flag, '')
    const prepared = await manager.prepare(env)
    expect(existsSync(join(prepared.dir, READY_MARKER))).toBe(true)
  })

  it('stops a build when its only caller cancels, and builds afresh later', async () => {
    const pidFile = join(dir, 'setup.pid')
    const flag = join(dir, 'fast')
    const env = await makeEnv({ 'a.txt': 'a' }, `test -f ${flag} || { echo $$ > ${pidFile}; exec sleep 300; }`)
    const manager = new EnvironmentManager({ dir: join(dir, 'envs'), store })
    const controller = new AbortController()
    const p = manager.prepare(env, { signal: controller.signal })
    while (!existsSync(pidFile) || (await readFile(pidFile, 'utf8')).trim() === '') await new Promise(resolve => setTimeout(resolve, 10))
    const pid = Number((await readFile(pidFile, 'utf8')).trim())
    controller.abort()
    await expect(p).rejects.toMatchObject({ code: 'CANCELLED' })
    // The setup process is killed and the partial build removed once the build winds down.
    const deadline = Date.now() + 10_000
    while (existsSync(envPath(env)) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
    expect(existsSync(envPath(env))).toBe(false)
    expect(existsSync(`/proc/${pid}`) && !(await readFile(`/proc/${pid}/stat`, 'utf8')).includes(') Z')).toBe(false)
    await writeFile(flag, '')
    const prepared = await manager.prepare(env)
    expect(existsSync(join(prepared.dir, READY_MARKER))).toBe(true)
  })

  it('lets an ES module step import a package from the environment through the node_modules link', async () => {
    const env = await makeEnv({
      'package.json': '{"name":"env","private":true}',
      'vendor/fake-pkg/package.json': '{"name":"fake-pkg","type":"module","exports":"./index.js"}',
      'vendor/fake-pkg/index.js': 'export const hello = (who) => `hello ${who} from fake-pkg`\n',
      'vendor/fake-tool': '#!/bin/sh\necho fake-tool ran\n'
    }, 'mkdir -p node_modules/.bin && cp -r vendor/fake-pkg node_modules/ && cp vendor/fake-tool node_modules/.bin/ && chmod +x node_modules/.bin/fake-tool')
    const manager = new EnvironmentManager({ dir: join(dir, 'envs'), store })
    const prepared = await manager.prepare(env)
    const workdir = join(dir, 'work')
    await mkdir(workdir)
    await writeFile(join(workdir, 'main.mjs'), "import { hello } from 'fake-pkg'\nconsole.log(hello('step'))\n")
    const stepEnv = await manager.apply(prepared, workdir, { PATH: process.env.PATH ?? '/usr/bin:/bin' })
    expect(stepEnv.NODE_PATH).toBe(join(prepared.dir, 'node_modules'))
    expect(stepEnv.PATH?.startsWith(`${join(prepared.dir, 'node_modules/.bin')}:`)).toBe(true)
    const out: string[] = []
    const r = await runProcess({ command: `"${process.execPath}" main.mjs && fake-tool`, cwd: workdir, env: stepEnv, onLine: l => out.push(l.line) })
    expect(out).toEqual(['hello step from fake-pkg', 'fake-tool ran'])
    expect(r.exitCode).toBe(0)
  })

  it("keeps the code's own node_modules", async () => {
    const env = await makeEnv({ 'a.txt': 'a' }, 'mkdir node_modules')
    const manager = new EnvironmentManager({ dir: join(dir, 'envs'), store })
    const prepared = await manager.prepare(env)
    const workdir = join(dir, 'work')
    await mkdir(join(workdir, 'node_modules'), { recursive: true })
    await writeFile(join(workdir, 'node_modules', 'mine'), '')
    await manager.apply(prepared, workdir, {})
    expect(await readdir(join(workdir, 'node_modules'))).toEqual(['mine'])
  })
})
