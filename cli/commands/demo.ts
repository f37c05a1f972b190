// `pipemesh demo`: the iris pipeline twice. The first run trains three models, picks the best
// and prints its test metrics; the second run changes nothing and so reuses every step.

import { join } from 'node:path'
import { EXIT_FAILED, EXIT_OK } from '../errors.js'
import { formatRun } from '../format.js'
import { readOutputFile, runPipeline } from './run.js'

export async function runDemo (options: { json: boolean, dataDir: string, logLevel?: string | undefined, examples: string }): Promise<number> {
  const file = join(options.examples, 'iris', 'pipeline.yaml')
  const say = (text: string): void => { if (!options.json) process.stdout.write(text + '\n') }
  let metrics: unknown
  say(`pipemesh demo: ${file}\nstate in ${options.dataDir}\n`)
  const first = await runPipeline(file, {
    params: {},
    json: options.json,
    detach: false,
    dataDir: options.dataDir,
    logLevel: options.logLevel,
    afterRun: async (embedded, summary) => {
      if (summary.status !== 'succeeded') return
      metrics = JSON.parse(await readOutputFile(embedded, summary, 'evaluate', 'metrics'))
    }
  })
  say(formatRun(first.summary))
  if (first.code !== EXIT_OK) {
    if (options.json) process.stdout.write(JSON.stringify({ first: first.summary }, null, 2) + '\n')
    return EXIT_FAILED
  }
  say(`\n${describeMetrics(metrics)}\n`)
  say('running the same pipeline again: nothing changed, so every step should be reused\n')
  const second = await runPipeline(file, { params: {}, json: options.json, detach: false, dataDir: options.dataDir, logLevel: options.logLevel })
  say(formatRun(second.summary))
  const reused = second.summary.steps.filter(s => s.status === 'reused').length
  say(`\n${reused} of ${second.summary.steps.length} steps reused.${reused === second.summary.steps.length ? '' : ' (some steps set cache: false or lost their outputs)'}`)
  say('try: edit examples/iris/train_knn.mjs (or pass --param k=7) and `pipemesh run examples/iris/pipeline.yaml`; then `pipemesh explain <run> <step>`')
  if (options.json) process.stdout.write(JSON.stringify({ first: first.summary, metrics, second: second.summary }, null, 2) + '\n')
  return second.code === EXIT_OK ? EXIT_OK : EXIT_FAILED
}


interface Metrics {
  model?: string
  kind?: string
  validationAccuracy?: number
  testRows?: number
  accuracy?: number
  macroF1?: number
  perClass?: Record<string, { precision: number, recall: number, f1: number, support: number }>
}

/** The evaluate step's metrics.json in a few lines. */
function describeMetrics (raw: unknown): string {
  const m = raw as Metrics
  const n = (x: number | undefined): string => x === undefined ? '?' : x.toFixed(3)
  const lines = [
    `selected model: ${m.model ?? m.kind ?? '?'} (cross-validated accuracy ${n(m.validationAccuracy)})`,
    `test set (${m.testRows ?? '?'} rows): accuracy ${n(m.accuracy)}, macro F1 ${n(m.macroF1)}`
  ]
  for (const [label, c] of Object.entries(m.perClass ?? {})) {
    lines.push(`  ${label.padEnd(12)} precision ${n(c.precision)}  recall ${n(c.recall)}  f1 ${n(c.f1)}  (${c.support} rows)`)
  }
  return lines.join('\n')
}
