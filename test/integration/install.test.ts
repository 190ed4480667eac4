// The server install: systemd-analyze checks the unit files, and scripts/install.sh runs for real (useradd,
// install, keygen, check-config) into a temp root standing in for / — twice, and the second run must change nothing.
import { execFile } from 'node:child_process'
import { createHash, createPrivateKey, createPublicKey } from 'node:crypto'
import { copyFile, cp, lstat, mkdir, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { parse } from 'yaml'
import { runBashScript, runCli } from '../helpers/cli.js'
import { skipUnless } from '../helpers/engines.js'
import { tempDir } from '../helpers/tmp.js'

const run = promisify(execFile)
const repo = resolve(import.meta.dirname, '../..')
const INSTALL = join(repo, 'scripts/install.sh')
const UNITS = ['deploy-agent.service', 'deploy-agent-nginx-reload.path', 'deploy-agent-nginx-reload.service']

const haveAnalyze = await run('systemd-analyze', ['--version']).then(
  () => true,
  () => false,
)
const isRoot = process.getuid?.() === 0
// The first install builds dist/ (tsc, tens of seconds); the later runs install that same build (DEPLOY_AGENT_DIST).
const sharedDist = join(await tempDir(t, 'deploy-agent-dist-'), 'dist')

/** `systemd-analyze verify` on unit files: it exits 0 on many mistakes (an unknown key, a bad value), so any output fails too. */
async function verifyUnits(files: string[]): Promise<{ ok: boolean; output: string }> {
  try {
    const { stdout, stderr } = await run('systemd-analyze', ['verify', ...files], { env: { ...process.env, SYSTEMD_LOG_COLOR: '0' } })
    const output = `${stdout}${stderr}`.trim()
    return { ok: output === '', output }
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string }
    return { ok: false, output: `${e.stdout ?? ''}${e.stderr ?? e.message}`.trim() }
  }
}

t.test(
  'systemd units: systemd-analyze verify finds nothing; a broken copy is caught',
  { skip: skipUnless(haveAnalyze, 'systemd-analyze') },
  async (t) => {
    const dir = await tempDir(t)
    // Together, so the path unit finds the service it starts.
    for (const unit of UNITS) await copyFile(join(repo, 'systemd', unit), join(dir, unit))
    const clean = await verifyUnits(UNITS.map((u) => join(dir, u)))
    t.ok(clean.ok, 'the repository units verify cleanly', { output: clean.output })

    const text = await readFile(join(dir, 'deploy-agent.service'), 'utf8')
    const broken: Array<[string, string]> = [
      ['a bad value', text.replace('Restart=on-failure', 'Restart=sometimes')],
      ['an unknown key', text.replace('[Service]\n', '[Service]\nRestartt=on-failure\n')],
      ['a broken section header', text.replace('[Service]', '[Service')],
    ]
    for (const [what, content] of broken) {
      t.not(content, text, `${what} was put in`)
      await writeFile(join(dir, 'deploy-agent.service'), content)
      const result = await verifyUnits([join(dir, 'deploy-agent.service')])
      t.notOk(result.ok, `${what} fails the check`, { output: result.output })
    }
  },
)

interface Entry {
  kind: 'file' | 'dir' | 'link'
  mode: number
  uid: number
  gid: number
  mtimeMs?: number
  sha256?: string
  target?: string
}

/** Every path under `dir` with its kind, mode, owner, and a file's checksum and mtime; symlinks are not followed. */
async function snapshot(dir: string, base = dir, out: Record<string, Entry> = {}): Promise<Record<string, Entry>> {
  for (const name of (await readdir(dir)).sort()) {
    const path = join(dir, name)
    const st = await lstat(path)
    const key = path.slice(base.length)
    const common = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid }
    if (st.isSymbolicLink()) out[key] = { kind: 'link', ...common, target: await readlink(path) }
    else if (st.isDirectory()) {
      out[key] = { kind: 'dir', ...common }
      await snapshot(path, base, out)
    } else
      out[key] = {
        kind: 'file',
        ...common,
        mtimeMs: st.mtimeMs,
        sha256: createHash('sha256')
          .update(await readFile(path))
          .digest('hex'),
      }
  }
  return out
}

t.test('install.sh: into a temp root, twice; the second run changes nothing', { skip: skipUnless(isRoot, 'root') }, async (t) => {
  const root = await tempDir(t, 'deploy-agent-root-')
  // What useradd --root needs of a system; the app's node_modules stand in for `npm ci`.
  await mkdir(join(root, 'etc'))
  await writeFile(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/bash\n')
  await writeFile(join(root, 'etc/group'), 'root:x:0:\n')
  await writeFile(join(root, 'etc/shadow'), 'root:*:19000:0:99999:7:::\n', { mode: 0o640 })
  await writeFile(join(root, 'etc/gshadow'), 'root:*::\n', { mode: 0o640 })
  await mkdir(join(root, 'opt/deploy-agent'), { recursive: true })
  await symlink(join(repo, 'node_modules'), join(root, 'opt/deploy-agent/node_modules'))
  const env = { DEPLOY_AGENT_ROOT: root, DEPLOY_AGENT_SKIP_NPM: '1', DEPLOY_AGENT_AUDIENCE: 'web-1.example.com' }
  const at = (path: string) => join(root, path)
  const install = () => runBashScript(INSTALL, [], { ...env, DEPLOY_AGENT_DIST: sharedDist }, 300_000)

  const first = await runBashScript(INSTALL, [], env, 300_000)
  t.equal(first.code, 0, 'exit 0', { output: `${first.stdout}\n${first.stderr}` })
  t.match(first.stdout, /install\.sh: build\n/, 'it built dist/')
  await cp(at('opt/deploy-agent/dist'), sharedDist, { recursive: true })
  t.match(
    first.stdout,
    /systemd is not running this machine \(or DEPLOY_AGENT_ROOT is set\); to start the agent run:\n {2}systemctl daemon-reload && systemctl enable --now deploy-agent-nginx-reload\.path deploy-agent\.service/,
  )

  const passwd = await readFile(at('etc/passwd'), 'utf8')
  const user = /^deploy-agent:x:(\d+):(\d+):[^:]*:\/var\/lib\/deploy-agent:\/usr\/sbin\/nologin$/m.exec(passwd)
  if (!user) throw new Error(`no deploy-agent system user in:\n${passwd}`)
  const [uid, gid] = [Number(user[1]), Number(user[2])]
  t.ok(uid < 1000, 'a system uid')
  t.match(await readFile(at('etc/group'), 'utf8'), /^docker:x:\d+:deploy-agent$/m, 'in group docker')

  const files = await snapshot(root)
  const expect: Array<[string, Partial<Entry>]> = [
    ['/etc/deploy-agent', { kind: 'dir', mode: 0o750, uid: 0, gid }],
    ['/etc/deploy-agent/keys', { kind: 'dir', mode: 0o750, uid: 0, gid }],
    ['/var/lib/deploy-agent', { kind: 'dir', mode: 0o750, uid, gid }],
    ['/var/backups/deploy-agent', { kind: 'dir', mode: 0o750, uid, gid }],
    ['/etc/nginx/deploy-agent', { kind: 'dir', mode: 0o755, uid, gid }],
    ['/etc/deploy-agent/agent.yaml', { kind: 'file', mode: 0o640, uid: 0, gid }],
    ['/etc/deploy-agent/keys/ci-main.key', { kind: 'file', mode: 0o600, uid: 0, gid: 0 }],
    ['/etc/deploy-agent/keys/ci-main.pub', { kind: 'file', mode: 0o644, uid: 0, gid }],
    ['/etc/deploy-agent/keys/status.token', { kind: 'file', mode: 0o640, uid: 0, gid }],
    ['/usr/local/bin/deploy-agent', { kind: 'link', target: '/opt/deploy-agent/bin/deploy-agent.js' }],
    ['/opt/deploy-agent/bin/deploy-agent.js', { kind: 'file', mode: 0o755, uid: 0, gid: 0 }],
    ['/opt/deploy-agent/dist/cli/main.js', { kind: 'file', mode: 0o644, uid: 0, gid: 0 }],
    ['/usr/share/doc/deploy-agent/README.md', { kind: 'file', mode: 0o644, uid: 0, gid: 0 }],
    ['/usr/share/doc/deploy-agent/docs/operations.md', { kind: 'file', mode: 0o644, uid: 0, gid: 0 }],
    ...UNITS.map((u): [string, Partial<Entry>] => [`/etc/systemd/system/${u}`, { kind: 'file', mode: 0o644, uid: 0, gid: 0 }]),
  ]
  for (const [path, want] of expect) t.match(files[path], want, path)
  t.notOk(
    Object.keys(files).some((p) => p.startsWith('/opt/deploy-agent/test/')),
    'tests are not installed',
  )
  // The installed copy runs compiled JavaScript only: without agent/ the bin has nothing to hand to a TS loader.
  t.notOk(
    Object.keys(files).some((p) => p.startsWith('/opt/deploy-agent/agent/') || p === '/opt/deploy-agent/tsconfig.json'),
    'the TypeScript sources are not installed',
  )
  t.match(await readFile(at('opt/deploy-agent/dist/cli/main.js'), 'utf8'), /^import /m, 'dist/ holds the compiled agent')
  const installedRun = await run('env', ['-u', 'NODE_OPTIONS', process.execPath, at('opt/deploy-agent/bin/deploy-agent.js'), '--version'], {
    env: { ...process.env, TSX_DISABLE_CACHE: '' },
  })
  t.equal(installedRun.stdout.trim(), JSON.parse(await readFile(join(repo, 'package.json'), 'utf8')).version, 'the installed bin runs')

  const priv = createPrivateKey(await readFile(at('etc/deploy-agent/keys/ci-main.key')))
  t.equal(
    createPublicKey(priv).export({ type: 'spki', format: 'pem' }).toString(),
    await readFile(at('etc/deploy-agent/keys/ci-main.pub'), 'utf8'),
    'the key pair matches',
  )

  const config = parse(await readFile(at('etc/deploy-agent/agent.yaml'), 'utf8')) as Record<string, unknown>
  t.match(config, {
    listen: { host: '127.0.0.1', port: 8787 },
    audience: 'web-1.example.com',
    stateDir: '/var/lib/deploy-agent',
    keys: [{ id: 'ci-main', alg: 'ed25519', publicKeyFile: 'keys/ci-main.pub' }],
    statusToken: { file: 'keys/status.token' },
    apps: {},
  })
  const check = await runCli(['check-config', '--config', at('etc/deploy-agent/agent.yaml')])
  t.equal(check.code, 0, 'the created config passes check-config', { output: check.stderr })
  t.match(check.stdout, /: OK \(0 apps, 0 envs, 1 keys\)/)

  const installedUnits = await verifyUnits(UNITS.map((u) => at(`etc/systemd/system/${u}`)))
  t.ok(!haveAnalyze || installedUnits.ok, 'the installed units verify cleanly', { output: installedUnits.output })
  const unit = await readFile(at('etc/systemd/system/deploy-agent.service'), 'utf8')
  t.match(unit, /^ExecStart=\/usr\/bin\/env \/usr\/local\/bin\/deploy-agent serve --config \/etc\/deploy-agent\/agent\.yaml$/m)
  t.match(unit, /^Documentation=file:\/\/\/usr\/share\/doc\/deploy-agent\/README\.md$/m, 'Documentation= names the installed README')

  const second = await install()
  t.equal(second.code, 0, 'exit 0', { output: `${second.stdout}\n${second.stderr}` })
  t.match(second.stdout, /done, 0 change\(s\)/)
  t.same(await snapshot(root), files, 'nothing changed: contents, mtimes, modes, owners, links')

  await t.test('an edited config is kept; a deleted CI key is not regenerated, a deleted token is', async (t) => {
    const configPath = at('etc/deploy-agent/agent.yaml')
    const edited = `${await readFile(configPath, 'utf8')}# edited by the operator\n`
    await writeFile(configPath, edited)
    const pub = await readFile(at('etc/deploy-agent/keys/ci-main.pub'), 'utf8')
    await rm(at('etc/deploy-agent/keys/ci-main.key')) // as the README says, once CI has it
    await rm(at('etc/deploy-agent/keys/status.token'))
    const third = await install()
    t.equal(third.code, 0, 'exit 0', { output: `${third.stdout}\n${third.stderr}` })
    t.equal(await readFile(configPath, 'utf8'), edited, 'the config is untouched')
    t.equal(await readFile(at('etc/deploy-agent/keys/ci-main.pub'), 'utf8'), pub, 'the public key is untouched')
    t.notOk(await lstat(at('etc/deploy-agent/keys/ci-main.key')).catch(() => null), 'no new private key beside the old public one')
    t.match(
      await snapshot(at('etc/deploy-agent/keys')),
      { '/status.token': { kind: 'file', mode: 0o640, uid: 0, gid } },
      'a new status token',
    )
    t.match(third.stdout, /generated \/etc\/deploy-agent\/keys\/status\.token/)
  })

  await t.test("an older install's TypeScript sources are removed", async (t) => {
    await mkdir(at('opt/deploy-agent/agent/cli'), { recursive: true })
    await writeFile(at('opt/deploy-agent/agent/cli/main.ts'), 'export {}\n')
    await writeFile(at('opt/deploy-agent/tsconfig.json'), '{}\n')
    const upgrade = await install()
    t.equal(upgrade.code, 0, 'exit 0', { output: `${upgrade.stdout}\n${upgrade.stderr}` })
    t.notOk(await lstat(at('opt/deploy-agent/agent')).catch(() => null), 'agent/ is gone')
    t.notOk(await lstat(at('opt/deploy-agent/tsconfig.json')).catch(() => null), 'tsconfig.json is gone')
    t.match(upgrade.stdout, /removed \/opt\/deploy-agent\/agent/)
  })

  await t.test('bad input is named', async (t) => {
    const relative = await runBashScript(INSTALL, [], { ...env, DEPLOY_AGENT_ETC_DIR: 'etc/deploy-agent' })
    t.equal(relative.code, 1)
    t.match(relative.stderr, /paths must be absolute, not "etc\/deploy-agent"/)
    const noPasswd = await runBashScript(INSTALL, [], { ...env, DEPLOY_AGENT_ROOT: at('opt') })
    t.equal(noPasswd.code, 1)
    t.match(noPasswd.stderr, /has no etc\/passwd and etc\/group/)
    const notBuilt = await runBashScript(INSTALL, [], { ...env, DEPLOY_AGENT_DIST: at('opt') })
    t.equal(notBuilt.code, 1)
    t.match(notBuilt.stderr, /DEPLOY_AGENT_DIST=.* is not a build of the agent \(no cli\/main\.js\)/)
    for (const port of ['0', '65536', '80a', '']) {
      const bad = await runBashScript(INSTALL, [], { ...env, DEPLOY_AGENT_PORT: port })
      t.equal(bad.code, 1, `port "${port}"`)
      t.match(bad.stderr, `DEPLOY_AGENT_PORT must be a port number (1-65535), not "${port}"`)
    }
  })
})

/** A stand-in systemctl: logs each call, and says a unit is active once it was started. */
async function fakeSystemctl(dir: string): Promise<{ path: string; calls(): Promise<string[]> }> {
  const path = join(dir, 'systemctl')
  const log = join(dir, 'systemctl.log')
  await writeFile(
    path,
    [
      '#!/bin/sh',
      `echo "$*" >> '${log}'`,
      'case "$1" in',
      `  is-active) [ -e '${dir}/active' ]; exit $? ;;`,
      `  enable) case " $* " in *" --now "*) touch '${dir}/active' ;; esac ;;`,
      `  start | restart | try-restart) touch '${dir}/active' ;;`,
      'esac',
    ].join('\n') + '\n',
    { mode: 0o755 },
  )
  return { path, calls: async () => (await readFile(log, 'utf8').catch(() => '')).split('\n').filter(Boolean) }
}

t.test(
  'install.sh: a fresh install starts the agent once; an unchanged rerun not at all; an upgrade restarts it once',
  { skip: skipUnless(isRoot, 'root') },
  async (t) => {
    const root = await tempDir(t, 'deploy-agent-root-')
    await mkdir(join(root, 'etc'))
    await writeFile(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/bash\n')
    await writeFile(join(root, 'etc/group'), 'root:x:0:\n')
    await writeFile(join(root, 'etc/shadow'), 'root:*:19000:0:99999:7:::\n', { mode: 0o640 })
    await writeFile(join(root, 'etc/gshadow'), 'root:*::\n', { mode: 0o640 })
    await mkdir(join(root, 'opt/deploy-agent'), { recursive: true })
    await symlink(join(repo, 'node_modules'), join(root, 'opt/deploy-agent/node_modules'))
    const systemctl = await fakeSystemctl(await tempDir(t))
    const env = {
      DEPLOY_AGENT_ROOT: root,
      DEPLOY_AGENT_SKIP_NPM: '1',
      DEPLOY_AGENT_AUDIENCE: 'web-1.example.com',
      DEPLOY_AGENT_SYSTEMCTL: systemctl.path,
      DEPLOY_AGENT_PORT: '9797',
    }
    const install = async () => {
      const before = (await systemctl.calls()).length
      // The build of the test above, when it ran; else a build of its own.
      const dist = await lstat(sharedDist).then(
        () => ({ DEPLOY_AGENT_DIST: sharedDist }),
        () => ({}),
      )
      const result = await runBashScript(INSTALL, [], { ...env, ...dist }, 300_000)
      t.equal(result.code, 0, 'exit 0', { output: `${result.stdout}\n${result.stderr}` })
      return (await systemctl.calls()).slice(before)
    }
    const starts = (calls: string[]) =>
      calls.filter((c) =>
        /^(start|restart|try-restart|reload-or-restart)\b.*deploy-agent\.service|^enable --now .*deploy-agent\.service/.test(c),
      )

    const fresh = await install()
    t.same(starts(fresh), ['enable --now deploy-agent-nginx-reload.path deploy-agent.service'], 'one start', { calls: fresh })
    t.ok(
      fresh.indexOf('daemon-reload') >= 0 && fresh.indexOf('daemon-reload') < fresh.findIndex((c) => c.startsWith('enable')),
      'daemon-reload first',
    )
    const config = parse(await readFile(join(root, 'etc/deploy-agent/agent.yaml'), 'utf8')) as Record<string, unknown>
    t.match(config, { listen: { host: '127.0.0.1', port: 9797 } }, "DEPLOY_AGENT_PORT chose the starter config's port")

    const again = await install()
    t.same(starts(again), [], 'an unchanged rerun starts nothing', { calls: again })
    t.notOk(again.includes('daemon-reload'), 'no daemon-reload either')

    await writeFile(join(root, 'opt/deploy-agent/config/agent.local.yaml'), '# changed\n')
    const upgrade = await install()
    t.same(starts(upgrade), ['restart deploy-agent.service'], 'an upgrade of a running agent restarts it once', { calls: upgrade })
  },
)
