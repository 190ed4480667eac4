// Legacy backups are plain SQL for psql, and psql obeys backslash commands in its input: a `\connect` (which
// `pg_dump --create` and pg_dumpall write) would carry the rest of the script into another database — the live
// one — and `\!` runs a shell. The guard passes the script through unchanged but refuses, before psql sees the
// line, any line that starts with a backslash command other than pg_dump's own `\restrict` / `\unrestrict`.
// Lines inside `COPY … FROM stdin;` data are rows, not commands, and pass as they are. A backslash command in the
// middle of a line is not looked for: pg_dump never writes one there.
import { Transform, type TransformCallback } from 'node:stream'

const ALLOWED = new Set(['restrict', 'unrestrict'])
const HEAD = 64
const TAIL = 32
const NL = 0x0a
const BACKSLASH = 0x5c

export class SqlScriptGuard extends Transform {
  private inCopy = false
  /** Whether the current line's start has been judged (outside COPY); until then its bytes are held back. */
  private decided = false
  private held: Buffer[] = []
  private head = Buffer.alloc(0)
  private tail = Buffer.alloc(0)

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      for (let start = 0; start < chunk.length; ) {
        const nl = chunk.indexOf(NL, start)
        const end = nl === -1 ? chunk.length : nl + 1
        this.feed(chunk.subarray(start, end), nl !== -1)
        start = end
      }
      callback()
    } catch (err) {
      callback(err as Error)
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      if (!this.decided && this.held.length > 0) this.judge(true)
      callback()
    } catch (err) {
      callback(err as Error)
    }
  }

  private feed(piece: Buffer, endsLine: boolean): void {
    if (this.head.length < HEAD) this.head = Buffer.concat([this.head, piece.subarray(0, HEAD - this.head.length)])
    this.tail = Buffer.concat([this.tail, piece]).subarray(-TAIL)
    if (this.inCopy) {
      this.push(piece)
      if (endsLine) {
        if (/^\\\.\r?\n$/.test(this.head.toString('latin1'))) this.inCopy = false
        this.reset()
      }
      return
    }
    if (this.decided) this.push(piece)
    else {
      this.held.push(piece)
      this.judge(endsLine)
    }
    if (endsLine) {
      const text = this.head.toString('latin1')
      if (/^COPY /.test(text) && /FROM stdin;\r?\n$/.test(this.tail.toString('latin1'))) this.inCopy = true
      this.reset()
    }
  }

  /** Decides the current line from its start once enough of it is known (or it ended), then releases it. */
  private judge(complete: boolean): void {
    const first = this.head.findIndex((b) => b !== 0x20 && b !== 0x09 && b !== 0x0d && b !== NL)
    if (first === -1 && !complete) return
    if (first !== -1 && this.head[first] === BACKSLASH) {
      const text = this.head.toString('latin1').slice(first)
      const command = /^\\([^\s\\]*)/.exec(text)?.[1] ?? ''
      const terminated = text.length > command.length + 1
      if (!terminated && !complete && this.head.length < HEAD) return
      if (!ALLOWED.has(command)) {
        throw new Error(`the SQL script runs the psql command \\${command.slice(0, 32)}, which a restore does not allow`)
      }
    }
    this.decided = true
    for (const part of this.held) this.push(part)
    this.held = []
  }

  private reset(): void {
    this.decided = false
    this.head = Buffer.alloc(0)
    this.tail = Buffer.alloc(0)
  }
}
