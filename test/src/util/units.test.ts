// Sizes and durations as users write them in pipeline files and flags.

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { PipemeshError } from '../../../src/errors.js'
import { formatBytes, formatDuration, parseBytes, parseDuration } from '../../../src/util/units.js'

describe('parseBytes', () => {
  it('reads binary and decimal units, case-insensitively', () => {
    expect(parseBytes('512MiB')).toBe(512 * 1024 ** 2)
    expect(parseBytes('2GiB')).toBe(2 * 1024 ** 3)
    expect(parseBytes('1GB')).toBe(1e9)
    expect(parseBytes('100k')).toBe(100_000)
    expect(parseBytes('1.5 KiB')).toBe(1536)
    expect(parseBytes('16gi')).toBe(16 * 1024 ** 3)
    expect(parseBytes('42')).toBe(42)
    expect(parseBytes('0')).toBe(0)
    expect(parseBytes(4096)).toBe(4096)
    expect(parseBytes('1TiB')).toBe(1024 ** 4)
  })

  it('refuses what could be misread, naming the value and the expected form', () => {
    for (const bad of ['12XB', '-1', '', 'MiB', '1.2.3GB', '5 M i B', 'lots']) {
      expect(() => parseBytes(bad), bad).toThrow(PipemeshError)
    }
    expect(() => parseBytes('12XB')).toThrow('invalid size "12XB": expected a number of bytes, or a number with a unit')
    expect(() => parseBytes(-5)).toThrow('invalid size -5')
    expect(() => parseBytes(1.5)).toThrow('whole number')
    expect(() => parseBytes(Number.POSITIVE_INFINITY)).toThrow('invalid size')
    expect(() => parseBytes('99999999999TiB')).toThrow('too large')
  })
})

describe('parseDuration', () => {
  it('reads unit pairs into milliseconds, and bare numbers as seconds', () => {
    expect(parseDuration('10m')).toBe(600_000)
    expect(parseDuration('1h30m')).toBe(5_400_000)
    expect(parseDuration('1h 30m')).toBe(5_400_000)
    expect(parseDuration('500ms')).toBe(500)
    expect(parseDuration('30s')).toBe(30_000)
    expect(parseDuration('1.5h')).toBe(5_400_000)
    expect(parseDuration('2d')).toBe(172_800_000)
    expect(parseDuration('1m30s250ms')).toBe(90_250)
    expect(parseDuration('45')).toBe(45_000)
    expect(parseDuration(30)).toBe(30_000)
    expect(parseDuration(0.5)).toBe(500)
    expect(parseDuration('0s')).toBe(0)
  })

  it('refuses unknown units and negative or empty values', () => {
    for (const bad of ['10 minutes', '1y', '-5s', '', 'ms', '1h-30m', 'soon', '5s junk']) {
      expect(() => parseDuration(bad), bad).toThrow(PipemeshError)
    }
    expect(() => parseDuration('1y')).toThrow('invalid duration "1y": expected a number of seconds, or numbers with units (ms, s, m, h, d)')
    expect(() => parseDuration(-1)).toThrow('invalid duration -1')
  })
})

describe('formatting', () => {
  it('formats sizes in binary units', () => {
    expect(formatBytes(0)).toBe('0 B')
    expect(formatBytes(1023)).toBe('1023 B')
    expect(formatBytes(512 * 1024 ** 2)).toBe('512 MiB')
    expect(formatBytes(1.5 * 1024 ** 3)).toBe('1.5 GiB')
    expect(formatBytes(1024 ** 2)).toBe('1 MiB')
  })

  it('formats durations compactly', () => {
    expect(formatDuration(250)).toBe('250ms')
    expect(formatDuration(2500)).toBe('2.5s')
    expect(formatDuration(30_000)).toBe('30s')
    expect(formatDuration(245_000)).toBe('4m05s')
    expect(formatDuration(5_400_000)).toBe('1h30m')
    expect(formatDuration(183_600_000)).toBe('2d3h')
  })

  it('formats values that parse back to nearly the same amount', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 2 ** 50 }), bytes => {
      const back = parseBytes(formatBytes(bytes))
      expect(Math.abs(back - bytes)).toBeLessThanOrEqual(bytes * 0.005 + 1)
    }))
    fc.assert(fc.property(fc.integer({ min: 0, max: 30 * 86_400_000 }), ms => {
      const back = parseDuration(formatDuration(ms))
      // Display keeps two significant units: at most half of the smaller unit is lost.
      const unit = ms < 1000 ? 1 : ms < 10_000 ? 10 : ms < 60_000 ? 100 : ms < 3_600_000 ? 1000 : ms < 86_400_000 ? 60_000 : 3_600_000
      expect(Math.abs(back - ms)).toBeLessThanOrEqual(unit / 2 + 1)
    }))
  })
})
