// Per-deploy NDJSON logs in `<dir>/<id>.ndjson`. Lines are appended through a handle kept open while the deploy
// writes; they are not fsynced one by one, only when the log is closed.
//
// A log is capped: past `maxBytes` output lines (build and migration output, probes) are dropped, the agent's own
// lines (state changes, results) still get in up to `maxBytes + reserveBytes`, and past that everything is dropped.
// What was dropped is counted, and one line at the end of the log says how much. Lines are counted when they are
// queued, so a build that writes faster than the disk cannot queue more than the cap in memory.
import { open, readFile, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { assertDeployId } from './deploy-id.js'

interface Writer {
  handle: Promise<FileHandle>
  /** Writes run one at a time so lines never interleave. */
  queue: Promise<void>
  /** Bytes in the file and queued for it. */
  bytes: number
  dropped: { lines: number; bytes: number }
}

export interface DeployLogLimits {
  /** Output lines past this size of the log are dropped (default 5 MiB). */
  maxBytes?: number
  /** Room past `maxBytes` kept for the agent's own lines (default 256 KiB). */
  reserveBytes?: number
}

export const MAX_LOG_BYTES = 5 * 1024 * 1024
const RESERVE_BYTES = 256 * 1024

export class DeployLogs {
  readonly #writers = new Map<string, Writer>()
  readonly #maxBytes: number
  readonly #reserveBytes: number

  constructor(
    readonly dir: string,
    limits: DeployLogLimits = {},
  ) {
    this.#maxBytes = limits.maxBytes ?? MAX_LOG_BYTES
    this.#reserveBytes = limits.reserveBytes ?? RESERVE_BYTES
  }

  /** Where the log of `id` lives; throws a ValidationError for anything but a deploy id. */
  pathOf(id: string): string {
    assertDeployId(id)
    return join(this.dir, `${id}.ndjson`)
  }

  /** Appends one line; `output` lines (a build's, a migration's) are the first to be dropped at the cap. */
  append(id: string, line: object, opts: { output?: boolean } = {}): Promise<void> {
    let path: string
    let text: string
    try {
      path = this.pathOf(id)
      text = `${JSON.stringify(line)}\n`
    } catch (err) {
      return Promise.reject(err)
    }
    const writer = this.#writerFor(id, path)
    const size = Buffer.byteLength(text)
    const limit = opts.output ? this.#maxBytes : this.#maxBytes + this.#reserveBytes
    if (writer.bytes + size > limit) {
      writer.dropped.lines++
      writer.dropped.bytes += size
      return Promise.resolve()
    }
    writer.bytes += size
    return this.#write(writer, text)
  }

  /**
   * Up to `max` bytes of the log from byte `offset` (fewer at its end; none when there is no log). Followers read
   * from where they stopped, never the whole file again.
   */
  async readChunk(id: string, offset: number, max: number): Promise<Buffer> {
    const path = this.pathOf(id)
    let handle: FileHandle
    try {
      handle = await open(path, 'r')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return Buffer.alloc(0)
      throw err
    }
    try {
      const buffer = Buffer.alloc(max)
      const { bytesRead } = await handle.read(buffer, 0, max, offset)
      return buffer.subarray(0, bytesRead)
    } finally {
      await handle.close()
    }
  }

  /** Waits for the lines of `id` queued so far to be written. */
  async settled(id: string): Promise<void> {
    this.pathOf(id)
    await this.#writers.get(id)?.queue
  }

  /** The whole log so far ('' when nothing was written), including lines still being appended. */
  async read(id: string): Promise<string> {
    const path = this.pathOf(id)
    await this.#writers.get(id)?.queue
    try {
      return await readFile(path, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return ''
      throw err
    }
  }

  /** Flushes (fsync) and closes the log of `id`; a later append opens it again. */
  async closeLog(id: string): Promise<void> {
    const writer = this.#writers.get(id)
    if (!writer) return
    this.#writers.delete(id)
    if (writer.dropped.lines > 0) void this.#write(writer, this.#droppedLine(writer)).catch(() => undefined)
    await writer.queue
    const handle = await writer.handle.catch(() => undefined)
    if (!handle) return
    try {
      await handle.sync()
    } finally {
      await handle.close()
    }
  }

  /** Flushes and closes every open log. */
  async close(): Promise<void> {
    const results = await Promise.allSettled([...this.#writers.keys()].map((id) => this.closeLog(id)))
    const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected')
    if (failed) throw failed.reason
  }

  #write(writer: Writer, text: string): Promise<void> {
    const run = writer.queue.then(async () => {
      const handle = await writer.handle
      await handle.appendFile(text)
    })
    writer.queue = run.catch(() => undefined)
    return run
  }

  /** The one line that says what the cap dropped (written when the log is closed). */
  #droppedLine(writer: Writer): string {
    const { lines, bytes } = writer.dropped
    const mib = Math.round((this.#maxBytes / 1024 / 1024) * 100) / 100
    const message = `this log reached its ${mib} MiB cap: ${lines} line(s) (${bytes} bytes) were dropped`
    return `${JSON.stringify({ at: new Date().toISOString(), event: 'log-capped', limitBytes: this.#maxBytes, droppedLines: lines, droppedBytes: bytes, message })}\n`
  }

  #writerFor(id: string, path: string): Writer {
    const existing = this.#writers.get(id)
    if (existing) return existing
    const writer: Writer = { handle: open(path, 'a', 0o600), queue: Promise.resolve(), bytes: 0, dropped: { lines: 0, bytes: 0 } }
    // A log that cannot be opened is forgotten, so the next append tries again.
    writer.handle.catch(() => {
      if (this.#writers.get(id) === writer) this.#writers.delete(id)
    })
    // A log opened again (a line after the end, a restart) counts what it already holds, before any write.
    writer.queue = writer.handle.then(async (handle) => void (writer.bytes += (await handle.stat()).size)).catch(() => undefined)
    this.#writers.set(id, writer)
    return writer
  }
}
