import { execFile, spawn } from 'node:child_process'
import { chmod, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import {
  MANAGED_HEADER,
  NginxUpstream,
  ProxyError,
  probeThrough,
  waitForNewWorkers,
  workerPids,
  type NginxUpstreamOptions,
} from '../../agent/proxy/nginx.js'
import { skipUnless } from '../helpers/engines.js'
import { startNginx, writeUpstreamFile, type NginxInstance } from '../helpers/nginx.js'
import { freePort } from '../helpers/ports.js'
import { tempDir } from '../helpers/tmp.js'

type Teardown = { teardown: (fn: () => unknown) => void }

const hasNginx = await promisify(execFile)('nginx', ['-v']).then(
  () => true,
  () => false,
)
const NAME = 'app_test'
const node = (script: string): string[] => [process.execPath, '-e', script]

// A loopback backend answering every request with its color.
async function backend(t: Teardown, color: string): Promise<number> {
  const server = createServer((_req, res) => res.end(color))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    server.closeAllConnections()
    server.close()
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no TCP address')
  return address.port
}

interface Rig {
  dir: string
  file: string
  pidFile: string
  nginx: NginxInstance
  blue: number
  green: number
  upstream: (extra?: Partial<NginxUpstreamOptions>) => NginxUpstream
  through: () => Promise<string>
}

// nginx on a free port proxying to blue, and two backends.
async function rig(t: Teardown): Promise<Rig> {
  const dir = await tempDir(t)
  const file = join(dir, 'upstream.conf')
  const [blue, green] = [await backend(t, 'blue'), await backend(t, 'green')]
  await writeUpstreamFile(file, NAME, blue)
  const nginx = await startNginx(dir, { port: await freePort(), upstreamFile: file, upstreamName: NAME })
  t.teardown(() => nginx.stop())
  const pidFile = join(dir, 'nginx.pid')
  const upstream = (extra: Partial<NginxUpstreamOptions> = {}): NginxUpstream =>
    new NginxUpstream({
      upstreamFile: file,
      upstreamName: NAME,
      testCommand: nginx.testCommand,
      reloadCommand: nginx.reloadCommand,
      pidFile,
      commandTimeoutMs: 10_000,
      ...extra,
    })
  const through = async (): Promise<string> => {
    const res = await probeThrough(`http://127.0.0.1:${nginx.port}/`, 5000)
    if (res.status !== 200) throw new Error(`HTTP ${res.status} through nginx: ${res.body}`)
    return res.body
  }
  return { dir, file, pidFile, nginx, blue, green, upstream, through }
}

const modeOf = async (path: string): Promise<number> => (await stat(path)).mode & 0o777

t.test('NginxUpstream: renders the managed format and parses it back', async (t) => {
  const dir = t.testdir({ 'ours.conf': '', 'helper.conf': `upstream ${NAME} { server 127.0.0.1:18002; }\n` })
  const up = new NginxUpstream({ upstreamFile: join(dir, 'ours.conf'), upstreamName: NAME, testCommand: ['true'], reloadCommand: ['true'] })
  t.equal(up.render(18001), `${MANAGED_HEADER}\nupstream app_test { server 127.0.0.1:18001; }\n`)
  t.equal(MANAGED_HEADER, '# managed by deploy-agent; do not edit')
  t.equal(up.parse(up.render(18001)), 18001)
  t.equal(up.parse('upstream app_test {\n  server 127.0.0.1:9;\n}'), 9)
  t.equal(up.parse('upstream other { server 127.0.0.1:18001; }\n'), null, 'another upstream')
  t.equal(up.parse('upstream app_test { server 10.0.0.1:18001; }\n'), 18001, 'a node’s address, as a swarm env writes')
  t.equal(up.parse('upstream app_test { server app.internal:18001; }\n'), null, 'a host name the agent never writes')
  t.equal(up.parse('upstream app_test { server 127.0.0.1:70000; }\n'), null, 'not a port')
  t.equal(up.parse('upstream app_test { server 127.0.0.1:1; server 127.0.0.1:2; }\n'), null, 'two servers')
  t.equal(up.parse('garbage'), null)
  t.equal(await up.currentPort(), null, 'empty file')
  const helper = new NginxUpstream({
    upstreamFile: join(dir, 'helper.conf'),
    upstreamName: NAME,
    testCommand: ['true'],
    reloadCommand: ['true'],
  })
  t.equal(await helper.currentPort(), 18002)
  const missing = new NginxUpstream({
    upstreamFile: join(dir, 'missing.conf'),
    upstreamName: NAME,
    testCommand: ['true'],
    reloadCommand: ['true'],
  })
  t.equal(await missing.currentPort(), null)
  const unreadable = new NginxUpstream({ upstreamFile: dir, upstreamName: NAME, testCommand: ['true'], reloadCommand: ['true'] })
  await t.rejects(unreadable.currentPort(), { code: 'EISDIR' })

  for (const port of [0, 65536, 1.5, Number.NaN]) t.throws(() => up.render(port), { code: 'proxy_invalid_port', statusCode: 400 })
  t.throws(() => new NginxUpstream({ upstreamFile: 'x', upstreamName: 'a b;', testCommand: ['true'], reloadCommand: ['true'] }), {
    code: 'proxy_invalid_config',
  })
  t.throws(() => new NginxUpstream({ upstreamFile: 'x', upstreamName: NAME, testCommand: [], reloadCommand: ['true'] }), {
    code: 'proxy_invalid_config',
    message: 'testCommand is empty',
  })
})

t.test('NginxUpstream: switchTo writes the file 0644 (creating its directory), tests, reloads', async (t) => {
  const dir = t.testdir()
  const log = join(dir, 'calls')
  const record = (name: string): string[] => node(`require('fs').appendFileSync(${JSON.stringify(log)}, '${name}\\n')`)
  const file = join(dir, 'sub', 'up.conf')
  const up = new NginxUpstream({ upstreamFile: file, upstreamName: NAME, testCommand: record('test'), reloadCommand: record('reload') })
  t.same(await up.switchTo(18001), { previousPort: null })
  t.equal(await readFile(file, 'utf8'), up.render(18001))
  t.equal(await modeOf(file), 0o644)
  t.same(await up.switchTo(18002), { previousPort: 18001 })
  t.equal(await up.currentPort(), 18002)
  t.equal(await readFile(log, 'utf8'), 'test\nreload\ntest\nreload\n')
  await t.rejects(up.switchTo(0), { code: 'proxy_invalid_port' })
  t.equal(await up.currentPort(), 18002)
})

t.test('NginxUpstream: concurrent switches run one after the other', async (t) => {
  const dir = t.testdir()
  const up = new NginxUpstream({ upstreamFile: join(dir, 'up.conf'), upstreamName: NAME, testCommand: ['true'], reloadCommand: ['true'] })
  const results = await Promise.all([up.switchTo(1001), up.switchTo(1002), up.switchTo(1003)])
  t.same(
    results.map((r) => r.previousPort),
    [null, 1001, 1002],
  )
  t.equal(await up.currentPort(), 1003)
})

t.test('NginxUpstream: a failed test restores the old file byte for byte, with its mode', async (t) => {
  const old = '# hand-written, odd spacing kept\nupstream app_test {server 127.0.0.1:18001;}\n\n'
  const dir = t.testdir({ 'up.conf': old })
  const file = join(dir, 'up.conf')
  await chmod(file, 0o640)
  const up = new NginxUpstream({
    upstreamFile: file,
    upstreamName: NAME,
    reloadCommand: ['false'],
    testCommand: node('process.stderr.write("nginx: [emerg] broken"); process.exit(1)'),
  })
  const err = await up.switchTo(18002).catch((e: unknown) => e)
  t.ok(err instanceof ProxyError)
  t.match(err, {
    code: 'proxy_test_failed',
    statusCode: 502,
    stderr: 'nginx: [emerg] broken',
    message: /exited with status 1: nginx: \[emerg\] broken/,
  })
  t.equal(await readFile(file, 'utf8'), old)
  t.equal(await modeOf(file), 0o640)

  const fresh = join(dir, 'fresh.conf')
  const none = new NginxUpstream({ upstreamFile: fresh, upstreamName: NAME, testCommand: ['false'], reloadCommand: ['true'] })
  await t.rejects(none.switchTo(18002), { code: 'proxy_test_failed' })
  await t.rejects(stat(fresh), { code: 'ENOENT' }, 'no file before, none after')
  t.same((await readdir(dir)).sort(), ['up.conf'], 'no temp files left')
})

t.test('NginxUpstream: a missing or hanging command fails the switch', async (t) => {
  const dir = t.testdir({ 'up.conf': 'upstream app_test { server 127.0.0.1:18001; }\n' })
  const file = join(dir, 'up.conf')
  const missing = new NginxUpstream({
    upstreamFile: file,
    upstreamName: NAME,
    testCommand: [join(dir, 'no-such-nginx'), '-t'],
    reloadCommand: ['true'],
  })
  await t.rejects(missing.switchTo(18002), { code: 'proxy_test_failed', message: /ENOENT/ })
  const slow = new NginxUpstream({
    upstreamFile: file,
    upstreamName: NAME,
    testCommand: ['sleep', '5'],
    reloadCommand: ['true'],
    commandTimeoutMs: 100,
  })
  const started = Date.now()
  await t.rejects(slow.switchTo(18002), { code: 'proxy_test_failed', message: /timed out after 100 ms/ })
  t.ok(Date.now() - started < 3000)
  t.equal(await readFile(file, 'utf8'), 'upstream app_test { server 127.0.0.1:18001; }\n')
})

t.test('NginxUpstream: a failed reload restores the old file and reloads again', async (t) => {
  const old = 'upstream app_test { server 127.0.0.1:18001; }\n'
  const dir = t.testdir({ 'up.conf': old })
  const file = join(dir, 'up.conf')
  const log = join(dir, 'reloads')
  const up = new NginxUpstream({
    upstreamFile: file,
    upstreamName: NAME,
    testCommand: ['true'],
    reloadCommand: node(
      `const fs = require('fs'); fs.appendFileSync(${JSON.stringify(log)}, fs.readFileSync(${JSON.stringify(file)}, 'utf8')); process.stderr.write('signal failed'); process.exit(2)`,
    ),
  })
  await t.rejects(up.switchTo(18002), { code: 'proxy_reload_failed', stderr: 'signal failed', message: /status 2: signal failed/ })
  t.equal(await readFile(file, 'utf8'), old)
  t.equal(await readFile(log, 'utf8'), up.render(18002) + old, 'reloaded with the new file, then again with the old one')
})

t.test(
  'NginxUpstream: switchTo moves traffic from blue to green, confirmed by new workers',
  { skip: skipUnless(hasNginx, 'nginx') },
  async (t) => {
    const r = await rig(t)
    const up = r.upstream()
    t.equal(await up.currentPort(), r.blue)
    t.equal(await r.through(), 'blue')

    const before = await workerPids(r.pidFile)
    t.ok(before.size >= 1, 'the master has workers')
    t.same(await up.switchTo(r.green), { previousPort: r.blue })
    t.equal(await readFile(r.file, 'utf8'), up.render(r.green))
    const fresh = await waitForNewWorkers(r.pidFile, before, 5000)
    t.ok(fresh.length >= 1 && fresh.every((pid) => !before.has(pid)), `new workers ${fresh.join(', ')}`)
    for (let i = 0; i < 5; i++) t.equal(await r.through(), 'green', 'every new connection reaches green')

    t.same(await up.switchTo(r.blue), { previousPort: r.green })
    t.equal(await r.through(), 'blue')
  },
)

t.test(
  'NginxUpstream: nginx -t refusing the new file keeps the old file and the traffic',
  { skip: skipUnless(hasNginx, 'nginx') },
  async (t) => {
    const r = await rig(t)
    const old = await readFile(r.file)
    // An upstream of another name leaves nginx's proxy_pass pointing at a host that does not exist: `nginx -t` fails.
    const wrong = new NginxUpstream({
      upstreamFile: r.file,
      upstreamName: 'not_the_one',
      testCommand: r.nginx.testCommand,
      reloadCommand: r.nginx.reloadCommand,
      pidFile: r.pidFile,
    })
    const workers = await workerPids(r.pidFile)
    const err = await wrong.switchTo(r.green).catch((e: unknown) => e)
    t.match(err, { code: 'proxy_test_failed', stderr: /host not found in upstream/ })
    t.same(await readFile(r.file), old, 'the old file, byte for byte')
    t.same(await workerPids(r.pidFile), workers, 'nginx was not reloaded')
    t.equal(await r.through(), 'blue')

    await t.rejects(r.upstream({ testCommand: ['false'] }).switchTo(r.green), { code: 'proxy_test_failed' })
    t.same(await readFile(r.file), old)
    t.equal(await r.through(), 'blue')
  },
)

t.test(
  'NginxUpstream: a switch back to a content nginx -t passed skips the test; a config broken since is caught with nginx’s words',
  { skip: skipUnless(hasNginx, 'nginx') },
  async (t) => {
    const r = await rig(t)
    // The real `nginx -t`, each run noted.
    const runs = join(r.dir, 'tests')
    const [nginx, ...testArgs] = r.nginx.testCommand
    const counted = node(
      `require('fs').appendFileSync(${JSON.stringify(runs)}, '.'); ` +
        `process.exit(require('child_process').spawnSync(${JSON.stringify(nginx)}, ${JSON.stringify(testArgs)}, { stdio: 'inherit' }).status ?? 1)`,
    )
    const tested = async (): Promise<number> => (await readFile(runs, 'utf8').catch(() => '')).length
    const master = Number((await readFile(r.pidFile, 'utf8')).trim())
    // Reloaded by a signal from a helper (as a service manager does: no config parsed on the way) and by
    // `nginx -s reload`, which the agent sends as the same signal itself when it knows the pid file.
    const bySignal = r.upstream({ testCommand: counted, reloadCommand: node(`process.kill(${master}, 'SIGHUP')`), confirmTimeoutMs: 1000 })
    const byNginx = r.upstream({ testCommand: counted, confirmTimeoutMs: 1000 })
    for (const up of [bySignal, byNginx]) {
      await up.switchTo(r.green)
      await up.switchTo(r.blue)
    }
    t.equal(await tested(), 4)
    await bySignal.switchTo(r.green)
    t.equal(await r.through(), 'green')
    await byNginx.switchTo(r.blue)
    t.equal(await r.through(), 'blue')
    t.equal(await tested(), 4, 'no test for contents tested before')

    // Someone breaks nginx's config: the reload does not take, and `nginx -t` then says why.
    await writeFile(r.nginx.configPath, `bogus_directive on;\n${await readFile(r.nginx.configPath, 'utf8')}`)
    const old = await readFile(r.file)
    for (const up of [bySignal, byNginx]) {
      const err = await up.switchTo(r.green).catch((e: unknown) => e)
      t.match(err, { code: 'proxy_test_failed', stderr: /unknown directive "bogus_directive"/ })
      t.same(await readFile(r.file), old, 'the old file, byte for byte')
      t.equal(await r.through(), 'blue')
    }
    t.equal(await tested(), 6)
  },
)

t.test('NginxUpstream: a reload that never takes is unconfirmed and rolled back', { skip: skipUnless(hasNginx, 'nginx') }, async (t) => {
  const r = await rig(t)
  const old = await readFile(r.file)
  const up = r.upstream({ reloadCommand: ['true'], confirmTimeoutMs: 300 })
  const started = Date.now()
  await t.rejects(up.switchTo(r.green), { code: 'proxy_reload_unconfirmed', message: /no new worker process appeared/ })
  t.ok(Date.now() - started < 3000)
  t.same(await readFile(r.file), old)
  t.equal(await r.through(), 'blue')

  await t.rejects(waitForNewWorkers(r.pidFile, await workerPids(r.pidFile), 50, { intervalMs: 10 }), { code: 'proxy_reload_unconfirmed' })
})

t.test('NginxUpstream: a pid file naming no running master fails before any reload', { skip: skipUnless(hasNginx, 'nginx') }, async (t) => {
  const r = await rig(t)
  const old = await readFile(r.file)
  const missing = r.upstream({ pidFile: join(r.dir, 'missing.pid') })
  await t.rejects(missing.switchTo(r.green), { code: 'proxy_not_running' })
  t.same(await readFile(r.file), old)
  await writeFile(join(r.dir, 'bad.pid'), 'nope\n')
  await t.rejects(workerPids(join(r.dir, 'bad.pid')), { code: 'proxy_not_running', message: /holds no pid/ })
  await writeFile(join(r.dir, 'gone.pid'), '999999999\n')
  await t.rejects(workerPids(join(r.dir, 'gone.pid')), { code: 'proxy_not_running', message: /is not running/ })
  t.equal(await r.through(), 'blue')

  // A stale pid file whose pid now belongs to another process: that process is never sent the reload's SIGHUP.
  const other = spawn('sleep', ['30'], { stdio: 'ignore' })
  t.teardown(() => other.kill('SIGKILL'))
  await writeFile(join(r.dir, 'reused.pid'), `${other.pid}\n`)
  const reused = r.upstream({ pidFile: join(r.dir, 'reused.pid') })
  await t.rejects(reused.switchTo(r.green), { code: 'proxy_reload_failed', message: /is not an nginx master but "sleep 30"/ })
  t.equal(other.exitCode ?? other.signalCode, null, 'the other process was not signalled')
  t.same(await readFile(r.file), old)
  t.equal(await r.through(), 'blue')
})

t.test('NginxUpstream: switching back and forth under load drops no request', { skip: skipUnless(hasNginx, 'nginx') }, async (t) => {
  const r = await rig(t)
  const up = r.upstream()
  const url = `http://127.0.0.1:${r.nginx.port}/`
  const served = { blue: 0, green: 0 }
  const failures: string[] = []
  let running = true
  const loop = async (): Promise<void> => {
    while (running) {
      try {
        const res = await probeThrough(url, 5000)
        if (res.status === 200 && (res.body === 'blue' || res.body === 'green')) served[res.body]++
        else failures.push(`HTTP ${res.status}: ${res.body.slice(0, 200)}`)
      } catch (err) {
        failures.push((err as Error).message)
      }
    }
  }
  const loops = Array.from({ length: 20 }, loop)
  const colors: string[] = []
  try {
    for (const [i, port] of [r.green, r.blue, r.green, r.blue, r.green].entries()) {
      await new Promise((resolve) => setTimeout(resolve, 100))
      await up.switchTo(port)
      colors.push(await r.through())
      t.equal(colors[i], port === r.green ? 'green' : 'blue', `switch ${i + 1} took`)
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  } finally {
    running = false
    await Promise.all(loops)
  }
  t.equal(failures.length, 0, `failed requests: ${failures.slice(0, 5).join(' | ')}`)
  t.ok(served.blue > 0 && served.green > 0, `served blue ${served.blue}, green ${served.green}`)
})

// Regression (issue: nginx could not start before the first deploy, its site including a file that did not exist).
t.test(
  'NginxUpstream.ensureFile: a missing upstream file is written with a down server that nginx accepts',
  { skip: skipUnless(hasNginx, 'nginx') },
  async (t) => {
    const dir = await tempDir(t)
    const file = join(dir, 'sub', 'up.conf')
    const up = new NginxUpstream({ upstreamFile: file, upstreamName: NAME, testCommand: ['true'], reloadCommand: ['true'] })
    t.equal(await up.ensureFile(18999), true, 'written')
    t.equal(await up.currentPort(), null, 'it names no live port: the first deploy still goes to the first port')
    const conf = join(dir, 'nginx.conf')
    await writeFile(
      conf,
      `pid ${join(dir, 'nginx.pid')};\nerror_log ${join(dir, 'error.log')};\nevents {}\nhttp { include ${file}; server { listen 127.0.0.1:1; location / { proxy_pass http://${NAME}; } } }\n`,
    )
    const test = await promisify(execFile)('nginx', ['-t', '-p', dir, '-c', conf]).then(
      () => 'ok',
      (err: { stderr?: string }) => err.stderr ?? 'failed',
    )
    t.equal(test, 'ok', 'nginx -t accepts a site that includes it')
    const before = await readFile(file, 'utf8')
    t.equal(await up.ensureFile(18999), false, 'an existing file is left as it is')
    await up.switchTo(18998)
    t.equal(await up.ensureFile(18999), false)
    t.equal(await up.currentPort(), 18998, 'a real upstream is never replaced by the placeholder')
    t.not(await readFile(file, 'utf8'), before)
  },
)
