import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { CorruptContentError, PipemeshError, UnsafePathError } from '../../../src/errors.js'
import { decodeManifest, encodeManifest, sha256Digest, type Manifest } from '../../../src/store/manifest.js'
import { assertSafeRelativePath, assertSafeSymlinkTarget, normalizeRelativePath } from '../../../src/util/safe-path.js'

const D = `sha256:${'a'.repeat(64)}` as const

function tree (entries: unknown[]): Buffer {
  return Buffer.from(JSON.stringify({ entries, type: 'tree' }))
}

describe('manifest encoding', () => {
  it('round-trips and gives equal digests for equal content whatever the key order', () => {
    const m: Manifest = { type: 'tree', entries: [{ path: 'a', type: 'dir' }, { type: 'file', path: 'a/x', size: 3, executable: true, digest: D }] }
    const bytes = encodeManifest(m)
    expect(decodeManifest(bytes, sha256Digest(bytes))).toEqual(m)
    const reordered = { entries: [{ type: 'dir', path: 'a' }, { size: 3, digest: D, executable: true, path: 'a/x', type: 'file' }], type: 'tree' }
    expect(encodeManifest(reordered as Manifest).equals(bytes)).toBe(true)
  })

  it('refuses bytes whose hash is not the claimed digest', () => {
    const bytes = encodeManifest({ type: 'file', size: 0, chunks: [] })
    expect(() => decodeManifest(bytes, D)).toThrow(CorruptContentError)
  })

  it('refuses non-canonical encodings, unknown keys and inconsistent sizes', () => {
    const spaced = Buffer.from('{"chunks": [],"size":0,"type":"file"}')
    expect(() => decodeManifest(spaced)).toThrow(/canonical/)
    expect(() => decodeManifest(Buffer.from('{"chunks":[],"extra":1,"size":0,"type":"file"}'))).toThrow(PipemeshError)
    expect(() => decodeManifest(encodeManifest({ type: 'file', size: 5, chunks: [{ digest: D, size: 4 }] }))).toThrow(/add up to 4/)
  })

  it.each([
    ['../etc/passwd'], ['/etc/passwd'], ['a/../../b'], ['a\\..\\b'], ['a//b'], ['a/'], ['./a'], ['a\u0000b'], ['']
  ])('refuses the escaping or malformed entry path %j', (p) => {
    expect(() => decodeManifest(tree([{ path: p, type: 'dir' }]))).toThrow(UnsafePathError)
  })

  it('refuses entries under a symlink, unsorted entries and missing parents', () => {
    const link = { path: 'l', type: 'symlink', target: 'x' }
    expect(() => decodeManifest(tree([link, { path: 'l/f', type: 'dir' }]))).toThrow(/no directory entry for its parent "l"/)
    expect(() => decodeManifest(tree([{ path: 'b', type: 'dir' }, { path: 'a', type: 'dir' }]))).toThrow(/sorted/)
    expect(() => decodeManifest(tree([{ path: 'a/b', type: 'dir' }]))).toThrow(/parent "a"/)
  })

  it.each([
    ['top', '../x'], ['a/l', '/etc'], ['a/l', '../../x'], ['a/l', 'b/../../x'], ['a/l', 'x\\y']
  ])('refuses symlink %s -> %s', (at, target) => {
    const entries = [{ path: 'a', type: 'dir' }, { path: at, type: 'symlink', target }].sort((x, y) => x.path < y.path ? -1 : 1)
    expect(() => decodeManifest(tree(entries))).toThrow(UnsafePathError)
  })

  it('accepts symlinks that stay inside the tree', () => {
    expect(assertSafeSymlinkTarget('a/b/l', '../../x/y')).toBe('../../x/y')
    expect(assertSafeSymlinkTarget('a/l', './x')).toBe('x')
    expect(assertSafeSymlinkTarget('a/l', '..')).toBe('..')
  })

  it('never lets a checked relative path contain a ".." segment (property)', () => {
    fc.assert(fc.property(fc.array(fc.constantFrom('a', '..', '.', '', 'b\\c', '/'), { maxLength: 6 }), (parts) => {
      const p = parts.join('/')
      try {
        assertSafeRelativePath(p)
      } catch (err) {
        expect(err).toBeInstanceOf(UnsafePathError)
        return
      }
      expect(p.split(/[/\\]/)).not.toContain('..')
      expect(p.startsWith('/')).toBe(false)
    }))
  })

  it('normalizes hand-written relative paths but still refuses escapes', () => {
    expect(normalizeRelativePath('./src//a.mjs')).toBe('src/a.mjs')
    expect(normalizeRelativePath('.')).toBe('')
    expect(() => normalizeRelativePath('../x')).toThrow(UnsafePathError)
    expect(() => normalizeRelativePath('/abs')).toThrow(UnsafePathError)
  })
})
