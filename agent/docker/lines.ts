// Turning byte streams from the engine into whole lines: build JSON, container logs.

/** Splits chunks into lines, holding a partial last line until the next chunk or `flush`. */
export class LineSplitter {
  private pending = ''

  push(chunk: string): string[] {
    const parts = (this.pending + chunk).split('\n')
    this.pending = parts.pop() ?? ''
    return parts.map((line) => line.replace(/\r$/, ''))
  }

  flush(): string[] {
    const rest = this.pending.replace(/\r$/, '')
    this.pending = ''
    return rest === '' ? [] : [rest]
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

/** Lines of log text with trailing whitespace trimmed and blank lines dropped. */
export function nonEmptyLines(text: string): string[] {
  return text.split('\n').map((line) => line.trimEnd()).filter((line) => line !== '')
}
