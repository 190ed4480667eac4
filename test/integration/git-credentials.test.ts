// GitMirror with a token in the repo URL, against a real git smart-HTTP server (git http-backend behind a small
// node server with basic auth on 127.0.0.1): the fetch authenticates, but the token never appears in any
// process's argv (what `ps` shows every local user), in the mirror's config on disk, or in an error.
import { execFile, spawn } from 'node:child_process'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { GitMirror } from '../../agent/git/mirror.js'
import { makeGitRepo } from '../helpers/git.js'
import { tempDir } from '../helpers/tmp.js'

const run = promisify(execFile)
const TOKEN = 'tok3n-5ecret-4f9e1'
const USER = 'ci-bot'

/** One CGI request to `git http-backend`: headers up to the blank line, then the body. */
function httpBackend(root: string, req: IncomingMessage, res: ServerResponse, user: string): void {
  const url = new URL(req.url ?? '/', 'http://127.0.0.1')
  const child = spawn('git', ['http-backend'], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      GIT_PROJECT_ROOT: root,
      GIT_HTTP_EXPORT_ALL: '1',
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_CONFIG_GLOBAL: '/dev/null',
      REQUEST_METHOD: req.method ?? 'GET',
      PATH_INFO: decodeURIComponent(url.pathname),
      QUERY_STRING: url.search.replace(/^\?/, ''),
      CONTENT_TYPE: req.headers['content-type'] ?? '',
      HTTP_CONTENT_ENCODING: req.headers['content-encoding'] ?? '',
      GIT_PROTOCOL: String(req.headers['git-protocol'] ?? ''),
      REMOTE_USER: user,
      REMOTE_ADDR: '127.0.0.1',
    },
    stdio: ['pipe', 'pipe', 'ignore'],
  })
  req.pipe(child.stdin)
  let head = Buffer.alloc(0)
  let headerDone = false
  child.stdout.on('data', (chunk: Buffer) => {
    if (headerDone) return void res.write(chunk)
    head = Buffer.concat([head, chunk])
    const end = head.indexOf('\r\n\r\n')
    if (end === -1) return
    headerDone = true
    let status = 200
    for (const line of head.subarray(0, end).toString('latin1').split('\r\n')) {
      const [name = '', ...rest] = line.split(':')
      const value = rest.join(':').trim()
      if (name.toLowerCase() === 'status') status = Number.parseInt(value, 10)
      else res.setHeader(name, value)
    }
    res.writeHead(status)
    res.write(head.subarray(end + 4))
  })
  child.stdout.on('end', () => res.end())
}

/** A smart-HTTP git server for the bare repositories under `root`, wanting basic auth USER:TOKEN. */
async function gitServer(
  t: Parameters<typeof tempDir>[0] & { teardown: (fn: () => unknown) => void },
  root: string,
): Promise<{ port: number; denied: () => number }> {
  let denied = 0
  const expected = `Basic ${Buffer.from(`${USER}:${TOKEN}`).toString('base64')}`
  const server = createServer((req, res) => {
    if (req.headers.authorization !== expected) {
      denied++
      res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="git"' }).end('no\n')
      return
    }
    // Slow enough that the argv watcher below surely sees git and its remote helper while they run.
    setTimeout(() => httpBackend(root, req, res, USER), 150)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  return { port: (server.address() as AddressInfo).port, denied: () => denied }
}

/** Every git started through PATH records its argv (NUL-separated, one line per run) in `log`. */
async function recordingGit(dir: string): Promise<{ path: string; log: string }> {
  await mkdir(dir, { recursive: true })
  const log = join(dir, 'argv.log')
  const { stdout } = await run('sh', ['-c', 'command -v git'])
  const script = `#!/bin/sh\nprintf '%s\\0' "$@" >> '${log}'\necho >> '${log}'\nexec '${stdout.trim()}' "$@"\n`
  await writeFile(join(dir, 'git'), script, { mode: 0o755 })
  await writeFile(log, '')
  return { path: dir, log }
}

/** The command lines of every process on the machine whose argv holds `needle`, sampled until `until` settles. */
async function watchArgv(needle: string, until: Promise<unknown>): Promise<string[]> {
  const seen = new Set<string>()
  let done = false
  void until
    .finally(() => {
      done = true
    })
    .catch(() => undefined)
  while (!done) {
    for (const pid of await readdir('/proc').catch(() => [] as string[])) {
      if (!/^\d+$/.test(pid)) continue
      const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')
      if (cmdline.includes(needle)) seen.add(cmdline.replace(/\0/g, ' '))
    }
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  return [...seen]
}

async function setup(t: Parameters<typeof tempDir>[0] & { teardown: (fn: () => unknown) => void }) {
  const dir = await tempDir(t)
  const upstream = await makeGitRepo(join(dir, 'work'), [{ files: { Dockerfile: 'FROM scratch\n' }, tag: 'v1.0.0' }])
  await run('git', ['clone', '--quiet', '--bare', upstream.path, join(dir, 'served', 'app.git')])
  const server = await gitServer(t, join(dir, 'served'))
  const wrapper = await recordingGit(join(dir, 'bin'))
  // GitMirror reads PATH when it is made: its git children then find the recording wrapper first.
  const path = process.env.PATH
  process.env.PATH = `${wrapper.path}:${path}`
  t.teardown(() => {
    process.env.PATH = path
  })
  return { dir, upstream, server, wrapper }
}

t.test('GitMirror: a token in an http(s) repo url authenticates but never reaches argv or the mirror config', async (t) => {
  const { dir, upstream, server, wrapper } = await setup(t)
  const url = `http://${USER}:${TOKEN}@127.0.0.1:${server.port}/app.git`
  const mirror = new GitMirror({ url, dir: join(dir, 'state', 'app.git'), timeoutMs: 30_000 })

  const clone = mirror.fetch()
  const cloneArgv = watchArgv(TOKEN, clone)
  await clone
  t.equal((await mirror.resolveTag('v1.0.0')).commit, upstream.tags['v1.0.0'], 'the clone authenticated')
  const again = mirror.fetch()
  const fetchArgv = watchArgv(TOKEN, again)
  await again

  const recorded = await readFile(wrapper.log, 'utf8')
  t.match(recorded, /clone\0--mirror\0/, 'the wrapper saw the clone')
  t.match(recorded, /fetch\0--prune\0/, 'the wrapper saw the fetch')
  t.notMatch(recorded, TOKEN, 'no git argv holds the token')
  t.same([...(await cloneArgv), ...(await fetchArgv)], [], 'no process on the machine had the token in its argv')
  const origin = await readFile(join(mirror.dir, 'config'), 'utf8')
  t.notMatch(origin, TOKEN, 'the mirror config on disk holds no token')
  t.match(origin, `url = http://127.0.0.1:${server.port}/app.git`)
})

t.test('GitMirror: a mirror cloned with a token in its origin url loses it on the next fetch', async (t) => {
  const { dir, server } = await setup(t)
  const url = `http://${USER}:${TOKEN}@127.0.0.1:${server.port}/app.git`
  const mirrorDir = join(dir, 'state', 'app.git')
  // What an older agent left behind: the token stored as origin's url.
  await run('git', ['clone', '--quiet', '--mirror', url, mirrorDir])
  t.match(await readFile(join(mirrorDir, 'config'), 'utf8'), TOKEN)
  await new GitMirror({ url, dir: mirrorDir, timeoutMs: 30_000 }).fetch()
  t.notMatch(await readFile(join(mirrorDir, 'config'), 'utf8'), TOKEN)
})

t.test('GitMirror: a wrong token fails the fetch without showing the token', async (t) => {
  const { dir, server, wrapper } = await setup(t)
  const wrong = 'wr0ng-t0ken-77'
  const mirror = new GitMirror({
    url: `http://${USER}:${wrong}@127.0.0.1:${server.port}/app.git`,
    dir: join(dir, 'state', 'app.git'),
    timeoutMs: 30_000,
  })
  const err = await t.rejects(mirror.fetch(), { code: 'git_fetch_failed' })
  t.ok(server.denied() > 0, 'the server was asked and said no')
  t.notMatch(JSON.stringify({ message: (err as Error).message, stderr: (err as { stderr?: string }).stderr }), wrong)
  t.notMatch(await readFile(wrapper.log, 'utf8'), wrong)
})

t.test("GitMirror: a refused token fails with git's own reason and a hint about tokens", async (t) => {
  const { dir, server } = await setup(t)
  const mirror = new GitMirror({
    url: `http://${USER}:wr0ng@127.0.0.1:${server.port}/app.git`,
    dir: join(dir, 'state', 'app.git'),
    timeoutMs: 30_000,
  })
  const err = (await t.rejects(mirror.fetch(), { code: 'git_fetch_failed' })) as Error
  t.match(err.message, /fatal: (Authentication failed|could not read Username)/, "git's own words")
  t.match(err.message, /hint: .*token/, 'says what to check')
  t.notMatch(err.message, 'wr0ng')
  // Without credentials at all, git asks for a username (no terminal here) and the hint is the same.
  const anonymous = new GitMirror({
    url: `http://127.0.0.1:${server.port}/app.git`,
    dir: join(dir, 'state', 'anon.git'),
    timeoutMs: 30_000,
  })
  const none = (await t.rejects(anonymous.fetch(), { code: 'git_fetch_failed' })) as Error
  t.match(none.message, /fatal: (Authentication failed|could not read Username)/)
  t.match(none.message, /hint: .*token/)
})
