import { mkdir, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { loadConfig, parseConfig } from '../../agent/config/load.js'
import { containerSettings, findTarget } from '../../agent/config/targets.js'
import { dockerMounts } from '../../agent/docker/mounts.js'
import { tempDir } from '../helpers/tmp.js'
import { configProblems, shopConfig } from '../helpers/config.js'

const app = shopConfig

const problems = configProblems

const settings = (appKeys: string, envKeys = '') =>
  containerSettings(findTarget(parseConfig(app(appKeys, envKeys), {}, 'agent.yaml', '/etc/deploy-agent'), 'shop', 'production'))

t.test('Config: volumes mount host paths and named volumes, read-write unless :ro', async (t) => {
  t.same(settings('    volumes: ["/srv/shop/uploads:/app/uploads", "cache:/app/cache:ro", "/srv/shop//conf/:/etc/shop/:rw"]\n').volumes, [
    { kind: 'bind', source: '/srv/shop/uploads', target: '/app/uploads', readOnly: false },
    { kind: 'volume', source: 'cache', target: '/app/cache', readOnly: true },
    { kind: 'bind', source: '/srv/shop/conf', target: '/etc/shop', readOnly: false },
  ])
  t.notOk('volumes' in settings(''), 'no volumes: nothing mounted')
  t.notOk('allowDockerSocket' in settings(''))
})

t.test("Config: an env's volumes replace the app's list", async (t) => {
  const s = settings('    volumes: ["/srv/shop/uploads:/app/uploads"]\n', '        volumes: ["/srv/shop-prod/uploads:/app/uploads:ro"]\n')
  t.same(s.volumes, [{ kind: 'bind', source: '/srv/shop-prod/uploads', target: '/app/uploads', readOnly: true }])
  t.notOk(
    'volumes' in settings('    volumes: ["/srv/shop/uploads:/app/uploads"]\n', '        volumes: []\n'),
    'an empty list mounts nothing',
  )
})

t.test('Config: each bad volume is refused with its key path', async (t) => {
  const list = [
    'uploads/x:/app/x', // relative host path
    './uploads:/app/x',
    '/srv/../etc:/app/x', // .. in the host path
    '/srv/x:/app/../etc', // .. in the container path
    '/srv/x:app/x', // relative container path
    '/srv/x:/', // over the container's root
    'a:/app/a', // volume name too short
    'my vol:/app/v', // not a volume name
    '/srv/x:/app/x:rx', // bad mode
    '/srv/x', // no container path
    '/srv/x:/app/x:ro:extra',
    '/srv/y:/app/x/', // [12] mounts /app/x again
  ]
  t.same(problems(app(`    volumes: ${JSON.stringify([...list, '/srv/z:/app/x'])}\n`)), [
    'apps.shop.volumes[0]: host path "uploads/x" must be an absolute path (or name a volume)',
    'apps.shop.volumes[1]: host path "./uploads" must be an absolute path (or name a volume)',
    'apps.shop.volumes[2]: host path "/srv/../etc" must not contain ".." segments (or name a volume)',
    'apps.shop.volumes[3]: container path "/app/../etc" must not contain ".." segments',
    'apps.shop.volumes[4]: container path "app/x" must be an absolute path',
    'apps.shop.volumes[5]: container path must not be "/"',
    'apps.shop.volumes[6]: volume name "a" must match /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/ (or be an absolute host path)',
    'apps.shop.volumes[7]: volume name "my vol" must match /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/ (or be an absolute host path)',
    'apps.shop.volumes[8]: mode "rx" must be "ro" or "rw"',
    'apps.shop.volumes[9]: must be "SOURCE:TARGET" or "SOURCE:TARGET:ro" (SOURCE an absolute host path or a volume name)',
    'apps.shop.volumes[10]: must be "SOURCE:TARGET" or "SOURCE:TARGET:ro" (SOURCE an absolute host path or a volume name)',
    'apps.shop.volumes[12]: container path "/app/x" is already mounted by volumes[11]',
  ])
  t.same(problems(app('    volumes: "/srv/x:/app/x"\n')), ['apps.shop.volumes: must be a list of "SOURCE:TARGET[:ro]" strings'])
  t.same(problems(app('', '        volumes: ["/srv/x:/app/x", "/srv/y:/app/x"]\n')), [
    'apps.shop.envs.production.volumes[1]: container path "/app/x" is already mounted by volumes[0]',
  ])
})

t.test('Config: the Docker socket and the directories holding it are refused unless allowDockerSocket', async (t) => {
  const hostile = ['/var/run/docker.sock', '/run/docker.sock', '/var/run', '/run/', '/var', '/', '//run//docker.sock']
  const cleaned = ['/var/run/docker.sock', '/run/docker.sock', '/var/run', '/run', '/var', '/', '/run/docker.sock']
  const expected = cleaned.map(
    (path, i) =>
      `apps.shop.volumes[${i}]: host path "${path}" is or holds the Docker socket (root on the host); set allowDockerSocket: true to allow it`,
  )
  t.same(problems(app(`    volumes: ${JSON.stringify(hostile.map((p, i) => `${p}:/x${i}`))}\n`)), expected)
  t.same(problems(app('', '        volumes: ["/run/docker.sock:/var/run/docker.sock:ro"]\n')), [
    'apps.shop.envs.production.volumes[0]: host path "/run/docker.sock" is or holds the Docker socket (root on the host); set allowDockerSocket: true to allow it',
  ])
  t.same(problems(app('    allowDockerSocket: true\n', '        volumes: ["/run/docker.sock:/var/run/docker.sock:ro"]\n')), [])
  t.equal(settings('    allowDockerSocket: true\n').allowDockerSocket, true)
  t.same(
    problems(app('    volumes: ["/run/user/1000/x:/x", "/var/lib/shop:/data", "docker.sock:/y"]\n')),
    [],
    'other paths under /run and /var are fine',
  )
  t.same(problems(app('    allowDockerSocket: "yes"\n')), ['apps.shop.allowDockerSocket: must be true or false'])
})

t.test('dockerMounts: a missing host path is refused (Docker would create it as root); a symlink is mounted resolved', async (t) => {
  const dir = await tempDir(t)
  await mkdir(join(dir, 'uploads'))
  await symlink(join(dir, 'uploads'), join(dir, 'current'))
  await symlink('/run', join(dir, 'run-link'))
  const bind = (source: string, target = '/app/x') => ({ kind: 'bind' as const, source, target, readOnly: false })
  const base = { capDrop: [], capAdd: [], noNewPrivileges: true }
  t.same(
    await dockerMounts({
      ...base,
      volumes: [bind(join(dir, 'current')), { kind: 'volume', source: 'cache', target: '/c', readOnly: true }],
    }),
    [
      { Type: 'bind', Source: join(dir, 'uploads'), Target: '/app/x', ReadOnly: false },
      { Type: 'volume', Source: 'cache', Target: '/c', ReadOnly: true },
    ],
  )
  await t.rejects(dockerMounts({ ...base, volumes: [bind(join(dir, 'nope')), bind(join(dir, 'run-link'), '/app/y')] }), {
    code: 'volume_unavailable',
    message: new RegExp(
      `volume "${dir}/nope:/app/x": host path "${dir}/nope" does not exist; create it.*; ` +
        `volume "${dir}/run-link:/app/y": host path "${dir}/run-link" is or holds the Docker socket .*\\(a symlink to /run\\)`,
    ),
  })
  t.same(await dockerMounts({ ...base, allowDockerSocket: true, volumes: [bind(join(dir, 'run-link'))] }), [
    { Type: 'bind', Source: '/run', Target: '/app/x', ReadOnly: false },
  ])
  t.same(await dockerMounts(base), [])
})

t.test('loadConfig: an existing host path that is a symlink to the Docker socket is refused with its key path', async (t) => {
  const dir = await tempDir(t)
  await symlink('/var/run', join(dir, 'sock-dir'))
  const file = join(dir, 'agent.yaml')
  await writeFile(
    file,
    app(`    volumes: ["${dir}/missing:/app/m", "${dir}/sock-dir:/app/s"]\n`, `        volumes: ["${dir}/sock-dir:/s"]\n`),
  )
  await t.rejects(loadConfig(file, {}), {
    code: 'invalid_config',
    problems: [
      `apps.shop.volumes[1]: host path "${dir}/sock-dir" is or holds the Docker socket (root on the host); set allowDockerSocket: true to allow it (a symlink to /run)`,
      `apps.shop.envs.production.volumes[0]: host path "${dir}/sock-dir" is or holds the Docker socket (root on the host); set allowDockerSocket: true to allow it (a symlink to /run)`,
    ],
  })
  await writeFile(file, app(`    allowDockerSocket: true\n    volumes: ["${dir}/sock-dir:/app/s"]\n`))
  t.ok(await loadConfig(file, {}), 'allowed explicitly')
})

/** An app of services; `worker` and `beat` take the keys given (`volumes: …`), the env its own. */
const servicesApp = (appKeys: string, workerKeys: string, envKeys = '') => `
audience: web-1
apps:
  shop:
    repo: /srv/shop.git
${appKeys}    services:
      api: { kind: web }
      worker: { kind: worker${workerKeys} }
      beat: { kind: worker, order: stop-first, volumes: [] }
    envs:
      production:
        ref: "tag:v*"
        ports: { api: [18001, 18002] }
${envKeys}`

const mounted = (yaml: string, service?: string) =>
  containerSettings(findTarget(parseConfig(yaml, {}, 'agent.yaml', '/etc/deploy-agent'), 'shop', 'production'), service).volumes

t.test(
  "Config: a service's volumes replace the app's and the env's for that service; the others and the migration keep theirs",
  async (t) => {
    const yaml = servicesApp('    volumes: ["/srv/shop/uploads:/app/uploads"]\n', ', volumes: ["/srv/shop/jobs:/jobs", "cache:/cache:ro"]')
    const jobs = [
      { kind: 'bind', source: '/srv/shop/jobs', target: '/jobs', readOnly: false },
      { kind: 'volume', source: 'cache', target: '/cache', readOnly: true },
    ]
    const uploads = [{ kind: 'bind', source: '/srv/shop/uploads', target: '/app/uploads', readOnly: false }]
    t.same(mounted(yaml, 'worker'), jobs, "the worker's own list")
    t.same(mounted(yaml, 'api'), uploads, "a service without a list gets the app's")
    t.same(mounted(yaml), uploads, "the migration gets the app's")
    t.same(mounted(yaml, 'beat'), undefined, 'an empty list of its own mounts nothing')

    const withEnv = yaml + '        volumes: ["/srv/shop-prod/uploads:/app/uploads"]\n'
    const prodUploads = [{ kind: 'bind', source: '/srv/shop-prod/uploads', target: '/app/uploads', readOnly: false }]
    t.same(mounted(withEnv, 'worker'), jobs, "the service's list beats the env's")
    t.same(mounted(withEnv, 'api'), prodUploads, "the env's list replaces the app's for the others")
    t.same(mounted(withEnv), prodUploads, '…and for the migration')
  },
)

t.test("Config: a service's volumes are checked like the app's, the Docker socket rule included", async (t) => {
  t.same(problems(servicesApp('', ', volumes: ["jobs/x:/jobs", "/srv/a:/x", "/srv/b:/x/"]')), [
    'apps.shop.services.worker.volumes[0]: host path "jobs/x" must be an absolute path (or name a volume)',
    'apps.shop.services.worker.volumes[2]: container path "/x" is already mounted by volumes[1]',
  ])
  t.same(problems(servicesApp('', ', volumes: ["/srv/a:/x", "/run/docker.sock:/docker.sock"]')), [
    'apps.shop.services.worker.volumes[1]: host path "/run/docker.sock" is or holds the Docker socket (root on the host); set allowDockerSocket: true to allow it',
  ])
  t.same(problems(servicesApp('', ', volumes: "/srv/a:/x"')), [
    'apps.shop.services.worker.volumes: must be a list of "SOURCE:TARGET[:ro]" strings',
  ])
  t.same(
    problems(servicesApp('    allowDockerSocket: true\n', ', volumes: ["/run/docker.sock:/docker.sock:ro"]')),
    [],
    'allowed explicitly',
  )
})

t.test("loadConfig: a service's host path that is a symlink to the Docker socket is refused with its key path", async (t) => {
  const dir = await tempDir(t)
  await symlink('/var/run', join(dir, 'sock-dir'))
  const file = join(dir, 'agent.yaml')
  await writeFile(file, servicesApp('', `, volumes: ["${dir}/missing:/m", "${dir}/sock-dir:/s"]`))
  await t.rejects(loadConfig(file, {}), {
    code: 'invalid_config',
    problems: [
      `apps.shop.services.worker.volumes[1]: host path "${dir}/sock-dir" is or holds the Docker socket (root on the host); set allowDockerSocket: true to allow it (a symlink to /run)`,
    ],
  })
})
