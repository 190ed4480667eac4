// The sink a dump streams into: every byte lands in the file in order, the sha256 and byte count are those of the
// whole stream, and small pieces arriving while a write is in flight are written together, not one write each.
import { createHash, randomBytes } from 'node:crypto'
import { open, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import t from 'tap'
import { HashingFileSink } from '../../agent/backup/proc.js'
import { tempDir } from '../helpers/tmp.js'

t.test('HashingFileSink: 2,000 pieces of 8 KiB arrive whole and hashed, in far fewer writes', async (t) => {
  const path = join(await tempDir(t), 'out')
  const pieces = Array.from({ length: 2000 }, (_, i) => randomBytes(8192 - (i % 7)))
  const handle = await open(path, 'wx', 0o600)
  const sink = new HashingFileSink(handle)
  try {
    await pipeline(Readable.from(pieces, { objectMode: false }), sink)
  } finally {
    await handle.close()
  }
  const whole = Buffer.concat(pieces)
  t.ok((await readFile(path)).equals(whole), 'the file holds every byte, in order')
  t.equal(sink.bytes, whole.length)
  t.equal(sink.hash.digest('hex'), createHash('sha256').update(whole).digest('hex'))
  t.ok(sink.writes < pieces.length / 4, `pieces written together (${sink.writes} writes for ${pieces.length} pieces)`)
})
