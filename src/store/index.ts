// The content-addressed store's public surface: the store itself, manifest encoding (for the
// transfer protocol) and the shared digest types.

export { ContentStore, DEFAULT_CHUNK_SIZE } from './content-store.js'
export type { ContentStoreOptions, FileDigestMemo, IngestOptions, MaterializeOptions, HeldArtifact, VerifyOptions, VerifyReport, GcReport, StoreStats } from './content-store.js'
export { decodeManifest, encodeManifest, sha256Digest, MAX_CHUNK_BYTES, MAX_MANIFEST_BYTES } from './manifest.js'
export type { Manifest, FileManifest, TreeManifest, TreeEntry, ChunkRef } from './manifest.js'
export { isDigest, DIGEST_PATTERN } from './types.js'
export type { Digest, ArtifactRef } from './types.js'
