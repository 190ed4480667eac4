import { mkdir, readdir, readFile, rmdir, symlink } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { DEPLOY_STATES, isTerminal, type DeployState } from '../../agent/deploy/states.js'
import { DeployStore, type Deploy } from '../../agent/store/deploys.js'
import { DEPLOY_ID } from '../../agent/store/deploy-id.js'
import { StateStore } from '../../agent/store/index.js'

const START = Date.parse('2026-03-01T12:00:00.000Z')
const clock = () => {
  let now = START
  return { now: () => now, advance: (ms: number) => void (now += ms) }
}
const iso = (offsetMs: number) => new Date(START + offsetMs).toISOString()
const input = { app: 'lifeos', env: 'staging', ref: 'main' }

t.test('DeployStore: create records a QUEUED deploy with a fresh id', async (t) => {
  const time = clock()
  const store = await DeployStore.open(t.testdir(), { now: time.now })
  t.teardown(() => store.close())
  const deploy = await store.create({ ...input, reason: 'ship it', keyId: 'ci-main' })
  t.match(deploy.id, DEPLOY_ID)
  t.same(deploy, {
    id: deploy.id,
    kind: 'deploy',
    app: 'lifeos',
    env: 'staging',
    ref: 'main',
    commit: null,
    release: null,
    reason: 'ship it',
    keyId: 'ci-main',
    approvedBy: null,
    state: 'QUEUED',
    states: [{ state: 'QUEUED', at: iso(0) }],
    error: null,
    createdAt: iso(0),
    finishedAt: null,
    details: {},
  })
  t.same(store.get(deploy.id), deploy)
  const other = await store.create({ ...input, commit: 'a'.repeat(40), state: 'AWAITING_APPROVAL' })
  t.not(other.id, deploy.id)
  t.equal(other.commit, 'a'.repeat(40))
  t.equal(other.state, 'AWAITING_APPROVAL')
  t.equal(store.get('d_000000000000'), undefined)
})

t.test('DeployStore: transition merges the patch, appends to states and finishes on terminal', async (t) => {
  const time = clock()
  const store = await DeployStore.open(t.testdir(), { now: time.now })
  t.teardown(() => store.close())
  const { id } = await store.create(input)
  time.advance(1000)
  await store.transition(id, 'RESOLVING', { commit: 'b'.repeat(40), release: 'b'.repeat(7) })
  time.advance(1000)
  const building = await store.transition(id, 'BUILDING')
  t.equal(building.commit, 'b'.repeat(40), 'fields left out are kept')
  time.advance(1000)
  const failed = await store.transition(id, 'FAILED', {
    error: { code: 'build_failed', message: 'exit 1', stack: 'x' } as never,
    terminal: true,
  })
  t.same(failed.states, [
    { state: 'QUEUED', at: iso(0) },
    { state: 'RESOLVING', at: iso(1000) },
    { state: 'BUILDING', at: iso(2000) },
    { state: 'FAILED', at: iso(3000) },
  ])
  t.equal(failed.state, 'FAILED')
  t.same(failed.error, { code: 'build_failed', message: 'exit 1' }, 'only code and message are kept')
  t.equal(failed.release, 'b'.repeat(7))
  t.equal(failed.finishedAt, iso(3000))
})

t.test('DeployStore: an error can be cleared and fields set to null', async (t) => {
  const store = await DeployStore.open(t.testdir())
  t.teardown(() => store.close())
  const { id } = await store.create({ ...input, commit: 'c'.repeat(40) })
  await store.transition(id, 'VERIFYING', { error: { code: 'flaky', message: 'retrying' } })
  const next = await store.transition(id, 'SWITCHING', { error: null, commit: null })
  t.equal(next.error, null)
  t.equal(next.commit, null)
})

t.test('DeployStore: transitions are refused for unknown, finished or empty states', async (t) => {
  const store = await DeployStore.open(t.testdir())
  t.teardown(() => store.close())
  await t.rejects(store.transition('d_aaaaaaaaaaaa', 'BUILDING'), { code: 'not_found', statusCode: 404 })
  const { id } = await store.create(input)
  await t.rejects(store.transition(id, '' as DeployState), { code: 'invalid_request' })
  await t.rejects(store.transition(id, 'HACKED' as DeployState), { code: 'invalid_request' })
  await store.transition(id, 'CANCELLED', { terminal: true })
  await t.rejects(store.transition(id, 'BUILDING'), { code: 'deploy_finished', statusCode: 409 })
  t.equal(store.get(id)?.state, 'CANCELLED')
})

t.test('DeployStore: list is newest first, filters by app and env, honours limit; unfinished is oldest first', async (t) => {
  const time = clock()
  const store = await DeployStore.open(t.testdir(), { now: time.now })
  t.teardown(() => store.close())
  const made: Deploy[] = []
  for (const [app, env] of [
    ['lifeos', 'staging'],
    ['lifeos', 'production'],
    ['blog', 'staging'],
    ['lifeos', 'staging'],
  ] as const) {
    made.push(await store.create({ app, env, ref: 'main' }))
    time.advance(1000)
  }
  const ids = made.map((d) => d.id)
  t.same(
    store.list().map((d) => d.id),
    [ids[3], ids[2], ids[1], ids[0]],
  )
  t.same(
    store.list({ app: 'lifeos' }).map((d) => d.id),
    [ids[3], ids[1], ids[0]],
  )
  t.same(
    store.list({ env: 'staging' }).map((d) => d.id),
    [ids[3], ids[2], ids[0]],
  )
  t.same(
    store.list({ app: 'lifeos', env: 'staging', limit: 1 }).map((d) => d.id),
    [ids[3]],
  )
  t.same(store.list({ app: 'nope' }), [])
  await store.transition(ids[1] as string, 'SUCCEEDED', { terminal: true })
  t.same(
    store.unfinished().map((d) => d.id),
    [ids[0], ids[2], ids[3]],
  )
})

t.test('DeployStore: deploys survive a reopen exactly', async (t) => {
  const dir = t.testdir()
  const time = clock()
  const store = await DeployStore.open(dir, { now: time.now })
  const a = await store.create(input)
  const b = await store.create({ ...input, env: 'production' })
  time.advance(500)
  await store.transition(a.id, 'BUILDING', { commit: 'd'.repeat(40) })
  await store.transition(b.id, 'FAILED', { error: { code: 'x', message: 'y' }, terminal: true })
  const before = { list: store.list(), unfinished: store.unfinished() }
  await store.close()

  const skipped: string[] = []
  const reopened = await DeployStore.open(dir, { onSkippedRecord: (_record, reason) => skipped.push(reason) })
  t.teardown(() => reopened.close())
  t.same({ list: reopened.list(), unfinished: reopened.unfinished() }, before)
  t.same(skipped, [])
  t.same(
    reopened.unfinished().map((d) => d.id),
    [a.id],
  )
  const journal = (await readFile(join(dir, 'deploys.jsonl'), 'utf8'))
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line))
  t.match(journal, [
    { v: 1, type: 'deploy.created', deploy: { id: a.id } },
    { v: 1, type: 'deploy.created', deploy: { id: b.id } },
    { v: 1, type: 'deploy.state', id: a.id, state: 'BUILDING', at: iso(500), commit: 'd'.repeat(40) },
    { v: 1, type: 'deploy.state', id: b.id, state: 'FAILED', error: { code: 'x', message: 'y' }, terminal: true },
  ])
})

t.test('DeployStore: concurrent transitions apply in call order, in memory and after a reopen', async (t) => {
  const dir = t.testdir()
  const store = await DeployStore.open(dir)
  const { id } = await store.create(input)
  const open = DEPLOY_STATES.filter((state) => !isTerminal(state))
  const states = Array.from({ length: 20 }, (_, i) => open[i % open.length] as DeployState)
  await Promise.all(states.map((state) => store.transition(id, state)))
  t.same(
    store.get(id)?.states.map((s) => s.state),
    ['QUEUED', ...states],
  )
  await store.close()
  const reopened = await DeployStore.open(dir)
  t.same(
    reopened.get(id)?.states.map((s) => s.state),
    ['QUEUED', ...states],
  )
  await reopened.close()
})

t.test('DeployStore: returned deploys are copies', async (t) => {
  const store = await DeployStore.open(t.testdir())
  t.teardown(() => store.close())
  const created = await store.create(input)
  created.states.push({ state: 'FAILED', at: 'now' })
  created.state = 'FAILED'
  const listed = store.list()[0] as Deploy
  listed.app = 'other'
  t.equal(store.get(created.id)?.state, 'QUEUED')
  t.equal(store.get(created.id)?.states.length, 1)
  t.equal(store.get(created.id)?.app, 'lifeos')
})

t.test('DeployStore: a torn last line and records it cannot apply are reported and skipped on open', async (t) => {
  const id = 'd_aaaaaaaaaaaa'
  const deploy = {
    id,
    kind: 'deploy',
    details: {},
    app: 'a',
    env: 'e',
    ref: 'main',
    commit: null,
    release: null,
    reason: null,
    keyId: null,
    state: 'QUEUED',
    states: [{ state: 'QUEUED', at: 't0' }],
    error: null,
    createdAt: 't0',
    finishedAt: null,
  }
  const lines = [
    { v: 1, at: 't0', type: 'deploy.created', deploy },
    { v: 1, at: 't0', type: 'deploy.created', deploy },
    { v: 2, at: 't0', type: 'deploy.state', id, state: 'FROM_THE_FUTURE', at2: 'x' },
    { v: 1, at: 't0', type: 'deploy.created', deploy: { ...deploy, id: '../etc' } },
    { v: 1, at: 't0', type: 'deploy.created', deploy: { ...deploy, id: 'd_bbbbbbbbbbbb', error: { code: 1 } } },
    { v: 1, at: 't0', type: 'deploy.created', deploy: null },
    { v: 1, at: 't1', type: 'deploy.state', id: 'd_cccccccccccc', state: 'BUILDING' },
    { v: 1, at: 't1', type: 'deploy.state', id, state: 7 },
    { v: 1, at: 't1', type: 'deploy.state', id, state: 'BUILDING', commit: 5 },
    { v: 1, at: 't1', type: 'deploy.state', id, state: 'BUILDING', error: 'boom' },
    { v: 1, at: 't1', type: 'release.kept' },
    { v: 1, at: 't2', type: 'deploy.state', id, state: 'FAILED', error: { code: 'c', message: 'm' }, terminal: true },
  ]
  const dir = t.testdir({ 'deploys.jsonl': `${lines.map((l) => JSON.stringify(l)).join('\n')}\n{"v":1,"type":"deploy.st` })
  const skipped: string[] = []
  const torn: number[] = []
  const store = await DeployStore.open(dir, {
    onSkippedRecord: (_r, reason) => skipped.push(reason),
    onTornLine: (info) => torn.push(info.line),
  })
  t.teardown(() => store.close())
  t.same(skipped, [
    `duplicate deploy ${id}`,
    'unsupported format v=2',
    'malformed deploy.created',
    'malformed deploy.created',
    'malformed deploy.created',
    'deploy.state for unknown deploy d_cccccccccccc',
    'malformed deploy.state',
    'malformed deploy.state',
    'malformed deploy.state',
    'unknown record type "release.kept"',
  ])
  t.same(torn, [13])
  t.match(store.get(id), {
    state: 'FAILED',
    finishedAt: 't2',
    error: { code: 'c', message: 'm' },
    states: [{ state: 'QUEUED' }, { state: 'FAILED' }],
  })
  t.same(
    store.list().map((d) => d.id),
    [id],
  )
  // Opening without callbacks skips the same records silently.
  await store.close()
  const quiet = await DeployStore.open(dir)
  t.equal(quiet.list().length, 1)
  await quiet.close()
})

t.test('DeployStore: logs are appended in order and read back as NDJSON', async (t) => {
  const dir = t.testdir()
  const store = await DeployStore.open(dir)
  const { id } = await store.create(input)
  t.equal(await store.readLog(id), '', 'no log yet')
  await Promise.all(Array.from({ length: 50 }, (_, i) => store.appendLog(id, { i, msg: `line ${i}` })))
  const lines = (await store.readLog(id))
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line))
  t.same(
    lines.map((l) => l.i),
    Array.from({ length: 50 }, (_, i) => i),
  )
  await store.close()
  t.equal((await readFile(join(dir, 'logs', `${id}.ndjson`), 'utf8')).split('\n').length, 51, 'flushed on close')
})

t.test('DeployStore: a terminal transition closes the log; appending later reopens it', async (t) => {
  const store = await DeployStore.open(t.testdir())
  t.teardown(() => store.close())
  const { id } = await store.create(input)
  await store.appendLog(id, { msg: 'building' })
  await store.transition(id, 'SUCCEEDED', { terminal: true })
  await store.appendLog(id, { msg: 'cleanup' })
  t.same(
    (await store.readLog(id))
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line).msg),
    ['building', 'cleanup'],
  )
})

// Regression (load fault): moveDeploy writes the state line after the terminal transition closed the log, which
// reopened it for good — one open file per finished deploy (1000 after a flood of superseded requests).
t.test('DeployStore: a line appended after the deploy finished leaves no log open', async (t) => {
  const store = await DeployStore.open(t.testdir())
  t.teardown(() => store.close())
  const openFds = async () => (await readdir('/proc/self/fd')).length
  const before = await openFds()
  for (let i = 0; i < 100; i++) {
    const { id } = await store.create(input)
    await store.transition(id, 'CANCELLED', { terminal: true })
    await Promise.all([store.appendLog(id, { event: 'state', state: 'CANCELLED' }), store.appendLog(id, { msg: 'late' })])
    t.equal((await store.readLog(id)).trim().split('\n').length, 2, 'both late lines are written')
  }
  const growth = (await openFds()) - before
  t.ok(growth < 10, `open file descriptors grew by ${growth} over 100 finished deploys`)
})

t.test('DeployStore: log ids are validated before touching the filesystem', async (t) => {
  const dir = t.testdir({ 'secret.ndjson': 'do not read\n' })
  const store = await DeployStore.open(join(dir, 'state'))
  t.teardown(() => store.close())
  for (const id of ['../x', '../../secret', 'd_AAAAAAAAAAAA', 'd_aaaaaaaaaaa/', '', 'd_aaaaaaaaaaaa\n']) {
    await t.rejects(store.appendLog(id, { msg: 'x' }), { code: 'invalid_request', statusCode: 400 }, `append ${JSON.stringify(id)}`)
    await t.rejects(store.readLog(id), { code: 'invalid_request' }, `read ${JSON.stringify(id)}`)
  }
  await t.rejects(store.readLog('d_aaaaaaaaaaaa'), { code: 'not_found' }, 'a valid id of no deploy')
  await t.rejects(store.appendLog('d_aaaaaaaaaaaa', {}), { code: 'not_found' })
  t.same(await readdir(join(dir, 'state', 'logs')), [])
  t.same((await readdir(dir)).sort(), ['secret.ndjson', 'state'])
})

t.test('DeployStore: a log line that cannot be serialised is refused', async (t) => {
  const store = await DeployStore.open(t.testdir())
  t.teardown(() => store.close())
  const { id } = await store.create(input)
  await t.rejects(store.appendLog(id, { n: 1n }), TypeError)
  await store.appendLog(id, { n: 1 })
  t.equal(await store.readLog(id), '{"n":1}\n')
})

t.test('DeployStore: a log that cannot be opened fails its appends, and a later append tries again', async (t) => {
  const dir = t.testdir()
  const store = await DeployStore.open(dir)
  t.teardown(() => store.close())
  const { id } = await store.create(input)
  const path = join(dir, 'logs', `${id}.ndjson`)
  await mkdir(path)
  await t.rejects(store.appendLog(id, { n: 1 }), { code: 'EISDIR' })
  await t.rejects(store.appendLog(id, { n: 2 }), { code: 'EISDIR' })
  await t.rejects(store.readLog(id), { code: 'EISDIR' })
  await rmdir(path)
  await store.appendLog(id, { n: 3 })
  t.equal(await store.readLog(id), '{"n":3}\n')
})

t.test('DeployStore: a log that cannot be flushed does not fail the terminal transition, but fails close', async (t) => {
  // fsync on /dev/null fails with EINVAL.
  const dir = t.testdir()
  const store = await DeployStore.open(dir)
  const a = await store.create(input)
  const b = await store.create(input)
  for (const { id } of [a, b]) await symlink('/dev/null', join(dir, 'logs', `${id}.ndjson`))
  await store.appendLog(a.id, { msg: 'x' })
  const done = await store.transition(a.id, 'SUCCEEDED', { terminal: true })
  t.equal(done.finishedAt !== null, true)
  await store.appendLog(b.id, { msg: 'y' })
  await t.rejects(store.close(), { code: 'EINVAL' })
  const reopened = await DeployStore.open(dir)
  t.equal(reopened.get(a.id)?.state, 'SUCCEEDED', 'the journal was closed all the same')
  await reopened.close()
})

t.test('DeployStore: close while a log is failing to open', async (t) => {
  const dir = t.testdir()
  const store = await DeployStore.open(dir)
  const { id } = await store.create(input)
  await mkdir(join(dir, 'logs', `${id}.ndjson`))
  const append = store.appendLog(id, { n: 1 })
  const closed = store.close()
  await t.rejects(append, { code: 'EISDIR' })
  await closed
})

t.test('StateStore: opens deploys and nonces in one state dir and closes both', async (t) => {
  const dir = t.testdir()
  const state = await StateStore.open(join(dir, 'state'))
  const deploy = await state.deploys.create(input)
  t.equal(await state.nonces.remember('n-1234567890abcdef'), true)
  await state.close()
  t.same((await readdir(join(dir, 'state'))).sort(), ['deploys.jsonl', 'logs', 'nonces.jsonl'])
  const again = await StateStore.open(join(dir, 'state'))
  t.equal(again.dir, join(dir, 'state'))
  t.equal(again.deploys.get(deploy.id)?.id, deploy.id)
  t.equal(await again.nonces.remember('n-1234567890abcdef'), false)
  await again.close()
})

t.test('StateStore: a failure opening the nonces closes the deploys again', async (t) => {
  const dir = t.testdir()
  await mkdir(join(dir, 'nonces.jsonl'))
  await t.rejects(StateStore.open(dir, { nonces: { ttlMs: 1000 } }), { code: 'EISDIR' })
  await t.rejects(StateStore.open(dir, { nonces: { ttlMs: -1 } }), RangeError)
})

t.test('StateStore: close closes both parts and reports a failure', async (t) => {
  const dir = t.testdir()
  const state = await StateStore.open(dir)
  const { id } = await state.deploys.create(input)
  await symlink('/dev/null', join(dir, 'logs', `${id}.ndjson`))
  await state.deploys.appendLog(id, { msg: 'x' })
  await state.nonces.remember('n-1234567890abcdef')
  await t.rejects(state.close(), { code: 'EINVAL' })
  const again = await StateStore.open(dir)
  t.equal(await again.nonces.remember('n-1234567890abcdef'), false)
  await again.close()
})

t.test('DeployStore: a fresh id never reuses a known one, and a bad generated id is refused', async (t) => {
  const ids = ['d_aaaaaaaaaaaa', 'd_aaaaaaaaaaaa', 'd_bbbbbbbbbbbb', '../escape']
  const store = await DeployStore.open(t.testdir(), { newId: () => ids.shift() as string })
  t.teardown(() => store.close())
  t.equal((await store.create(input)).id, 'd_aaaaaaaaaaaa')
  t.equal((await store.create(input)).id, 'd_bbbbbbbbbbbb')
  await t.rejects(store.create(input), { code: 'invalid_request' })
  t.equal(store.list().length, 2)
})

t.test('DeployStore: details merge across transitions and survive reopen', async (t) => {
  const dir = t.testdir()
  const store = await DeployStore.open(dir)
  const deploy = await store.create({ ...input, kind: 'rollback' })
  await store.transition(deploy.id, 'STARTING', { details: { candidatePort: 18002, previousPort: 18001 } })
  await store.transition(deploy.id, 'VERIFYING', { details: { candidateContainer: 'abc', previousPort: null } })
  await store.close()
  const reopened = await DeployStore.open(dir)
  t.teardown(() => reopened.close())
  const again = reopened.get(deploy.id)
  t.equal(again?.kind, 'rollback')
  t.same(again?.details, { candidatePort: 18002, previousPort: null, candidateContainer: 'abc' })
})
