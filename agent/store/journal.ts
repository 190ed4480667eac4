// An append-only JSON-lines journal: one record per line, each one fsynced before its append resolves. Appends
// made while a write is under way share the next write and its fsync (group commit), so a burst of requests costs
// a few fsyncs, not one each.
import { open, readFile, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import { fsyncDir, writeFileAtomic } from '../files.js'

/** The format version stamped on every record as `v`. */
export const JOURNAL_FORMAT = 1

export interface JournalRecord {
  readonly v: number
  readonly at: string
  readonly [key: string]: unknown
}

/**
 * A line that could not be read back. The `tail` line (the last one: no newline, or unparseable) is what a power
 * cut leaves behind; it is cut from the file. Other bad lines stay in the file and are skipped.
 */
export interface TornLine {
  line: number
  text: string
  tail: boolean
}

export interface JournalOptions {
  onTornLine?: (info: TornLine) => void
  /** Clock for the `at` stamp, in ms since the epoch. */
  now?: () => number
  /** Mode of a newly created journal file. */
  mode?: number
}

export interface JournalScan {
  records: JournalRecord[]
  torn: TornLine[]
  /** Bytes to keep: everything before the torn tail line. */
  keepBytes: number
}

const NEWLINE = 0x0a
const REPORTED_TEXT_MAX = 200

function parseRecord(text: string): JournalRecord | undefined {
  try {
    const value: unknown = JSON.parse(text)
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as JournalRecord) : undefined
  } catch {
    return undefined
  }
}

/**
 * Reads journal bytes. A line exists once its newline is written: a last line without one is an append that never
 * completed. Blank lines are ignored.
 */
export function scanJournal(content: Buffer): JournalScan {
  const records: JournalRecord[] = []
  const torn: TornLine[] = []
  let keepBytes = 0
  for (let start = 0, line = 1; start < content.length; line++) {
    const newline = content.indexOf(NEWLINE, start)
    const next = newline === -1 ? content.length : newline + 1
    const text = content.toString('utf8', start, newline === -1 ? content.length : newline)
    const record = newline === -1 || text.trim() === '' ? undefined : parseRecord(text)
    if (record !== undefined) records.push(record)
    const bad = newline === -1 || (record === undefined && text.trim() !== '')
    const tail = next >= content.length
    if (bad) torn.push({ line, text: text.slice(0, REPORTED_TEXT_MAX), tail })
    if (!bad || !tail) keepBytes = next
    start = next
  }
  return { records, torn, keepBytes }
}

async function readIfExists(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

interface PendingAppend {
  line: string
  record: JournalRecord
  resolve: () => void
  reject: (err: unknown) => void
}

export class Journal {
  #handle: FileHandle | undefined
  /** Appends waiting for their shared write; closed when that write starts or a rewrite or close is queued. */
  #batch: PendingAppend[] | undefined
  #records: JournalRecord[]
  #bytes: number
  /** Appends and rewrites run one at a time, in call order. */
  #queue: Promise<void> = Promise.resolve()
  #closed: Promise<void> | undefined
  /** Set when the file may no longer hold exactly what was read and appended; every later write fails with it. */
  #broken: Error | undefined

  /** How many lines were skipped on open (the torn tail included). */
  readonly tornLines: number

  private constructor(
    readonly path: string,
    handle: FileHandle,
    scan: JournalScan,
    private readonly now: () => number,
    private readonly mode: number,
  ) {
    this.#handle = handle
    this.#records = scan.records
    this.#bytes = scan.keepBytes
    this.tornLines = scan.torn.length
  }

  /** Reads the records in `path` (a missing file is an empty journal) and opens it for appending. */
  static async open(path: string, opts: JournalOptions = {}): Promise<Journal> {
    const mode = opts.mode ?? 0o600
    const content = await readIfExists(path)
    const scan = scanJournal(content ?? Buffer.alloc(0))
    for (const info of scan.torn) opts.onTornLine?.(info)
    const handle = await open(path, 'a', mode)
    try {
      if (content === undefined) {
        await fsyncDir(dirname(path))
      } else if (scan.keepBytes < content.length) {
        await handle.truncate(scan.keepBytes)
        await handle.sync()
      }
    } catch (err) {
      await handle.close()
      throw err
    }
    return new Journal(path, handle, scan, opts.now ?? Date.now, mode)
  }

  /** Every record read on open or appended since, in file order: a live view that grows with appends (a rewrite
   *  replaces it, so call again afterwards). */
  records(): readonly JournalRecord[] {
    return this.#records
  }

  /**
   * Writes `{ v, at, ...record }` as one line and resolves once it is fsynced. Appends never interleave and resolve
   * in call order. A failed append is cut back out of the file, so it does not exist after a restart either.
   */
  append(record: object): Promise<void> {
    let full: JournalRecord
    let line: string
    try {
      full = this.#stamp(record)
      line = `${JSON.stringify(full)}\n`
    } catch (err) {
      return Promise.reject(err)
    }
    if (this.#closed) return Promise.reject(new Error(`journal ${this.path} is closed`))
    return new Promise<void>((resolve, reject) => {
      const pending: PendingAppend = { line, record: full, resolve, reject }
      if (this.#batch) {
        this.#batch.push(pending)
        return
      }
      const batch = [pending]
      this.#batch = batch
      this.#enqueue((handle) => {
        if (this.#batch === batch) this.#batch = undefined
        return this.#writeBatch(handle, batch)
      }).then(
        () => batch.forEach((a) => a.resolve()),
        (err: unknown) => batch.forEach((a) => a.reject(err)),
      )
    })
  }

  /** One write and one fsync for the whole batch; on failure all of it is cut back out and every append fails. */
  async #writeBatch(handle: FileHandle, batch: readonly PendingAppend[]): Promise<void> {
    const text = batch.map((a) => a.line).join('')
    try {
      await handle.appendFile(text)
      await handle.sync()
    } catch (err) {
      await this.#cutBackTo(handle, this.#bytes)
      throw err
    }
    this.#bytes += Buffer.byteLength(text)
    for (const a of batch) this.#records.push(a.record)
  }

  /**
   * Atomically replaces the whole journal with `records` (compaction). Records that already carry `v` and `at`
   * keep them. Runs in turn with appends: those queued before land in the old file, those after in the new one.
   */
  rewrite(records: readonly object[]): Promise<void> {
    let stamped: JournalRecord[]
    let text: string
    try {
      stamped = records.map((record) => this.#stamp(record))
      text = stamped.map((record) => `${JSON.stringify(record)}\n`).join('')
    } catch (err) {
      return Promise.reject(err)
    }
    this.#batch = undefined // appends after this call land in the new file
    return this.#enqueue(async (oldHandle) => {
      await writeFileAtomic(this.path, text, this.mode)
      // The path now names the new file; the old handle points at the replaced one.
      this.#handle = undefined
      try {
        this.#handle = await open(this.path, 'a', this.mode)
      } catch (err) {
        this.#broken = new Error(`journal ${this.path} could not be reopened after a rewrite`, { cause: err })
        throw this.#broken
      } finally {
        await oldHandle.close().catch(() => undefined)
      }
      this.#records = stamped
      this.#bytes = Buffer.byteLength(text)
    })
  }

  /** Waits for queued writes, then closes the file. Appending afterwards fails. */
  close(): Promise<void> {
    this.#batch = undefined
    this.#closed ??= this.#queue.then(async () => {
      const handle = this.#handle
      this.#handle = undefined
      await handle?.close()
    })
    return this.#closed
  }

  #stamp(record: object): JournalRecord {
    return { v: JOURNAL_FORMAT, at: new Date(this.now()).toISOString(), ...record }
  }

  #enqueue(write: (handle: FileHandle) => Promise<void>): Promise<void> {
    if (this.#closed) return Promise.reject(new Error(`journal ${this.path} is closed`))
    const run = this.#queue.then(() => {
      if (this.#broken) throw this.#broken
      // Only close() and a failed rewrite clear the handle, and both stop writes first.
      return write(this.#handle as FileHandle)
    })
    this.#queue = run.catch(() => undefined)
    return run
  }

  async #cutBackTo(handle: FileHandle, bytes: number): Promise<void> {
    try {
      await handle.truncate(bytes)
      await handle.sync()
    } catch (err) {
      this.#broken = new Error(`journal ${this.path} may hold a partial line after a failed write`, { cause: err })
    }
  }
}
