// The traffic keys: proxy.accessLog, observe.maxErrorRate / minRequests / alert — defaults and clear errors.
import t from 'tap'
import { parseConfig } from '../../agent/config/load.js'
import { ConfigError } from '../../agent/errors.js'

function yaml(proxy: string, observe: string): string {
  return `
audience: web-1
apps:
  shop:
    repo: /srv/shop.git
    observe: { ${observe} }
    envs:
      production:
        ref: "tag:v*"
        ports: [18011, 18012]
        proxy: { upstreamFile: /etc/nginx/shop.conf${proxy} }
`
}

function problems(text: string): string[] {
  try {
    parseConfig(text, {}, 'agent.yaml', '/etc/deploy-agent')
  } catch (err) {
    if (err instanceof ConfigError) return err.problems
    throw err
  }
  return []
}

t.test('Config: the traffic keys default to a 5% error rate over 20 answers, no access log, no alerts; a warm standby', async (t) => {
  const app = parseConfig(yaml('', 'seconds: 10'), {}, 'agent.yaml', '/etc/deploy-agent').apps.shop
  t.same(app?.observe, { seconds: 10, intervalMs: 1000, maxFailures: 3, maxErrorRate: 0.05, minRequests: 20, warmStandby: true })
  t.equal(app?.envs.production?.proxy?.accessLog, undefined)
})

t.test('Config: the traffic keys are read as given', async (t) => {
  const config = parseConfig(
    yaml(
      ', accessLog: /var/log/nginx/deploy-agent/shop-production.json',
      'maxErrorRate: 0.2, minRequests: 5, alert: { errorsPerMinute: 10, downMinutes: 5 }',
    ),
    {},
    'agent.yaml',
    '/etc/deploy-agent',
  )
  t.equal(config.apps.shop?.envs.production?.proxy?.accessLog, '/var/log/nginx/deploy-agent/shop-production.json')
  t.match(config.apps.shop?.observe, { maxErrorRate: 0.2, minRequests: 5, alert: { errorsPerMinute: 10, downMinutes: 5 } })
})

t.test('Config: bad traffic keys are named with their path', async (t) => {
  const found = problems(yaml(', accessLog: logs/shop.json', 'maxErrorRate: 1.5, minRequests: 0, alert: { errorsPerMinute: -1, every: 5 }'))
  t.match(found.join('\n'), /apps\.shop\.envs\.production\.proxy\.accessLog: must be an absolute file path/)
  t.match(found.join('\n'), /apps\.shop\.observe\.maxErrorRate: must be ≤ 1/)
  t.match(found.join('\n'), /apps\.shop\.observe\.minRequests: must be > 0/)
  t.match(found.join('\n'), /apps\.shop\.observe\.alert\.errorsPerMinute: must be > 0/)
  t.match(found.join('\n'), /apps\.shop\.observe\.alert.*every/)
})
