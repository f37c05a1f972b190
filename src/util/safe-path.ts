// Checks that keep paths taken from manifests, code lists and symlinks inside the directory they
// belong to. A manifest may come from another peer, so every path is treated as hostile until it
// passes these checks, both when a manifest is accepted and again when it is written to disk.

import path from 'node:path'
import { UnsafePathError } from '../errors.js'

/**
 * Throws UnsafePathError unless `p` is a plain relative POSIX path: segments separated by single
 * `/`, none empty, `.` or `..`, no backslash (a separator on Windows), no NUL or other control
 * character, not absolute.
 */
export function assertSafeRelativePath (p: string, what = 'path'): void {
  if (typeof p !== 'string' || p.length === 0) throw new UnsafePathError(String(p), `${what} is empty`)
  if (p.length > 4096) throw new UnsafePathError(p.slice(0, 80) + '…', `${what} is longer than 4096 characters`)
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f]/.test(p)) throw new UnsafePathError(p, `${what} contains a NUL or control character`)
  if (p.includes('\\')) throw new UnsafePathError(p, `${what} contains a backslash; only "/" separates segments`)
  if (p.startsWith('/') || /^[A-Za-z]:/.test(p)) throw new UnsafePathError(p, `${what} is absolute; expected a path relative to the artifact root`)
  for (const segment of p.split('/')) {
    if (segment === '') throw new UnsafePathError(p, `${what} has an empty segment (leading, trailing or doubled "/")`)
    if (segment === '..') throw new UnsafePathError(p, `${what} contains ".." and could escape its directory`)
    if (segment === '.') throw new UnsafePathError(p, `${what} contains a "." segment; expected a normalized path`)
  }
}

/**
 * Normalizes a user-written relative path (`./a/b/`, `a//b`) and then checks it; used for code
 * lists, where people write paths by hand. Escaping paths are still refused. `.` gives `''`
 * (the base directory itself).
 */
export function normalizeRelativePath (p: string, what = 'path'): string {
  if (p === '') throw new UnsafePathError(p, `${what} is empty`)
  if (p.includes('\\')) throw new UnsafePathError(p, `${what} contains a backslash; only "/" separates segments`)
  if (p.startsWith('/')) throw new UnsafePathError(p, `${what} is absolute; expected a path relative to its base directory`)
  const joined = p.split('/').filter(s => s !== '' && s !== '.').join('/')
  if (joined !== '') assertSafeRelativePath(joined, what)
  return joined
}

/**
 * Checks a symlink stored at relative path `linkPath` (inside a tree) whose target is `target`.
 * The target must be relative, of the form `../../some/name`: all `..` segments first, so they
 * only climb real directories of the tree (a `..` after a name could climb out of another
 * symlink's target), and climbing no higher than the tree root. Returns the normalized target.
 */
export function assertSafeSymlinkTarget (linkPath: string, target: string): string {
  const refuse = (why: string): never => { throw new UnsafePathError(`${linkPath} -> ${target}`, why) }
  if (typeof target !== 'string' || target.length === 0) refuse('symlink target is empty')
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f]/.test(target)) refuse('symlink target contains a NUL or control character')
  if (target.includes('\\')) refuse('symlink target contains a backslash')
  if (target.startsWith('/')) refuse('symlink target is absolute; only relative links that stay inside the artifact are allowed')
  const segments = target.split('/').filter(s => s !== '' && s !== '.')
  let ups = 0
  let seenName = false
  for (const s of segments) {
    if (s === '..') {
      if (seenName) refuse('symlink target has ".." after a name; write it as "../…/name" so it cannot climb out through another link')
      ups++
    } else {
      seenName = true
    }
  }
  const depth = linkPath.split('/').length - 1
  if (ups > depth) refuse('symlink target points outside the artifact')
  return segments.length === 0 ? '.' : segments.join('/')
}

/** Joins a checked relative path onto `root`, and re-checks that the result is inside `root`. */
export function resolveInside (root: string, rel: string): string {
  assertSafeRelativePath(rel)
  const full = path.resolve(root, ...rel.split('/'))
  const base = path.resolve(root)
  if (full !== base && !full.startsWith(base + path.sep)) throw new UnsafePathError(rel, `resolves outside ${root}`)
  return full
}
