// After tsc: bundles the CLI with esbuild into dist/pipemesh-bundle.cjs and puts the `pipemesh`
// bin, dist/pipemesh.mjs (scripts/bin.mjs), beside it.
// Why bundle: a CLI run pays for loading every module first, and libp2p, zod and friends are
// hundreds of small files; one file loads ~40% faster. Why CommonJS in a function expression:
// the bin compiles it with vm.Script, which can use a V8 code cache (Node 20 has none for ES
// modules), and compiling is most of what loading still costs. Modules behind a dynamic import()
// in cli/ are only evaluated by the commands that import them, so `--version`, `runs` or a
// `run --coordinator` never initialize libp2p, LevelDB or fastify.
// Outside the bundle stay the native LevelDB binding (classic-level/binding.js finds its compiled
// addon from its own directory; the rest of classic-level is bundled, and so code-cached) and
// systeminformation (which reads its own files at run time; used only off Linux).
import { createHash } from 'node:crypto'
import { chmodSync, copyFileSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { build } from 'esbuild'

const root = new URL('..', import.meta.url)
const dist = new URL('dist/', root)
const bundle = new URL('pipemesh-bundle.cjs', dist)

// Chunks of an earlier, code-split layout.
for (const name of readdirSync(dist)) {
  if (/^pipemesh-[A-Z0-9]+\.mjs(\.map)?$/.test(name)) rmSync(new URL(name, dist))
}

await build({
  entryPoints: [new URL('dist/cli/main.js', root).pathname],
  outfile: bundle.pathname,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  sourcemap: true,
  // An all-ASCII file is read as latin1, without UTF-8 decoding (~10 ms for 5 MB here).
  charset: 'ascii',
  external: ['systeminformation'],
  plugins: [{
    name: 'leveldb-binding',
    setup (b) {
      b.onResolve({ filter: /^\.\/binding(\.js)?$/ }, args => args.importer.includes('/node_modules/classic-level/') ? { path: 'classic-level/binding.js', external: true } : undefined)
    }
  }],
  // import() of an external or node: module becomes require(): a vm.Script has no module loader
  // of its own.
  supported: { 'dynamic-import': false },
  // Code that finds files next to itself (the agent's launcher, the examples) asks import.meta.url:
  // the bin passes the bundle's URL in (a parameter of the wrapper below).
  define: { 'import.meta.url': '__pipemeshModuleUrl' },
  logLevel: 'error'
})

// One function expression, as Node wraps a CommonJS module, plus the module's URL (the wrapper
// shares the first line, so line numbers still match the source map, and "use strict" stays the
// body's first statement). The entry's shebang line goes.
const code = readFileSync(bundle, 'utf8').replace(/^#!.*\n/, '\n')
  // charset 'ascii' escapes strings, regexps and names, but not comments: escape what is left
  // (an escape is valid anywhere that esbuild left a character).
  .replace(/[^\x00-\x7f]/g, c => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
const wrapped = `(function (exports, require, module, __filename, __dirname, __pipemeshModuleUrl) {${code}\n})`
writeFileSync(bundle, wrapped)
const sha = createHash('sha256').update(wrapped).digest('hex')
const bin = readFileSync(new URL('scripts/bin.mjs', root), 'utf8').replace('__PIPEMESH_BUNDLE_SHA256__', sha)
writeFileSync(new URL('pipemesh.mjs', dist), bin)
rmSync(new URL('pipemesh.mjs.map', dist), { force: true })
chmodSync(new URL('pipemesh.mjs', dist), 0o755)
chmodSync(new URL('dist/cli/main.js', root), 0o755)
// The Python step launcher (agent/launcher.py) ships beside the Node one.
copyFileSync(new URL('agent/launcher.py', root), new URL('dist/agent/launcher.py', root))
