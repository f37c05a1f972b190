// Content addresses and artifact references shared by the store, the wire protocol and the
// coordinator's records.

/** `sha256:` followed by 64 lowercase hex digits. */
export type Digest = `sha256:${string}`

export const DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/

export function isDigest (value: unknown): value is Digest {
  return typeof value === 'string' && DIGEST_PATTERN.test(value)
}

/** What a run record keeps about an artifact: enough to fetch, verify and show it. */
export interface ArtifactRef {
  /** Digest of the artifact's manifest (file or tree); equal content gives an equal digest. */
  digest: Digest
  kind: 'file' | 'tree'
  /** Total bytes of file content. */
  size: number
}
