#!/usr/bin/env node
// The `pipemesh` command. Parses arguments (commander), builds the API client the command needs
// (HTTP for a remote coordinator, or an in-process one on the local data dir) and turns errors
// into messages and exit codes. Heavy modules (libp2p, LevelDB) load only for commands that use
// them, so status queries start fast: a module behind a dynamic import() is evaluated only when
// imported (see scripts/postbuild.mjs), so keep static imports here to what every command needs.

import '../src/util/polyfill.js'
import { Command, Option } from 'commander'
import { existsSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Logger } from 'pino'
import type { CoordinatorApi } from '../src/client/api.js'
import { PipemeshError } from '../src/errors.js'
import { EXIT_INVALID, reportError } from './errors.js'
import { defaultDataDir, isAgentDaemonDir } from './data-dir.js'
import { formatAgents, formatExplanation, formatRun, formatRuns } from './format.js'
import { PIPEMESH_VERSION } from '../src/version.js'

// `export PIPEMESH_COORDINATOR=` is how many people unset a variable: empty means not set, so the
// command runs embedded instead of failing on an empty URL.
for (const name of ['PIPEMESH_COORDINATOR', 'PIPEMESH_API_TOKEN', 'PIPEMESH_HOME']) if (process.env[name] === '') delete process.env[name]

const program = new Command()
program
  .name('pipemesh')
  .description('Run machine-learning pipelines on a peer-to-peer mesh of agents, reusing every step whose inputs did not change.')
  .version(PIPEMESH_VERSION)
  .option('--data <dir>', 'state directory (default ~/.pipemesh or $PIPEMESH_HOME)')
  .option('--log-level <level>', 'log level on stderr: error, warn, info, debug (default warn, or $PIPEMESH_LOG_LEVEL)')
  .option('--api-token-file <file>', "file holding the coordinator API's bearer token (or $PIPEMESH_API_TOKEN)")
  .showHelpAfterError()
  .exitOverride()

interface Global { data?: string, logLevel?: string, apiTokenFile?: string }
const globals = (): Global => program.opts<Global>()
let jsonMode = false

function coordinatorOption (): Option {
  return new Option('--coordinator <url>', 'HTTP address of a running coordinator').env('PIPEMESH_COORDINATOR')
}

function collectParam (value: string, previous: Record<string, string>): Record<string, string> {
  const eq = value.indexOf('=')
  if (eq <= 0) throw new PipemeshError('INVALID_ARGUMENT', `--param "${value}" must look like name=value`)
  return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) }
}

async function dataDir (): Promise<string> {
  return defaultDataDir(globals().data)
}

/** pino loads only for the commands that log (it is not needed to talk HTTP). */
async function logger (): Promise<Logger> {
  const { createLogger } = await import('./logger.js')
  return createLogger(globals().logLevel)
}

/** The API a query command talks to: a remote coordinator, or the local state read in process. */
async function withApi<T> (url: string | undefined, fn: (api: CoordinatorApi) => Promise<T>): Promise<T> {
  if (url !== undefined) {
    const { HttpCoordinatorClient } = await import('../src/client/http.js')
    return await fn(new HttpCoordinatorClient(url, await apiToken()))
  }
  const dir = await dataDir()
  if (isAgentDaemonDir(dir)) {
    // Opening a coordinator state here would make an empty one and answer "no runs yet".
    throw new PipemeshError('INVALID_ARGUMENT', `${dir} is an agent daemon's data dir: the runs live on its coordinator`, {
      hint: 'pass --coordinator URL (the coordinator\'s HTTP API), or set PIPEMESH_COORDINATOR'
    })
  }
  const { openOffline } = await import('./embedded.js')
  const coordinator = await openOffline(dir, await logger())
  try {
    return await fn(coordinator)
  } finally {
    await coordinator.stop()
  }
}

/** The bearer token for a coordinator API bound beyond loopback, if the user gave one. */
async function apiToken (): Promise<string | undefined> {
  const file = globals().apiTokenFile
  if (file !== undefined) {
    const { readApiToken } = await import('./api-token.js')
    return await readApiToken(file)
  }
  const env = process.env.PIPEMESH_API_TOKEN
  return env === undefined || env === '' ? undefined : env
}

/**
 * `--coordinator` given before a subcommand (`pipemesh agents --coordinator URL revoke X`) lands on
 * the parent command; it wins over the subcommand's own (or the environment's) value.
 */
function inheritedCoordinator (parent: Command, own: string | undefined): string | undefined {
  return parent.getOptionValueSource('coordinator') === 'cli' ? parent.opts<{ coordinator?: string }>().coordinator : own
}

/** A whole number >= min from a flag, or a clear error (exit 2). */
function wholeNumber (flag: string, value: string, min: number): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < min) throw new PipemeshError('INVALID_ARGUMENT', `${flag} must be a whole number >= ${min}, got "${value}"`)
  return n
}

function print (json: boolean, value: unknown, text: () => string): void {
  process.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : text() + '\n')
}

program.command('run')
  .description('validate a pipeline, run it, and follow it live (exit 0 succeeded, 1 failed, 2 invalid input)')
  .argument('<pipeline>', 'pipeline YAML file')
  .option('--param <name=value>', 'override a pipeline parameter (repeatable)', collectParam, {})
  .option('--json', 'print the run summary as JSON instead of the live view')
  .option('--detach', 'submit and return at once (remote coordinator only)')
  .option('--no-resume', 'steps with a checkpoint directory start from an empty one, not from the save an earlier run of them left')
  .addOption(coordinatorOption())
  .action(async (file: string, opts: { param: Record<string, string>, json?: boolean, detach?: boolean, resume: boolean, coordinator?: string }) => {
    jsonMode = opts.json === true
    const { runPipeline } = await import('./commands/run.js')
    const runOptions: Parameters<typeof runPipeline>[1] = {
      params: opts.param,
      json: jsonMode,
      detach: opts.detach === true,
      resume: opts.resume,
      dataDir: await dataDir(),
      logLevel: globals().logLevel
    }
    if (opts.coordinator !== undefined) {
      runOptions.coordinator = opts.coordinator
      runOptions.apiToken = await apiToken()
    }
    const { code, summary } = await runPipeline(file, runOptions)
    print(jsonMode, summary, () => formatRun(summary))
    process.exitCode = code
  })

program.command('demo')
  .description('run the bundled iris pipeline, print its metrics, then run it again to show every step reused')
  .option('--json', 'print both run summaries and the metrics as JSON')
  .action(async (opts: { json?: boolean }) => {
    jsonMode = opts.json === true
    const { runDemo } = await import('./commands/demo.js')
    process.exitCode = await runDemo({ json: jsonMode, dataDir: await dataDir(), logLevel: globals().logLevel, examples: examplesDir() })
  })

program.command('schema')
  .description('print the JSON Schema of pipeline files (for editors)')
  .action(async () => {
    const { pipelineJsonSchema } = await import('../src/spec/schema.js')
    process.stdout.write(JSON.stringify(pipelineJsonSchema(), null, 2) + '\n')
  })

program.command('validate')
  .description('check a pipeline file and report every problem (exit 2 when invalid)')
  .argument('<pipeline>', 'pipeline YAML file')
  .option('--param <name=value>', 'override a pipeline parameter (repeatable)', collectParam, {})
  .option('--json', 'print the result as JSON')
  .action(async (file: string, opts: { param: Record<string, string>, json?: boolean }) => {
    jsonMode = opts.json === true
    const { loadPipeline } = await import('../src/spec/parse.js')
    const { openYamlCache } = await import('./yaml-cache.js')
    const cache = openYamlCache()
    const pipeline = await loadPipeline(file, { params: opts.param, ...(cache === undefined ? {} : { cache }) })
    print(jsonMode, { valid: true, name: pipeline.name, steps: Object.keys(pipeline.steps) }, () => {
      const n = Object.keys(pipeline.steps).length
      return `${file}: valid pipeline ${pipeline.name} with ${n} step${n === 1 ? '' : 's'}`
    })
  })

program.command('runs')
  .description('list runs, newest first')
  .option('--limit <n>', 'how many', '20')
  .option('--json', 'print JSON')
  .addOption(coordinatorOption())
  .action(async (opts: { limit: string, json?: boolean, coordinator?: string }) => {
    jsonMode = opts.json === true
    const limit = wholeNumber('--limit', opts.limit, 1)
    const runs = await withApi(opts.coordinator, async api => await api.listRuns({ limit }))
    print(jsonMode, runs, () => formatRuns(runs))
  })

program.command('status')
  .description('show a run and its steps')
  .argument('<run>', 'run id')
  .option('--json', 'print JSON')
  .addOption(coordinatorOption())
  .action(async (runId: string, opts: { json?: boolean, coordinator?: string }) => {
    jsonMode = opts.json === true
    const run = await withApi(opts.coordinator, async api => await api.getRun(runId))
    print(jsonMode, run, () => formatRun(run))
  })

program.command('explain')
  .description('say why a step ran or was reused, and where it ran')
  .argument('<run>', 'run id')
  .argument('<step>', 'step id')
  .option('--json', 'print JSON')
  .addOption(coordinatorOption())
  .action(async (runId: string, stepId: string, opts: { json?: boolean, coordinator?: string }) => {
    jsonMode = opts.json === true
    const explanation = await withApi(opts.coordinator, async api => await api.explain(runId, stepId))
    print(jsonMode, explanation, () => formatExplanation(explanation))
  })

program.command('logs')
  .description("print a step's output (stdout and stderr, timestamped)")
  .argument('<run>', 'run id')
  .argument('<step>', 'step id')
  .option('-f, --follow', 'keep printing until the step ends')
  .option('--attempt <n>', 'which attempt (default the last)')
  .option('--json', 'print one JSON object per line')
  .addOption(coordinatorOption())
  .action(async (runId: string, stepId: string, opts: { follow?: boolean, attempt?: string, json?: boolean, coordinator?: string }) => {
    jsonMode = opts.json === true
    await withApi(opts.coordinator, async api => {
      const logOpts: { follow: boolean, attempt?: number } = { follow: opts.follow === true }
      if (opts.attempt !== undefined) logOpts.attempt = wholeNumber('--attempt', opts.attempt, 1)
      for await (const line of api.logs(runId, stepId, logOpts)) {
        process.stdout.write(jsonMode ? JSON.stringify(line) + '\n' : `${new Date(line.t).toISOString()} ${line.stream === 'stderr' ? 'E' : 'O'} ${line.line}\n`)
      }
    })
  })

program.command('cancel')
  .description('cancel a run: running steps are stopped on every agent')
  .argument('<run>', 'run id')
  .option('--json', 'print JSON')
  .addOption(coordinatorOption())
  .action(async (runId: string, opts: { json?: boolean, coordinator?: string }) => {
    jsonMode = opts.json === true
    const run = await withApi(opts.coordinator, async api => await api.cancel(runId))
    print(jsonMode, run, () => formatRun(run))
  })

const agentsCommand = program.command('agents')
  .description('list agents with their capabilities and current allocations')
  .option('--json', 'print JSON')
  .addOption(coordinatorOption())
  .action(async (opts: { json?: boolean, coordinator?: string }) => {
    jsonMode = opts.json === true
    const agents = await withApi(opts.coordinator, async api => await api.agents())
    print(jsonMode, agents, () => formatAgents(agents))
  })

agentsCommand.command('revoke')
  .description('cut an agent off at once: its connections close, its running steps are rescheduled, it cannot rejoin')
  .argument('<agent>', 'agent name or peer id (as `pipemesh agents` shows it)')
  .option('--json', 'print JSON')
  .addOption(coordinatorOption())
  .action(async (idOrName: string, opts: { json?: boolean, coordinator?: string }) => {
    jsonMode = opts.json === true
    const url = inheritedCoordinator(agentsCommand, opts.coordinator)
    const member = await withApi(url, async api => await api.revokeAgent(idOrName))
    print(jsonMode, member, () => `agent ${member.name} (${member.peerId}) revoked`)
  })

const token = program.command('token').description('join tokens that let a new agent enroll (administrators)')
token.command('create')
  .description('make a single-use join token and print it')
  .option('--ttl <duration>', 'how long the token can be redeemed', '1h')
  .option('--json', 'print JSON')
  .addOption(coordinatorOption())
  .action(async (opts: { ttl: string, json?: boolean, coordinator?: string }) => {
    jsonMode = opts.json === true
    const { durationFlag } = await import('./flags.js')
    const ttlMs = durationFlag('--ttl', opts.ttl)
    const created = await withApi(opts.coordinator, async api => await api.createToken(ttlMs))
    print(jsonMode, created, () => created.token)
    if (!jsonMode && process.stderr.isTTY === true) {
      process.stderr.write(`valid until ${new Date(created.expiresAt).toISOString()}, for one agent:\n  pipemesh agent --coordinator ${created.multiaddrs[0] ?? '<coordinator multiaddr>'} --join ${created.token}\n`)
    }
  })

const secret = program.command('secret').description('secrets handed to steps as environment variables, never shown or logged')
secret.command('set')
  .description('store a secret on the coordinator; the value is read from standard input')
  .argument('<name>', 'the environment variable name steps will see')
  .addOption(coordinatorOption())
  .action(async (name: string, opts: { coordinator?: string }) => {
    const { readSecretValue } = await import('./api-token.js')
    const value = await readSecretValue(name)
    await withApi(opts.coordinator, async api => { await api.setSecret(name, value) })
    process.stderr.write(`secret ${name} set\n`)
  })
secret.command('list')
  .description('list secret names (never values)')
  .option('--json', 'print JSON')
  .addOption(coordinatorOption())
  .action(async (opts: { json?: boolean, coordinator?: string }) => {
    jsonMode = opts.json === true
    const list = await withApi(opts.coordinator, async api => await api.listSecrets())
    print(jsonMode, list, () => list.length === 0 ? 'no secrets' : list.map(s => `${s.name}  (set ${new Date(s.updatedAt).toISOString()})`).join('\n'))
  })
secret.command('rm')
  .description('delete a secret')
  .argument('<name>')
  .addOption(coordinatorOption())
  .action(async (name: string, opts: { coordinator?: string }) => {
    await withApi(opts.coordinator, async api => { await api.deleteSecret(name) })
    process.stderr.write(`secret ${name} deleted\n`)
  })

const artifacts = program.command('artifacts').description('artifacts in the mesh')
artifacts.command('get')
  .description('copy an artifact to a local path (fetched from the agents that hold it)')
  .argument('<artifact>', '<run>/<step>/<output>, or a digest sha256:…')
  .argument('<dest>', 'where to write it (must not exist)')
  .option('--json', 'print JSON')
  .addOption(coordinatorOption())
  .action(async (spec: string, dest: string, opts: { json?: boolean, coordinator?: string }) => {
    jsonMode = opts.json === true
    const { getArtifact } = await import('./commands/artifacts.js')
    const dir = await dataDir()
    const result = await withApi(opts.coordinator, async api => await getArtifact(api, spec, resolve(dest), { dataDir: dir, remote: opts.coordinator !== undefined, progress: !jsonMode }))
    print(jsonMode, result, () => `${result.digest} -> ${result.dest} (${result.bytes} bytes)`)
  })

const store = program.command('store').description("inspect and maintain the local agent's content store")
store.command('stats')
  .option('--json', 'print JSON')
  .action(async (opts: { json?: boolean }) => {
    jsonMode = opts.json === true
    const { storeStats } = await import('./commands/store.js')
    const stats = await storeStats(await dataDir())
    const { formatBytes } = await import('../src/util/units.js')
    print(jsonMode, stats, () => [
      `artifacts: ${stats.artifacts} (${formatBytes(stats.logicalBytes)} before deduplication)`,
      `chunks:    ${stats.chunks} (${formatBytes(stats.bytes)})`,
      `packs:     ${stats.packs} (${formatBytes(stats.packBytes)} of disk, with any dead space gc will reclaim)`
    ].join('\n'))
  })
store.command('verify')
  .description('rehash every stored chunk; corrupt ones are quarantined (exit 1 when damage is left)')
  .option('--repair', 'fetch damaged artifacts again from other agents (with --coordinator), else drop them so runs rebuild them')
  .option('--json', 'print JSON')
  .addOption(coordinatorOption())
  .action(async (opts: { json?: boolean, repair?: boolean, coordinator?: string }) => {
    jsonMode = opts.json === true
    const { storeVerify } = await import('./commands/store.js')
    const verifyOptions: Parameters<typeof storeVerify>[1] = { repair: opts.repair === true, progress: !jsonMode }
    if (opts.coordinator !== undefined) {
      const { HttpCoordinatorClient } = await import('../src/client/http.js')
      verifyOptions.api = new HttpCoordinatorClient(opts.coordinator, await apiToken())
    }
    const report = await storeVerify(await dataDir(), verifyOptions)
    print(jsonMode, report, () => [
      `checked ${report.chunksChecked} chunks; corrupt: ${report.corrupt.length}; missing: ${report.missing.length}`,
      ...(opts.repair === true ? [`artifacts fetched again: ${report.refetched.length}; dropped (rebuilt by the next run that needs them): ${report.dropped.length}`] : [])
    ].join('\n'))
    const damaged = report.corrupt.length > 0 || report.missing.length > 0
    if (damaged && (opts.repair !== true || report.dropped.length > 0)) process.exitCode = 1
  })
store.command('gc')
  .description('remove what no kept run and no reuse entry references (with --coordinator: on every connected agent of the mesh)')
  .option('--keep-runs <n>', 'runs of each pipeline whose records and artifacts are kept', '10')
  .option('--grace <duration>', 'with --coordinator: agents keep what they made this recently (results and uploads the coordinator may not know of yet)', '10m')
  .option('--json', 'print JSON')
  .addOption(coordinatorOption())
  .action(async (opts: { keepRuns: string, grace: string, json?: boolean, coordinator?: string }) => {
    jsonMode = opts.json === true
    const keep = wholeNumber('--keep-runs', opts.keepRuns, 0)
    const { storeGc, formatMeshGc } = await import('./commands/store.js')
    if (opts.coordinator !== undefined) {
      const { durationFlag } = await import('./flags.js')
      const graceMs = durationFlag('--grace', opts.grace)
      if (!jsonMode) process.stderr.write(`collecting garbage: runs beyond the newest ${keep} of each pipeline, then on every connected agent…\n`)
      const report = await withApi(opts.coordinator, async api => await api.collectGarbage(keep, { graceMs }))
      print(jsonMode, report, () => formatMeshGc(report))
      if (report.agents.some(a => a.error !== undefined)) process.exitCode = 1
      return
    }
    const report = await storeGc(await dataDir(), keep, await logger())
    print(jsonMode, report, () => `removed ${report.removedRuns} old runs, ${report.removedArtifacts} artifacts, ${report.removedChunks} chunks and ${report.removedEnvironments} environments unused for a week (${report.freedBytes} bytes freed)`)
  })

program.command('coordinator')
  .description('run a coordinator daemon (agents dial it; the CLI talks to its HTTP API)')
  .option('--listen <multiaddr>', 'libp2p listen address', '/ip4/127.0.0.1/tcp/0')
  .option('--api <host:port>', 'HTTP API address', '127.0.0.1:7070')
  .option('--lease <duration>', 'how long a silent agent keeps its steps', '15s')
  .option('--gc-every <duration>', 'collect garbage across the mesh this often, as `pipemesh store gc --coordinator` does (default: never)')
  .option('--keep-runs <n>', 'with --gc-every: runs of each pipeline whose records and artifacts are kept', '10')
  .option('--api-token-file <file>', 'require this bearer token on the HTTP API (required when --api is not a loopback address)')
  .action(async (opts: { listen: string, api: string, lease: string, gcEvery?: string, keepRuns: string, apiTokenFile?: string }) => {
    const { runCoordinatorDaemon } = await import('./commands/daemons.js')
    await runCoordinatorDaemon({
      dataDir: await dataDir(), listen: opts.listen, api: opts.api, lease: opts.lease, gcEvery: opts.gcEvery, keepRuns: wholeNumber('--keep-runs', opts.keepRuns, 0),
      apiTokenFile: opts.apiTokenFile ?? globals().apiTokenFile, logLevel: globals().logLevel
    })
  })

const agentCommand = program.command('agent')
  .description('run an agent daemon that executes steps for a coordinator (or drain/undrain one)')
  // Not requiredOption: commander would demand it of `agent drain` too.
  .option('--coordinator <multiaddr>', "the coordinator's libp2p address (printed when it starts)")
  .option('--listen <multiaddr>', 'libp2p listen address', '/ip4/127.0.0.1/tcp/0')
  .option('--name <name>', 'agent name (default the hostname)')
  .option('--join <token>', 'a join token from `pipemesh token create`, needed once to enroll with the coordinator')
  .option('--resources <list>', 'declare or override resources, e.g. gpu=2,cpu=8,memory=16GiB')
  .option('--label <key=value>', 'a label steps can require (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
  .option('--max-artifact-size <size>', 'refuse step outputs and fetched artifacts larger than this, e.g. 10GiB')
  .option('--max-log-size <size>', "keep at most this much of a step attempt's log, e.g. 64MiB (the rest is dropped with a note)")
  .option('--stop-grace <duration>', 'on SIGTERM/SIGINT, how long running steps may go on before they are stopped (with a last checkpoint save) and handed back, e.g. 30m', '10s')
  .action(async (opts: { coordinator?: string, listen: string, name?: string, join?: string, resources?: string, label: string[], maxArtifactSize?: string, maxLogSize?: string, stopGrace: string }) => {
    if (opts.coordinator === undefined) throw new PipemeshError('INVALID_ARGUMENT', "pipemesh agent needs --coordinator <multiaddr>, the address `pipemesh coordinator` printed when it started")
    const { runAgentDaemon } = await import('./commands/daemons.js')
    await runAgentDaemon({ dataDir: await dataDir(), ...opts, coordinator: opts.coordinator, logLevel: globals().logLevel })
  })

for (const draining of [true, false]) {
  agentCommand.command(draining ? 'drain' : 'undrain')
    .description(draining ? 'let an agent finish its running steps and give it no new ones' : 'let a drained agent take steps again')
    .argument('<agent>', 'agent name or id (as `pipemesh agents` shows it)')
    .option('--json', 'print JSON')
    .addOption(coordinatorOption())
    .action(async (idOrName: string, opts: { json?: boolean, coordinator?: string }) => {
      jsonMode = opts.json === true
      // `agent` has a --coordinator of its own (a multiaddr) that takes the flag when it is given.
      const url = inheritedCoordinator(agentCommand, opts.coordinator)
      if (url === undefined) throw new PipemeshError('INVALID_ARGUMENT', `pipemesh agent ${draining ? 'drain' : 'undrain'} needs --coordinator <url> (or PIPEMESH_COORDINATOR): draining is done by the running coordinator`)
      const agent = await withApi(url, async api => await api.drainAgent(idOrName, draining))
      print(jsonMode, agent, () => `agent ${agent.name} (${agent.id}) ${draining ? 'is draining: its running steps finish, it gets no new ones' : 'takes steps again'}`)
    })
}

/** The bundled examples, found from wherever this module was loaded (dist/cli/, or the bundle in dist/). */
function examplesDir (): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 4; i++) {
    const candidate = resolve(dir, 'examples')
    if (existsSync(resolve(candidate, 'iris', 'pipeline.yaml'))) return candidate
    dir = dirname(dir)
  }
  throw new PipemeshError('NOT_FOUND', 'cannot find the bundled examples directory next to this pipemesh installation')
}

async function main (): Promise<void> {
  try {
    await program.parseAsync(process.argv)
  } catch (err) {
    const code = (err as { code?: string }).code
    if (typeof code === 'string' && code.startsWith('commander.')) {
      process.exitCode = code === 'commander.helpDisplayed' || code === 'commander.version' ? 0 : EXIT_INVALID
      return
    }
    process.exitCode = reportError(err, jsonMode)
  }
}

// Exit as soon as the command is done: libp2p leaves debounce timers behind that would otherwise
// keep a finished CLI alive for another second. stdout is flushed first.
void main().then(() => {
  process.stdout.write('', () => { process.exit() })
})
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  // `pipemesh runs | head`: the reader went away; that is not our failure.
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0)
  throw err
})
