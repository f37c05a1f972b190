// Requests to agents that await one reply each: matched to the agent asked, failed when it goes
// away or the asker gives up, and never leaving a listener on a signal that outlives them.

import { describe, expect, it } from 'vitest'
import { getEventListeners } from 'node:events'
import { AgentReplies } from '../../coordinator/agent-replies.js'

describe('AgentReplies', () => {
  it('resolves with the reply of the agent asked, ignoring one from another agent', async () => {
    const replies = new AgentReplies<string>('t')
    const { requestId, reply } = replies.expect('a', undefined, () => new Error('aborted'))
    replies.settle('b', requestId, 'from b')
    replies.settle('a', requestId, 'from a')
    expect(await reply).toBe('from a')
  })

  it("fails the requests of an agent that went away, and rejects on the asker's abort", async () => {
    const replies = new AgentReplies<string>('t')
    const gone = replies.expect('a', undefined, () => new Error('aborted')).reply
    replies.agentGone('a', () => new Error('agent a disconnected'))
    await expect(gone).rejects.toThrow('agent a disconnected')
    const controller = new AbortController()
    const abandoned = replies.expect('a', controller.signal, () => new Error('the client went away')).reply
    controller.abort()
    await expect(abandoned).rejects.toThrow('the client went away')
  })

  it('removes its abort listener once a request is settled either way (the signal may live for days)', async () => {
    const replies = new AgentReplies<string>('t')
    const longLived = new AbortController().signal
    for (let i = 0; i < 100; i++) {
      const { requestId, reply } = replies.expect('a', longLived, () => new Error('aborted'))
      replies.settle('a', requestId, 'ok')
      await reply
    }
    const pending = replies.expect('b', longLived, () => new Error('aborted')).reply
    replies.agentGone('b', () => new Error('gone'))
    await pending.catch(() => {})
    expect(getEventListeners(longLived, 'abort')).toHaveLength(0)
  })
})
