// The dataset files that prep writes and train and evaluate read, and the seeded random numbers
// all three use. A file is binary: "PMDS", then rows, features and classes as little-endian
// uint32, then rows x features float32 values, then one uint8 label per row. Binary, so a large
// dataset costs no parsing and its size on disk is what a transfer between agents moves.

import { readFile, writeFile } from 'node:fs/promises'

const MAGIC = 'PMDS'
const HEADER_BYTES = 16

/** @typedef {{ rows: number, features: number, classes: number, x: Float32Array, y: Uint8Array }} Dataset */

/** @param {string} file @param {Dataset} data */
export async function writeDataset (file, data) {
  const { rows, features, classes, x, y } = data
  const out = Buffer.alloc(HEADER_BYTES + rows * features * 4 + rows)
  out.write(MAGIC, 0, 'latin1')
  out.writeUInt32LE(rows, 4)
  out.writeUInt32LE(features, 8)
  out.writeUInt32LE(classes, 12)
  Buffer.from(x.buffer, x.byteOffset, rows * features * 4).copy(out, HEADER_BYTES)
  Buffer.from(y.buffer, y.byteOffset, rows).copy(out, HEADER_BYTES + rows * features * 4)
  await writeFile(file, out)
}

/** @param {string} file @returns {Promise<Dataset>} */
export async function readDataset (file) {
  const buf = await readFile(file)
  if (buf.length < HEADER_BYTES || buf.toString('latin1', 0, 4) !== MAGIC) throw new Error(`${file} is not a dataset written by prep.mjs`)
  const rows = buf.readUInt32LE(4)
  const features = buf.readUInt32LE(8)
  const classes = buf.readUInt32LE(12)
  const expected = HEADER_BYTES + rows * features * 4 + rows
  if (buf.length !== expected) throw new Error(`${file} has ${buf.length} bytes; its header promises ${expected}`)
  // Copied out of the file's buffer: a Float32Array needs a 4-byte-aligned offset.
  const x = new Float32Array(rows * features)
  Buffer.from(x.buffer).set(buf.subarray(HEADER_BYTES, HEADER_BYTES + rows * features * 4))
  const y = Uint8Array.from(buf.subarray(HEADER_BYTES + rows * features * 4))
  return { rows, features, classes, x, y }
}

/**
 * mulberry32: a small seeded generator, so every run with the same seed makes the same bytes.
 * Its whole state is `next.state.a`, which a checkpoint saves and a resumed training restores.
 */
export function random (seed) {
  const state = { a: seed >>> 0 }
  const next = () => {
    const a = state.a = (state.a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  next.state = state
  return next
}

/** Standard normal draws from a uniform generator (Box-Muller). */
export function normal (rand) {
  return () => {
    const u = 1 - rand()
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand())
  }
}
