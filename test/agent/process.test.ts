import { mkdtemp, readFile, readdir, rm, writeFile, copyFile, mkdir } from 'node:fs/promises'
import { existsSync, readFileSync } from 'node:fs'
import { spawn } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { launcherKind, stopLaunchers } from '../../agent/launcher-client.js'
import { killAllRunning, reapOrphans, runProcess } from '../../agent/process.js'
import { parseLogLine } from '../../agent/log-capture.js'
import type { LogLine } from '../../src/protocol/task.js'

const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' }
let dir: string
const started: number[] = []

beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'pm-process-')) })
afterEach(async () => {
  for (const pid of started.splice(0)) try { process.kill(pid, 'SIGKILL') } catch {}
  await rm(dir, { recursive: true, force: true })
})

/** A process is gone when it no longer exists or is a zombie (PID 1 here may not reap orphans). */
function alive (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    return state !== 'Z' && state !== 'X'
  } catch {
    if (existsSync('/proc/self')) return false
    try { process.kill(pid, 0); return true } catch { return false }
  }
}

async function waitFor (cond: () => boolean | Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

async function readPid (file: string): Promise<number> {
  await waitFor(() => existsSync(file) && readFileSync(file, 'utf8').trim() !== '', file)
  const pid = Number((await readFile(file, 'utf8')).trim())
  started.push(pid)
  return pid
}

function logLines (file: string): LogLine[] {
  return readFileSync(file, 'utf8').split('\n').filter(l => l !== '').map(l => {
    const parsed = parseLogLine(l)
    if (parsed === undefined) throw new Error(`unparseable log line: ${l}`)
    return parsed
  })
}

const hasPython = existsSync('/usr/bin/python3') || (process.env.PATH ?? '').split(':').some(d => d !== '' && existsSync(join(d, 'python3')))

describe('step launchers', () => {
  afterEach(async () => {
    delete process.env.PIPEMESH_LAUNCHER
    delete process.env.PIPEMESH_PYTHON
    await stopLaunchers()
  })

  it.skipIf(!hasPython)('starts steps through launcher.py where python3 exists (no python3 here: skipped)', async () => {
    await stopLaunchers()
    expect(launcherKind()).toBe('python')
    const lines: LogLine[] = []
    const r = await runProcess({ command: ['sh', '-c', 'echo "parent $PPID"; sleep 0.2; tr "\\0" " " < /proc/$PPID/cmdline; echo'], cwd: dir, env, onLine: l => lines.push(l) })
    expect(r.exitCode).toBe(0)
    expect(lines.map(l => l.line).join('\n')).toMatch(/python3.* -I -S \S*launcher\.py/)
  })

  it('starts steps through the Node launcher when PIPEMESH_LAUNCHER=node', async () => {
    process.env.PIPEMESH_LAUNCHER = 'node'
    await stopLaunchers()
    const lines: LogLine[] = []
    const r = await runProcess({ command: ['sh', '-c', 'tr "\\0" " " < /proc/$PPID/cmdline; echo'], cwd: dir, env, onLine: l => lines.push(l) })
    expect(r.exitCode).toBe(0)
    expect(lines.map(l => l.line).join('\n')).toMatch(/node.*launcher\.js/)
  })

  it('falls back to the Node launcher when the python launcher cannot start, losing no step', async () => {
    for (const python of ['/bin/false', join(dir, 'no-such-python')]) {
      process.env.PIPEMESH_PYTHON = python
      await stopLaunchers()
      expect(launcherKind()).toBe('python')
      const runs = await Promise.all([1, 2, 3].map(async (i) => {
        const lines: LogLine[] = []
        const r = await runProcess({ command: ['sh', '-c', `echo step ${i}; tr "\\0" " " < /proc/$PPID/cmdline; echo`], cwd: dir, env, onLine: l => lines.push(l) })
        return { r, out: lines.map(l => l.line).join('\n') }
      }))
      for (const [i, { r, out }] of runs.entries()) {
        expect(r.exitCode, `step ${i + 1} with PIPEMESH_PYTHON=${python}`).toBe(0)
        expect(out).toContain(`step ${i + 1}`)
        expect(out).toMatch(/node.*launcher\.js/)
      }
      expect(launcherKind()).toBe('node')
    }
  })

  it('refuses an unknown PIPEMESH_LAUNCHER, naming the choices', () => {
    process.env.PIPEMESH_LAUNCHER = 'bash'
    expect(() => launcherKind()).toThrow(/PIPEMESH_LAUNCHER must be "node" or "python", not "bash"/)
  })
})

describe.each(['python', 'node'] as const)('runProcess, %s launcher', (kind) => {
  beforeAll(async () => { process.env.PIPEMESH_LAUNCHER = kind; await stopLaunchers() })
  afterAll(async () => { delete process.env.PIPEMESH_LAUNCHER; await stopLaunchers() })

  it('fails only the step whose command no process can take (a NUL byte), and keeps launching', async () => {
    const bad = await runProcess({ command: ['printf', 'a\0b'], cwd: dir, env })
    expect(bad.exitCode).toBeNull()
    expect(bad.spawnError).toMatch(/^could not start printf: .*(null|NUL|\\u0000|\\x00)/i)
    const lines: LogLine[] = []
    const good = await runProcess({ command: ['echo', 'still here'], cwd: dir, env, onLine: l => lines.push(l) })
    expect(good.exitCode).toBe(0)
    expect(lines.map(l => l.line)).toEqual(['still here'])
  })

  it('passes on every byte of a step that prints faster than the agent reads', async () => {
    let lines = 0
    let bytes = 0
    let stalled = false
    const r = await runProcess({
      command: ['sh', '-c', 'head -c 20000000 /dev/zero | tr "\\0" x | fold -w 999'],
      cwd: dir,
      env,
      maxLogBytes: 64 * 1024 * 1024,
      onLine: (l) => {
        // A busy agent: the launcher must hold the step back, not pile up its output.
        if (!stalled) { stalled = true; const until = Date.now() + 300; while (Date.now() < until) { /* busy */ } }
        lines++
        bytes += l.line.length
      }
    })
    expect(r.exitCode).toBe(0)
    expect(lines).toBe(Math.ceil(20_000_000 / 999))
    expect(bytes).toBe(20_000_000)
  })

  it('starts steps with every signal at its default (none ignored, none blocked)', async () => {
    const lines: LogLine[] = []
    // grep reading its own status: the step process exactly as the launcher started it.
    const r = await runProcess({ command: ['grep', '-E', '^Sig(Ign|Blk)', '/proc/self/status'], cwd: dir, env, onLine: l => lines.push(l) })
    expect(r.exitCode).toBe(0)
    expect(lines.map(l => l.line)).toEqual(['SigBlk:\t0000000000000000', 'SigIgn:\t0000000000000000'])
  })

  it('reports the exit code, the last stderr lines, and timestamped lines in order', async () => {
    const lines: LogLine[] = []
    const logFile = join(dir, 'log')
    const before = Date.now()
    const r = await runProcess({
      command: 'echo one; echo two >&2; echo three; for i in 1 2 3 4 5; do echo "err $i" >&2; done; printf partial; exit 3',
      cwd: dir, env, logFile, onLine: l => lines.push(l)
    })
    const after = Date.now()
    expect(r.exitCode).toBe(3)
    expect(r.signal).toBeNull()
    expect(r.timedOut).toBe(false)
    expect(r.pid).toBeGreaterThan(0)
    expect(r.stderrTail).toEqual(['two', 'err 1', 'err 2', 'err 3', 'err 4', 'err 5'])
    expect(lines.filter(l => l.stream === 'stdout').map(l => l.line)).toEqual(['one', 'three', 'partial'])
    for (const l of lines) {
      expect(l.t).toBeGreaterThanOrEqual(before)
      expect(l.t).toBeLessThanOrEqual(after)
    }
    expect(r.logWritten).toBe(true)
    expect(logLines(logFile)).toEqual(lines)
  })

  it('runs an argv command without a shell', async () => {
    const lines: LogLine[] = []
    const r = await runProcess({ command: ['printf', '%s\\n', '$HOME; echo no'], cwd: dir, env, onLine: l => lines.push(l) })
    expect(r.exitCode).toBe(0)
    expect(lines.map(l => l.line)).toEqual(['$HOME; echo no'])
  })

  it('gives the child exactly the environment passed', async () => {
    const lines: LogLine[] = []
    await runProcess({ command: 'echo "[$FOO][$HOME]"', cwd: dir, env: { ...env, FOO: 'bar' }, onLine: l => lines.push(l) })
    expect(lines.map(l => l.line)).toEqual(['[bar][]'])
  })

  it('reports a program that cannot be started', async () => {
    const r = await runProcess({ command: ['pipemesh-no-such-program'], cwd: dir, env })
    expect(r.exitCode).toBeNull()
    expect(r.spawnError).toMatch(/^could not start pipemesh-no-such-program: .*(ENOENT|EACCES)/)
  })

  it('runs a plain-word string command as the shell would, without starting one', async () => {
    const lines: LogLine[] = []
    // /proc/self/stat of `cat` names cat itself: no sh in between.
    const r = await runProcess({ command: 'cat /proc/self/stat', cwd: dir, env, onLine: l => lines.push(l) })
    expect(r.exitCode).toBe(0)
    expect(lines[0]?.line).toMatch(/^\d+ \(cat\) /)
    // Shell syntax, builtins and assignments still go through sh.
    const viaSh: LogLine[] = []
    await runProcess({ command: 'cd / && pwd', cwd: dir, env, onLine: l => viaSh.push(l) })
    expect(viaSh.map(l => l.line)).toEqual(['/'])
  })

  it('reports a missing program in a string command the way sh does (exit 127, "not found")', async () => {
    const r = await runProcess({ command: 'pipemesh-no-such-program --flag', cwd: dir, env })
    expect(r.exitCode).toBe(127)
    expect(r.spawnError).toBeUndefined()
    expect(r.stderrTail.join('\n')).toMatch(/pipemesh-no-such-program: .*not found/)
  })

  it('kills the whole process tree at the timeout', async () => {
    const lines: string[] = []
    const r = await runProcess({
      command: 'sleep 300 & echo $! > child.pid; echo ready; sleep 300',
      cwd: dir, env, timeoutMs: 1000, killGraceMs: 2000, onLine: l => lines.push(l.line)
    })
    started.push(r.pid)
    expect(lines).toEqual(['ready'])
    const child = await readPid(join(dir, 'child.pid'))
    expect(r.timedOut).toBe(true)
    expect(r.cancelled).toBe(false)
    expect(r.exitCode).toBeNull()
    expect(r.signal).toBe('SIGTERM')
    expect(alive(r.pid)).toBe(false)
    expect(alive(child)).toBe(false)
  })

  it('SIGKILLs processes that ignore SIGTERM once the grace period is over', async () => {
    const r = await runProcess({
      command: "trap '' TERM; sleep 300 & echo $! > child.pid; echo ready; wait; wait",
      cwd: dir, env, timeoutMs: 1000, killGraceMs: 300
    })
    started.push(r.pid)
    const child = await readPid(join(dir, 'child.pid'))
    expect(r.timedOut).toBe(true)
    expect(r.signal).toBe('SIGKILL')
    expect(r.durationMs).toBeGreaterThanOrEqual(1300)
    expect(alive(r.pid)).toBe(false)
    expect(alive(child)).toBe(false)
  })

  it('kills the whole process tree when cancelled', async () => {
    const controller = new AbortController()
    const r = await runProcess({
      command: 'sh -c "sleep 300 & echo \\$! > g.tmp; mv g.tmp grandchild.pid; wait" & echo ready; wait',
      cwd: dir, env, signal: controller.signal, killGraceMs: 2000,
      onLine: l => { if (l.line === 'ready') void waitFor(() => existsSync(join(dir, 'grandchild.pid')), 'pid').then(() => controller.abort()) }
    })
    started.push(r.pid)
    const grandchild = await readPid(join(dir, 'grandchild.pid'))
    expect(r.cancelled).toBe(true)
    expect(r.timedOut).toBe(false)
    expect(alive(r.pid)).toBe(false)
    expect(alive(grandchild)).toBe(false)
  })

  it('refuses to start when already cancelled', async () => {
    await expect(runProcess({ command: 'true', cwd: dir, env, signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'CANCELLED' })
  })

  it('kills what a step leaves running when it exits', async () => {
    const r = await runProcess({ command: 'sleep 300 >/dev/null 2>&1 & echo $! > child.pid', cwd: dir, env })
    const child = await readPid(join(dir, 'child.pid'))
    expect(r.exitCode).toBe(0)
    await waitFor(() => !alive(child), 'the leftover process to die', 5000)
  })

  it('returns even when a process that left the group keeps the output pipes open', async () => {
    const r = await runProcess({ command: "setsid sh -c 'echo $$ > p.tmp; mv p.tmp escaped.pid; exec sleep 300' & while [ ! -f escaped.pid ]; do sleep 0.01; done", cwd: dir, env })
    const escaped = await readPid(join(dir, 'escaped.pid'))
    expect(r.exitCode).toBe(0)
    expect(alive(escaped)).toBe(true)
  })

  it('killAllRunning kills running steps (the agent shutdown path)', async () => {
    let pid = 0
    const p = runProcess({ command: 'sleep 300', cwd: dir, env, onStart: p => { pid = p } })
    await waitFor(() => pid !== 0, 'start')
    expect(killAllRunning()).toBeGreaterThanOrEqual(1)
    const r = await p
    expect(r.signal).toBe('SIGKILL')
    expect(alive(pid)).toBe(false)
  })

  it('reapOrphans kills process groups recorded by a crashed agent, and only those', async () => {
    const track = join(dir, 'track')
    const crashed = join(dir, 'crashed')
    await mkdir(crashed)
    let pid = 0
    const p = runProcess({ command: 'sleep 300 & echo $! > child.pid; wait', cwd: dir, env, trackDir: track, onStart: p => { pid = p } })
    await waitFor(async () => pid !== 0 && (await readdir(track).catch(() => [] as string[])).includes(String(pid)), 'the pid record')
    const child = await readPid(join(dir, 'child.pid'))
    await copyFile(join(track, String(pid)), join(crashed, String(pid)))
    // A record whose pid now belongs to another process (different start time) must be left alone.
    const unrelated = spawn('sleep', ['300'], { detached: true, stdio: 'ignore' })
    started.push(unrelated.pid as number)
    await writeFile(join(crashed, String(unrelated.pid)), '1')

    expect(await reapOrphans(crashed)).toBe(1)
    const r = await p
    expect(r.signal).toBe('SIGKILL')
    await waitFor(() => !alive(child), 'the orphan child to die', 5000)
    expect(alive(unrelated.pid as number)).toBe(true)
    expect(await readdir(crashed)).toEqual([])
    await waitFor(async () => !(await readdir(track)).includes(String(pid)), 'the record of the finished process to go')
  })

  it('keeps the beginning and the end of output beyond maxLogBytes, and says what was dropped between', async () => {
    const lines: LogLine[] = []
    const logFile = join(dir, 'log')
    const r = await runProcess({
      command: 'i=0; while [ $i -lt 200 ]; do echo "line $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"; i=$((i+1)); done; echo last >&2',
      cwd: dir, env, logFile, maxLogBytes: 2000, onLine: l => lines.push(l)
    })
    expect(r.exitCode).toBe(0)
    const logged = logLines(logFile)
    expect(logged).toEqual(lines)
    expect(logged[0]?.line).toBe('line 0 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx')
    const notes = logged.filter(l => l.line.startsWith('[pipemesh]'))
    expect(notes).toHaveLength(2)
    expect(notes[0]?.line).toMatch(/log cap of 2000 bytes reached: output from here on is dropped, except the last lines/)
    const [, dropped, kept] = /(\d+) line\(s\), \d+ bytes of output were dropped here; the last (\d+) line\(s\) follow/.exec(notes[1]?.line ?? '') ?? []
    // The end of the output, in order, after the second note: the last lines echoed, then stderr's.
    const after = logged.slice(logged.indexOf(notes[1]!) + 1).map(l => l.line)
    expect(after).toHaveLength(Number(kept))
    expect(after.slice(-2)).toEqual(['line 199 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx', 'last'])
    // Every line is accounted for: kept at the start, dropped, or kept at the end.
    const head = logged.indexOf(notes[0]!)
    expect(head + Number(dropped) + Number(kept)).toBe(201)
    expect(logged.length).toBeLessThan(40)
    // The tail still tells why a step failed even when the log was capped.
    expect(r.stderrTail).toEqual(['last'])
  })

  it('redacts secrets in the log, the live lines and the stderr tail', async () => {
    const lines: LogLine[] = []
    const logFile = join(dir, 'log')
    const r = await runProcess({
      command: 'echo "token=$TOKEN and again $TOKEN"; echo "$TOKEN" >&2; exit 1',
      cwd: dir, env: { ...env, TOKEN: 's3cr3t-v@lue' }, logFile, redact: ['s3cr3t-v@lue'], onLine: l => lines.push(l)
    })
    expect(lines.map(l => l.line)).toEqual(['token=*** and again ***', '***'])
    expect(readFileSync(logFile, 'utf8')).not.toContain('s3cr3t')
    expect(r.stderrTail).toEqual(['***'])
  })

  it('cuts very long lines and splits on carriage returns', async () => {
    const lines: LogLine[] = []
    const r = await runProcess({
      command: "head -c 300000 /dev/zero | tr '\\0' a; echo; echo after; printf '10%%\\r20%%\\r\\n'; printf 'end'",
      cwd: dir, env, onLine: l => lines.push(l)
    })
    expect(r.exitCode).toBe(0)
    expect(lines).toHaveLength(5)
    expect(lines[0]?.line.startsWith('a'.repeat(65536) + ' [pipemesh] [line cut')).toBe(true)
    expect(lines.slice(1).map(l => l.line)).toEqual(['after', '10%', '20%', 'end'])
  })

  it('keeps a progress bar to one redraw every 2 s and its last state, saying how many it left out', async () => {
    for (const [command, last] of [
      ['for i in $(seq 1 99); do printf "%d%%\\r" $i; done; printf "100%%\\n"; echo done', 'done'],
      // A bar that never ends its line: its last redraw is how it ended.
      ['for i in $(seq 1 99); do printf "%d%%\\r" $i; done; printf "100%%\\r"', '100%']
    ] as const) {
      const lines: LogLine[] = []
      const r = await runProcess({ command, cwd: dir, env, onLine: l => lines.push(l) })
      expect(r.exitCode).toBe(0)
      const text = lines.map(l => l.line)
      const note = text.find(l => l.startsWith('[pipemesh]'))
      const leftOut = Number(/(\d+) progress-bar redraw\(s\) .* were left out: one is kept every 2 s, and the last/.exec(note ?? '')?.[1] ?? 0)
      const redraws = text.filter(l => /^\d+%$/.test(l))
      // Every redraw is either shown, in order, or counted as left out; on an idle machine nearly all are left out.
      expect(redraws.length + leftOut, command).toBe(100)
      expect(redraws[0]).toBe('1%')
      expect(redraws.map(l => parseInt(l))).toEqual([...redraws.map(l => parseInt(l))].sort((a, b) => a - b))
      expect(text.filter(l => !l.startsWith('[pipemesh]')).at(-1)).toBe(last)
    }
  })
})
