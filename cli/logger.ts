// Structured logs for every pipemesh process: pino to stderr, quiet unless asked
// (--log-level or PIPEMESH_LOG_LEVEL). Child loggers add run, step and agent ids. Writes are
// synchronous so nothing is lost when the CLI exits right after its last line.

import { pino, type Logger, type Level } from 'pino'

const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])

export function createLogger (level?: string, defaultLevel: Level = 'warn'): Logger {
  const wanted = level ?? process.env.PIPEMESH_LOG_LEVEL ?? defaultLevel
  const chosen = LEVELS.has(wanted) ? wanted : defaultLevel
  return pino({ level: chosen, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }))
}
