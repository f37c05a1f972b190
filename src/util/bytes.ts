// Byte counts of data held as pieces (a frame as it arrived from a stream, a chunk on its way to
// the store), so that no one joins the pieces just to measure them.

/** The total length of `parts`, in bytes. */
export function byteLengthOf (parts: readonly Uint8Array[]): number {
  let n = 0
  for (const p of parts) n += p.byteLength
  return n
}
