// Summaries and the printed table of the benchmark: each row is one system on one workload, its
// samples reduced to median and min–max, compared as a ratio with a baseline row measured in the
// same run. Pure functions, so main.ts only orchestrates.

export type Better = 'lower' | 'higher'

export interface Row {
  /** Workload id and name, e.g. "W1 fanout". */
  workload: string
  /** What ran it: "pipemesh", "make -j2", "cp", "node:tls"… */
  system: string
  metric: string
  unit: string
  better: Better
  samples: number[]
  /** System name of the row (same workload and metric) this one is compared with. */
  vs?: string
  /** The baseline's metric, where it differs from this row's (ingest MiB/s vs cp's copy MiB/s). */
  vsMetric?: string
  /** Correctness checks of the runs behind the samples ("ok" when all passed). */
  check?: string
  note?: string
}

export interface Summary { median: number, min: number, max: number }

export function summarize (samples: readonly number[]): Summary {
  if (samples.length === 0) return { median: NaN, min: NaN, max: NaN }
  const sorted = [...samples].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  const median = sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
  return { median, min: sorted[0]!, max: sorted[sorted.length - 1]! }
}

/** Enough significant digits to compare, without noise: 1234, 123.4, 12.34, 1.234, 0.01234. */
export function fmt (value: number): string {
  if (!Number.isFinite(value)) return '-'
  const abs = Math.abs(value)
  if (abs >= 1000) return value.toFixed(0)
  if (abs >= 100) return value.toFixed(1)
  if (abs >= 10) return value.toFixed(2)
  if (abs >= 1) return value.toFixed(3)
  if (abs === 0) return '0'
  return value.toPrecision(3)
}

export function baselineOf (rows: readonly Row[], row: Row): Row | undefined {
  if (row.vs === undefined) return undefined
  const metric = row.vsMetric ?? row.metric
  return rows.find(r => r.workload === row.workload && r.metric === metric && r.system === row.vs)
}

/** Row median divided by the baseline's median (so 20x on a time means 20 times slower). */
export function ratio (rows: readonly Row[], row: Row): number | undefined {
  const base = baselineOf(rows, row)
  if (base === undefined) return undefined
  const r = summarize(row.samples).median / summarize(base.samples).median
  return Number.isFinite(r) ? r : undefined
}

function pad (cells: string[][]): string {
  const widths: number[] = []
  for (const line of cells) line.forEach((cell, i) => { widths[i] = Math.max(widths[i] ?? 0, cell.length) })
  return cells.map(line => line.map((cell, i) => i === line.length - 1 ? cell : cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n')
}

export function renderTable (rows: readonly Row[]): string {
  const cells: string[][] = [['workload', 'system', 'metric', 'median', 'min–max', 'ratio', 'check']]
  let last = ''
  for (const row of rows) {
    const s = summarize(row.samples)
    const r = ratio(rows, row)
    const unit = row.unit === '' ? '' : ` ${row.unit}`
    cells.push([
      row.workload === last ? '' : row.workload,
      row.system,
      row.metric,
      `${fmt(s.median)}${unit}`,
      `${fmt(s.min)}–${fmt(s.max)}`,
      r === undefined ? '' : `${fmt(r)}x ${row.vs ?? ''}`,
      [row.check ?? '', row.note ?? ''].filter(x => x !== '').join('; ')
    ])
    last = row.workload
  }
  return pad(cells)
}

export interface Target {
  id: string
  /** As the issue states it, e.g. "W1 >= 500 steps/s". */
  text: string
  /** The measured figure as printed, e.g. "412 steps/s". */
  measured: string
  pass: boolean | undefined
}

export function renderTargets (targets: readonly Target[]): string {
  return pad(targets.map(t => [t.text, t.measured, t.pass === undefined ? 'n/a' : t.pass ? 'PASS' : 'MISS']))
}
