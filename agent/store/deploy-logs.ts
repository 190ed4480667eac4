// Per-deploy NDJSON logs in `<dir>/<id>.ndjson`. Lines are appended through a handle kept open while the deploy
// writes; they are not fsynced one by one, only when the log is closed.
import { open, readFile, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { assertDeployId } from './deploy-id.js'

interface Writer {
  handle: Promise<FileHandle>
  /** Writes run one at a time so lines never interleave. */
  queue: Promise<void>
}

export class DeployLogs {
  readonly #writers = new Map<string, Writer>()

  constructor(readonly dir: string) {}

  /** Where the log of `id` lives; throws a ValidationError for anything but a deploy id. */
  pathOf(id: string): string {
    assertDeployId(id)
    return join(this.dir, `${id}.ndjson`)
  }

  append(id: string, line: object): Promise<void> {
    let path: string
    let text: string
    try {
      path = this.pathOf(id)
      text = `${JSON.stringify(line)}\n`
    } catch (err) {
      return Promise.reject(err)
    }
    const writer = this.#writerFor(id, path)
    const run = writer.queue.then(async () => {
      const handle = await writer.handle
      await handle.appendFile(text)
    })
    writer.queue = run.catch(() => undefined)
    return run
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

  #writerFor(id: string, path: string): Writer {
    const existing = this.#writers.get(id)
    if (existing) return existing
    const writer: Writer = { handle: open(path, 'a', 0o600), queue: Promise.resolve() }
    // A log that cannot be opened is forgotten, so the next append tries again.
    writer.handle.catch(() => {
      if (this.#writers.get(id) === writer) this.#writers.delete(id)
    })
    this.#writers.set(id, writer)
    return writer
  }
}
