// A tar archive of a few small in-memory files: the build context of a one-line Dockerfile (see DockerEngine.labelImage).
import { Readable } from 'node:stream'

const BLOCK = 512

function header(name: string, size: number): Buffer {
  const h = Buffer.alloc(BLOCK)
  const put = (text: string, at: number, length: number) => h.write(text, at, length, 'ascii')
  const octal = (n: number, length: number) => n.toString(8).padStart(length - 1, '0')
  put(name, 0, 100)
  put(octal(0o644, 8), 100, 8)
  put(octal(0, 8), 108, 8) // uid
  put(octal(0, 8), 116, 8) // gid
  put(octal(size, 12), 124, 12)
  put(octal(0, 12), 136, 12) // mtime: fixed, so the same files make the same archive
  put('0', 156, 1) // a regular file
  put('ustar\u000000', 257, 8)
  // The checksum is computed with its own field as spaces.
  put('        ', 148, 8)
  const sum = h.reduce((total, byte) => total + byte, 0)
  put(`${octal(sum, 7)}\u0000`, 148, 8)
  return h
}

/** A tar stream of `files` (name → text); names must be short plain paths. */
export function tarOf(files: Record<string, string>): NodeJS.ReadableStream {
  const parts: Buffer[] = []
  for (const [name, text] of Object.entries(files)) {
    if (!/^[A-Za-z0-9._-]{1,99}$/.test(name)) throw new Error(`tarOf: unsupported file name ${JSON.stringify(name)}`)
    const body = Buffer.from(text, 'utf8')
    parts.push(header(name, body.length), body, Buffer.alloc((BLOCK - (body.length % BLOCK)) % BLOCK))
  }
  parts.push(Buffer.alloc(2 * BLOCK)) // the end-of-archive marker
  return Readable.from([Buffer.concat(parts)])
}
