// Human-written sizes and durations ("512MiB", "1h30m") as they appear in pipeline files and CLI
// flags, parsed into bytes and milliseconds, and the reverse for display. Parsing is strict: a
// value that could be misread (an unknown unit, a negative size) is an error, never a guess.

import { PipemeshError } from '../errors.js'

const BYTE_UNITS: Record<string, number> = {
  b: 1,
  k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12, p: 1e15, pb: 1e15,
  ki: 1024, kib: 1024, mi: 1024 ** 2, mib: 1024 ** 2, gi: 1024 ** 3, gib: 1024 ** 3, ti: 1024 ** 4, tib: 1024 ** 4, pi: 1024 ** 5, pib: 1024 ** 5
}

const SIZE_HINT = 'expected a number of bytes, or a number with a unit (B, kB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB), e.g. 512MiB'
const DURATION_HINT = 'expected a number of seconds, or numbers with units (ms, s, m, h, d), e.g. 500ms, 30s, 10m, 1h30m'

function invalid (what: string, value: unknown, hint: string): PipemeshError {
  const shown = typeof value === 'string' ? `"${value}"` : String(value)
  return new PipemeshError('INVALID_ARGUMENT', `invalid ${what} ${shown}: ${hint}`)
}

/** Bytes from a number (bytes) or a string such as `512MiB`, `1GB`, `100k`; units are case-insensitive. */
export function parseBytes (value: string | number): number {
  let bytes: number
  if (typeof value === 'number') {
    bytes = value
  } else if (typeof value === 'string') {
    const m = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)\s*$/i.exec(value)
    const unit = m?.[2]?.toLowerCase() ?? ''
    const factor = unit === '' ? 1 : BYTE_UNITS[unit]
    if (m === null || factor === undefined) throw invalid('size', value, SIZE_HINT)
    bytes = Math.round(Number(m[1]) * factor)
  } else {
    throw invalid('size', value, SIZE_HINT)
  }
  if (!Number.isFinite(bytes) || bytes < 0) throw invalid('size', value, SIZE_HINT)
  if (!Number.isInteger(bytes)) throw invalid('size', value, 'a number of bytes must be a whole number')
  if (!Number.isSafeInteger(bytes)) throw invalid('size', value, 'too large')
  return bytes
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/**
 * Milliseconds from a number (seconds, as YAML users write `timeout: 30`) or a string made of
 * number-unit pairs: `500ms`, `30s`, `10m`, `1h30m`, `1.5h`. A bare numeric string is seconds.
 */
export function parseDuration (value: string | number): number {
  let ms: number
  if (typeof value === 'number') {
    ms = value * 1000
  } else if (typeof value === 'string') {
    const text = value.trim()
    if (/^(\d+(?:\.\d+)?|\.\d+)$/.test(text)) {
      ms = Number(text) * 1000
    } else {
      const part = /(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)\s*/gy
      ms = 0
      let consumed = 0
      for (let m = part.exec(text); m !== null; m = part.exec(text)) {
        ms += Number(m[1]) * (DURATION_UNITS[m[2] as string] as number)
        consumed = part.lastIndex
      }
      if (text === '' || consumed !== text.length) throw invalid('duration', value, DURATION_HINT)
    }
  } else {
    throw invalid('duration', value, DURATION_HINT)
  }
  if (!Number.isFinite(ms) || ms < 0) throw invalid('duration', value, DURATION_HINT)
  ms = Math.round(ms)
  if (!Number.isSafeInteger(ms)) throw invalid('duration', value, 'too large')
  return ms
}

const BINARY = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']

/** `0 B`, `512 MiB`, `1.5 GiB`: binary units, at most three significant digits; parseBytes reads it back. */
export function formatBytes (bytes: number): string {
  if (!Number.isFinite(bytes)) return String(bytes)
  const sign = bytes < 0 ? '-' : ''
  let n = Math.abs(bytes)
  let i = 0
  while (n >= 1024 && i < BINARY.length - 1) { n /= 1024; i++ }
  const shown = i === 0 ? String(Math.round(n)) : String(Number(n.toPrecision(3)))
  return `${sign}${shown} ${BINARY[i] as string}`
}

/** `250ms`, `2.5s`, `4m05s`, `1h30m`, `2d3h`: compact, and parseDuration reads it back. */
export function formatDuration (ms: number): string {
  if (!Number.isFinite(ms)) return String(ms)
  if (ms < 0) return `-${formatDuration(-ms)}`
  if (ms < 1000) return `${Math.round(ms)}ms`
  if (ms < 60_000) {
    const s = Number((ms / 1000).toFixed(ms < 10_000 ? 2 : 1))
    return s >= 60 ? '1m00s' : `${s}s`
  }
  const totalS = Math.round(ms / 1000)
  if (totalS < 3600) return `${Math.floor(totalS / 60)}m${String(totalS % 60).padStart(2, '0')}s`
  const totalM = Math.round(ms / 60_000)
  if (totalM < 24 * 60) return `${Math.floor(totalM / 60)}h${String(totalM % 60).padStart(2, '0')}m`
  const totalH = Math.round(ms / 3_600_000)
  return `${Math.floor(totalH / 24)}d${totalH % 24}h`
}
