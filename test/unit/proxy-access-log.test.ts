import { appendFile, mkdir, rename, rmdir, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import type { Logger } from '../../agent/observability/logger.js'
import { AccessLogTail } from '../../agent/proxy/access-log.js'
import { tempDir } from '../helpers/tmp.js'

/** A tail whose polls the test drives (start() polls once; the timer's polls are left out with a long pollMs). */
async function tail(t: Test, path: string, maxLineBytes?: number) {
  const lines: string[] = []
  const tailer = new AccessLogTail({ path, onLine: (l) => lines.push(l), pollMs: 60_000, maxLineBytes })
  await tailer.start()
  t.teardown(() => tailer.stop())
  return { tailer, lines }
}

t.test('access log: starts at the end and follows appends', async (t) => {
  const path = join(await tempDir(t), 'access.json')
  await writeFile(path, 'old 1\nold 2\n')
  const { tailer, lines } = await tail(t, path)
  await tailer.poll()
  t.same(lines, [], 'what was logged before the start is not read')
  await appendFile(path, 'a\nb\n')
  await tailer.poll()
  await appendFile(path, 'c\n')
  await tailer.poll()
  t.same(lines, ['a', 'b', 'c'])
})

t.test('access log: a partial line waits for its end', async (t) => {
  const path = join(await tempDir(t), 'access.json')
  await writeFile(path, '')
  const { tailer, lines } = await tail(t, path)
  await appendFile(path, '{"msec":1,')
  await tailer.poll()
  t.same(lines, [])
  await appendFile(path, '"status":200}\n{"ms')
  await tailer.poll()
  t.same(lines, ['{"msec":1,"status":200}'])
})

t.test('access log: a rotation by rename and a new file is followed', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'access.json')
  await writeFile(path, '')
  const { tailer, lines } = await tail(t, path)
  await appendFile(path, 'before\n')
  await rename(path, join(dir, 'access.json.1'))
  // nginx keeps writing to the renamed file until it reopens its logs (USR1).
  await appendFile(join(dir, 'access.json.1'), 'late in the old file\n')
  await tailer.poll()
  t.same(lines, ['before', 'late in the old file'], 'the old file is read to its end')
  await writeFile(path, 'first in the new file\n')
  await tailer.poll()
  await appendFile(path, 'second\n')
  await tailer.poll()
  t.same(lines, ['before', 'late in the old file', 'first in the new file', 'second'], 'the new file is read from its start')
  await appendFile(join(dir, 'access.json.1'), 'never read\n')
  await tailer.poll()
  t.equal(lines.length, 4, 'the rotated file is let go')
})

t.test('access log: a new file that replaces the old one between two polls is read whole', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'access.json')
  await writeFile(path, '')
  const { tailer, lines } = await tail(t, path)
  await rename(path, join(dir, 'access.json.1'))
  await writeFile(path, 'x\ny\n')
  await tailer.poll()
  t.same(lines, ['x', 'y'])
})

t.test('access log: a truncated file is read again from its start', async (t) => {
  const path = join(await tempDir(t), 'access.json')
  await writeFile(path, 'old line that is long\n')
  const { tailer, lines } = await tail(t, path)
  await truncate(path, 0) // logrotate's copytruncate
  await appendFile(path, 'new\n')
  await tailer.poll()
  t.same(lines, ['new'])
})

t.test('access log: a line over the cap is dropped whole, the next one is kept', async (t) => {
  const path = join(await tempDir(t), 'access.json')
  await writeFile(path, '')
  const { tailer, lines } = await tail(t, path, 16 * 1024)
  const huge = 'x'.repeat(1024 * 1024)
  await appendFile(path, `before\n${huge.slice(0, 300_000)}`)
  await tailer.poll()
  await appendFile(path, `${huge.slice(300_000)}\nafter\n`)
  await tailer.poll()
  t.same(lines, ['before', 'after'])
  t.equal(tailer.dropped, 1)
})

t.test('access log: a file that does not exist yet is waited for and read from its start', async (t) => {
  const path = join(await tempDir(t), 'access.json')
  const { tailer, lines } = await tail(t, path)
  await tailer.poll()
  await writeFile(path, 'first\n')
  await tailer.poll()
  t.same(lines, ['first'])
})

t.test('access log: the timer polls until stop', async (t) => {
  const path = join(await tempDir(t), 'access.json')
  await writeFile(path, '')
  const lines: string[] = []
  const tailer = new AccessLogTail({ path, onLine: (l) => lines.push(l), pollMs: 10 })
  await tailer.start()
  await appendFile(path, 'one\n')
  const deadline = Date.now() + 2000
  while (lines.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
  await tailer.stop()
  await appendFile(path, 'two\n')
  await new Promise((r) => setTimeout(r, 50))
  t.same(lines, ['one'])
})

t.test('access log: a read error is logged once, not at every poll, and reading resumes after it', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'access.json')
  await mkdir(path) // reading a directory fails (EISDIR) even as root
  const said: string[] = []
  const logger = { warn: (_o: unknown, msg: string) => said.push(msg), info: (_o: unknown, msg: string) => said.push(msg) }
  const lines: string[] = []
  const tailer = new AccessLogTail({ path, onLine: (l) => lines.push(l), pollMs: 60_000, logger: logger as unknown as Logger })
  await tailer.start()
  t.teardown(() => tailer.stop())
  await tailer.poll()
  await tailer.poll()
  t.same(said, ['reading the access log failed; retrying'])
  await rmdir(path)
  await writeFile(path, 'there before it could be read\n')
  await tailer.poll()
  await appendFile(path, 'new\n')
  await tailer.poll()
  t.same(said, ['reading the access log failed; retrying', 'reading the access log again'])
  t.same(lines, ['new'], 'a file that was there but unreadable at the start is read from its end')
})
