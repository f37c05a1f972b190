import { existsSync, statSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { WorkdirPool } from '../../agent/workdirs.js'

let dir: string
let root: string
const names = { runId: 'run-1', stepId: 'train', attempt: 1 }

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pm-workdirs-'))
  root = join(dir, 'work')
})
afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

const isDir = (p: string): boolean => statSync(p, { throwIfNoEntry: false })?.isDirectory() === true

describe('WorkdirPool', () => {
  it('hands out empty directories, and takes back for reuse only those left empty', async () => {
    const pool = new WorkdirPool(root)
    const first = pool.take(names, false)
    expect(isDir(first.cwd) && isDir(first.tmp)).toBe(true)
    expect(first.tmp).not.toBe(first.cwd)
    expect(first.log).toBe(`${first.cwd}.log`)
    await pool.give(first)
    const second = pool.take(names, false)
    expect(new Set([second.cwd, second.tmp])).toEqual(new Set([first.cwd, first.tmp]))

    // Anything left in either: that directory is removed, not handed out again.
    await writeFile(join(second.cwd, 'left'), 'x')
    await mkdir(join(second.tmp, 'sub'))
    await pool.give(second)
    expect(existsSync(second.cwd) || existsSync(second.tmp)).toBe(false)
    const third = pool.take(names, false)
    expect([third.cwd, third.tmp]).not.toContain(second.cwd)
    expect([third.cwd, third.tmp]).not.toContain(second.tmp)
    expect(await readdir(third.cwd)).toEqual([])
  })

  it('removes what the executor put there itself (outputs/, a node_modules link) and the log', async () => {
    const pool = new WorkdirPool(root)
    const dirs = pool.take(names, false)
    await mkdir(join(dirs.cwd, 'outputs'))
    await writeFile(dirs.log, 'log')
    await pool.give(dirs, { known: ['outputs'], logWritten: true })
    expect(existsSync(dirs.log)).toBe(false)
    expect(await readdir(dirs.cwd)).toEqual([])
    expect(pool.take(names, false).cwd).toBe(dirs.cwd)
  })

  it('leaves the working directory of a step with code to be made by its materialization', async () => {
    const pool = new WorkdirPool(root)
    const dirs = pool.take(names, true)
    expect(existsSync(dirs.cwd)).toBe(false)
    expect(isDir(dirs.tmp)).toBe(true)
    await mkdir(dirs.cwd)
    await writeFile(join(dirs.cwd, 'train.py'), 'print(1)')
    await pool.give(dirs)
    expect(existsSync(dirs.cwd)).toBe(false)
  })

  it('removes its spare directories and the emptied root when cleared, and works on afterwards', async () => {
    const pool = new WorkdirPool(root)
    await pool.give(pool.take(names, false))
    await pool.clear()
    expect(existsSync(root)).toBe(false)
    const dirs = pool.take(names, false)
    expect(isDir(dirs.cwd) && isDir(dirs.tmp)).toBe(true)
  })

  it('makes fresh directories when the work directory was wiped under it', async () => {
    const pool = new WorkdirPool(root)
    await pool.give(pool.take(names, false))
    await rm(root, { recursive: true, force: true })
    const dirs = pool.take(names, false)
    expect(isDir(dirs.cwd) && isDir(dirs.tmp)).toBe(true)
  })

  it('keeps every attempt under its run and step name when asked to, for debugging', async () => {
    const pool = new WorkdirPool(root, { keep: true })
    const dirs = pool.take(names, false)
    expect(dirs.cwd).toBe(join(root, 'run-1', 'train.1'))
    expect(dirs.tmp).toBe(join(root, 'run-1', 'train.1.tmp'))
    await writeFile(join(dirs.cwd, 'note'), 'x')
    await pool.give(dirs)
    expect(existsSync(join(dirs.cwd, 'note'))).toBe(true)
    // Delivered again (an agent that reconnected): the attempt starts afresh.
    const again = pool.take(names, false)
    expect(await readdir(again.cwd)).toEqual([])
  })
})
