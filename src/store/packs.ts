// Pack files: where the store writes chunk bodies too large for LevelDB. Bodies are appended to
// a pack of up to PACK_BYTES at offsets handed out here, and the index records (pack, offset).
// One file per chunk was the first design; on the ext4 of the machines this was built on, making
// a file costs 0.2-1.5 ms more when files were deleted nearby (any store that runs gc), so writing
// 1 GiB as 1024 chunk files took 0.3-1.7 s against a steady 0.19 s as 16 packs. Fewer files also
// means fewer inodes and fast deletes for a store of millions of chunks.
//
// A pack is only ever appended to while it is the open one of its lane; regions are reserved on
// the main thread and written by whoever reserved them (a chunk worker, libuv's pool), so writers
// never share bytes. Each lane has its own open pack and one writer at a time (a chunk worker, or
// a holder of a main-thread lane in chunk-files.ts): ext4 serializes writes to one file, and two
// threads writing one pack spent 2-4x the system time of two packs. Lane names start with their
// write group's (`g12/w0`): an ingest or a fetch fills packs of its own and seals them when it
// ends (sealLanes), so an artifact's chunks lie together and removing it frees whole packs.
//
// A region nobody indexed (a duplicate, a body that failed its hash, a crash before the index
// write) is dead space: a pack with no live region is deleted once sealed, and gc deletes
// unreferenced packs and rewrites mostly-dead ones (maintenance.ts).
//
// A pack can also be a whole file taken in as it is (adopt): a step's output, renamed into the
// store instead of copied, sealed from the start and of any size.

import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import type { Stats } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import path from 'node:path'

/** Packs are sealed when the next region would take them past this size. */
export const PACK_BYTES = 64 * 1024 * 1024

const NAME = /^p[0-9a-z]+-[0-9a-f]{12}$/

function newName (): string {
  return `p${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`
}

/** A pack being written: its regions are reserved until released. */
export class OpenPack {
  /** Next free offset. */
  end = 0
  /** Regions reserved and not yet released. */
  users = 0
  /** Regions that callers index. */
  kept = 0
  sealed = false
  /** An adopted file's own permission bits (given back if it is returned). */
  adoptedMode: number | undefined
  /**
   * Where an adopted file waits until placeAdopted() moves it to `file`: the store's temp
   * directory, which opening the store clears, so a crash while it is hashed leaves nothing.
   */
  staged: string | undefined
  /** Set once the pack is closed (and deleted when it kept nothing). */
  closed: Promise<void> | undefined
  constructor (readonly name: string, readonly file: string, readonly handle: FileHandle) {}
  get fd (): number { return this.handle.fd }
}

export interface Region { pack: OpenPack, at: number }

export class Packs {
  readonly dir: string
  /** The store's temp directory (cleared when the store opens): adopted files wait there. */
  private readonly tmp: string
  /** The open pack of each lane. */
  private readonly current = new Map<string, OpenPack>()
  private readonly opening = new Map<string, Promise<OpenPack>>()
  private readonly open = new Set<OpenPack>()
  private readonly closing = new Set<Promise<void>>()
  /** The device the pack directory is on (adopt() moves files only within it). */
  private dev: number | undefined

  constructor (root: string) {
    this.dir = path.join(root, 'packs')
    this.tmp = path.join(root, 'tmp')
  }

  async init (): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true })
  }

  static isName (name: string): boolean {
    return NAME.test(name)
  }

  pathOf (name: string): string {
    // Names come from this store's own index; a malformed one must still never leave the directory.
    if (!NAME.test(name)) throw new Error(`not a pack name: ${JSON.stringify(name)}`)
    return path.join(this.dir, name)
  }

  /**
   * Reserves `size` bytes in the open pack (a new one when it would outgrow PACK_BYTES). The
   * region's pack stays open until release(); the caller writes the region at pack.fd.
   */
  async reserve (size: number, lane: string): Promise<Region> {
    for (;;) {
      const pack = this.current.get(lane) ?? await this.startPack(lane)
      if (pack !== this.current.get(lane)) continue
      if (pack.end > 0 && pack.end + size > PACK_BYTES) {
        this.seal(pack, lane)
        continue
      }
      const at = pack.end
      pack.end += size
      pack.users++
      return { pack, at }
    }
  }

  /**
   * Takes a whole file in as a sealed pack of its own, by renaming it: a step's output, which its
   * working directory is about to lose, becomes part of the store without being copied. It is
   * staged in the store's temp directory (see OpenPack.staged) until placeAdopted(). Returns
   * undefined, leaving the file where it is, when it is not a regular file with a single link
   * (another name could still change its bytes) or not on this store's filesystem. The caller
   * hashes it at pack.fd, places it before indexing any region of it, then calls settleAdopted().
   * `st` is what the caller's stat of the file said; the file renamed is checked against it.
   */
  async adopt (file: string, st: Stats): Promise<OpenPack | undefined> {
    if (!st.isFile() || st.nlink !== 1) return undefined
    this.dev ??= (await fs.stat(this.dir)).dev
    if (st.dev !== this.dev) return undefined
    const name = newName()
    await fs.mkdir(this.tmp, { recursive: true })
    const staged = path.join(this.tmp, `adopting-${name}`)
    try {
      await fs.rename(file, staged)
    } catch {
      // Then it is copied, as any file that cannot be moved: a bind mount of the same device
      // refuses a rename across it (EXDEV), a step may have made its output directory read-only
      // (EACCES), a file may have gone (the copy then says so).
      return undefined
    }
    let handle: FileHandle | undefined
    try {
      // Whatever mode the step gave its output, the store must be able to read it.
      await fs.chmod(staged, 0o644)
      handle = await fs.open(staged, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW)
      const now = await handle.stat()
      // Replaced between the caller's stat and the rename: not the file that was checked.
      if (!now.isFile() || now.ino !== st.ino || now.nlink !== 1) throw new Error('changed while being adopted')
      const pack = new OpenPack(name, path.join(this.dir, name), handle)
      pack.end = now.size
      pack.users = 1
      pack.sealed = true
      pack.adoptedMode = st.mode & 0o7777
      pack.staged = staged
      this.open.add(pack)
      return pack
    } catch {
      await handle?.close().catch(() => {})
      await fs.rename(staged, file).catch(() => {})
      await fs.chmod(file, st.mode & 0o7777).catch(() => {})
      return undefined
    }
  }

  /** Moves an adopted file from where it was staged into the pack directory. */
  async placeAdopted (pack: OpenPack): Promise<void> {
    if (pack.staged === undefined) return
    await fs.rename(pack.staged, pack.file)
    pack.staged = undefined
  }

  /**
   * Ends an adoption with the number of regions indexed in it. A pack that kept none is
   * deleted, or, with `restoreTo`, renamed back there with its own mode (an ingest that failed
   * leaves the file as it found it). One that cannot be put back while still staged stays in
   * tmp/ until the store next opens; once placed, it goes as any pack that kept nothing.
   */
  async settleAdopted (pack: OpenPack, kept: number, restoreTo?: string): Promise<void> {
    pack.kept += kept
    pack.users--
    if (pack.kept === 0 && restoreTo !== undefined) {
      const at = pack.staged ?? pack.file
      if (await fs.rename(at, restoreTo).then(() => true, () => false)) {
        pack.staged = undefined
        if (pack.adoptedMode !== undefined) await fs.chmod(restoreTo, pack.adoptedMode).catch(() => {})
      }
    } else if (pack.kept === 0 && pack.staged !== undefined) {
      await fs.rm(pack.staged, { force: true })
    }
    await this.closeIfDone(pack)
  }

  /** Ends a reservation; `kept` when the caller indexes the region. */
  async release (region: Region, kept: boolean): Promise<void> {
    const pack = region.pack
    pack.users--
    if (kept) pack.kept++
    await this.closeIfDone(pack)
  }

  /** Stops appending to the open pack (gc and close need every pack at rest). */
  async sealAll (): Promise<void> {
    await Promise.allSettled(this.opening.values())
    for (const [lane, pack] of this.current) this.seal(pack, lane)
    await Promise.all([...this.open].map(async p => { await this.closeIfDone(p) }))
    await Promise.all([...this.closing])
  }

  /** Seals the open packs of the lanes whose names start with `prefix` (a write group's). */
  async sealLanes (prefix: string): Promise<void> {
    const sealed: OpenPack[] = []
    for (const [lane, pack] of this.current) {
      if (!lane.startsWith(prefix)) continue
      this.seal(pack, lane)
      sealed.push(pack)
    }
    await Promise.all(sealed.map(async p => { await this.closeIfDone(p) }))
  }

  /** Packs on disk, by name (gc). */
  async list (): Promise<string[]> {
    const names = await fs.readdir(this.dir).catch(() => [] as string[])
    return names.filter(n => NAME.test(n))
  }

  /** How many packs there are and the disk they take, dead space included. */
  async usage (): Promise<{ packs: number, bytes: number }> {
    let packs = 0
    let bytes = 0
    for (const name of await this.list()) {
      const st = await fs.stat(path.join(this.dir, name)).catch(() => undefined)
      if (st === undefined) continue
      packs++
      bytes += st.blocks * 512
    }
    return { packs, bytes }
  }

  /** Whether a pack is still being written (gc leaves those alone). */
  isOpen (name: string): boolean {
    for (const p of this.open) if (p.name === name) return true
    return false
  }

  async remove (name: string): Promise<void> {
    await fs.rm(this.pathOf(name), { force: true })
  }

  private seal (pack: OpenPack, lane: string): void {
    pack.sealed = true
    if (this.current.get(lane) === pack) this.current.delete(lane)
    void this.closeIfDone(pack).catch(() => {})
  }

  private async closeIfDone (pack: OpenPack): Promise<void> {
    if (pack.sealed && pack.users === 0 && pack.closed === undefined) {
      const closed = (async () => {
        await pack.handle.close()
        // Every region was a duplicate or refused: nothing will ever read this pack.
        if (pack.kept === 0) await fs.rm(pack.file, { force: true })
      })()
      pack.closed = closed
      this.closing.add(closed)
      void closed.finally(() => {
        this.closing.delete(closed)
        this.open.delete(pack)
      }).catch(() => {})
    }
    await pack.closed
  }

  private async startPack (lane: string): Promise<OpenPack> {
    let opening = this.opening.get(lane)
    if (opening !== undefined) return await opening
    opening = (async () => {
      try {
        const name = newName()
        const file = path.join(this.dir, name)
        let handle: FileHandle
        try {
          handle = await fs.open(file, 'wx+')
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
          // The store directory was wiped under us: make it again.
          await fs.mkdir(this.dir, { recursive: true })
          handle = await fs.open(file, 'wx+')
        }
        const pack = new OpenPack(name, file, handle)
        this.open.add(pack)
        this.current.set(lane, pack)
        return pack
      } finally {
        this.opening.delete(lane)
      }
    })()
    this.opening.set(lane, opening)
    return await opening
  }
}
