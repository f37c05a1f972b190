import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { runAttempt, formatTimeout, type AttemptDeps } from '../../agent/attempt.js'
import { EnvironmentManager } from '../../agent/environments.js'
import { parseLogLine } from '../../agent/log-capture.js'
import { WorkdirPool } from '../../agent/workdirs.js'
import { ContentStore } from '../../src/store/content-store.js'
import type { LogLine, Task } from '../../src/protocol/task.js'
import type { ArtifactRef, Digest } from '../../src/store/types.js'

let dir: string
let store: ContentStore
let deps: AttemptDeps
let workRoot: string
let n = 0
const isRoot = process.getuid?.() === 0
const started: number[] = []

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pm-attempt-'))
  store = await ContentStore.open(join(dir, 'store'))
  workRoot = join(dir, 'work')
  deps = { store, environments: new EnvironmentManager({ dir: join(dir, 'envs'), store }), workdirs: new WorkdirPool(workRoot) }
})
afterEach(async () => {
  for (const pid of started.splice(0)) try { process.kill(pid, 'SIGKILL') } catch {}
  await store.close()
  await rm(dir, { recursive: true, force: true })
})

function task (fields: Partial<Task> & Pick<Task, 'command'>): Task {
  n++
  return { attemptId: `att-${n}`, runId: 'run-1', stepId: 'train', attempt: 1, inputs: {}, outputs: [], env: {}, gpus: [], ...fields }
}

async function ingestTree (files: Record<string, string>): Promise<ArtifactRef> {
  const src = await mkdtemp(join(dir, 'src-'))
  for (const [rel, content] of Object.entries(files)) {
    await mkdir(join(src, rel, '..'), { recursive: true })
    await writeFile(join(src, rel), content)
  }
  return (await store.ingestFiles(src, Object.keys(files))).ref
}

async function ingestFiles (files: Record<string, string>): Promise<Digest> {
  return (await ingestTree(files)).digest
}

async function ingestFile (content: string): Promise<ArtifactRef> {
  const p = join(await mkdtemp(join(dir, 'in-')), 'f')
  await writeFile(p, content)
  return await store.ingest(p)
}

async function storedLog (ref: ArtifactRef | undefined): Promise<LogLine[]> {
  if (ref === undefined) throw new Error('no log stored')
  const p = join(dir, `log-${n}-${Math.random()}`)
  await store.materialize(ref.digest, p)
  return (await readFile(p, 'utf8')).split('\n').filter(l => l !== '').map(l => parseLogLine(l) as LogLine)
}

/** The text of `file` inside a stored tree. */
async function materializedText (ref: ArtifactRef, file: string): Promise<string> {
  const p = join(dir, `tree-${n}-${Math.random()}`)
  await store.materialize(ref.digest, p)
  return await readFile(join(p, file), 'utf8')
}

/** What attempts left under the work root besides empty directories kept for reuse. */
async function leftovers (): Promise<string[]> {
  const left: string[] = []
  for (const e of await readdir(workRoot, { withFileTypes: true })) {
    if (!e.isDirectory() || (await readdir(join(workRoot, e.name))).length > 0) left.push(e.name)
  }
  return left
}

/** The lines a step printed. */
async function printed (r: { log?: ArtifactRef }): Promise<string[]> {
  return (await storedLog(r.log)).map(l => l.line)
}

function alive (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2))
  } catch {
    return false
  }
}

describe('runAttempt', () => {
  it('runs the code in a fresh workdir and stores file and directory outputs and the log', async () => {
    const code = await ingestFiles({
      'prep.sh': 'echo "preparing $1"\nmkdir -p outputs/model/weights\nprintf 7 > outputs/model/weights/w.bin\nprintf "%s" "$(cat inputs/raw)" > outputs/train\n',
      'lib/helper.txt': 'x'
    })
    const raw = await ingestFile('1,2,3')
    const t = task({ command: 'sh prep.sh iris && test -f lib/helper.txt', code, inputs: { raw }, outputs: ['train', 'model'] })
    const r = await runAttempt(t, deps)
    expect(r.error).toBeUndefined()
    expect(r.status).toBe('succeeded')
    expect(r.exitCode).toBe(0)
    expect(r.attemptId).toBe(t.attemptId)
    expect(r.finishedAt).toBeGreaterThanOrEqual(r.startedAt)
    // Content addressing: the output equals what ingesting the same bytes gives.
    expect(r.outputs.train).toEqual(await ingestFile('1,2,3'))
    expect(r.outputs.model?.kind).toBe('tree')
    const back = join(dir, 'model-back')
    await store.materialize(r.outputs.model?.digest as Digest, back)
    expect(await readFile(join(back, 'weights', 'w.bin'), 'utf8')).toBe('7')
    expect((await storedLog(r.log)).map(l => l.line)).toEqual(['preparing iris'])
    // Nothing left behind.
    expect(await leftovers()).toEqual([])
  })

  it('moves a large output into the store instead of copying it; an output linking to it is stored first, by copy', async () => {
    // 3 MiB and 5 bytes: three whole chunks of the default size and a tail.
    const r = await runAttempt(task({ command: 'head -c 3145733 /dev/urandom > outputs/model', outputs: ['model'] }), deps)
    expect(r.error).toBeUndefined()
    const model = r.outputs.model as ArtifactRef
    expect(model.size).toBe(3145733)
    // The model's whole chunks lie in one pack at their offsets in the file: that file itself.
    const places = await Promise.all((await store.listChunks(model.digest)).slice(0, 3).map(async c => await store.chunkLocation(c.digest)))
    expect(places.map(p => p?.offset)).toEqual([0, 1048576, 2097152])
    expect(new Set(places.map(p => p?.file)).size).toBe(1)
    expect(await leftovers()).toEqual([])

    // Were the file moved first, the link would find nothing.
    const linked = await runAttempt(task({ command: 'head -c 3145733 /dev/urandom > outputs/model && ln -s model outputs/latest', outputs: ['model', 'latest'] }), deps)
    expect(linked.error).toBeUndefined()
    expect(linked.outputs.latest).toEqual(linked.outputs.model)

    // A kept working directory keeps its outputs: they are copied.
    const kept = task({ command: 'head -c 3145733 /dev/urandom > outputs/model', outputs: ['model'] })
    expect((await runAttempt(kept, { ...deps, workdirs: new WorkdirPool(workRoot, { keep: true }) })).status).toBe('succeeded')
    expect(existsSync(join(workRoot, 'run-1', `train.${kept.attempt}`, 'outputs', 'model'))).toBe(true)
  })

  it('reports storing a large output as it goes and when done; a small, quick one not at all', async () => {
    const seen: Array<{ output: string, bytes: number, totalBytes: number, done: boolean }> = []
    const onStoring: AttemptDeps['onStoring'] = ({ output, bytes, totalBytes, done }) => { seen.push({ output, bytes, totalBytes, done }) }
    // Reported at every chunk (no interval): 3 MiB and 5 bytes are four chunks.
    const r = await runAttempt(task({ command: 'head -c 3145733 /dev/urandom > outputs/model && echo hi > outputs/note', outputs: ['model', 'note'] }), { ...deps, onStoring, progressMs: 0 })
    expect(r.status).toBe('succeeded')
    const model = seen.filter(p => p.output === 'model')
    expect(model.at(-1)).toEqual({ output: 'model', bytes: 3145733, totalBytes: 3145733, done: true })
    expect(model.filter(p => !p.done).map(p => p.bytes)).toEqual([1048576, 2097152, 3145728, 3145733])
    expect(model.every(p => p.totalBytes === 3145733)).toBe(true)
    // With the usual interval, a small output is stored long before it would be mentioned.
    seen.length = 0
    expect((await runAttempt(task({ command: 'echo hi > outputs/note', outputs: ['note'] }), { ...deps, onStoring })).status).toBe('succeeded')
    expect(seen).toEqual([])
  })

  it('fails a step that did not write a declared output, naming it and the expected path', async () => {
    const r = await runAttempt(task({ command: 'echo done > outputs/test', outputs: ['train', 'test', 'extra'] }), deps)
    expect(r.status).toBe('failed')
    expect(r.exitCode).toBe(0)
    expect(r.error?.code).toBe('MISSING_OUTPUT')
    expect(r.error?.message).toContain('"train" (expected at outputs/train)')
    expect(r.error?.message).toContain('"extra" (expected at outputs/extra)')
    expect(r.error?.message).not.toContain('"test"')
    expect(r.outputs).toEqual({})
  })

  it('fails a non-zero exit with the exit code and the last lines of stderr', async () => {
    const r = await runAttempt(task({ command: 'echo fine; echo "Traceback: boom" >&2; echo "ValueError: bad" >&2; exit 3' }), deps)
    expect(r.status).toBe('failed')
    expect(r.exitCode).toBe(3)
    expect(r.error?.code).toBe('STEP_FAILED')
    expect(r.error?.message).toMatch(/step "train" exited with code 3; last lines of stderr:\n {2}Traceback: boom\n {2}ValueError: bad$/)
    expect((await storedLog(r.log)).map(l => `${l.stream}:${l.line}`)).toEqual(['stdout:fine', 'stderr:Traceback: boom', 'stderr:ValueError: bad'])
  })

  it('kills the process tree at the timeout and says so', async () => {
    const pids = join(dir, 'pids')
    await mkdir(pids)
    const r = await runAttempt(task({
      command: `sleep 300 & echo $! > ${pids}/child; echo $$ > ${pids}/main; sleep 300`,
      timeoutMs: 1500
    }), { ...deps, killGraceMs: 1000 })
    expect(r.status).toBe('failed')
    expect(r.error?.code).toBe('TIMEOUT')
    expect(r.error?.message).toBe('step "train" exceeded its timeout of 1500ms; its process tree was killed')
    for (const f of ['child', 'main']) {
      const pid = Number(await readFile(join(pids, f), 'utf8'))
      started.push(pid)
      expect(pid).toBeGreaterThan(0)
      expect(alive(pid)).toBe(false)
    }
  })

  it('is cancelled by its signal, killing the process tree', async () => {
    const controller = new AbortController()
    const pidFile = join(dir, 'child.pid')
    const r = await runAttempt(task({ command: `sleep 300 & echo $! > ${pidFile}; echo ready; wait` }), {
      ...deps,
      signal: controller.signal,
      onLine: l => { if (l.line === 'ready') controller.abort() }
    })
    expect(r.status).toBe('cancelled')
    expect(r.error?.code).toBe('CANCELLED')
    const child = Number(await readFile(pidFile, 'utf8'))
    started.push(child)
    expect(alive(child)).toBe(false)
  })

  it('keeps inputs read-only: a step that writes into them fails', async () => {
    const data = await ingestFile('original')
    const tree = await ingestTree({ 'a.csv': '1', 'sub/b.csv': '2' })
    const modes = await runAttempt(task({ command: 'stat -c "%a %n" inputs inputs/data inputs/tree inputs/tree/sub/b.csv', inputs: { data, tree } }), deps)
    expect((await storedLog(modes.log)).map(l => l.line)).toEqual(['555 inputs', '444 inputs/data', '555 inputs/tree', '444 inputs/tree/sub/b.csv'])

    // Permissions stop a non-root step's write; a root step's write is caught after it exits.
    const appended = await runAttempt(task({ command: 'echo more >> inputs/data', inputs: { data } }), deps)
    expect(appended.status).toBe('failed')
    expect(appended.error?.message).toMatch(isRoot ? /modified its read-only inputs \(inputs\/data\)/ : /exited with code .*inputs\/data: Permission denied/s)
    const added = await runAttempt(task({ command: 'echo x > inputs/tree/new.csv', inputs: { tree } }), deps)
    expect(added.status).toBe('failed')
    expect(added.error?.message).toContain('inputs/tree/new.csv')
    // The store's copy is untouched, and the read-only workdirs were removed.
    const back = join(dir, 'data-back')
    await store.materialize(data.digest, back)
    expect(await readFile(back, 'utf8')).toBe('original')
    expect(await leftovers()).toEqual([])
  })

  it('gives the step its PIPEMESH_* variables, its GPUs, its env and secrets, and not the agent environment', async () => {
    process.env.PIPEMESH_TEST_AGENT_ONLY = 'leak'
    try {
      const show = 'echo "$PIPEMESH_RUN_ID|$PIPEMESH_STEP|$PIPEMESH_ATTEMPT|cuda=$CUDA_VISIBLE_DEVICES|nv=$NVIDIA_VISIBLE_DEVICES|$SEED|${PIPEMESH_TEST_AGENT_ONLY:-unset}"; echo "$PIPEMESH_WORKDIR"; pwd; echo "$TMPDIR"'
      const t = task({ command: show, attempt: 2, gpus: [1, 3], env: { SEED: '7' } })
      const [vars, workdir, pwd, tmp] = await printed(await runAttempt(t, deps))
      expect(vars).toBe('run-1|train|2|cuda=1,3|nv=1,3|7|unset')
      // The step runs in PIPEMESH_WORKDIR, with a TMPDIR of its own beside it.
      expect(pwd).toBe(workdir)
      expect(workdir?.startsWith(workRoot + '/')).toBe(true)
      expect(tmp?.startsWith(workRoot + '/')).toBe(true)
      expect(tmp).not.toBe(workdir)

      const cpu = await runAttempt(task({ command: 'echo "[${CUDA_VISIBLE_DEVICES-unset}] $NVIDIA_VISIBLE_DEVICES"' }), deps)
      expect((await storedLog(cpu.log)).map(l => l.line)).toEqual(['[] none'])
    } finally {
      delete process.env.PIPEMESH_TEST_AGENT_ONLY
    }
  })

  it('redacts secrets that a step prints from its log and its error', async () => {
    const lines: LogLine[] = []
    const r = await runAttempt(task({ command: 'echo "key=$API_KEY"; echo "bad key $API_KEY" >&2; exit 1', secrets: { API_KEY: 'hunter2-xyz' } }), { ...deps, onLine: l => lines.push(l) })
    expect(r.status).toBe('failed')
    expect(r.error?.message).toContain('bad key ***')
    expect(JSON.stringify(r)).not.toContain('hunter2')
    expect(lines.map(l => l.line)).toEqual(['key=***', 'bad key ***'])
    expect((await storedLog(r.log)).map(l => l.line)).toEqual(['key=***', 'bad key ***'])
  })

  it('runs with its environment: PATH and node_modules from the prepared environment', async () => {
    const files = await ingestFiles({ 'tool': '#!/bin/sh\necho tool-from-env\n' })
    const environment = { name: 'tools', files, setup: 'mkdir -p bin && cp tool bin/ && chmod +x bin/tool', digest: `sha256:${createHash('sha256').update(files).digest('hex')}` as Digest }
    const r = await runAttempt(task({ command: ['tool'], environment }), deps)
    expect(r.status).toBe('succeeded')
    expect((await storedLog(r.log)).map(l => l.line)).toEqual(['tool-from-env'])
  })

  it('reports an environment whose setup fails as the attempt failure', async () => {
    const files = await ingestFiles({ 'x': '' })
    const environment = { name: 'broken', files, setup: 'echo "no such package" >&2; exit 4', digest: `sha256:${createHash('sha256').update(`${files}broken`).digest('hex')}` as Digest }
    const r = await runAttempt(task({ command: 'true', environment }), deps)
    expect(r.status).toBe('failed')
    expect(r.exitCode).toBeNull()
    expect(r.error?.code).toBe('ENVIRONMENT_FAILED')
    expect(r.error?.message).toContain('no such package')
  })

  it('refuses code that uses the reserved outputs/ name, and keeps the workdir when asked', async () => {
    const code = await ingestFiles({ 'outputs/x': '' })
    const r = await runAttempt(task({ command: 'true', code }), deps)
    expect(r.status).toBe('failed')
    expect(r.error?.message).toContain('"outputs"')

    const kept = task({ command: 'echo hi > note' })
    expect((await runAttempt(kept, { ...deps, workdirs: new WorkdirPool(workRoot, { keep: true }) })).status).toBe('succeeded')
    expect(existsSync(join(workRoot, 'run-1', `train.${kept.attempt}`, 'note'))).toBe(true)
  })

  it('gives every attempt empty directories: reused when the last attempt left them empty, never with its files', async () => {
    const where = 'echo "$PWD"; echo "$TMPDIR"; ls -A . "$TMPDIR"'
    const first = await printed(await runAttempt(task({ command: where }), deps))
    // A step that left nothing behind hands its directories on as they are.
    const second = await printed(await runAttempt(task({ command: where }), deps))
    expect(new Set(second.slice(0, 2))).toEqual(new Set(first.slice(0, 2)))
    // One that writes into both...
    const messy = await printed(await runAttempt(task({ command: `${where}; echo x > left-here; mkdir -p "$TMPDIR/d"; echo y > "$TMPDIR/d/f"` }), deps))
    expect(messy.slice(2)).toEqual(['.:', '', `${messy[1] ?? ''}:`])
    // ...leaves nothing for the next: its directories are removed, and the next attempt's are empty.
    const next = await printed(await runAttempt(task({ command: where }), deps))
    expect(next.slice(2)).toEqual(['.:', '', `${next[1] ?? ''}:`])
    expect(existsSync(messy[0] ?? '')).toBe(false)
    expect(existsSync(messy[1] ?? '')).toBe(false)
    expect(await leftovers()).toEqual([])
  })

  it('does not hand on a directory a step left empty but changed: made unwritable, or swapped for a link', async () => {
    const where = 'echo "$PWD"; echo "$TMPDIR"'
    const chmodded = await printed(await runAttempt(task({ command: `${where}; chmod 500 . "$TMPDIR"` }), deps))
    const elsewhere = await mkdtemp(join(dir, 'elsewhere-'))
    const swapped = await printed(await runAttempt(task({ command: `${where}; cd .. && rmdir "$PIPEMESH_WORKDIR" && ln -s ${elsewhere} "$PIPEMESH_WORKDIR"` }), deps))
    // The next attempts get directories they can write in, none of the changed ones (the
    // swapping step's TMPDIR was left as it was, and may be handed on).
    const changed = [...chmodded, swapped[0]]
    for (let i = 0; i < 2; i++) {
      const next = await runAttempt(task({ command: `${where}; touch here "$TMPDIR/there"` }), deps)
      expect(next.status, next.error?.message).toBe('succeeded')
      const [cwd, tmp] = await printed(next)
      expect(changed).not.toContain(cwd)
      expect(changed).not.toContain(tmp)
    }
    // The link was removed, not what it pointed to.
    expect(existsSync(elsewhere)).toBe(true)
    expect(await leftovers()).toEqual([])
  })

  it('restores the checkpoint writable, saves it while the step runs and once more when it fails', async () => {
    const restore = await ingestTree({ epoch: '3' })
    const go = join(dir, 'go')
    const saves: ArtifactRef[] = []
    // Counts epochs on from the restored one, writing each under a temporary name first, until
    // the test has seen a save; then a few more, and fails.
    const command = `e=$(cat "$PIPEMESH_CHECKPOINT_DIR/epoch"); echo "start $e"; i=$e
while [ ! -e ${go} ]; do i=$((i+1)); echo $i > ckpt/epoch.tmp && mv ckpt/epoch.tmp ckpt/epoch; sleep 0.05; done
i=$((i+1)); echo $i > ckpt/epoch; echo "end $i"; exit 3`
    const r = await runAttempt(task({ command, checkpoint: { path: 'ckpt', everyMs: 100, restore } }), {
      ...deps,
      onCheckpoint: ref => { saves.push(ref); void writeFile(go, '') }
    })
    expect(r.status).toBe('failed')
    expect(r.exitCode).toBe(3)
    const lines = await printed(r)
    expect(lines[0]).toBe('start 3')
    const end = Number(lines.at(-1)?.replace('end ', ''))
    expect(saves.length).toBeGreaterThan(0)
    const periodic = Number(await materializedText(saves[0]!, 'epoch'))
    expect(periodic).toBeGreaterThan(3)
    expect(periodic).toBeLessThan(end)
    // The last save is where the failed step got to, exactly: taken after it ended, or by a
    // periodic save that happened to run as it ended (and is then not reported twice).
    const last = r.checkpoint ?? saves.at(-1)!
    expect(await materializedText(last, 'epoch')).toBe(`${end}\n`)
    expect(await leftovers()).toEqual([])
  })

  it('moves a failed step\'s checkpoint files into the store for its last save instead of copying them, unless the workdir is kept', async () => {
    // No periodic save within the step's life: the one save is the last, after it failed.
    const command = 'head -c 3145733 /dev/urandom > ckpt/model.pt && echo 1 > ckpt/epoch && exit 1'
    const r = await runAttempt(task({ command, checkpoint: { path: 'ckpt', everyMs: 600_000 } }), deps)
    expect(r.status).toBe('failed')
    const save = r.checkpoint!
    expect(await materializedText(save, 'epoch')).toBe('1\n')
    // The model's whole chunks lie in one pack at their offsets in the file: that file itself.
    const model = (await store.listChunks(save.digest)).filter(c => c.size === 1048576)
    const places = await Promise.all(model.map(async c => await store.chunkLocation(c.digest)))
    expect(places.map(p => p?.offset)).toEqual([0, 1048576, 2097152])
    expect(new Set(places.map(p => p?.file)).size).toBe(1)

    const kept = task({ command, checkpoint: { path: 'ckpt', everyMs: 600_000 } })
    const rk = await runAttempt(kept, { ...deps, workdirs: new WorkdirPool(workRoot, { keep: true }) })
    expect(rk.checkpoint).toBeDefined()
    expect(existsSync(join(workRoot, 'run-1', `train.${kept.attempt}`, 'ckpt', 'model.pt'))).toBe(true)
  })

  it('says in the step\'s log when its checkpoint directory cannot be saved, and the step goes on', async () => {
    const go = join(dir, 'go-note')
    const r = await runAttempt(task({
      // A link out of the working directory cannot be stored: every save of the directory fails.
      command: `ln -s /etc/hostname ckpt/outside; i=0; while [ ! -e ${go} ] && [ $i -lt 600 ]; do i=$((i+1)); sleep 0.05; done; echo done`,
      checkpoint: { path: 'ckpt', everyMs: 50 }
    }), {
      ...deps,
      onLine: line => { if (line.line.includes('saving the checkpoint directory failed')) void writeFile(go, '') }
    })
    expect(r.status).toBe('succeeded')
    const lines = await printed(r)
    expect(lines.find(l => l.includes('saving the checkpoint directory failed'))).toMatch(/^\[pipemesh\].*the step goes on; the next save is in 50ms\): .*outside/)
    expect(lines.at(-1)).toBe('done')
  })

  it('takes no save of an empty checkpoint directory, nor a last one when the step succeeds', async () => {
    const saves: ArtifactRef[] = []
    const withDeps = { ...deps, onCheckpoint: (ref: ArtifactRef) => { saves.push(ref) } }
    const empty = await runAttempt(task({ command: 'test -d "$PIPEMESH_CHECKPOINT_DIR" && [ -z "$(ls -A ckpt)" ] || exit 9; exit 1', checkpoint: { path: 'ckpt', everyMs: 50 } }), withDeps)
    expect(empty.exitCode).toBe(1)
    expect(empty.checkpoint).toBeUndefined()
    const ok = await runAttempt(task({ command: 'echo 7 > ckpt/epoch', checkpoint: { path: 'ckpt', everyMs: 60_000 } }), withDeps)
    expect(ok.status).toBe('succeeded')
    expect(ok.checkpoint).toBeUndefined()
    expect(saves).toEqual([])
  })

  it('refuses a checkpoint directory that the code snapshot already has, or one outside the working directory', async () => {
    const code = await ingestFiles({ 'ckpt/x': 'code' })
    const r = await runAttempt(task({ command: 'true', code, checkpoint: { path: 'ckpt', everyMs: 1000 } }), deps)
    expect(r.status).toBe('failed')
    expect(r.error?.message).toContain('its code has "ckpt", the step\'s checkpoint directory')
    const escape = await runAttempt(task({ command: 'true', checkpoint: { path: '../../outside', everyMs: 1000 } }), deps)
    expect(escape.error?.message).toContain('checkpoint directory "../../outside" is not a plain relative path')
  })

  it('does not start an attempt that is already cancelled', async () => {
    const r = await runAttempt(task({ command: 'touch should-not-exist' }), { ...deps, signal: AbortSignal.abort() })
    expect(r.status).toBe('cancelled')
    expect(existsSync(workRoot)).toBe(false)
  })

  it('formats timeouts the way pipelines write them', () => {
    expect(formatTimeout(600_000)).toBe('10m')
    expect(formatTimeout(5_400_000)).toBe('1h30m')
    expect(formatTimeout(90_000)).toBe('1m30s')
    expect(formatTimeout(1500)).toBe('1500ms')
  })
})
