// Requests the coordinator sends an agent over its control stream that await one reply each
// (an upload to pull, a garbage collection): matched by request id and agent, and failed when
// that agent goes away or the client that asked does.

import { randomBytes } from 'node:crypto'

export class AgentReplies<T> {
  private readonly waiting = new Map<string, { agentId: string, resolve: (msg: T) => void, reject: (err: Error) => void, done: () => void }>()

  constructor (private readonly prefix: string) {}

  /** A fresh request id for `agentId`, and its reply; aborting `signal` rejects it with `aborted()`. */
  expect (agentId: string, signal: AbortSignal | undefined, aborted: () => Error): { requestId: string, reply: Promise<T> } {
    const requestId = `${this.prefix}-${randomBytes(6).toString('hex')}`
    const reply = new Promise<T>((resolve, reject) => {
      const onAbort = (): void => {
        this.waiting.delete(requestId)
        reject(aborted())
      }
      // The signal may be long-lived (the coordinator's own): the listener goes with the request.
      const done = (): void => { signal?.removeEventListener('abort', onAbort) }
      this.waiting.set(requestId, { agentId, resolve, reject, done })
      signal?.addEventListener('abort', onAbort, { once: true })
    })
    return { requestId, reply }
  }

  /** A reply arrived; one from another agent than the request went to is ignored. */
  settle (agentId: string, requestId: string, msg: T): void {
    const waiter = this.waiting.get(requestId)
    if (waiter === undefined || waiter.agentId !== agentId) return
    this.waiting.delete(requestId)
    waiter.done()
    waiter.resolve(msg)
  }

  /** The agent went away: what it was asked fails with `error()`. */
  agentGone (agentId: string, error: () => Error): void {
    for (const [id, waiter] of this.waiting) {
      if (waiter.agentId !== agentId) continue
      this.waiting.delete(id)
      waiter.done()
      waiter.reject(error())
    }
  }
}
