// Capability detection against the real machine (cores, memory, disk, and the GPU where nvidia-smi
// finds one), the `--resources` overrides that let a test stand in a GPU, and flag parsing errors.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import os from 'node:os'
import { execFileSync } from 'node:child_process'
import { mkdtemp, rm, statfs } from 'node:fs/promises'
import { join } from 'node:path'
import { detectCapabilities, parseLabels, parseResourceOverrides } from '../../agent/capabilities.js'

const GiB = 2 ** 30

/** What nvidia-smi says, read independently of the code under test; `why` says why there is none. */
function nvidiaSmiGpus (): { gpus: Array<{ name: string, mib: number }>, why: string } {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=name,memory.total', '--format=csv,noheader,nounits'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] })
    const gpus = out.split('\n').filter(l => l.trim() !== '').map(l => {
      const i = l.lastIndexOf(',')
      return { name: l.slice(0, i).trim(), mib: Number(l.slice(i + 1)) }
    })
    return { gpus, why: gpus.length === 0 ? 'nvidia-smi lists no GPU' : '' }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    return { gpus: [], why: code === 'ENOENT' ? 'no nvidia-smi on this machine' : `nvidia-smi failed: ${(err as Error).message.split('\n')[0] ?? ''}` }
  }
}

const smi = nvidiaSmiGpus()
let dir: string

beforeAll(async () => { dir = await mkdtemp(join(os.tmpdir(), 'pipemesh-caps-')) })
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

describe('detectCapabilities', () => {
  it('reports the machine\'s real cores, memory, OS and free disk, quickly', async () => {
    await detectCapabilities({ dataDir: dir }) // first call pays module warm-up
    const started = performance.now()
    const caps = await detectCapabilities({ dataDir: dir })
    const ms = performance.now() - started
    console.log(`capability detection took ${ms.toFixed(0)} ms: ${caps.cpu.cores} cores ${caps.cpu.model}, ${caps.os}, ${caps.gpus.length} GPU(s)`)
    expect(ms).toBeLessThan(3000)

    expect(caps.cpu.cores).toBe(os.availableParallelism())
    expect(caps.cpu.cores).toBeLessThanOrEqual(os.cpus().length)
    const limit = process.constrainedMemory()
    expect(caps.memory).toBe(limit > 0 && limit < os.totalmem() ? limit : os.totalmem())
    expect(caps.cpu.model).not.toBe('')
    expect(caps.hostname).toBe(os.hostname())
    expect(caps.arch).toBe(os.arch())
    expect(caps.os).toContain(os.platform())
    expect(caps.capacity).toEqual({ cpu: caps.cpu.cores, memory: caps.memory, gpus: caps.gpus })
    expect(caps.labels).toEqual({})
    expect(Math.abs(caps.detectedAt - Date.now())).toBeLessThan(60_000)

    const fs = await statfs(dir)
    const free = fs.bavail * fs.bsize
    // Other processes write meanwhile: the same file system, give or take 5%.
    expect(Math.abs(caps.diskFree - free)).toBeLessThan(free * 0.05 + 64 * 2 ** 20)
  })

  it('measures disk of a data dir that does not exist yet from its nearest parent', async () => {
    const caps = await detectCapabilities({ dataDir: join(dir, 'not', 'yet', 'made') })
    expect(caps.diskFree).toBeGreaterThan(0)
  })

  it('applies declared resources and labels on top of detection, with stand-in GPUs', async () => {
    const real = await detectCapabilities({ dataDir: dir })
    const caps = await detectCapabilities({
      dataDir: dir,
      overrides: { cpu: 8, memory: 16 * GiB, gpu: real.gpus.length + 2, gpuMemory: 24 * GiB },
      labels: { zone: 'lab2' }
    })
    expect(caps.capacity.cpu).toBe(8)
    expect(caps.capacity.memory).toBe(16 * GiB)
    expect(caps.capacity.gpus).toHaveLength(real.gpus.length + 2)
    expect(caps.capacity.gpus.every(g => g.memory === 24 * GiB)).toBe(true)
    const indices = caps.capacity.gpus.map(g => g.index)
    expect(new Set(indices).size).toBe(indices.length)
    expect(caps.capacity.gpus.slice(real.gpus.length).every(g => g.vendor === 'declared')).toBe(true)
    expect(caps.warnings.join('\n')).toContain('stand-in device')
    // Detection itself is still reported as found.
    expect(caps.cpu.cores).toBe(real.cpu.cores)
    expect(caps.gpus).toEqual(real.gpus)
    expect(caps.labels).toEqual({ zone: 'lab2' })

    const hidden = await detectCapabilities({ dataDir: dir, overrides: { gpu: 0 } })
    expect(hidden.capacity.gpus).toEqual([])
  })

  it('stops when its signal is aborted', async () => {
    await expect(detectCapabilities({ dataDir: dir, signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'CANCELLED' })
  })

  const gpuTitle = smi.gpus.length > 0 ? 'reports the real GPU model and memory that nvidia-smi lists' : `reports the real GPU (skipped: ${smi.why})`
  it.skipIf(smi.gpus.length === 0)(gpuTitle, async () => {
    const saved = process.env.CUDA_VISIBLE_DEVICES
    delete process.env.CUDA_VISIBLE_DEVICES
    try {
      const caps = await detectCapabilities({ dataDir: dir })
      expect(caps.gpus.map(g => ({ name: g.model, mib: g.memory / 2 ** 20 }))).toEqual(smi.gpus)
      expect(caps.gpus.map(g => g.index)).toEqual(smi.gpus.map((_g, i) => i))
      for (const g of caps.gpus) {
        expect(g.vendor).toBe('NVIDIA')
        expect(g.driver).toMatch(/^\d+\.\d+/)
        expect(g.uuid).toMatch(/^GPU-/)
      }
      expect(caps.capacity.gpus).toEqual(caps.gpus)

      // An agent started with CUDA_VISIBLE_DEVICES offers only those devices.
      process.env.CUDA_VISIBLE_DEVICES = ''
      expect((await detectCapabilities({ dataDir: dir })).gpus).toEqual([])
      process.env.CUDA_VISIBLE_DEVICES = caps.gpus[0]!.uuid!
      expect((await detectCapabilities({ dataDir: dir })).gpus).toEqual([caps.gpus[0]])
    } finally {
      if (saved === undefined) delete process.env.CUDA_VISIBLE_DEVICES
      else process.env.CUDA_VISIBLE_DEVICES = saved
    }
  })
})

describe('parseResourceOverrides', () => {
  it('reads the --resources forms users write', () => {
    expect(parseResourceOverrides('gpu=2,cpu=8,memory=16GiB')).toEqual({ gpu: 2, cpu: 8, memory: 16 * GiB })
    expect(parseResourceOverrides(' CPU=0.5 , gpu-memory=24GiB ')).toEqual({ cpu: 0.5, gpuMemory: 24 * GiB })
    expect(parseResourceOverrides('gpuMemory=80GiB,gpu=0')).toEqual({ gpuMemory: 80 * GiB, gpu: 0 })
    expect(parseResourceOverrides('')).toEqual({})
  })

  it.each([
    ['cpu=abc', 'cpu must be a positive number of cores, got "abc"'],
    ['cpu=0', 'cpu must be a positive number'],
    ['gpu=1.5', 'gpu must be a whole number of devices'],
    ['memory=16XB', 'invalid size "16XB"'],
    ['memory=0', 'memory must be more than zero'],
    ['mem0ry=4GiB', 'unknown resource "mem0ry" (did you mean memory?)'],
    ['disk=4GiB', 'unknown resource "disk"'],
    ['cpu=1,cpu=2', 'cpu is given twice'],
    ['gpu=2,,cpu=1', 'empty entry (a stray comma?)'],
    ['gpu', '"gpu" has no "=value"']
  ])('rejects %s', (text, fragment) => {
    expect(() => parseResourceOverrides(text)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining(fragment) }))
    expect(() => parseResourceOverrides(text)).toThrow(`--resources "${text}"`)
  })
})

describe('parseLabels', () => {
  it('merges repeated and comma-separated --label values', () => {
    expect(parseLabels(['zone=lab2', 'rack=r1, tier=gold', 'zone=lab2'])).toEqual({ zone: 'lab2', rack: 'r1', tier: 'gold' })
    expect(parseLabels(['example.com/gpu-class=a100'])).toEqual({ 'example.com/gpu-class': 'a100' })
    expect(parseLabels([])).toEqual({})
  })

  it.each([
    [['zone'], '"zone" has no "=value"'],
    [['=lab2'], 'label key "" must be'],
    [['zone='], 'label zone needs a value'],
    [['zone=lab 2'], 'label zone needs a value of 1-256 characters without spaces'],
    [['-zone=x'], 'label key "-zone"'],
    [['zone=a', 'zone=b'], 'label zone is given twice (a and b)']
  ])('rejects %j', (items, fragment) => {
    expect(() => parseLabels(items)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining(fragment) }))
  })
})
