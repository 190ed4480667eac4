// Apps whose services are all workers: no ports, no proxy, nothing that needs traffic.
import t from 'tap'
import { parseConfig } from '../../agent/config/load.js'
import { isWorkerOnly, servicesOf, upstreamsOf } from '../../agent/config/services.js'
import { findTarget } from '../../agent/config/targets.js'
import { configProblems } from '../helpers/config.js'

t.test('Config workers: an app of workers only needs no ports and no proxy', async (t) => {
  const config = parseConfig(
    `
audience: a
apps:
  jobs:
    repo: /srv/jobs.git
    services:
      worker: { kind: worker, command: [python3, -m, app.worker] }
      beat: { kind: worker, order: stop-first }
    envs:
      production: { ref: "tag:v*" }
`,
    {},
    'agent.yaml',
    '/etc',
  )
  const target = findTarget(config, 'jobs', 'production')
  t.ok(isWorkerOnly(target))
  t.same(
    servicesOf(target).map((s) => [s.name, s.kind, s.ports, s.order]),
    [
      ['worker', 'worker', null, 'start-first'],
      ['beat', 'worker', null, 'stop-first'],
    ],
  )
  t.same(upstreamsOf(target), [])
  const web = findTarget(
    parseConfig('audience: a\napps:\n  shop:\n    repo: /r\n    envs:\n      p: { ref: "tag:v*", ports: [18001, 18002] }\n'),
    'shop',
    'p',
  )
  t.notOk(isWorkerOnly(web), 'an app without services is one web service')
})

t.test('Config workers: ports, a proxy or a smoke check of a worker-only app are refused, naming why', async (t) => {
  t.same(
    configProblems(`
audience: a
apps:
  jobs:
    repo: /srv/jobs.git
    smoke: [{ path: /version }]
    services:
      worker: { kind: worker }
    envs:
      production:
        ref: "tag:v*"
        ports: [18001, 18002]
        proxy: { upstreamFile: /etc/nginx/jobs.conf }
      staging: { ref: "tag:v*", ports: { worker: [18003, 18004] } }
  shop:
    repo: /srv/shop.git
    envs:
      production: { ref: "tag:v*" }
`).sort(),
    [
      'apps.jobs.envs.production.ports: a worker-only app has no ports (its services are all workers)',
      'apps.jobs.envs.production.proxy: a worker-only app has nothing for nginx to route (its services are all workers)',
      'apps.jobs.envs.staging.ports: a worker-only app has no ports (its services are all workers)',
      'apps.jobs.smoke: a worker-only app has no port to smoke-test',
      'apps.shop.envs.production.ports: must be two port numbers [blue, green] (with services: a map of web service → [blue, green])',
    ],
  )
})
