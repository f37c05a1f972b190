// The submit request as it crosses the HTTP boundary: the pipeline (re-validated by the
// coordinator with the same validator the CLI uses), parameter overrides, and the digests of the
// content the client already placed in the mesh. The pipeline comes as its YAML text or as the
// data that YAML denotes: the CLI sends data, so that a large pipeline is not parsed as YAML twice
// on the way to its first step.

import { z } from 'zod'
import type { SubmissionArtifacts } from '../run/types.js'
import type { Digest } from '../store/types.js'

const digest = z.string().regex(/^sha256:[0-9a-f]{64}$/) as unknown as z.ZodType<Digest>
const ref = z.object({ digest, kind: z.enum(['file', 'tree']), size: z.number().int().nonnegative() })
const key = z.string().min(1).max(256)

export const submitRequestSchema = z.object({
  pipeline: z.object({
    text: z.string().max(1024 * 1024).optional(),
    /** What the YAML denotes, as JSON (instead of `text`). */
    data: z.unknown().optional(),
    /** Where the client read it (for messages only). */
    file: z.string().max(4096).optional(),
    baseDir: z.string().max(4096).optional()
  }).refine(p => (p.text === undefined) !== (p.data === undefined), { message: 'give the pipeline as either "text" (YAML) or "data" (JSON), not both or neither' }),
  params: z.record(key, z.string().max(64 * 1024)).default({}),
  artifacts: z.object({
    inputs: z.record(key, ref),
    code: z.record(key, z.object({ ref, files: z.record(z.string().max(4096), digest) })),
    environments: z.record(key, z.object({ files: ref, digest }))
  }),
  /** The agent that holds every artifact listed above (the one the client uploaded to). */
  uploadedTo: z.string().max(128).optional(),
  /**
   * False: steps with a checkpoint directory start from an empty one instead of the save an
   * earlier run of them left (a save that is itself the problem). Retries within the run still
   * resume. Default true.
   */
  resume: z.boolean().optional()
})

export type SubmitRequest = z.input<typeof submitRequestSchema> & { artifacts: SubmissionArtifacts }
