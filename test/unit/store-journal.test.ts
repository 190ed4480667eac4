import { readFile, symlink, unlink, mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { Journal, scanJournal, type TornLine } from '../../agent/store/journal.js'

const clock = (start = Date.parse('2026-01-02T03:04:05.000Z')) => {
  let now = start
  return { now: () => now, advance: (ms: number) => void (now += ms) }
}

const openCollecting = async (path: string) => {
  const torn: TornLine[] = []
  const journal = await Journal.open(path, { onTornLine: (info) => torn.push(info) })
  return { journal, torn }
}

t.test('Journal: a missing file is an empty journal and is created on open', async (t) => {
  const path = join(t.testdir(), 'j.jsonl')
  const journal = await Journal.open(path)
  t.same(journal.records(), [])
  t.equal(journal.tornLines, 0)
  t.equal(await readFile(path, 'utf8'), '')
  await journal.close()
})

t.test('Journal: appends one stamped line per record and reads them back in order', async (t) => {
  const path = join(t.testdir(), 'j.jsonl')
  const time = clock()
  const journal = await Journal.open(path, { now: time.now })
  await journal.append({ type: 'a', n: 1 })
  time.advance(1000)
  await journal.append({ type: 'b', nested: { x: [1, 2] } })
  t.same(journal.records(), [
    { v: 1, at: '2026-01-02T03:04:05.000Z', type: 'a', n: 1 },
    { v: 1, at: '2026-01-02T03:04:06.000Z', type: 'b', nested: { x: [1, 2] } },
  ])
  await journal.close()
  t.equal(
    await readFile(path, 'utf8'),
    '{"v":1,"at":"2026-01-02T03:04:05.000Z","type":"a","n":1}\n{"v":1,"at":"2026-01-02T03:04:06.000Z","type":"b","nested":{"x":[1,2]}}\n',
  )
  const reopened = await Journal.open(path)
  t.same(reopened.records(), journal.records())
  await reopened.close()
})

t.test('Journal: a torn last line is reported and the next append is clean', async (t) => {
  const dir = t.testdir({ 'j.jsonl': '{"v":1,"at":"x","n":1}\n{"v":1,"at":"x","n":2}\n{"v":1,"at":"x","n' })
  const path = join(dir, 'j.jsonl')
  const { journal, torn } = await openCollecting(path)
  t.same(torn, [{ line: 3, text: '{"v":1,"at":"x","n', tail: true }])
  t.equal(journal.tornLines, 1)
  t.same(
    journal.records().map((r) => r.n),
    [1, 2],
  )
  t.equal(await readFile(path, 'utf8'), '{"v":1,"at":"x","n":1}\n{"v":1,"at":"x","n":2}\n', 'cut back to the last good newline')
  await journal.append({ n: 3 })
  await journal.close()
  const again = await openCollecting(path)
  t.same(again.torn, [])
  t.same(
    again.journal.records().map((r) => r.n),
    [1, 2, 3],
  )
  await again.journal.close()
})

t.test('Journal: a complete-looking last line without its newline was never acknowledged and is cut', async (t) => {
  const dir = t.testdir({ 'j.jsonl': '{"v":1,"at":"x","n":1}\n{"v":1,"at":"x","n":2}' })
  const { journal, torn } = await openCollecting(join(dir, 'j.jsonl'))
  t.same(torn, [{ line: 2, text: '{"v":1,"at":"x","n":2}', tail: true }])
  t.same(
    journal.records().map((r) => r.n),
    [1],
  )
  await journal.close()
})

t.test('Journal: an unparseable last line with a newline (zeroed block) is cut too', async (t) => {
  const dir = t.testdir({ 'j.jsonl': '{"v":1,"at":"x","n":1}\n\0\0\0\0\n' })
  const path = join(dir, 'j.jsonl')
  const { journal, torn } = await openCollecting(path)
  t.same(torn, [{ line: 2, text: '\0\0\0\0', tail: true }])
  t.equal(await readFile(path, 'utf8'), '{"v":1,"at":"x","n":1}\n')
  await journal.close()
})

t.test('Journal: a file of only a torn line becomes empty', async (t) => {
  const dir = t.testdir({ 'j.jsonl': '{"v":1,' })
  const path = join(dir, 'j.jsonl')
  const { journal, torn } = await openCollecting(path)
  t.equal(torn.length, 1)
  t.same(journal.records(), [])
  await journal.append({ n: 1 })
  await journal.close()
  t.match(await readFile(path, 'utf8'), /^\{"v":1,"at":"[^"]+","n":1\}\n$/)
})

t.test('Journal: middle garbage is reported and skipped, never fatal, and stays in the file', async (t) => {
  const content = ['{"v":1,"at":"x","n":1}', 'not json', '42', '["array"]', '', '   ', '{"v":1,"at":"x","n":2}', ''].join('\n')
  const dir = t.testdir({ 'j.jsonl': content })
  const path = join(dir, 'j.jsonl')
  const { journal, torn } = await openCollecting(path)
  t.same(torn, [
    { line: 2, text: 'not json', tail: false },
    { line: 3, text: '42', tail: false },
    { line: 4, text: '["array"]', tail: false },
  ])
  t.equal(journal.tornLines, 3)
  t.same(
    journal.records().map((r) => r.n),
    [1, 2],
  )
  t.equal(await readFile(path, 'utf8'), content, 'nothing cut: the file ends with a good line')
  await journal.close()
})

t.test('Journal: reported text is capped', async (t) => {
  const dir = t.testdir({ 'j.jsonl': `${'x'.repeat(1000)}\n{"v":1,"at":"x"}\n` })
  const { journal, torn } = await openCollecting(join(dir, 'j.jsonl'))
  t.equal(torn[0]?.text.length, 200)
  await journal.close()
})

t.test('Journal: opening without onTornLine still counts torn lines', async (t) => {
  const dir = t.testdir({ 'j.jsonl': 'bad\n{"v":1,"at":"x"}\ntorn' })
  const journal = await Journal.open(join(dir, 'j.jsonl'))
  t.equal(journal.tornLines, 2)
  t.equal(journal.records().length, 1)
  await journal.close()
})

t.test('Journal: scanJournal splits on bytes, so multi-byte text keeps its offsets', async (t) => {
  const good = '{"v":1,"at":"x","s":"héllo ✓"}\n'
  const scan = scanJournal(Buffer.from(`${good}{"v":1,"s":"✓`))
  t.same(
    scan.records.map((r) => r.s),
    ['héllo ✓'],
  )
  t.equal(scan.keepBytes, Buffer.byteLength(good))
})

t.test('Journal: 100 concurrent appends do not interleave and resolve in call order', async (t) => {
  const path = join(t.testdir(), 'j.jsonl')
  const journal = await Journal.open(path)
  const resolved: number[] = []
  const padding = 'p'.repeat(5000) // bigger than one pipe buffer: a torn write would show
  await Promise.all(Array.from({ length: 100 }, (_, i) => journal.append({ i, padding }).then(() => resolved.push(i))))
  t.same(
    resolved,
    Array.from({ length: 100 }, (_, i) => i),
  )
  await journal.close()
  const { journal: reopened, torn } = await openCollecting(path)
  t.same(torn, [])
  t.same(
    reopened.records().map((r) => r.i),
    Array.from({ length: 100 }, (_, i) => i),
  )
  t.equal((await readFile(path, 'utf8')).split('\n').length, 101)
  await reopened.close()
})

t.test('Journal: a record that cannot be serialised is refused and the journal goes on', async (t) => {
  const journal = await Journal.open(join(t.testdir(), 'j.jsonl'))
  await t.rejects(journal.append({ big: 1n }), TypeError)
  await journal.append({ ok: true })
  t.equal(journal.records().length, 1)
  await journal.close()
})

t.test('Journal: close waits for queued appends, is idempotent, and later appends fail', async (t) => {
  const path = join(t.testdir(), 'j.jsonl')
  const journal = await Journal.open(path)
  const pending = journal.append({ n: 1 })
  const closed = journal.close()
  t.equal(journal.close(), closed)
  await pending
  await closed
  await t.rejects(journal.append({ n: 2 }), /is closed/)
  await t.rejects(journal.rewrite([]), /is closed/)
  const reopened = await Journal.open(path)
  t.equal(reopened.records().length, 1)
  await reopened.close()
})

t.test('Journal: rewrite replaces the file atomically and later appends go to the new file', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'j.jsonl')
  const time = clock()
  const journal = await Journal.open(path, { now: time.now })
  for (let n = 1; n <= 5; n++) await journal.append({ n })
  const keep = journal.records().filter((r) => (r.n as number) % 2 === 1)
  time.advance(60_000)
  const queued = journal.append({ n: 6 }) // queued before the rewrite: lands in the old file
  await journal.rewrite([...keep, { n: 7 }])
  await queued
  await journal.append({ n: 8 })
  t.same(
    journal.records().map((r) => r.n),
    [1, 3, 5, 7, 8],
  )
  t.equal(journal.records()[0]?.at, '2026-01-02T03:04:05.000Z', 'existing records keep their stamp')
  t.equal(journal.records()[3]?.at, '2026-01-02T03:05:05.000Z', 'new records are stamped')
  await journal.close()
  const reopened = await Journal.open(path)
  t.same(
    reopened.records().map((r) => r.n),
    [1, 3, 5, 7, 8],
  )
  await reopened.close()
})

t.test('Journal: a failed rewrite leaves the journal as it was', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'j.jsonl')
  const journal = await Journal.open(path)
  await journal.append({ n: 1 })
  await t.rejects(journal.rewrite([{ big: 1n }]), TypeError)
  // Put a directory where the file was: the rename inside the rewrite must fail.
  await unlink(path)
  await mkdir(path)
  await t.rejects(journal.rewrite([]))
  t.same(
    journal.records().map((r) => r.n),
    [1],
  )
  await journal.append({ n: 2 })
  t.same(
    journal.records().map((r) => r.n),
    [1, 2],
  )
  await journal.close()
})

t.test('Journal: a write that cannot be made durable fails, and the journal refuses further writes', async (t) => {
  // fsync and ftruncate on /dev/null fail with EINVAL: the append fails and cannot be cut back out.
  const dir = t.testdir()
  const path = join(dir, 'j.jsonl')
  await symlink('/dev/null', path)
  const journal = await Journal.open(path)
  await t.rejects(journal.append({ n: 1 }), { code: 'EINVAL' })
  t.same(journal.records(), [])
  await t.rejects(journal.append({ n: 2 }), /may hold a partial line/)
  await journal.close()
})

t.test('Journal: an unreadable path is an error on open', async (t) => {
  const dir = t.testdir({ sub: {} })
  await t.rejects(Journal.open(join(dir, 'sub')), { code: 'EISDIR' })
  await t.rejects(Journal.open(join(dir, 'missing', 'j.jsonl')))
  await writeFile(join(dir, 'ok.jsonl'), '')
  const journal = await Journal.open(join(dir, 'ok.jsonl'))
  await journal.close()
})

// Failures the real filesystem will not produce on demand: fs/promises `open` is wrapped for the journal module.
type JournalModule = typeof import('../../agent/store/journal.js')
const realFs = await import('node:fs/promises')

t.test('Journal: a failed repair on open closes the file again', async (t) => {
  const closed: string[] = []
  const { Journal: FaultyJournal } = await t.mockImport<JournalModule>('../../agent/store/journal.js', {
    'node:fs/promises': {
      ...realFs,
      open: async (path: string, flags: string, mode?: number) => {
        const handle = await realFs.open(path, flags, mode)
        if (flags !== 'a') return handle
        return {
          truncate: async () => Promise.reject(Object.assign(new Error('EIO'), { code: 'EIO' })),
          close: async () => {
            closed.push(path)
            await handle.close()
          },
        }
      },
    },
  })
  const dir = t.testdir({ 'j.jsonl': '{"v":1,"at":"x"}\ntorn' })
  await t.rejects(FaultyJournal.open(join(dir, 'j.jsonl')), { code: 'EIO' })
  t.same(closed, [join(dir, 'j.jsonl')])
})

t.test('Journal: when the file cannot be reopened after a rewrite, every later write fails', async (t) => {
  let appendOpens = 0
  const { Journal: FaultyJournal } = await t.mockImport<JournalModule>('../../agent/store/journal.js', {
    'node:fs/promises': {
      ...realFs,
      open: async (path: string, flags: string, mode?: number) => {
        if (flags === 'a' && ++appendOpens === 2) throw Object.assign(new Error('EMFILE'), { code: 'EMFILE' })
        return realFs.open(path, flags, mode)
      },
    },
  })
  const path = join(t.testdir(), 'j.jsonl')
  const journal = await FaultyJournal.open(path)
  await journal.append({ n: 1 })
  await t.rejects(journal.rewrite([{ n: 2 }]), { message: /could not be reopened/, cause: { code: 'EMFILE' } })
  await t.rejects(journal.append({ n: 3 }), /could not be reopened/)
  await journal.close()
  t.match(await readFile(path, 'utf8'), /^\{"v":1,"at":"[^"]+","n":2\}\n$/, 'the rewrite itself is on disk')
})

/**
 * The Journal over a file system whose appends of a record with `fail: true` write part of the line and then fail
 * with ENOSPC (a full disk); `onSync` hears every fsync of the journal file.
 */
async function journalFailingHalfWay(t: Test, onSync: () => void = () => {}): Promise<JournalModule['Journal']> {
  const { Journal: FaultyJournal } = await t.mockImport<JournalModule>('../../agent/store/journal.js', {
    'node:fs/promises': {
      ...realFs,
      open: async (path: string, flags: string, mode?: number) => {
        const handle = await realFs.open(path, flags, mode)
        if (flags !== 'a') return handle
        return {
          appendFile: async (data: string) => {
            if (!data.includes('"fail":true')) return handle.appendFile(data)
            await handle.appendFile(data.slice(0, 10)) // part of the line reached the disk
            throw Object.assign(new Error('ENOSPC'), { code: 'ENOSPC' })
          },
          sync: () => {
            onSync()
            return handle.sync()
          },
          truncate: (len: number) => handle.truncate(len),
          close: () => handle.close(),
        }
      },
    },
  })
  return FaultyJournal
}

t.test('Journal: a write that fails half way (disk full) is cut back out and the journal goes on', async (t) => {
  const FaultyJournal = await journalFailingHalfWay(t)
  const path = join(t.testdir(), 'j.jsonl')
  const journal = await FaultyJournal.open(path)
  await journal.append({ n: 1 })
  await t.rejects(journal.append({ n: 2, fail: true }), { code: 'ENOSPC' })
  await journal.append({ n: 3 })
  t.same(
    journal.records().map((r) => r.n),
    [1, 3],
  )
  await journal.close()
  const { journal: reopened, torn } = await openCollecting(path)
  t.same(torn, [])
  t.same(
    reopened.records().map((r) => r.n),
    [1, 3],
  )
  await reopened.close()
})

// Load fault (1000 concurrent deploy requests): every append was its own write and fsync, one after another, so a
// burst of signed requests (a nonce and a deploy record each) was bound by fsync latency.
t.test('Journal: concurrent appends share one write and fsync (group commit), and a failed batch fails all of it', async (t) => {
  let syncs = 0
  const CountingJournal = await journalFailingHalfWay(t, () => syncs++)
  const path = join(t.testdir(), 'j.jsonl')
  const journal = await CountingJournal.open(path)
  const resolved: number[] = []
  await Promise.all(Array.from({ length: 100 }, (_, i) => journal.append({ i }).then(() => resolved.push(i))))
  t.same(
    resolved,
    Array.from({ length: 100 }, (_, i) => i),
    'resolved in call order',
  )
  t.ok(syncs <= 2, `100 concurrent appends took ${syncs} fsyncs`)
  const batch = await Promise.allSettled([journal.append({ i: 100 }), journal.append({ i: 101, fail: true }), journal.append({ i: 102 })])
  t.same(
    batch.map((r) => r.status),
    ['rejected', 'rejected', 'rejected'],
    'every append of a failed shared write fails',
  )
  await journal.append({ i: 103 })
  t.same(
    journal.records().map((r) => r.i),
    [...Array.from({ length: 100 }, (_, i) => i), 103],
  )
  await journal.close()
  const { journal: reopened, torn } = await openCollecting(path)
  t.same(torn, [], 'the failed batch was cut back out of the file')
  t.same(
    reopened.records().map((r) => r.i),
    [...Array.from({ length: 100 }, (_, i) => i), 103],
  )
  await reopened.close()
})

t.test('Journal: appends made after a rewrite was called land in the new file', async (t) => {
  const path = join(t.testdir(), 'j.jsonl')
  const journal = await Journal.open(path)
  const before = journal.append({ n: 1 })
  const rewritten = journal.rewrite([{ n: 0 }])
  const after = journal.append({ n: 2 })
  await Promise.all([before, rewritten, after])
  t.same(
    journal.records().map((r) => r.n),
    [0, 2],
  )
  await journal.close()
  const reopened = await Journal.open(path)
  t.same(
    reopened.records().map((r) => r.n),
    [0, 2],
  )
  await reopened.close()
})
