// GET /v1/deploys/:id/log over real HTTP: the log is streamed, a follower reads each byte once (from where it
// left off, not the whole file every poll), and the number of followers is bounded.
import { readFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import * as follow from '../../agent/http/follow.js'
import { buildTestAgent, type TestAgent } from '../helpers/agent.js'
import { tempDir } from '../helpers/tmp.js'

async function listening(t: Test): Promise<{ agent: TestAgent; url: string; token: Record<string, string> }> {
  const agent = await buildTestAgent(await tempDir(t))
  t.teardown(() => agent.close())
  await agent.app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = agent.app.server.address() as AddressInfo
  return { agent, url: `http://127.0.0.1:${port}`, token: { authorization: `Bearer ${agent.keys.statusToken}` } }
}

/** Counts the bytes the store hands out for logs, whichever read it is asked for. */
function countReads(agent: TestAgent): { bytes: number; wholeReads: number } {
  const seen = { bytes: 0, wholeReads: 0 }
  const store = agent.deploys as unknown as Record<string, (...args: unknown[]) => Promise<string | Buffer>>
  for (const name of ['readLog', 'readLogChunk']) {
    const original = store[name]?.bind(store)
    if (!original) continue
    store[name] = async (...args: unknown[]) => {
      const got = await original(...args)
      seen.bytes += Buffer.byteLength(got)
      if (name === 'readLog') seen.wholeReads++
      return got
    }
  }
  return seen
}

// Read through the module so this file also runs (and fails) on code without the bounds.
const { MAX_FOLLOWERS = 32, MAX_FOLLOWERS_PER_DEPLOY = 8 } = follow as { MAX_FOLLOWERS?: number; MAX_FOLLOWERS_PER_DEPLOY?: number }

const line = (i: number) => ({ at: '2026-01-01T00:00:00.000Z', event: 'build', line: `${i} ${'b'.repeat(1000)}` })

t.test('API: the log is streamed to the client, never read whole into memory', async (t) => {
  const { agent, url, token } = await listening(t)
  const deploy = await agent.deploys.create({ app: 'web', env: 'staging', ref: 'main' })
  for (let i = 0; i < 300; i++) await agent.deploys.appendLog(deploy.id, line(i))
  await agent.deploys.transition(deploy.id, 'FAILED', { terminal: true })
  const reads = countReads(agent)
  const res = await fetch(`${url}/v1/deploys/${deploy.id}/log`, { headers: token })
  t.equal(res.status, 200)
  t.match(res.headers.get('content-type'), /^application\/x-ndjson/)
  t.equal(res.headers.get('transfer-encoding'), 'chunked', 'sent as a stream')
  const body = await res.text()
  t.equal(body.trim().split('\n').length, 300)
  t.equal(reads.wholeReads, 0, 'the whole-file read is not used')
  const empty = await agent.deploys.create({ app: 'web', env: 'staging', ref: 'main' })
  const none = await fetch(`${url}/v1/deploys/${empty.id}/log`, { headers: token })
  t.equal(none.status, 200)
  t.equal(await none.text(), '', 'a deploy without a log yet answers empty')
})

t.test('API: follow=1 sends what is new and reads each byte about once', async (t) => {
  const { agent, url, token } = await listening(t)
  const deploy = await agent.deploys.create({ app: 'web', env: 'staging', ref: 'main' })
  for (let i = 0; i < 1000; i++) await agent.deploys.appendLog(deploy.id, line(i)) // ~1 MB
  const reads = countReads(agent)
  const res = await fetch(`${url}/v1/deploys/${deploy.id}/log?follow=1`, { headers: token })
  t.equal(res.status, 200)
  const reader = (res.body as ReadableStream<Uint8Array>).getReader()
  const decoder = new TextDecoder()
  let received = ''
  const readUntil = async (what: RegExp) => {
    while (!what.test(received)) {
      const { value, done } = await reader.read()
      if (done) throw new Error('the follow stream ended early')
      received += decoder.decode(value, { stream: true })
    }
  }
  await readUntil(/"999 b+"/)
  await new Promise((r) => setTimeout(r, 1200)) // several polls of an unchanged log
  await agent.deploys.appendLog(deploy.id, { event: 'migrate', line: 'late line' })
  await readUntil(/late line/)
  await agent.deploys.transition(deploy.id, 'FAILED', { terminal: true })
  for (;;) {
    const { value, done } = await reader.read()
    if (done) break
    received += decoder.decode(value, { stream: true })
  }
  const stored = await readFile(join(agent.config.stateDir, 'logs', `${deploy.id}.ndjson`), 'utf8')
  t.equal(
    received
      .split('\n')
      .filter((l) => !l.includes('heartbeat'))
      .join('\n'),
    stored,
    'every line exactly once, in order',
  )
  t.ok(reads.bytes < 1.5 * Buffer.byteLength(stored), `read ${reads.bytes} bytes for a ${Buffer.byteLength(stored)}-byte log`)
})

t.test('API: followers are bounded per deploy and in all; a freed place can be taken again', async (t) => {
  const { agent, url, token } = await listening(t)
  const open: AbortController[] = []
  t.teardown(() => open.forEach((c) => c.abort()))
  const followLog = async (id: string) => {
    const controller = new AbortController()
    const res = await fetch(`${url}/v1/deploys/${id}/log?follow=1`, { headers: token, signal: controller.signal })
    if (res.status === 200) open.push(controller)
    return { res, controller }
  }
  const first = await agent.deploys.create({ app: 'web', env: 'staging', ref: 'main' })
  for (let i = 0; i < MAX_FOLLOWERS_PER_DEPLOY; i++) t.equal((await followLog(first.id)).res.status, 200)
  const refused = await followLog(first.id)
  t.equal(refused.res.status, 503)
  t.match(await refused.res.json(), { error: { code: 'too_many_followers', message: /follow/ } })
  t.ok(refused.res.headers.get('retry-after'), 'says when to try again')
  // A follower that leaves frees its place.
  open.shift()?.abort()
  let again = await followLog(first.id)
  for (let i = 0; again.res.status !== 200 && i < 50; i++) {
    await new Promise((r) => setTimeout(r, 20))
    again = await followLog(first.id)
  }
  t.equal(again.res.status, 200, 'a place freed by a follower that left')

  // The global bound, over several deploys.
  while (open.length < MAX_FOLLOWERS) {
    const d = await agent.deploys.create({ app: 'web', env: 'staging', ref: 'main' })
    for (let i = 0; i < MAX_FOLLOWERS_PER_DEPLOY && open.length < MAX_FOLLOWERS; i++) t.equal((await followLog(d.id)).res.status, 200)
  }
  const other = await agent.deploys.create({ app: 'web', env: 'staging', ref: 'main' })
  const full = await followLog(other.id)
  t.equal(full.res.status, 503)
  t.match(await full.res.json(), { error: { code: 'too_many_followers' } })
  // A finished deploy's log is not followed, so it is always readable.
  await agent.deploys.transition(other.id, 'FAILED', { terminal: true })
  t.equal((await fetch(`${url}/v1/deploys/${other.id}/log?follow=1`, { headers: token })).status, 200)
})
