// A small reader for the gzip'd tar archives `takeBackup` writes (GNU tar: ustar headers, GNU long names, pax
// records), so a restore reads each entry itself instead of trusting `tar -x` with whatever the archive holds.
import { createReadStream } from 'node:fs'
import { createGunzip } from 'node:zlib'

export type TarEntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'device' | 'fifo' | 'other'

export interface TarEntry {
  /** The member name as stored (`./srv/app/uploads/a.png`). */
  name: string
  type: TarEntryType
  /** The header's type flag, for messages about `other`. */
  flag: string
  mode: number
  uid: number
  gid: number
  /** Unix seconds. */
  mtime: number
  size: number
  /** A symlink's target, or the member a hard link names. */
  linkname: string
}

const BLOCK = 512
const TYPES: Record<string, TarEntryType> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '5': 'dir',
  '2': 'symlink',
  '1': 'hardlink',
  '3': 'device',
  '4': 'device',
  '6': 'fifo',
}

/** Exactly `n` bytes at a time from a stream of chunks (fewer only at its end). */
class ByteReader {
  #chunks: Buffer[] = []
  #buffered = 0
  constructor(private readonly source: AsyncIterator<Buffer>) {}

  async read(n: number): Promise<Buffer> {
    while (this.#buffered < n) {
      const next = await this.source.next()
      if (next.done) break
      this.#chunks.push(next.value)
      this.#buffered += next.value.length
    }
    const all = this.#chunks.length === 1 ? (this.#chunks[0] as Buffer) : Buffer.concat(this.#chunks)
    const out = all.subarray(0, n)
    const rest = all.subarray(n)
    this.#chunks = rest.length > 0 ? [rest] : []
    this.#buffered = rest.length
    return out
  }
}

const text = (block: Buffer, start: number, length: number) => {
  const field = block.subarray(start, start + length)
  const end = field.indexOf(0)
  return field.subarray(0, end < 0 ? length : end).toString('utf8')
}

/** An octal field, or GNU's base-256 form (high bit set) for large values. */
function number(block: Buffer, start: number, length: number): number {
  const field = block.subarray(start, start + length)
  if (((field[0] as number) & 0x80) !== 0) {
    let value = (field[0] as number) & 0x7f
    for (const byte of field.subarray(1)) value = value * 256 + byte
    return value
  }
  const digits = field
    .toString('latin1')
    .replace(/[\0 ]+$/, '')
    .trim()
  if (!/^[0-7]*$/.test(digits)) throw new Error(`bad number field "${digits}" in a tar header`)
  return digits === '' ? 0 : parseInt(digits, 8)
}

function checksumOk(block: Buffer): boolean {
  let sum = 0
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (block[i] as number)
  return sum === number(block, 148, 8)
}

/** `len key=value\n` records. */
function parsePax(body: Buffer): Record<string, string> {
  const out: Record<string, string> = {}
  let at = 0
  while (at < body.length) {
    const space = body.indexOf(0x20, at)
    const length = Number(body.subarray(at, space).toString('latin1'))
    if (space < 0 || !Number.isInteger(length) || length <= 0) throw new Error('bad pax record in the tar archive')
    const record = body.subarray(space + 1, at + length - 1).toString('utf8')
    const eq = record.indexOf('=')
    if (eq > 0) out[record.slice(0, eq)] = record.slice(eq + 1)
    at += length
  }
  return out
}

/**
 * The entries of a tar.gz, in order. For each, `body` must be consumed (or `skip`ped) before the next is read;
 * a truncated or malformed archive throws.
 */
export async function* readTarGz(path: string): AsyncGenerator<{ entry: TarEntry; body: () => AsyncGenerator<Buffer> }> {
  const stream = createReadStream(path).pipe(createGunzip())
  const reader = new ByteReader(stream[Symbol.asyncIterator]())
  let longName: string | undefined
  let longLink: string | undefined
  let pax: Record<string, string> = {}
  try {
    for (;;) {
      const header = await reader.read(BLOCK)
      if (header.length < BLOCK) throw new Error('the tar archive ends without its end marker')
      if (header.every((b) => b === 0)) return
      if (!checksumOk(header)) throw new Error('a tar header has a bad checksum')
      const flag = String.fromCharCode(header[156] as number)
      const size = pax.size !== undefined ? Number(pax.size) : number(header, 124, 12)
      const padded = Math.ceil(size / BLOCK) * BLOCK
      const readAll = async () => {
        const data = await reader.read(padded)
        if (data.length < padded) throw new Error('the tar archive is truncated')
        return data.subarray(0, size)
      }
      if (flag === 'L' || flag === 'K') {
        const value = (await readAll()).toString('utf8').replace(/\0+$/, '')
        if (flag === 'L') longName = value
        else longLink = value
        continue
      }
      if (flag === 'x' || flag === 'g') {
        const records = parsePax(await readAll())
        if (flag === 'x') pax = records
        continue
      }
      // POSIX ustar splits long names into prefix/name; GNU's format uses that space for other fields.
      const ustar = header.subarray(257, 263).toString('latin1') === 'ustar\0'
      const prefix = ustar ? text(header, 345, 155) : ''
      const entry: TarEntry = {
        name: pax.path ?? longName ?? (prefix !== '' ? `${prefix}/${text(header, 0, 100)}` : text(header, 0, 100)),
        type: TYPES[flag] ?? 'other',
        flag,
        mode: number(header, 100, 8),
        uid: number(header, 108, 8),
        gid: number(header, 116, 8),
        mtime: number(header, 136, 12),
        size,
        linkname: pax.linkpath ?? longLink ?? text(header, 157, 100),
      }
      longName = longLink = undefined
      pax = {}
      let consumed = false
      async function* body(): AsyncGenerator<Buffer> {
        consumed = true
        // The data is padded to whole blocks; only its first `size` bytes are the file.
        for (let offset = 0; offset < padded;) {
          const data = await reader.read(Math.min(padded - offset, 1024 * 1024))
          if (data.length === 0) throw new Error('the tar archive is truncated')
          const useful = Math.max(0, Math.min(data.length, size - offset))
          offset += data.length
          if (useful > 0) yield data.subarray(0, useful)
        }
      }
      yield { entry, body }
      if (!consumed) for await (const chunk of body()) void chunk
    }
  } finally {
    stream.destroy()
  }
}
