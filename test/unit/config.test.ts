import { readFile } from 'node:fs/promises'
import t from 'tap'
import { loadConfig, parseConfig } from '../../agent/config/load.js'
import { ConfigError } from '../../agent/errors.js'

const minimal = `audience: web-1\n`

function problems(yaml: string, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parseConfig(yaml, env, 'agent.yaml', '/etc/deploy-agent')
  } catch (err) {
    if (err instanceof ConfigError) return err.problems
    throw err
  }
  return []
}

t.test('Config: the full example is valid and keeps its values', async (t) => {
  const config = await loadConfig(new URL('../../config/agent.example.yaml', import.meta.url).pathname)
  const production = config.apps.lifeos?.envs.production
  t.same(production?.ref, { kind: 'tag', pattern: 'v*.*.*' })
  t.same(production?.ports, [18011, 18012])
  t.equal(production?.database?.envName, 'DATABASE_URL')
  t.equal(config.keys[0]?.notAfter?.toISOString(), '2027-06-01T00:00:00.000Z')
  t.same(
    config.keys.map((k) => [k.id, k.allow.approve]),
    [
      ['ci-main', false],
      ['release-manager', true],
      ['ci-legacy', false],
    ],
    "CI's keys do not approve",
  )
  t.equal(config.backups.retention.days, 30)
  t.same(config.apps.lifeos?.container, { capDrop: ['NET_RAW'], capAdd: [], noNewPrivileges: true, memory: 512 * 1024 ** 2, pids: 256 })
})

t.test("Config: the example's proxies use what works under the sandboxed systemd unit (the reload helper)", async (t) => {
  const config = await loadConfig(new URL('../../config/agent.example.yaml', import.meta.url).pathname)
  const path = await readFile(new URL('../../systemd/deploy-agent-nginx-reload.path', import.meta.url), 'utf8')
  const trigger = /^PathChanged=(.+)$/m.exec(path)?.[1]
  t.ok(trigger, 'the .path unit names its trigger file')
  const envs = Object.entries(config.apps).flatMap(([app, a]) => Object.entries(a.envs).map(([env, e]) => [`${app}.${env}`, e] as const))
  t.ok(
    envs.some(([, e]) => e.proxy),
    'the example has proxies',
  )
  for (const [name, env] of envs) {
    if (!env.proxy) continue
    t.same(env.proxy.reload, ['touch', trigger], `${name}: reload touches the helper's trigger`)
    t.same(env.proxy.test, ['true'], `${name}: the helper runs nginx -t (as root), not the agent`)
    t.ok(env.proxy.pidFile, `${name}: the reload is confirmed through nginx's pid file`)
  }
})

t.test('Config: the embedded local config is valid; relative paths are relative to its file', async (t) => {
  const path = new URL('../../config/agent.local.yaml', import.meta.url).pathname
  const config = await loadConfig(path, {})
  t.equal(config.listen.host, '127.0.0.1')
  t.equal(config.listen.port, 8787)
  t.equal(config.stateDir, new URL('../../.deploy-agent', import.meta.url).pathname)
  t.equal(config.statusToken?.file, new URL('../../.deploy-agent/keys/status.token', import.meta.url).pathname)
})

t.test('Config: defaults', async (t) => {
  const config = parseConfig(minimal, {}, 'agent.yaml', '/srv/agent')
  t.same(config.listen, { host: '127.0.0.1', port: 8787, tls: undefined })
  t.equal(config.stateDir, '/srv/agent/.deploy-agent')
  t.same(config.keys, [])
  t.equal(config.backups.schedule, '0 3 * * *')
  t.same(config.backups.retention, { days: 30, minKeep: 7, weekly: 8, monthly: 6 })
  t.equal(config.backups.verify, 'full')
  const withProxy = parseConfig(
    `${minimal}apps: { a: { repo: /srv/a.git, envs: { e: { ref: "branch:main", ports: [18001, 18002], proxy: { upstreamFile: /etc/nginx/a.conf } } } } }\n`,
    {},
    'agent.yaml',
    '/srv/agent',
  )
  const proxy = withProxy.apps.a?.envs.e?.proxy
  t.same(
    [proxy?.test, proxy?.reload],
    [
      ['nginx', '-t'],
      ['nginx', '-s', 'reload'],
    ],
    'proxy commands default to nginx',
  )
})

t.test('Config: every problem is reported with its key path', async (t) => {
  const yaml = `
listen: { port: 99999 }
audience: "bad host!"
keys:
  - { id: a, alg: rsa, publicKeyFile: /k.pub }
  - { id: b, alg: hmac-sha256, publicKeyFile: /k.pub }
apps:
  lifeos:
    repo: "ext::sh -c evil"
    colour: blue
    envs:
      production:
        ref: "v1"
        ports: [18011, "x"]
        backupBeforeDeploy: true
      Bad_Env:
        ref: "branch:main"
        ports: [1, 2]
backups: { verify: maybe, schedule: "every night" }
`
  t.same(problems(yaml).sort(), [
    'apps.lifeos.colour: unknown key',
    'apps.lifeos.envs.Bad_Env: must match /^[a-z][a-z0-9-]{0,31}$/',
    'apps.lifeos.envs.production.ports[1]: must be a port number',
    'apps.lifeos.envs.production.ref: must be "branch:NAME" or "tag:PATTERN"',
    'apps.lifeos.repo: must be a git URL or path (no ext:: or fd:: transports)',
    'audience: must be a host name',
    'backups.schedule: must be a cron expression (minute hour day month weekday), e.g. "0 3 * * *"',
    'backups.verify: must be "none", "full" or "restore"',
    'keys[0].alg: must be "ed25519" or "hmac-sha256"',
    'keys[1].secretFile: an hmac-sha256 key needs exactly one of secretFile or secretEnv',
    'listen.port: must be a port number',
  ])
})

t.test('Config: cross-field rules', async (t) => {
  const yaml = `
audience: web-1
keys:
  - { id: a, alg: ed25519, publicKeyFile: a.pub, notBefore: 2027-01-01T00:00:00Z, notAfter: 2026-01-01T00:00:00Z }
  - { id: a, alg: ed25519, publicKeyFile: b.pub }
apps:
  one:
    repo: /srv/one.git
    envs:
      prod: { ref: "tag:v*", ports: [18001, 18001], backupBeforeDeploy: true }
  two:
    repo: /srv/two.git
    envs:
      prod: { ref: "tag:v*", ports: [18001, 8787] }
`
  t.same(problems(yaml).sort(), [
    'apps.one.envs.prod.backupBeforeDeploy: needs a database to back up',
    'apps.one.envs.prod.ports: the two ports must differ',
    'apps.two.envs.prod.ports[0]: port 18001 is already used by one/prod',
    "apps.two.envs.prod.ports[1]: port 8787 is the agent's own listen port",
    'keys[0].notAfter: must be later than notBefore',
    'keys[1].id: duplicate key id "a"',
  ])
})

t.test('Config: missing audience, bad YAML, duplicate keys, wrong top-level type', async (t) => {
  t.same(problems('listen: {}\n'), ['audience: is required: the host name CI signs into every request'])
  t.match(problems('audience: [unclosed\n')[0], /^agent\.yaml: /)
  t.match(problems('audience: a\naudience: b\n')[0], /^agent\.yaml: .*[Uu]nique|duplicate/)
  t.same(problems('- a\n- b\n'), ['agent.yaml: must be a YAML mapping'])
})

t.test('Config: environment overrides', async (t) => {
  const config = parseConfig(
    minimal,
    { DEPLOY_AGENT_LISTEN_PORT: '9999', DEPLOY_AGENT_LISTEN_HOST: '0.0.0.0', DEPLOY_AGENT_STATE_DIR: '/var/lib/x' },
    'a',
    '/',
  )
  t.equal(config.listen.port, 9999)
  t.equal(config.listen.host, '0.0.0.0')
  t.equal(config.stateDir, '/var/lib/x')
  t.same(problems(minimal, { DEPLOY_AGENT_LISTEN_PORT: 'eighty' }), ['listen.port: must be a port number'])
})

t.test('Config: an unreadable file is a config error naming the file', async (t) => {
  const err = await loadConfig('/nonexistent/agent.yaml').catch((e: unknown) => e)
  t.same((err as ConfigError).problems, ['/nonexistent/agent.yaml: cannot read the config file (ENOENT)'])
  t.ok(await readFile(new URL('../../config/agent.example.yaml', import.meta.url), 'utf8'))
})

t.test('Config: keys[].allow.approve is a separate permission, off unless set', async (t) => {
  const yaml = (allow: string) => `audience: web-1\nkeys:\n  - { id: ci, alg: hmac-sha256, secretEnv: CI_SECRET${allow} }\n`
  t.same(parseConfig(yaml(''), {}, 'agent.yaml', '/srv').keys[0]?.allow, { approve: false }, 'no allow: may not approve')
  t.same(parseConfig(yaml(', allow: { envs: [staging] }'), {}, 'agent.yaml', '/srv').keys[0]?.allow, { envs: ['staging'], approve: false })
  t.equal(parseConfig(yaml(', allow: { approve: true }'), {}, 'agent.yaml', '/srv').keys[0]?.allow.approve, true)
  t.same(problems(yaml(', allow: { approve: "yes" }')), ['keys[0].allow.approve: must be true or false'])
})
