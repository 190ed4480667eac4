// listen.trustProxy: addresses and CIDR ranges are accepted; anything else is named by its key path.
import t from 'tap'
import { parseConfig } from '../../agent/config/load.js'
import { ConfigError } from '../../agent/errors.js'

const withTrust = (list: string[]) => `audience: web-1\nlisten: { trustProxy: ${JSON.stringify(list)} }\n`

function problems(yaml: string): string[] {
  try {
    parseConfig(yaml, {})
    return []
  } catch (err) {
    if (err instanceof ConfigError) return err.problems
    throw err
  }
}

t.test('config: listen.trustProxy takes IP addresses and CIDR ranges', async (t) => {
  t.same(parseConfig(withTrust(['127.0.0.1', '10.0.0.0/8', '::1', 'fd00::/8']), {}).listen.trustProxy, [
    '127.0.0.1',
    '10.0.0.0/8',
    '::1',
    'fd00::/8',
  ])
  t.equal(parseConfig('audience: web-1\n', {}).listen.trustProxy, undefined, 'unset by default: X-Forwarded-For is ignored')
  const message = 'must be an IP address or a CIDR range, e.g. 127.0.0.1 or 10.0.0.0/8'
  t.same(
    problems(withTrust(['localhost', '10.0.0.0/33', '1.2.3.4/8/9', '::1/129', '127.0.0.1/'])),
    [0, 1, 2, 3, 4].map((i) => `listen.trustProxy[${i}]: ${message}`),
  )
  t.same(problems('audience: web-1\nlisten: { trustProxy: 127.0.0.1 }\n'), [
    'listen.trustProxy: must be a list of IP addresses or CIDR ranges',
  ])
})

t.test('config: listen.socket is an absolute path a unix socket can have', async (t) => {
  t.equal(
    parseConfig('audience: web-1\nlisten: { socket: /run/deploy-agent/agent.sock }\n', {}).listen.socket,
    '/run/deploy-agent/agent.sock',
  )
  t.equal(parseConfig('audience: web-1\n', {}).listen.socket, undefined, 'unset by default: TCP only')
  const absolute = 'must be an absolute file path, e.g. /run/deploy-agent/agent.sock'
  t.same(problems('audience: web-1\nlisten: { socket: run/agent.sock }\n'), [`listen.socket: ${absolute}`])
  t.same(problems('audience: web-1\nlisten: { socket: /run/deploy-agent/ }\n'), [`listen.socket: ${absolute}`])
  t.same(problems(`audience: web-1\nlisten: { socket: /${'a'.repeat(100)} }\n`), [
    'listen.socket: must be at most 100 bytes (the limit of a unix socket path)',
  ])
  t.same(problems('audience: web-1\nlisten: { socket: 8787 }\n'), ['listen.socket: must be a string'])
})
