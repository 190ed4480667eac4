// Follows nginx's access log like `tail -F`: opens at the end (what was logged before the agent looked is not
// news), reads appends by polling, survives logrotate (rename + new file: the old file is read to its end, then the
// new one from its start; copytruncate: a size below the position starts again at 0). Memory stays bounded: reads
// go in fixed chunks, a partial line is kept up to `maxLineBytes`, and a longer line is dropped whole.
import { open, stat, type FileHandle } from 'node:fs/promises'
import type { Logger } from '../observability/logger.js'

export interface AccessLogTailOptions {
  path: string
  onLine: (line: string) => void
  /** How often the file is looked at. */
  pollMs?: number
  /** A line longer than this is dropped (nginx lines of the deploy_agent format are about 150 bytes). */
  maxLineBytes?: number
  logger?: Logger
}

/**
 * The access log format the agent reads, defined once in nginx's http block; an env's site logs with
 * `access_log <proxy.accessLog> deploy_agent;` (the docs ship this line).
 */
export const NGINX_LOG_FORMAT =
  'log_format deploy_agent escape=json \'{"msec":$msec,"status":$status,"upstream_addr":"$upstream_addr",' +
  '"upstream_status":"$upstream_status","request_time":$request_time}\';'

const CHUNK_BYTES = 64 * 1024
const NEWLINE = 0x0a

export class AccessLogTail {
  private handle: FileHandle | null = null
  private ino = -1
  private position = 0
  private partial: Buffer[] = []
  private partialBytes = 0
  /** In the middle of a line that was too long: everything up to the next newline is dropped. */
  private skipping = false
  private timer: NodeJS.Timeout | null = null
  private polling: Promise<void> = Promise.resolve()
  private stopped = false
  /** The next file opened is a new one (rotated in, or created after start): read it from its start. */
  private fromStart = false
  private readonly chunk = Buffer.alloc(CHUNK_BYTES)
  readonly pollMs: number
  readonly maxLineBytes: number
  /** Why the last poll failed (EACCES…), or null. */
  private failing: string | null = null
  /** Lines dropped for their length (tests, logs). */
  dropped = 0

  constructor(private readonly options: AccessLogTailOptions) {
    this.pollMs = options.pollMs ?? 200
    this.maxLineBytes = options.maxLineBytes ?? 16 * 1024
  }

  /** Opens the file at its end (a missing file is waited for) and starts polling. */
  async start(): Promise<void> {
    await this.poll()
    // A file opened from now on was created after the start (read it whole), unless it was there but unreadable.
    this.fromStart = this.failing === null
    const tick = () => {
      if (this.stopped) return
      this.polling = this.poll().finally(() => {
        if (!this.stopped) this.timer = setTimeout(tick, this.pollMs)
      })
    }
    this.timer = setTimeout(tick, this.pollMs)
  }

  async stop(): Promise<void> {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
    await this.polling
    await this.close()
  }

  /** One look at the file: reads what was appended, follows a rotation or a truncation. Never throws. */
  async poll(): Promise<void> {
    try {
      if (!this.handle) await this.reopen()
      if (!this.handle) return
      const current = await stat(this.options.path).catch(() => null)
      const held = await this.handle.stat()
      if (held.size < this.position) {
        // Truncated in place (copytruncate): the lines from here on are new.
        this.position = 0
        this.resetLine()
      }
      await this.readToEnd()
      if (current === null || current.ino !== this.ino) {
        // Rotated: the old file is read to its end above; the one at the path now is new (or not there yet).
        await this.close()
        this.fromStart = true
        await this.reopen()
        await this.readToEnd()
      }
      if (this.failing !== null) this.options.logger?.info({ path: this.options.path }, 'reading the access log again')
      this.failing = null
    } catch (err) {
      // Said once per cause, not at every poll (a log the agent may not read would fill the journal).
      const cause = (err as NodeJS.ErrnoException).code ?? String(err)
      if (cause !== this.failing) this.options.logger?.warn({ err, path: this.options.path }, 'reading the access log failed; retrying')
      this.failing = cause
      await this.close()
    }
  }

  private async reopen(): Promise<void> {
    let handle: FileHandle
    try {
      handle = await open(this.options.path, 'r')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
      throw err
    }
    const info = await handle.stat()
    this.handle = handle
    // The same file after a read error: go on where it stopped rather than count its lines twice.
    if (info.ino === this.ino && info.size >= this.position) return
    this.ino = info.ino
    this.position = this.fromStart ? 0 : info.size
    this.resetLine()
  }

  private async readToEnd(): Promise<void> {
    if (!this.handle) return
    for (;;) {
      const { bytesRead } = await this.handle.read(this.chunk, 0, CHUNK_BYTES, this.position)
      if (bytesRead === 0) return
      this.position += bytesRead
      this.split(this.chunk.subarray(0, bytesRead))
    }
  }

  private split(data: Buffer): void {
    let start = 0
    for (let nl = data.indexOf(NEWLINE); nl !== -1; nl = data.indexOf(NEWLINE, start)) {
      this.take(data.subarray(start, nl))
      this.endLine()
      start = nl + 1
    }
    this.take(data.subarray(start))
  }

  /** Keeps bytes of the line being read, unless it has grown over the cap. */
  private take(bytes: Buffer): void {
    if (this.skipping || bytes.length === 0) return
    if (this.partialBytes + bytes.length > this.maxLineBytes) {
      this.skipping = true
      this.dropped++
      this.partial = []
      this.partialBytes = 0
      return
    }
    this.partial.push(Buffer.from(bytes)) // a copy: the chunk buffer is reused
    this.partialBytes += bytes.length
  }

  private endLine(): void {
    const line = this.skipping ? null : Buffer.concat(this.partial).toString('utf8')
    this.resetLine()
    if (line === null || line === '') return
    try {
      this.options.onLine(line)
    } catch (err) {
      this.options.logger?.warn({ err }, 'an access log line could not be counted')
    }
  }

  private resetLine(): void {
    this.partial = []
    this.partialBytes = 0
    this.skipping = false
  }

  private async close(): Promise<void> {
    const handle = this.handle
    this.handle = null
    await handle?.close().catch(() => undefined)
  }
}
