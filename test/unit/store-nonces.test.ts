import { mkdir, readFile, rm, symlink, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { NONCE_TTL_MS, NonceStore, type NonceStoreOptions } from '../../agent/store/nonces.js'

const clock = () => {
  let now = Date.parse('2026-05-01T00:00:00.000Z')
  return { now: () => now, advance: (ms: number) => void (now += ms) }
}
const nonce = (i: number) => `nonce-${String(i).padStart(12, '0')}`
const fileLines = async (dir: string) =>
  (await readFile(join(dir, 'nonces.jsonl'), 'utf8'))
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))

/** Opens a store that is closed when the test ends. */
const openStore = async (t: { teardown: (fn: () => unknown) => void }, dir: string, opts: NonceStoreOptions = {}) => {
  const store = await NonceStore.open(dir, opts)
  t.teardown(() => store.close())
  return store
}

t.test('NonceStore: a second use of a nonce is a replay', async (t) => {
  const dir = t.testdir()
  const store = await openStore(t, dir)
  t.equal(await store.remember(nonce(1)), true)
  t.equal(await store.remember(nonce(1)), false)
  t.equal(await store.remember(nonce(2)), true)
  t.equal(store.size, 2)
  t.match(await fileLines(dir), [
    { v: 1, n: nonce(1), exp: Number },
    { v: 1, n: nonce(2) },
  ])
})

t.test('NonceStore: of two concurrent calls with the same nonce only one succeeds', async (t) => {
  const store = await openStore(t, t.testdir())
  const results = await Promise.all([store.remember(nonce(1)), store.remember(nonce(1)), store.remember(nonce(1))])
  t.same(results.filter(Boolean), [true])
  t.equal(results[0], true, 'the first caller wins')
})

t.test('NonceStore: a nonce expires after the TTL (injected clock)', async (t) => {
  const time = clock()
  const store = await openStore(t, t.testdir(), { now: time.now, ttlMs: 1000 })
  t.equal(await store.remember(nonce(1)), true)
  time.advance(999)
  t.equal(await store.remember(nonce(1)), false, 'still live 1 ms before expiry')
  t.equal(await store.remember(nonce(2)), true)
  time.advance(1)
  t.equal(store.size, 1, 'the first one is pruned at its expiry')
  t.equal(await store.remember(nonce(1)), true, 'usable again once expired')
  t.equal(await store.remember(nonce(1)), false)
})

t.test('NonceStore: a nonce lives until untilMs when that is later than the TTL, across a reopen', async (t) => {
  const time = clock()
  const dir = t.testdir()
  const store = await openStore(t, dir, { now: time.now, ttlMs: 1000 })
  const until = time.now() + 5000
  t.equal(await store.remember(nonce(1), until), true)
  t.equal(await store.remember(nonce(2), time.now() + 10), true, 'an earlier untilMs leaves the TTL')
  time.advance(4999)
  t.equal(await store.remember(nonce(1), until), false, 'still live 1 ms before untilMs')
  t.equal(await store.remember(nonce(2)), true, 'the other expired with its TTL')
  const reopened = await openStore(t, dir, { now: time.now, ttlMs: 1000 })
  t.equal(await reopened.remember(nonce(1)), false, 'the file keeps the later expiry')
})

t.test('NonceStore: the default TTL is 10 minutes', async (t) => {
  const time = clock()
  const store = await openStore(t, t.testdir(), { now: time.now })
  t.equal(NONCE_TTL_MS, 600_000)
  await store.remember(nonce(1))
  time.advance(NONCE_TTL_MS - 1)
  t.equal(await store.remember(nonce(1)), false)
  time.advance(1)
  t.equal(await store.remember(nonce(1)), true)
})

t.test('NonceStore: nonces survive a reopen until they expire', async (t) => {
  const dir = t.testdir()
  const time = clock()
  const first = await NonceStore.open(dir, { now: time.now, ttlMs: 10_000 })
  await first.remember(nonce(1))
  time.advance(5000)
  await first.remember(nonce(2))
  await first.close()

  const second = await NonceStore.open(dir, { now: time.now, ttlMs: 10_000 })
  t.equal(second.size, 2)
  t.equal(await second.remember(nonce(1)), false)
  t.equal(await second.remember(nonce(2)), false)
  await second.close()

  time.advance(5000)
  const third = await NonceStore.open(dir, { now: time.now, ttlMs: 10_000 })
  t.equal(third.size, 1, 'the first nonce expired while the store was closed')
  t.equal(await third.remember(nonce(1)), true)
  t.equal(await third.remember(nonce(2)), false)
  await third.close()
})

t.test('NonceStore: a torn last line and foreign lines are tolerated on open', async (t) => {
  const exp = Date.parse('2026-05-01T00:05:00.000Z')
  const dir = t.testdir({
    'nonces.jsonl': [
      JSON.stringify({ v: 1, at: 'x', n: nonce(1), exp }),
      JSON.stringify({ v: 1, at: 'x', n: 5, exp }),
      JSON.stringify({ v: 1, at: 'x', n: nonce(3), exp: 'soon' }),
      JSON.stringify({ v: 1, at: 'x', n: nonce(1), exp: exp - 1000 }),
      `{"v":1,"n":"${nonce(2)}","ex`,
    ].join('\n'),
  })
  const torn: number[] = []
  const time = clock()
  const store = await openStore(t, dir, { now: time.now, onTornLine: (info) => torn.push(info.line) })
  t.same(torn, [5])
  t.equal(store.size, 1)
  t.equal(await store.remember(nonce(1)), false)
  t.equal(await store.remember(nonce(2)), true, 'the torn nonce was never acknowledged')
  t.equal(await store.remember(nonce(3)), true)
  time.advance(exp - time.now() - 1)
  t.equal(await store.remember(nonce(1)), false, 'the later expiry of a nonce written twice wins')
})

t.test('NonceStore: compaction rewrites the file with only live nonces', async (t) => {
  const dir = t.testdir()
  const time = clock()
  const store = await NonceStore.open(dir, { now: time.now, ttlMs: 1000, compactMinLines: 10 })
  for (let i = 0; i < 10; i++) await store.remember(nonce(i))
  t.equal((await fileLines(dir)).length, 10, 'not more than compactMinLines yet')
  time.advance(1000) // all ten expire
  await store.remember(nonce(100))
  await store.remember(nonce(101))
  t.same(
    (await fileLines(dir)).map((l) => l.n),
    [nonce(100), nonce(101)],
    'compacted on the 11th line',
  )
  t.equal(store.size, 2)
  for (let i = 0; i < 3; i++) await store.remember(nonce(200 + i))
  await store.close()

  const reopened = await NonceStore.open(dir, { now: time.now, ttlMs: 1000 })
  t.equal(reopened.size, 5)
  t.equal(await reopened.remember(nonce(100)), false)
  t.equal(await reopened.remember(nonce(202)), false)
  t.equal(await reopened.remember(nonce(0)), true)
  await reopened.close()
})

t.test('NonceStore: no compaction while most lines are live', async (t) => {
  const dir = t.testdir()
  const store = await openStore(t, dir, { compactMinLines: 4 })
  for (let i = 0; i < 12; i++) await store.remember(nonce(i))
  t.equal((await fileLines(dir)).length, 12)
  t.equal(store.size, 12)
})

t.test('NonceStore: compaction runs once at a time and nonces remembered meanwhile are kept', async (t) => {
  const dir = t.testdir()
  const time = clock()
  const store = await NonceStore.open(dir, { now: time.now, ttlMs: 1000, compactMinLines: 5 })
  for (let i = 0; i < 5; i++) await store.remember(nonce(i))
  time.advance(1000)
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => store.remember(nonce(100 + i))))
  t.ok(results.every(Boolean))
  await store.close()
  const reopened = await NonceStore.open(dir, { now: time.now, ttlMs: 1000 })
  t.equal(reopened.size, 20)
  for (let i = 0; i < 20; i++) t.equal(await reopened.remember(nonce(100 + i)), false)
  t.ok((await fileLines(dir)).length <= 40)
  await reopened.close()
})

t.test('NonceStore: a failed compaction is reported, remembering goes on, and it is retried later', async (t) => {
  const dir = t.testdir()
  const time = clock()
  const errors: unknown[] = []
  const store = await NonceStore.open(dir, { now: time.now, ttlMs: 1000, compactMinLines: 3, onCompactError: (err) => errors.push(err) })
  for (let i = 0; i < 3; i++) await store.remember(nonce(i))
  time.advance(1000)
  // A directory where the file is makes the atomic rename fail.
  const path = join(dir, 'nonces.jsonl')
  await unlink(path)
  await mkdir(path)
  t.equal(await store.remember(nonce(10)), true)
  t.equal(errors.length, 1)
  t.match(errors[0], { code: 'EISDIR' })
  t.equal(await store.remember(nonce(11)), true, 'no retry before compactMinLines more lines')
  t.equal(errors.length, 1)
  await rm(path, { recursive: true })
  time.advance(1000)
  // The failure came at 4 lines: the next try waits until the file has more than 4 + compactMinLines lines.
  await store.remember(nonce(12))
  await store.remember(nonce(13))
  await t.rejects(readFile(path), { code: 'ENOENT' }, 'not retried at 7 lines')
  await store.remember(nonce(14))
  t.equal(errors.length, 1, 'the retry at 8 lines succeeded')
  t.same(
    (await fileLines(dir)).map((l) => l.n),
    [nonce(12), nonce(13), nonce(14)],
  )
  await store.close()
})

t.test('NonceStore: a failed compaction without onCompactError is not fatal', async (t) => {
  const dir = t.testdir()
  const time = clock()
  const store = await openStore(t, dir, { now: time.now, ttlMs: 1000, compactMinLines: 1 })
  for (let i = 0; i < 3; i++) await store.remember(nonce(i))
  time.advance(1000)
  await unlink(join(dir, 'nonces.jsonl'))
  await mkdir(join(dir, 'nonces.jsonl'))
  t.equal(await store.remember(nonce(2)), true)
})

t.test('NonceStore: invalid nonces and TTLs are refused', async (t) => {
  const store = await openStore(t, t.testdir())
  for (const bad of ['', 'x'.repeat(257), 42 as unknown as string]) {
    await t.rejects(store.remember(bad), { code: 'invalid_request' })
  }
  t.equal(await store.remember('x'.repeat(256)), true)
  for (const ttlMs of [0, -1, Number.NaN, Infinity]) {
    await t.rejects(NonceStore.open(t.testdir(), { ttlMs }), RangeError)
  }
})

t.test('NonceStore: a nonce whose write fails stays claimed', async (t) => {
  const dir = t.testdir()
  await mkdir(join(dir, 'state'))
  await symlink('/dev/null', join(dir, 'state', 'nonces.jsonl'))
  const store = await openStore(t, join(dir, 'state'))
  await t.rejects(store.remember(nonce(1)), { code: 'EINVAL' })
  t.equal(await store.remember(nonce(1)), false, 'a retry is still a replay')
})
