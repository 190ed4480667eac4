// A tool's output captured into a new file: every byte lands, the size and sha256 are those of the file, the file is
// 0600 and never an existing one, and a tool that fails leaves no file behind.
import { createHash } from 'node:crypto'
import { readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { captureToFile, hashFile } from '../../agent/backup/proc.js'
import { tempDir } from '../helpers/tmp.js'

const node = (script: string) => [process.execPath, '-e', script]
// ~6 MB in pieces of odd sizes, as a dump tool writes them.
const WRITER =
  "let i = 0; const w = () => { while (i < 3000) { if (!process.stdout.write(Buffer.alloc(2048 - (i % 7), i++ % 251))) return process.stdout.once('drain', w) } }; w()"

t.test('captureToFile: the output lands whole, hashed and counted, in a 0600 file', async (t) => {
  const path = join(await tempDir(t), 'out.partial')
  const written = await captureToFile(node(WRITER), process.env, path)
  const content = await readFile(path)
  t.equal(written.bytes, content.length)
  t.ok(content.length > 6_000_000, `${content.length} bytes`)
  t.equal(written.sha256, createHash('sha256').update(content).digest('hex'))
  t.same(await hashFile(path), written)
  t.equal((await stat(path)).mode & 0o777, 0o600)
})

t.test('captureToFile: an existing file is never overwritten', async (t) => {
  const path = join(await tempDir(t), 'taken')
  await writeFile(path, 'keep me')
  await t.rejects(captureToFile(node("process.stdout.write('x')"), process.env, path), { code: 'EEXIST' })
  t.equal(await readFile(path, 'utf8'), 'keep me')
})

t.test('captureToFile: a failing, killed, missing or cancelled tool leaves no file; okCodes are accepted', async (t) => {
  const dir = await tempDir(t)
  await t.rejects(
    captureToFile(node("process.stdout.write('half'); console.error('boom'); process.exit(3)"), process.env, join(dir, 'a')),
    {
      message: /node exited with status 3: boom/,
    },
  )
  await t.rejects(captureToFile(node("process.kill(process.pid, 'SIGKILL')"), process.env, join(dir, 'b')), {
    message: /was killed by SIGKILL/,
  })
  await t.rejects(captureToFile([join(dir, 'no-such-tool')], process.env, join(dir, 'c')), { message: /could not be started/ })
  const abort = new AbortController()
  const cancelled = captureToFile(node('setTimeout(() => {}, 10000)'), process.env, join(dir, 'd'), { signal: abort.signal })
  setTimeout(() => abort.abort(), 200)
  await t.rejects(cancelled, { message: /was cancelled/ })
  const ok = await captureToFile(node("process.stdout.write('ok'); process.exit(1)"), process.env, join(dir, 'e'), { okCodes: [0, 1] })
  t.equal(ok.bytes, 2)
  t.same(await readdir(dir), ['e'], 'only the good capture left a file')
})
