// `pipemesh run` and `pipemesh demo`: validate a pipeline, put its content in the mesh, submit it
// and follow it to the end. Without --coordinator, a coordinator and an agent start in process.
// What only one mode needs is imported there: a run against a coordinator loads neither libp2p
// nor LevelDB unless it has content to upload, and the live view (whose terminal-width code
// costs ~30 ms to load) loads only when shown.

import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { readPipelineFile, sendableAsData } from '../../src/spec/parse.js'
import { PipemeshError } from '../../src/errors.js'
import type { CoordinatorApi } from '../../src/client/api.js'
import type { SubmitRequest } from '../../src/client/submit-request.js'
import type { RunSummary } from '../../src/run/types.js'
import { EXIT_FAILED, EXIT_OK } from '../errors.js'
import type { Embedded } from '../embedded.js'
import { openYamlCache } from '../yaml-cache.js'

export interface RunOptions {
  params: Record<string, string>
  json: boolean
  detach: boolean
  /** False: `--no-resume` (see SubmitRequest.resume). */
  resume?: boolean
  dataDir: string
  coordinator?: string
  /** Bearer token for the coordinator's API (with `coordinator`). */
  apiToken?: string | undefined
  /** Log level of the embedded coordinator and agent (default warn, or $PIPEMESH_LOG_LEVEL). */
  logLevel?: string | undefined
  /** Called with the embedded mesh after the run ends, before it stops (the demo reads outputs). */
  afterRun?: (embedded: Embedded, summary: RunSummary) => Promise<void>
  quiet?: boolean
}

export async function runPipeline (file: string, options: RunOptions): Promise<{ code: number, summary: RunSummary }> {
  const cache = openYamlCache()
  const { pipeline, text, data } = await readPipelineFile(file, { params: options.params, ...(cache === undefined ? {} : { cache }) })
  const interrupt = new AbortController()
  // The data, so that the coordinator need not parse the YAML again; the text where JSON cannot
  // carry what the YAML says (.inf, .nan) or would exceed the size limit.
  const source = sendableAsData(data) ? { data } : { text }
  const base = { pipeline: { ...source, file: pipeline.file!, baseDir: pipeline.baseDir }, params: options.params, ...(options.resume === false ? { resume: false } : {}) }
  if (options.coordinator !== undefined) {
    const { HttpCoordinatorClient } = await import('../../src/client/http.js')
    const api = new HttpCoordinatorClient(options.coordinator, options.apiToken)
    const { uploadSubmission } = await import('../upload.js')
    const artifacts = await uploadSubmission(pipeline, api, { dataDir: options.dataDir, signal: interrupt.signal, progress: !options.json })
    const started = await api.submit({ ...base, artifacts })
    if (options.detach) return { code: EXIT_OK, summary: started }
    const summary = await follow(api, started, options, interrupt)
    return { code: summary.status === 'succeeded' ? EXIT_OK : EXIT_FAILED, summary }
  }
  if (options.detach) throw new PipemeshError('INVALID_ARGUMENT', '--detach needs --coordinator: an embedded run ends with the command')
  const { createLogger } = await import('../logger.js')
  const embedded = await (await import('../embedded.js')).startEmbedded(options.dataDir, createLogger(options.logLevel), { signal: interrupt.signal })
  try {
    const { prepareSubmission } = await import('../../src/client/prepare.js')
    const { withReadingProgress } = await import('../progress.js')
    const submission = await withReadingProgress('storing', !options.json && options.quiet !== true, async onBytes => await prepareSubmission(pipeline, embedded.agent.store, { signal: interrupt.signal, onBytes }))
    const request: SubmitRequest = { ...base, artifacts: submission.artifacts, uploadedTo: embedded.agent.peerId }
    const api: CoordinatorApi = embedded.coordinator
    const started = await api.submit(request)
    const summary = await follow(api, started, options, interrupt)
    if (options.afterRun !== undefined) await options.afterRun(embedded, summary)
    return { code: summary.status === 'succeeded' ? EXIT_OK : EXIT_FAILED, summary }
  } finally {
    await embedded.close()
  }
}

/** Follows a run's events to its end, drawing the live view; Ctrl-C cancels the run. */
async function follow (api: CoordinatorApi, started: RunSummary, options: RunOptions, interrupt: AbortController): Promise<RunSummary> {
  const view = options.json || options.quiet === true ? undefined : new (await import('../live-view.js')).LiveView(`run ${started.runId} of ${started.pipeline}`)
  let cancelling = false
  const onSignal = (): void => {
    if (cancelling) { interrupt.abort(); return }
    cancelling = true
    process.stderr.write('\ncancelling the run (Ctrl-C again to stop waiting)\n')
    void api.cancel(started.runId).catch(() => {})
  }
  if (started.status !== 'running') {
    // Over at submission (every step reused, or none could run): nothing to follow.
    const at = started.finishedAt ?? Date.now()
    for (const step of started.steps) view?.update({ type: 'step', runId: started.runId, step, at })
    view?.update({ type: 'run', runId: started.runId, status: started.status, at })
    view?.done()
    return started
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  // The run lives on the coordinator: if it restarts (or the network drops), follow it again.
  let lostSince: number | undefined
  try {
    for (;;) {
      try {
        // Without a view, only the run's end matters: no step events need to come this way.
        for await (const event of api.events(started.runId, { signal: interrupt.signal, ...view === undefined ? { only: 'run' as const } : { store: true } })) {
          view?.update(event)
          lostSince = undefined
        }
        const run = await api.getRun(started.runId)
        if (run.status !== 'running' || interrupt.signal.aborted) return run
      } catch (err) {
        if (interrupt.signal.aborted) break
        if (!connectionLost(err)) throw err
        if (lostSince === undefined) process.stderr.write(`lost contact with the coordinator (${(err as Error).message}); the run goes on there, reconnecting…\n`)
        lostSince ??= Date.now()
        if (Date.now() - lostSince > RECONNECT_FOR_MS) throw err
      }
      await sleep(1000, undefined, { signal: interrupt.signal }).catch(() => {})
    }
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    view?.done()
  }
  return await api.getRun(started.runId)
}

/** How long `pipemesh run` keeps trying to reach a coordinator that went away mid-run. */
const RECONNECT_FOR_MS = 10 * 60_000

/** The coordinator is unreachable or the stream broke (the HTTP client reports both as UNREACHABLE). */
function connectionLost (err: unknown): boolean {
  return err instanceof PipemeshError && err.code === 'UNREACHABLE'
}

/** Reads a small output file of a finished step from the embedded agent's store. */
export async function readOutputFile (embedded: Embedded, summary: RunSummary, stepId: string, output: string, inner?: string): Promise<string> {
  const digest = summary.steps.find(s => s.id === stepId)?.outputs[output]
  if (digest === undefined) throw new PipemeshError('NOT_FOUND', `step ${stepId} has no output ${output}`)
  const dir = await mkdtemp(join(tmpdir(), 'pipemesh-out-'))
  try {
    const dest = join(dir, 'out')
    await embedded.agent.store.materialize(digest, dest)
    return await readFile(inner === undefined ? dest : join(dest, inner), 'utf8')
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}
