// The scheduler's public surface: the pure placement function, its allocation helpers and types.
// Callers import from here, not from the files behind it.

export { placeStep, allocate, release, describeCapacity, DISK_SPARE_BYTES } from './fitness.js'
export type { AgentView, CandidateReport, CandidateVerdict, GpuInfo, Placement, PlacementInput, PlacementRequest } from './types.js'
