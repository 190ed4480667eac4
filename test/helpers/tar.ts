// Writes ustar archives entry by entry, so tests can build the hostile archives `tar -c` would never produce.
import { gzipSync } from 'node:zlib'

export interface TarSpec {
  name: string
  /** 0 file, 5 dir, 2 symlink, 1 hard link, 3 char device, 4 block device, 6 fifo, x pax record for the next one. */
  type?: '0' | '1' | '2' | '3' | '4' | '5' | '6' | 'x'
  body?: string | Buffer
  linkname?: string
  mode?: number
}

function header(spec: TarSpec, size: number): Buffer {
  const block = Buffer.alloc(512)
  const put = (text: string, at: number, length: number) => block.write(text, at, length, 'utf8')
  const octal = (n: number, at: number, length: number) => put(`${n.toString(8).padStart(length - 1, '0')}\0`, at, length)
  put(spec.name, 0, 100)
  octal(spec.mode ?? (spec.type === '5' ? 0o755 : 0o644), 100, 8)
  octal(0, 108, 8)
  octal(0, 116, 8)
  octal(size, 124, 12)
  octal(1_700_000_000, 136, 12)
  put(spec.type ?? '0', 156, 1)
  put(spec.linkname ?? '', 157, 100)
  put('ustar\0', 257, 6)
  put('00', 263, 2)
  block.fill(0x20, 148, 156)
  const sum = block.reduce((a, b) => a + b, 0)
  put(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8)
  return block
}

/** A pax record `len key=value\n` (its length counts itself). */
export function paxRecord(key: string, value: string): string {
  const text = ` ${key}=${value}\n`
  let length = text.length + 1
  while (`${length}${text}`.length !== length) length++
  return `${length}${text}`
}

/** The tar of the entries, in order, not yet gzip'd. */
export function tar(entries: TarSpec[]): Buffer {
  const parts: Buffer[] = []
  for (const spec of entries) {
    const body = Buffer.from(spec.body ?? '')
    parts.push(header(spec, body.length), body, Buffer.alloc((512 - (body.length % 512)) % 512))
  }
  parts.push(Buffer.alloc(1024))
  return Buffer.concat(parts)
}

/** A gzip'd tar of the entries, in order. */
export function tarGz(entries: TarSpec[]): Buffer {
  return gzipSync(tar(entries))
}
