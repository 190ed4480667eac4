// `envs.<env>.runtime: swarm` with its `swarm` block: defaults, and a clear error for each mistake.
import t from 'tap'
import { parseConfig } from '../../agent/config/load.js'
import { findTarget } from '../../agent/config/targets.js'
import { configProblems } from '../helpers/config.js'

const config = (envKeys: string, appKeys = '') => `
audience: web-1
apps:
  shop:
    repo: /srv/shop.git
${appKeys}    envs:
      production:
        ref: "tag:v*"
        ports: [18001, 18002]
        proxy: { upstreamFile: /etc/nginx/deploy-agent/shop.conf }
${envKeys}`

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
