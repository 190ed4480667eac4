// The switch's commands through a fake host: which switches run `nginx -t`, and what a config broken since a skipped
// test turns into. The real nginx runs the same cases in test/integration/proxy.test.ts.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { NginxUpstream, ProxyError, type NginxHost } from '../../agent/proxy/nginx.js'
import type { CommandResult } from '../../agent/proxy/command.js'
import { tempDir } from '../helpers/tmp.js'

const ok: CommandResult = { ok: true, code: 0, stdout: '', stderr: '', timedOut: false, failure: '' }
const failed = (stderr: string): CommandResult => ({
  ok: false,
  code: 1,
  stdout: '',
  stderr,
  timedOut: false,
  failure: `exited with status 1: ${stderr}`,
})

interface Fake {
  host: NginxHost
  /** `test <port in the file>`, `reload <port>`, `pids`, `confirm` in the order they ran */
  calls: string[]
  /** what `nginx -t` answers (the file it sees is the one on disk) */
  test: CommandResult
  reload: CommandResult
  /** false: the reload never starts new workers (a config nginx refused) */
  confirms: boolean
  /** what signalling the master throws (a stale pid file), or null */
  signalFails: ProxyError | null
}

function fake(file: string): Fake {
  const portOnDisk = async () => (await readFile(file, 'utf8')).match(/:(\d+);/)?.[1] ?? '?'
  const f: Fake = {
    calls: [],
    test: ok,
    reload: ok,
    confirms: true,
    signalFails: null,
    host: {
      run: async (argv) => {
        f.calls.push(`${argv[0]} ${await portOnDisk()}`)
        return argv[0] === 'test' ? f.test : f.reload
      },
      workerPids: async () => {
        f.calls.push('pids')
        return new Set([100])
      },
      waitForNewWorkers: async () => {
        f.calls.push('confirm')
        if (!f.confirms)
          throw new ProxyError('proxy_reload_unconfirmed', 'nginx reload not confirmed within 5 ms: no new worker process appeared')
        return [101]
      },
      signalReload: async () => {
        f.calls.push(`hup ${await portOnDisk()}`)
        if (f.signalFails) throw f.signalFails
      },
    },
  }
  return f
}

async function rig(t: Parameters<typeof tempDir>[0], withPidFile = true, reloadCommand = ['reload']) {
  const dir = await tempDir(t)
  const file = join(dir, 'up.conf')
  const f = fake(file)
  const up = new NginxUpstream({
    upstreamFile: file,
    upstreamName: 'app_production',
    testCommand: ['test'],
    reloadCommand,
    ...(withPidFile ? { pidFile: join(dir, 'nginx.pid') } : {}),
    host: f.host,
  })
  return { file, f, up }
}

t.test('NginxUpstream: a content nginx -t passed before is not tested again (a rollback), the reload still confirmed', async (t) => {
  const { f, up } = await rig(t)
  await up.switchTo(18001)
  await up.switchTo(18002)
  f.calls.length = 0
  t.same(await up.switchTo(18001), { previousPort: 18002 })
  t.same(f.calls, ['pids', 'reload 18001', 'confirm'])
  f.calls.length = 0
  await up.switchTo(18002)
  t.same(f.calls, ['pids', 'reload 18002', 'confirm'])
})

t.test('NginxUpstream: nginx’s own `-s reload` with a pid file is a signal from the agent; any other command runs', async (t) => {
  const nginx = ['/usr/sbin/nginx', '-c', '/etc/nginx/site.conf', '-s', 'reload']
  const signalled = await rig(t, true, nginx)
  await signalled.up.switchTo(18001)
  t.same(signalled.f.calls, ['pids', 'test 18001', 'hup 18001', 'confirm'], 'no nginx started for the reload')

  const unconfirmed = await rig(t, false, nginx)
  await unconfirmed.up.switchTo(18001)
  t.same(unconfirmed.f.calls, ['test 18001', '/usr/sbin/nginx 18001'], 'without a pid file the command runs')

  const systemd = await rig(t, true, ['systemctl', 'reload', 'nginx'])
  await systemd.up.switchTo(18001)
  t.same(systemd.f.calls, ['pids', 'test 18001', 'systemctl 18001', 'confirm'])
})

t.test('NginxUpstream: a reload signal that cannot be sent fails the switch with its reason; the old file is back', async (t) => {
  const { file, f, up } = await rig(t, true, ['nginx', '-s', 'reload'])
  await up.switchTo(18001)
  f.signalFails = new ProxyError('proxy_not_running', 'pid 4242 in /run/nginx.pid is not an nginx master (no such process)')
  f.calls.length = 0
  await t.rejects(up.switchTo(18002), {
    code: 'proxy_reload_failed',
    message: /nginx -s reload\) failed for port 18002: pid 4242 .* not an nginx master/,
  })
  t.same(f.calls, ['pids', 'test 18002', 'hup 18002', 'hup 18001'], 'tried, then the old file back and signalled again')
  t.equal(await readFile(file, 'utf8'), up.render(18001))
})

t.test('NginxUpstream: without a pid file (no confirmed reload) every switch is tested', async (t) => {
  const { f, up } = await rig(t, false)
  await up.switchTo(18001)
  await up.switchTo(18002)
  await up.switchTo(18001)
  t.same(f.calls, ['test 18001', 'reload 18001', 'test 18002', 'reload 18002', 'test 18001', 'reload 18001'])
})

t.test('NginxUpstream: a config broken since the skipped test fails with nginx’s words and the old file back', async (t) => {
  const { file, f, up } = await rig(t)
  await up.switchTo(18001)
  await up.switchTo(18002)
  const live = await readFile(file)
  // Someone broke nginx's config: the reload (a signal) never starts new workers, and nginx -t says why.
  f.test = failed('nginx: [emerg] unknown directive "bogus" in /etc/nginx/nginx.conf:3')
  f.confirms = false
  f.calls.length = 0
  const err = await up.switchTo(18001).catch((e: unknown) => e)
  t.match(err, { code: 'proxy_test_failed', stderr: /unknown directive "bogus"/, message: /failed for port 18001: .*unknown directive/ })
  t.same(
    f.calls,
    ['pids', 'reload 18001', 'confirm', 'test 18001', 'reload 18002'],
    'tested on the new file, then the old file back and reloaded',
  )
  t.same(await readFile(file), live, 'the old file, byte for byte')

  // Nothing is trusted after a failed reload: the next switch to that content is tested first, and stops there.
  f.calls.length = 0
  await t.rejects(up.switchTo(18001), { code: 'proxy_test_failed' })
  t.same(f.calls, ['pids', 'test 18001'])
  t.same(await readFile(file), live)
})

t.test('NginxUpstream: a failed reload after a skipped test answers nginx -t’s words, or its own when the test passes', async (t) => {
  const { file, f, up } = await rig(t)
  await up.switchTo(18001)
  await up.switchTo(18002)
  // `nginx -s reload` parses the config itself: broken, it fails at once.
  f.reload = failed('nginx: [emerg] unknown directive "bogus"')
  f.test = failed('nginx: [emerg] unknown directive "bogus"')
  f.calls.length = 0
  await t.rejects(up.switchTo(18001), { code: 'proxy_test_failed', stderr: /bogus/ })
  t.same(f.calls, ['pids', 'reload 18001', 'test 18001', 'reload 18002'])
  t.equal(await readFile(file, 'utf8'), up.render(18002))

  const other = await rig(t)
  await other.up.switchTo(18001)
  await other.up.switchTo(18002)
  other.f.reload = failed('nginx: [error] kill(1234, 1) failed (3: No such process)')
  await t.rejects(other.up.switchTo(18001), { code: 'proxy_reload_failed', stderr: /No such process/ })
  t.equal(await readFile(other.file, 'utf8'), other.up.render(18002))
})

t.test('NginxUpstream: an unconfirmed reload whose content still passes nginx -t stays unconfirmed', async (t) => {
  const { file, f, up } = await rig(t)
  await up.switchTo(18001)
  await up.switchTo(18002)
  f.confirms = false
  await t.rejects(up.switchTo(18001), { code: 'proxy_reload_unconfirmed' })
  t.same(f.calls.slice(-3), ['confirm', 'test 18001', 'reload 18002'])
  t.equal(await readFile(file, 'utf8'), up.render(18002))
})
