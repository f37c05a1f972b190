// The enroll protocol: the one exchange an agent that is not yet a member may have with a
// coordinator, and only while some join token is unredeemed. The agent presents the token once;
// from then on both sides recognize each other by peer id.

import { z } from 'zod'

export const ENROLL_PROTOCOL = '/pipemesh/enroll/1.0.0'
export const MAX_ENROLL_MESSAGE_BYTES = 16 * 1024

export const enrollRequestSchema = z.object({
  token: z.string().min(8).max(512),
  name: z.string().min(1).max(256)
})
export type EnrollRequest = z.infer<typeof enrollRequestSchema>

export const enrollResponseSchema = z.discriminatedUnion('ok', [
  z.object({ ok: z.literal(true), coordinator: z.string().max(128) }),
  z.object({ ok: z.literal(false), error: z.object({ code: z.string().max(64), message: z.string().max(4096), hint: z.string().max(4096).optional() }) })
])
export type EnrollResponse = z.infer<typeof enrollResponseSchema>
