import { execFile } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { createServer, get, type Server } from 'node:http'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import pg from 'pg'
import t from 'tap'
import { dockerAvailable, ensureBaseImage, removeContainersByLabel } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { makeGitRepo } from '../helpers/git.js'
import { startNginx, writeUpstreamFile } from '../helpers/nginx.js'
import { createTempDatabase, pgAvailable, pgUrl } from '../helpers/pg.js'
import { freePort, freePorts } from '../helpers/ports.js'
import { tempDir } from '../helpers/tmp.js'

const run = promisify(execFile)

async function commandExists(cmd: string, args: string[]): Promise<boolean> {
  return await run(cmd, args).then(
    () => true,
    () => false,
  )
}

// A loopback HTTP server answering every request with `body`.
async function serve(body: string): Promise<{ server: Server; port: number }> {
  const server = createServer((_req, res) => res.end(body))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no TCP address')
  return { server, port: address.port }
}

// One request on a fresh connection, so nginx workers retired by a reload are never reused.
function fetchText(port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        body += chunk
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    }).once('error', reject)
  })
}

const [hasGit, hasDocker, hasNginx, hasPg] = await Promise.all([
  commandExists('git', ['--version']),
  dockerAvailable(),
  commandExists('nginx', ['-v']),
  pgAvailable(),
])

t.test('ports: freePorts returns distinct loopback ports that can be bound', async (t) => {
  const ports = await freePorts(5)
  t.equal(new Set(ports).size, 5)
  const port = await freePort()
  t.ok(port > 0 && port < 65536)
  const { server, port: other } = await serve('x')
  t.not(other, 0)
  server.close()
})

t.test('git: makeGitRepo tags resolve to the commits of their steps', { skip: skipUnless(hasGit, 'git') }, async (t) => {
  const repo = await makeGitRepo(join(await tempDir(t), 'app'), [
    { files: { Dockerfile: 'FROM scratch\n', 'src/app.txt': 'one' }, tag: 'v1.0.0', annotated: true },
    { files: { 'src/app.txt': 'two' }, tag: 'v1.1.0', message: 'second' },
    { files: { 'README.md': 'three' } },
  ])
  t.equal(repo.commits.length, 3)
  t.equal(new Set(repo.commits).size, 3)
  t.same(repo.tags, { 'v1.0.0': repo.commits[0], 'v1.1.0': repo.commits[1] })
  const git = async (...args: string[]): Promise<string> => (await run('git', args, { cwd: repo.path })).stdout.trim()
  t.equal(await git('rev-parse', 'v1.0.0^{commit}'), repo.commits[0])
  t.equal(await git('rev-parse', 'v1.1.0^{commit}'), repo.commits[1])
  t.equal(await git('cat-file', '-t', 'v1.0.0'), 'tag', 'annotated tag is a tag object')
  t.equal(await git('cat-file', '-t', 'v1.1.0'), 'commit', 'lightweight tag points at the commit')
  t.equal(await git('rev-parse', 'main'), repo.commits[2])
  t.equal(await git('symbolic-ref', '--short', 'HEAD'), 'main')
  t.equal(await git('show', 'v1.1.0:src/app.txt'), 'two')
  t.equal(await git('log', '-1', '--format=%s', 'v1.1.0'), 'second')
})

t.test('docker: base image is built once and runs busybox on the host network', { skip: skipUnless(hasDocker, 'docker') }, async (t) => {
  const label = `deploy-agent.test=helpers-${process.pid}`
  t.teardown(() => removeContainersByLabel(label))

  const [a, b] = await Promise.all([ensureBaseImage(), ensureBaseImage()])
  t.equal(a, 'deploy-agent-test-base:1')
  t.equal(b, a)
  await run('docker', ['image', 'inspect', a])

  const { stdout } = await run('docker', ['run', '--rm', '--network', 'host', a, 'busybox', 'echo', 'hi'])
  t.equal(stdout, 'hi\n')

  const { server, port } = await serve('from the host')
  t.teardown(() => {
    server.close()
  })
  const fetched = await run('docker', [
    'run',
    '--rm',
    '--network',
    'host',
    '--label',
    label,
    a,
    'wget',
    '-q',
    '-O',
    '-',
    `http://127.0.0.1:${port}/`,
  ])
  t.equal(fetched.stdout, 'from the host', 'a container reaches a loopback server')

  await run('docker', ['run', '--detach', '--network', 'host', '--label', label, a, 'sleep', '300'])
  await removeContainersByLabel(label)
  const left = await run('docker', ['ps', '--all', '--quiet', '--filter', `label=${label}`])
  t.equal(left.stdout.trim(), '', 'removeContainersByLabel removed the running container')
})

t.test('nginx: proxies to the upstream file and a reload switches the target', { skip: skipUnless(hasNginx, 'nginx') }, async (t) => {
  const dir = await tempDir(t)
  const blue = await serve('blue')
  const green = await serve('green')
  t.teardown(() => {
    blue.server.close()
    green.server.close()
  })

  const upstreamFile = join(dir, 'upstream.conf')
  await writeUpstreamFile(upstreamFile, 'app_test', blue.port)
  const nginx = await startNginx(dir, { port: await freePort(), upstreamFile, upstreamName: 'app_test' })
  t.teardown(() => nginx.stop())

  t.same(await fetchText(nginx.port), { status: 200, body: 'blue' })

  await writeUpstreamFile(upstreamFile, 'app_test', green.port)
  const [testCmd, ...testArgs] = nginx.testCommand as [string, ...string[]]
  await run(testCmd, testArgs)
  const [reloadCmd, ...reloadArgs] = nginx.reloadCommand as [string, ...string[]]
  await run(reloadCmd, reloadArgs)

  let body = ''
  for (let i = 0; i < 100 && body !== 'green'; i++) {
    body = (await fetchText(nginx.port)).body
    if (body !== 'green') await sleep(50)
  }
  t.equal(body, 'green', 'traffic moved to the new upstream after reload')

  await writeFile(upstreamFile, 'upstream app_test { server 127.0.0.1:notaport; }\n')
  await t.rejects(run(testCmd, testArgs), 'nginx -t refuses a broken upstream file')

  await nginx.stop()
  await t.rejects(fetchText(nginx.port), 'nothing listens after stop()')
})

t.test('nginx: startNginx writes a placeholder upstream and reports a failed start', { skip: skipUnless(hasNginx, 'nginx') }, async (t) => {
  const dir = await tempDir(t)
  const [port] = (await freePorts(1)) as [number]
  const upstreamFile = join(dir, 'missing-upstream.conf')
  const nginx = await startNginx(dir, { port, upstreamFile, upstreamName: 'placeholder' })
  t.teardown(() => nginx.stop())
  t.equal((await fetchText(port)).status, 502, 'placeholder upstream has nothing behind it')

  const second = join(dir, 'second')
  await t.rejects(
    startNginx(second, { port, upstreamFile, upstreamName: 'placeholder' }),
    /nginx did not start/,
    'a port already in use is reported with the error log',
  )
})

t.test('pg: createTempDatabase gives a usable database and drops it in teardown', { skip: skipUnless(hasPg, 'PostgreSQL') }, async (t) => {
  let name = ''
  await t.test('inner', async (t) => {
    const db = await createTempDatabase(t)
    name = db.name
    t.equal(db.url, pgUrl(db.name))
    const client = new pg.Client({ connectionString: db.url })
    await client.connect()
    t.teardown(() => client.end())
    await client.query('CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)')
    await client.query('INSERT INTO notes (body) VALUES ($1), ($2)', ['a', 'b'])
    const { rows } = await client.query<{ n: string }>('SELECT count(*) AS n FROM notes')
    t.equal(rows[0]?.n, '2')
    const current = await client.query<{ db: string }>('SELECT current_database() AS db')
    t.equal(current.rows[0]?.db, db.name)
  })

  const admin = new pg.Client({ connectionString: pgUrl() })
  await admin.connect()
  t.teardown(() => admin.end())
  const { rowCount } = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])
  t.equal(rowCount, 0, `${name} was dropped`)
})
