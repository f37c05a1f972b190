// Keeps what an agent advertises true after its store is found damaged. The store quarantines a
// chunk whose bytes no longer match their hash whenever it reads one for a step, or checks one a
// peer got bad bytes of; this module then rechecks which held artifacts are no longer complete,
// drops them and tells the coordinator, so that it fetches from other holders or reruns the step
// that made them instead of sending more work to a copy that is gone.

import type { Logger } from 'pino'
import { CorruptContentError, MissingContentError } from '../src/errors.js'
import type { ServableStore } from '../src/net/transfer.js'
import type { ContentStore } from '../src/store/content-store.js'
import type { Digest } from '../src/store/types.js'

export class ContentGuard {
  private running: Promise<Digest[]> | undefined
  private again = false

  constructor (
    private readonly store: ContentStore,
    /** Tells the coordinator these artifacts are no longer held here. */
    private readonly report: (lost: Digest[]) => void,
    private readonly log: Logger
  ) {}

  /** The store as served to peers: finding damage while serving triggers a recheck. */
  servable (): ServableStore {
    return {
      getManifestBytes: async (digest) => await this.store.getManifestBytes(digest),
      readChunk: async (digest, options) => {
        try {
          return await this.store.readChunk(digest, options)
        } catch (err) {
          if (isDamage(err)) void this.recheck()
          throw err
        }
      },
      // A peer that got bad bytes from here asks for a check.
      checkChunk: async (digest) => {
        const state = await this.store.checkChunk(digest)
        if (state !== 'ok') void this.recheck()
        return state
      }
    }
  }

  /**
   * Finds held artifacts that are no longer complete, drops them from the store's roots and
   * reports them. Calls made while one runs are folded into one more pass after it.
   */
  async recheck (): Promise<Digest[]> {
    if (this.running !== undefined) {
      this.again = true
      return await this.running
    }
    this.running = this.pass()
    try {
      const lost = await this.running
      while (this.again) {
        this.again = false
        this.running = this.pass()
        lost.push(...await this.running)
      }
      return lost
    } finally {
      this.running = undefined
    }
  }

  private async pass (): Promise<Digest[]> {
    const lost: Digest[] = []
    try {
      for await (const root of this.store.roots()) {
        if (await this.store.has(root.digest)) continue
        await this.store.removeRoot(root.digest)
        lost.push(root.digest)
      }
    } catch (err) {
      this.log.warn({ err }, 'rechecking the store after damage failed')
    }
    if (lost.length > 0) {
      this.log.warn({ lost }, 'artifacts lost to store damage; the coordinator will use other holders or rebuild them')
      this.report(lost)
    }
    return lost
  }
}

/** A read that found content corrupt (now quarantined) or gone. */
export function isDamage (err: unknown): boolean {
  return err instanceof CorruptContentError || err instanceof MissingContentError
}
