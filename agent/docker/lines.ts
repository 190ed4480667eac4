// Turning byte streams from the engine into whole lines: build JSON, container logs.

/** The longest output line kept whole (build, migration, container logs): the rest is dropped, and the line says so. */
export const MAX_LINE_CHARS = 8 * 1024

const cut = (head: string, dropped: number): string => (dropped > 0 ? `${head} […${dropped} more characters of this line dropped]` : head)

/** `line`, or its first `max` characters and how many more were dropped. */
export function capLine(line: string, max = MAX_LINE_CHARS): string {
  return line.length <= max ? line : cut(line.slice(0, max), line.length - max)
}

/**
 * Splits chunks into lines, holding a partial last line until the next chunk or `flush`. A line longer than
 * `maxLine` is cut: only its head is held (a stream without newlines cannot grow the agent's memory), and the
 * rest is only counted.
 */
export class LineSplitter {
  private pending = ''
  /** Characters of the pending line already dropped. */
  private dropped = 0

  constructor(private readonly maxLine = Infinity) {}

  push(chunk: string): string[] {
    const parts = (this.pending + chunk).split('\n')
    const last = parts.pop() ?? ''
    const lines = parts.map((line, i) => this.finish(line, i === 0 ? this.dropped : 0))
    if (parts.length > 0) this.dropped = 0
    this.pending = this.hold(last)
    return lines
  }

  flush(): string[] {
    const rest = this.pending.replace(/\r$/, '')
    const dropped = this.dropped
    this.pending = ''
    this.dropped = 0
    return rest === '' && dropped === 0 ? [] : [this.finish(rest, dropped)]
  }

  private hold(partial: string): string {
    if (partial.length <= this.maxLine) return partial
    this.dropped += partial.length - this.maxLine
    return partial.slice(0, this.maxLine)
  }

  private finish(line: string, dropped: number): string {
    const text = line.replace(/\r$/, '')
    if (text.length <= this.maxLine) return cut(text, dropped)
    return cut(text.slice(0, this.maxLine), dropped + text.length - this.maxLine)
  }
}

/** Keeps the last `size` items pushed. */
export class Tail {
  private readonly items: string[] = []

  constructor(private readonly size: number) {}

  push(item: string): void {
    this.items.push(item)
    if (this.items.length > this.size) this.items.shift()
  }

  lines(): string[] {
    return [...this.items]
  }
}

/**
 * The text of a non-TTY log buffer: Docker frames each write with an 8-byte header (stream type, 3 zero bytes,
 * big-endian length). Anything that does not look framed is returned as it is (a TTY container's raw output).
 */
export function demuxLogBuffer(buf: Buffer): string {
  const chunks: Buffer[] = []
  let offset = 0
  while (offset < buf.length) {
    const type = buf[offset]
    if (buf.length - offset < 8 || (type !== 0 && type !== 1 && type !== 2)) {
      chunks.push(buf.subarray(offset))
      break
    }
    const length = buf.readUInt32BE(offset + 4)
    chunks.push(buf.subarray(offset + 8, offset + 8 + length))
    offset += 8 + length
  }
  return Buffer.concat(chunks).toString('utf8')
}

/** Lines of log text with trailing whitespace trimmed, blank lines dropped and long ones cut. */
export function nonEmptyLines(text: string): string[] {
  return text
    .split('\n')
    .map((line) => capLine(line.trimEnd()))
    .filter((line) => line !== '')
}

export type LogStream = 'stdout' | 'stderr'

/**
 * Docker's framed log stream split as chunks arrive (a frame may span chunks): each frame's bytes and whether it
 * was stdout or stderr. Bytes that do not look framed (a TTY container) are passed on as stdout.
 */
export class FrameReader {
  private held: Buffer = Buffer.alloc(0)
  private raw = false

  push(chunk: Buffer): Array<{ stream: LogStream; data: Buffer }> {
    if (this.raw) return [{ stream: 'stdout', data: chunk }]
    this.held = this.held.length > 0 ? Buffer.concat([this.held, chunk]) : chunk
    const frames: Array<{ stream: LogStream; data: Buffer }> = []
    while (this.held.length >= 8) {
      const type = this.held[0]
      if (type !== 0 && type !== 1 && type !== 2) {
        this.raw = true
        frames.push({ stream: 'stdout', data: this.held })
        this.held = Buffer.alloc(0)
        break
      }
      const end = 8 + this.held.readUInt32BE(4)
      if (this.held.length < end) break
      frames.push({ stream: type === 2 ? 'stderr' : 'stdout', data: this.held.subarray(8, end) })
      this.held = this.held.subarray(end)
    }
    return frames
  }
}

/** `<RFC 3339 time> <text>` as Docker writes log lines with `timestamps`: the time in ISO form (ms), and the text. */
export function splitTimestamp(line: string): { at: string; text: string } {
  const space = line.indexOf(' ')
  const at = space > 0 ? new Date(line.slice(0, space)) : null
  if (!at || Number.isNaN(at.getTime())) return { at: new Date().toISOString(), text: line }
  return { at: at.toISOString(), text: line.slice(space + 1) }
}
