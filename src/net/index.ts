// The networking layer's public surface: node construction, persistent identity and the
// peer-to-peer artifact transfer protocol. Message framing lives in src/protocol/channel.ts.

export { createNode, STREAM_WINDOW_BYTES } from './node.js'
export type { CreateNodeOptions, NodeGater } from './node.js'
export { loadOrCreatePrivateKey, IDENTITY_FILE } from './identity.js'
export { CHUNKS_PROTOCOL, serveArtifacts, fetchArtifact, transferStats, TransferStats } from './transfer.js'
export type { Holder, FetchOptions, FetchResult, ServeOptions, ServableStore, PeerTransferCounters } from './transfer.js'
