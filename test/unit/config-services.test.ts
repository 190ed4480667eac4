import t from 'tap'
import { parseConfig } from '../../agent/config/load.js'
import { servicesOf, upstreamsOf } from '../../agent/config/services.js'
import { findTarget } from '../../agent/config/targets.js'
import { configProblems } from '../helpers/config.js'

const problems = configProblems

const shop = `
audience: web-1
apps:
  shop:
    repo: /srv/shop.git
    health: { path: /healthz, deadlineSec: 30 }
    services:
      api: { kind: web, command: [uvicorn, app:app], health: { path: /api/healthz } }
      frontend: { kind: web }
      worker: { kind: worker, stopTimeoutSec: 30 }
      beat: { kind: worker, order: stop-first, health: { startSec: 2 } }
    envs:
      production:
        ref: "tag:v*"
        ports: { api: [18011, 18012], frontend: [18021, 18022] }
        proxy: { upstreamFile: /etc/nginx/shop.conf }
`

t.test('Config services: a services map gives each service its ports, upstream and checks (the app’s by default)', async (t) => {
  const config = parseConfig(shop, {}, 'agent.yaml', '/etc')
  const target = findTarget(config, 'shop', 'production')
  const specs = servicesOf(target)
  t.same(
    specs.map((s) => [
      s.name,
      s.kind,
      s.ports,
      s.upstream,
      s.order,
      s.stopTimeoutSec,
      s.health.path,
      s.health.deadlineSec,
      s.health.startSec,
    ]),
    [
      ['api', 'web', [18011, 18012], 'shop_production_api', null, 10, '/api/healthz', 30, 5],
      ['frontend', 'web', [18021, 18022], 'shop_production_frontend', null, 10, '/healthz', 30, 5],
      ['worker', 'worker', null, null, 'start-first', 30, '/healthz', 30, 5],
      ['beat', 'worker', null, null, 'stop-first', 10, '/healthz', 30, 2],
    ],
  )
  t.same(specs[0]?.command, ['uvicorn', 'app:app'])
  t.same(upstreamsOf(target), [
    { name: 'shop_production_api', ports: [18011, 18012] },
    { name: 'shop_production_frontend', ports: [18021, 18022] },
  ])
})

t.test('Config services: without services the app is one web service named as before', async (t) => {
  const config = parseConfig(
    `audience: a\napps:\n  shop:\n    repo: /r\n    envs:\n      prod: { ref: "tag:v*", ports: [18001, 18002], proxy: { upstreamFile: /u, upstreamName: shop_live } }\n`,
  )
  const [web, ...rest] = servicesOf(findTarget(config, 'shop', 'prod'))
  t.same(rest, [])
  t.same([web?.name, web?.kind, web?.ports, web?.upstream, web?.command], ['web', 'web', [18001, 18002], 'shop_live', null])
})

t.test('Config services: bad services and port maps are named by key path', async (t) => {
  // Shape errors first: zod runs the cross-field rules only on a config whose shape is right.
  t.same(
    problems(`
audience: web-1
apps:
  shop:
    repo: /srv/shop.git
    services:
      beat: { kind: worker, order: later }
      tick: { kind: cron }
    envs:
      production: { ref: "tag:v*", ports: { api: [18081, "x"] } }
`).sort(),
    [
      'apps.shop.envs.production.ports.api[1]: must be a port number',
      'apps.shop.services.beat.order: must be "start-first" or "stop-first"',
      'apps.shop.services.tick.kind: must be "web" or "worker"',
    ],
  )
  t.same(
    problems(`
audience: web-1
apps:
  shop:
    repo: /srv/shop.git
    services:
      api: { kind: web, order: stop-first }
      frontend: { kind: web }
      beat: { kind: worker, smoke: [{ path: / }], health: { path: /x } }
    envs:
      production: { ref: "tag:v*", ports: { api: [18011, 18012], frontend: [18013, 18014] } }
`).sort(),
    [
      'apps.shop.services.api.order: only workers have an order (web services switch with nginx)',
      'apps.shop.services.beat.health.path: a worker has no port to probe (healthy = HEALTHCHECK or startSec)',
      'apps.shop.services.beat.smoke: a worker has no port to smoke-test',
    ],
  )
  t.same(
    problems(`
audience: web-1
apps:
  shop:
    repo: /srv/shop.git
    services:
      api: { kind: web }
      frontend: { kind: web }
      beat: { kind: worker, order: stop-first }
    envs:
      production: { ref: "tag:v*", ports: { api: [18011, 18012], beat: [18031, 18032], nope: [18041, 18042] } }
      staging: { ref: "tag:v*", ports: [18051, 18052] }
      qa: { ref: "tag:v*", ports: { api: [18011, 18061], frontend: [18071, 18071] } }
  workers:
    repo: /srv/w.git
    services:
      only: { kind: worker }
    envs:
      production: { ref: "tag:v*", ports: {} }
  plain:
    repo: /srv/p.git
    envs:
      production: { ref: "tag:v*", ports: { web: [18091, 18092] } }
`).sort(),
    [
      'apps.plain.envs.production.ports: must be two port numbers [blue, green] (a map only with services)',
      'apps.shop.envs.production.ports.beat: a worker has no ports',
      'apps.shop.envs.production.ports.nope: names no web service (api, frontend)',
      'apps.shop.envs.production.ports: needs a [blue, green] pair for web service frontend',
      'apps.shop.envs.qa.ports.api[0]: port 18011 is already used by shop/production/api',
      'apps.shop.envs.qa.ports.frontend: the two ports must differ',
      'apps.shop.envs.staging.ports: must be a map of web service → [blue, green] (api, frontend)',
      'apps.workers.envs.production.ports: a worker-only app has no ports (its services are all workers)',
    ],
  )
})
