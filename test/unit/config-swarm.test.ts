// `envs.<env>.runtime: swarm` with its `swarm` block: defaults, and a clear error for each mistake.
import t from 'tap'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { loadConfig, parseConfig } from '../../agent/config/load.js'
import { findTarget } from '../../agent/config/targets.js'
import { knownSecrets } from '../../agent/observability/sentry.js'
import { configProblems, shopConfig } from '../helpers/config.js'
import { tempDir } from '../helpers/tmp.js'

const config = (envKeys: string, appKeys = '') =>
  shopConfig(appKeys, `        proxy: { upstreamFile: /etc/nginx/deploy-agent/shop.conf }\n${envKeys}`)

t.test('Config: runtime defaults to docker; swarm takes replicas 2 and no constraints unless told', async (t) => {
  const plain = findTarget(parseConfig(config(''), {}, 'agent.yaml', '/etc/deploy-agent'), 'shop', 'production')
  t.equal(plain.envConfig.runtime, 'docker')
  const swarm = findTarget(
    parseConfig(config('        runtime: swarm\n        swarm: { registry: "127.0.0.1:5000" }\n'), {}, 'agent.yaml', '/etc/deploy-agent'),
    'shop',
    'production',
  )
  t.same(swarm.envConfig.swarm, { replicas: 2, registry: '127.0.0.1:5000', constraints: [] })
  t.same(
    configProblems(
      config(
        '        runtime: swarm\n        swarm: { replicas: 3, registry: registry.example.com:5000/team, constraints: ["node.labels.app==shop", "node.role != manager"] }\n',
      ),
    ),
    [],
  )
})

t.test('Config: swarm mistakes are named by key', async (t) => {
  t.match(configProblems(config('        runtime: kubernetes\n')), [/runtime: must be "docker" or "swarm"/])
  t.match(configProblems(config('        runtime: swarm\n')), [/swarm: is required with runtime: swarm/])
  t.match(configProblems(config('        swarm: { registry: "127.0.0.1:5000" }\n')), [/swarm: is only for runtime: swarm/])
  t.match(configProblems(config('        runtime: swarm\n        swarm: { registry: "https://r.example.com" }\n')), [
    /swarm\.registry: must be a registry address/,
  ])
  t.match(configProblems(config('        runtime: swarm\n        swarm: { registry: "r:5000", replicas: 0 }\n')), [
    /swarm\.replicas: must be > 0/,
  ])
  t.match(configProblems(config('        runtime: swarm\n        swarm: { registry: "r:5000", constraints: ["node.role"] }\n')), [
    /swarm\.constraints\[0\]: must be a constraint/,
  ])
  t.match(configProblems(config('        runtime: swarm\n        swarm: { registry: "r:5000", replica: 2 }\n')), [/swarm.*replica/])
  t.match(
    configProblems(
      config('        runtime: swarm\n        swarm: { registry: "r:5000" }\n', '    volumes: ["/srv/shop/uploads:/app/uploads"]\n'),
    ),
    [/runtime: swarm envs cannot mount volumes yet/],
  )
})

t.test('Config: swarm.registryAuth takes a user and a password file (relative to the config), never a password', async (t) => {
  const swarm = (auth: string) =>
    config(`        runtime: swarm\n        swarm: { registry: "r.example.com:5000/team", registryAuth: ${auth} }\n`)
  const target = findTarget(
    parseConfig(swarm('{ username: ci, passwordFile: registry.password }'), {}, 'agent.yaml', '/etc/deploy-agent'),
    'shop',
    'production',
  )
  t.same(target.envConfig.swarm?.registryAuth, { username: 'ci', passwordFile: '/etc/deploy-agent/registry.password' })
  const key = 'apps.shop.envs.production.swarm.registryAuth'
  t.same(configProblems(swarm('{ username: ci }')), [`${key}.passwordFile: is required`])
  t.same(configProblems(swarm('{ username: "", passwordFile: pw }')), [`${key}.username: must not be empty`])
  t.same(configProblems(swarm('{ username: ci, password: hunter2 }')), [
    `${key}.passwordFile: is required`,
    `${key}.password: unknown key (a password is never in the config: name a file holding it in passwordFile)`,
  ])
  t.same(configProblems(swarm('ci')), [`${key}: must be { username, passwordFile } (the password in a file of its own)`])
})

t.test("Config: the swarm registry's password is one of the secrets scrubbed from logs and reports", async (t) => {
  const dir = await tempDir(t)
  await writeFile(join(dir, 'registry.password'), 'swarm-pw-0123456789\n')
  await writeFile(
    join(dir, 'agent.yaml'),
    config(
      '        runtime: swarm\n        swarm: { registry: "127.0.0.1:5000", registryAuth: { username: ci, passwordFile: registry.password } }\n',
    ),
  )
  t.ok((await knownSecrets(await loadConfig(join(dir, 'agent.yaml'), {}))).includes('swarm-pw-0123456789'))
})
