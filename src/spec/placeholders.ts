// `${{ kind.name }}` placeholders in step commands, env values and input references: finding
// them (for validation) and substituting them (for the resolved command that is fingerprinted
// and run). A value substituted into a shell string is always quoted into one literal word, so a
// param such as `; rm -rf /` can never become shell syntax.

import { PipemeshError } from '../errors.js'
import { INPUTS_DIR, OUTPUTS_DIR, type ParamValue, type StepSpec } from './types.js'

export type PlaceholderKind = 'inputs' | 'outputs' | 'params'

/** One `${{...}}` occurrence: either well-formed (kind and name) or not (raw text only). */
export interface PlaceholderMatch {
  raw: string
  /** The trimmed text between `${{` and `}}`, or everything after `${{` when unterminated. */
  expression: string
  /** Dotted parts of the expression when it is made of valid names, e.g. ['steps', 'prep', 'outputs', 'train']. */
  parts?: string[]
}

const NAME = '[A-Za-z_][A-Za-z0-9_-]*'
const PARTS = new RegExp(`^${NAME}(?:\\.${NAME})*$`)

/** Every `${{ ... }}` in `text`, in order; an unterminated `${{` is reported with no parts. */
export function scanPlaceholders (text: string): PlaceholderMatch[] {
  const found: PlaceholderMatch[] = []
  let from = 0
  for (;;) {
    const start = text.indexOf('${{', from)
    if (start < 0) break
    const end = text.indexOf('}}', start + 3)
    if (end < 0) {
      found.push({ raw: text.slice(start), expression: text.slice(start + 3).trim() })
      break
    }
    const expression = text.slice(start + 3, end).trim()
    const match: PlaceholderMatch = { raw: text.slice(start, end + 2), expression }
    if (PARTS.test(expression)) match.parts = expression.split('.')
    found.push(match)
    from = end + 2
  }
  return found
}

/** `{ kind, name }` when the placeholder is `${{inputs|outputs|params.NAME}}`, else undefined. */
export function commandPlaceholder (match: PlaceholderMatch): { kind: PlaceholderKind, name: string } | undefined {
  const parts = match.parts
  if (parts?.length !== 2) return undefined
  const [kind, name] = parts as [string, string]
  if (kind !== 'inputs' && kind !== 'outputs' && kind !== 'params') return undefined
  return { kind, name }
}

/**
 * Quotes `value` as one POSIX shell word. Safe characters pass unchanged (so `--trees 50` stays
 * readable); anything else is single-quoted, with embedded quotes written as `'\''`. Unlike
 * shell-quote's quote(), never relies on double quotes or backslashes, whose meaning differs
 * between shells (`\!`, a leading `~`).
 */
export function shellQuote (value: string): string {
  if (value !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(value)) return value
  return `'${value.replace(/'/g, `'\\''`)}'`
}

export function paramText (value: ParamValue): string {
  return typeof value === 'string' ? value : String(value)
}

export interface ResolvedCommand {
  /** Placeholders substituted: string form quoted for /bin/sh, argv form verbatim. */
  command: string | string[]
  /** The step's env with `${{params.X}}` substituted (verbatim: env values never go through a shell). */
  env: Record<string, string>
  /** The params the step references, in command or env, with their values. */
  params: Record<string, ParamValue>
}

/**
 * Substitutes a validated step's placeholders. `${{inputs.X}}` becomes `inputs/X` and
 * `${{outputs.X}}` becomes `outputs/X` (relative to the working directory, the same on every
 * agent so the fingerprint does not depend on where the step runs). Throws on a placeholder the
 * validator would have refused, so an unvalidated spec cannot run with a hole in its command.
 */
export function resolveCommand (step: StepSpec, params: Record<string, ParamValue>): ResolvedCommand {
  const used: Record<string, ParamValue> = {}
  const substitute = (text: string, quote: boolean, allowed: readonly PlaceholderKind[]): string => {
    let out = ''
    let from = 0
    for (const match of scanPlaceholders(text)) {
      const start = text.indexOf(match.raw, from)
      const ref = commandPlaceholder(match)
      if (ref === undefined || !allowed.includes(ref.kind)) {
        throw new PipemeshError('INVALID_PIPELINE', `step "${step.id}": placeholder ${match.raw} cannot be substituted here`)
      }
      let value: string
      if (ref.kind === 'params') {
        const v = params[ref.name]
        if (v === undefined) throw new PipemeshError('INVALID_PIPELINE', `step "${step.id}": no value for param "${ref.name}"`)
        used[ref.name] = v
        value = paramText(v)
      } else if (ref.kind === 'inputs') {
        if (step.inputs[ref.name] === undefined) throw new PipemeshError('INVALID_PIPELINE', `step "${step.id}" has no input "${ref.name}"`)
        value = `${INPUTS_DIR}/${ref.name}`
      } else {
        if (!step.outputs.includes(ref.name)) throw new PipemeshError('INVALID_PIPELINE', `step "${step.id}" has no output "${ref.name}"`)
        value = `${OUTPUTS_DIR}/${ref.name}`
      }
      out += text.slice(from, start) + (quote ? shellQuote(value) : value)
      from = start + match.raw.length
    }
    return out + text.slice(from)
  }
  const all: PlaceholderKind[] = ['inputs', 'outputs', 'params']
  const command = typeof step.command === 'string'
    ? substitute(step.command, true, all)
    : step.command.map(arg => substitute(arg, false, all))
  const env: Record<string, string> = {}
  for (const [name, value] of Object.entries(step.env)) env[name] = substitute(value, false, ['params'])
  return { command, env, params: used }
}
