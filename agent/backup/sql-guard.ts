// Legacy backups are plain SQL for psql, and psql obeys backslash commands anywhere in its input: `\!` runs a
// shell, `\connect` carries the rest of the script into another database. No filter can find them all (they may
// sit mid-line, after a fake `COPY … FROM stdin;` in a string or a comment), so psql itself is told to refuse them:
// the script it is fed starts with `\restrict <random key>`, after which psql (15.14, 16.10, 17.6 and later) refuses
// every backslash command but `\unrestrict <that key>`, which the dump cannot know.
//
// The filter only edits for fidelity, never for safety: it drops the dump's own `\restrict` / `\unrestrict` lines
// (pg_dump writes them; psql would refuse a second `\restrict`) and its `ALTER … OWNER TO …;` lines (the restore
// role may not give objects away; this is pg_restore's --no-owner), outside COPY data. Whatever slips past it
// reaches a restricted psql running as a role that owns nothing but the scratch database. It refuses a NUL byte,
// which no SQL text holds (a binary dump under a .sql.gz name).
import { randomBytes } from 'node:crypto'
import { Transform, type TransformCallback } from 'node:stream'

/** Longer lines are passed on as they come; none of the lines dropped is this long. */
const HELD = 4096
const TAIL = 32
const NL = 0x0a
const DROPPED = [/^\\(un)?restrict(\s.*)?$/s, /^ALTER [A-Z ]+ .* OWNER TO [^;]+;\s*$/s]

export class RestrictedSqlScript extends Transform {
  /** The key of this run's `\restrict`; it never leaves this process but in psql's stdin. */
  readonly key = randomBytes(24).toString('hex')
  private started = false
  private inCopy = false
  private line: Buffer[] = []
  private lineBytes = 0
  /** The current line outgrew HELD and is being passed on as it comes. */
  private passing = false
  private head = ''
  private tail = Buffer.alloc(0)

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (!this.started) {
      this.started = true
      this.push(`\\restrict ${this.key}\n`)
    }
    if (chunk.includes(0)) {
      callback(new Error("the backup is not gzip'd SQL: it holds a NUL byte"))
      return
    }
    for (let start = 0; start < chunk.length;) {
      const nl = chunk.indexOf(NL, start)
      const end = nl === -1 ? chunk.length : nl + 1
      this.feed(chunk.subarray(start, end), nl !== -1)
      start = end
    }
    callback()
  }

  override _flush(callback: TransformCallback): void {
    if (!this.started) this.push(`\\restrict ${this.key}\n`)
    if (this.lineBytes > 0) this.endLine()
    callback()
  }

  private feed(piece: Buffer, endsLine: boolean): void {
    this.tail = Buffer.concat([this.tail, piece]).subarray(-TAIL)
    if (this.passing) this.push(piece)
    else {
      this.line.push(piece)
      this.lineBytes += piece.length
      if (this.lineBytes > HELD) {
        this.head = Buffer.concat(this.line).subarray(0, 8).toString('latin1')
        for (const part of this.line) this.push(part)
        this.line = []
        this.passing = true
      }
    }
    if (endsLine) this.endLine()
  }

  private endLine(): void {
    const whole = this.passing ? null : Buffer.concat(this.line)
    const text = whole?.toString('latin1') ?? this.head
    let drop = false
    if (this.inCopy) {
      if (/^\\\.\r?\n?$/.test(text)) this.inCopy = false
    } else if (whole !== null && DROPPED.some((re) => re.test(text))) {
      drop = true
    } else if (/^COPY /.test(text) && /FROM stdin;\r?\n$/.test(this.tail.toString('latin1'))) {
      this.inCopy = true
    }
    if (whole !== null && !drop) this.push(whole)
    this.line = []
    this.lineBytes = 0
    this.passing = false
    this.head = ''
    this.tail = Buffer.alloc(0)
  }
}
