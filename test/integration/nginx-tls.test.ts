// config/nginx-agent-site.conf, for real: a private nginx runs the shipped site (paths and ports swapped for temp
// ones) with a self-signed certificate in front of a real agent. Signed requests pass through it over HTTPS, a body
// altered after signing is refused (so nginx passes the body byte for byte), the CLI works through it, and nginx
// reaches the agent on listen.socket, where the auth-failure limiter tells clients apart by the X-Forwarded-For
// nginx sets — while over TCP a local process's X-Forwarded-For is ignored.
import { execFile } from 'node:child_process'
import { request } from 'node:https'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { stringify } from 'yaml'
import { signRequest } from '../../agent/auth/canonical.js'
import { AUDIENCE, testConfigDocument, writeTestKeys } from '../helpers/agent.js'
import { runCli, startServe } from '../helpers/cli.js'
import { skipUnless } from '../helpers/engines.js'
import { startNginx } from '../helpers/nginx.js'
import { freePorts } from '../helpers/ports.js'
import { selfSignedCert } from '../helpers/tls.js'
import { tempDir } from '../helpers/tmp.js'

const SITE = new URL('../../config/nginx-agent-site.conf', import.meta.url)

function nginxAvailable(): Promise<boolean> {
  return new Promise((resolve) => execFile('nginx', ['-v'], (err) => resolve(err === null)))
}

/** Replaces `from` with `to` in the site, failing loudly when the shipped file no longer has `from`. */
function swap(text: string, from: string, to: string): string {
  if (!text.includes(from)) throw new Error(`config/nginx-agent-site.conf no longer contains ${JSON.stringify(from)}`)
  return text.replaceAll(from, to)
}

interface Answer {
  status: number
  body: string
}

function send(
  port: number,
  ca: Buffer,
  o: { method: string; path: string; body?: string; headers?: Record<string, string>; localAddress?: string },
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        ca,
        method: o.method,
        path: o.path,
        localAddress: o.localAddress,
        headers: { ...(o.body !== undefined && { 'content-type': 'application/json' }), ...o.headers },
      },
      (res) => {
        let body = ''
        res.on('data', (d) => (body += d))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      },
    )
    req.on('error', reject)
    req.end(o.body)
  })
}

t.test(
  'nginx site: HTTPS in front of the agent keeps signatures valid',
  { skip: skipUnless(await nginxAvailable(), 'nginx') },
  async (t) => {
    const dir = await tempDir(t)
    const keys = await writeTestKeys(dir)
    const tls = await selfSignedCert(dir)
    const [agentPort, httpsPort, nginxPort] = (await freePorts(3)) as [number, number, number]
    const configPath = join(dir, 'agent.yaml')
    const socket = join(dir, 'agent.sock')
    await writeFile(configPath, stringify({ ...testConfigDocument(dir), listen: { host: '127.0.0.1', port: agentPort, socket } }))
    const agent = await startServe(configPath, `http://127.0.0.1:${agentPort}`)
    t.teardown(() => agent.stop('SIGKILL'))

    let site = await readFile(SITE, 'utf8')
    site = swap(site, 'listen 443 ssl;', `listen 127.0.0.1:${httpsPort} ssl;`)
    site = swap(site, 'listen [::]:443 ssl;', '')
    site = swap(site, '/etc/deploy-agent/tls/fullchain.pem', tls.certFile)
    site = swap(site, '/etc/deploy-agent/tls/privkey.pem', tls.keyFile)
    site = swap(site, 'proxy_pass http://unix:/run/deploy-agent/agent.sock:;', `proxy_pass http://unix:${socket}:;`)
    const sitePath = join(dir, 'agent-site.conf')
    await writeFile(sitePath, site)
    const nginx = await startNginx(join(dir, 'nginx'), {
      port: nginxPort,
      upstreamFile: join(dir, 'upstream.conf'),
      upstreamName: 'unused',
      includes: [sitePath],
    })
    t.teardown(() => nginx.stop())

    const signed = (method: string, path: string, body = '') =>
      signRequest({ keyId: 'ci', key: { alg: 'ed25519', privateKey: keys.ed25519.privateKey }, audience: AUDIENCE, method, path, body })

    const status = await send(httpsPort, tls.cert, { method: 'GET', path: '/v1/status', headers: signed('GET', '/v1/status') })
    t.equal(status.status, 200, 'a signed GET through nginx over HTTPS')
    t.match(JSON.parse(status.body), { apps: { web: {} } })

    // Whitespace, key order and non-ASCII survive only if nginx passes the bytes untouched.
    const path = '/v1/apps/web/envs/staging/deploys'
    const body = '{ "reason":"déploiement ✓ via nginx",\n  "ref" : "main" }'
    const deploy = await send(httpsPort, tls.cert, { method: 'POST', path, body, headers: signed('POST', path, body) })
    t.equal(deploy.status, 202, 'a signed POST with an odd but valid body is accepted', { body: deploy.body })

    const headers = signed('POST', path, body)
    const altered = await send(httpsPort, tls.cert, { method: 'POST', path, body: body.replace('main', 'mail'), headers })
    t.equal(altered.status, 401, 'the same signature over an altered body is refused')
    t.match(JSON.parse(altered.body), { error: { code: 'unauthorized' } })
    const otherPath = await send(httpsPort, tls.cert, { method: 'POST', path, body, headers: signed('POST', `${path}/`, body) })
    t.equal(otherPath.status, 401, 'a signature for another path is refused: nginx passes the path as sent')

    const cli = await runCli(['deploys', '--json'], {
      DEPLOY_AGENT_URL: `https://127.0.0.1:${httpsPort}`,
      DEPLOY_AGENT_STATUS_TOKEN_FILE: join(keys.dir, 'status.token'),
      NODE_EXTRA_CA_CERTS: tls.certFile,
    })
    t.equal(cli.code, 0, cli.stderr)
    t.equal((JSON.parse(cli.stdout) as { deploys: unknown[] }).deploys.length, 1, 'the CLI through nginx sees the deploy')

    // The limiter counts per client, not per proxy: 20 failures from 127.0.0.2 block 127.0.0.2 only.
    const bad = () => ({ ...signed('GET', '/v1/status'), 'deploy-signature': 'v1=AAAA' })
    for (let i = 0; i < 20; i++) {
      const refused = await send(httpsPort, tls.cert, { method: 'GET', path: '/v1/status', headers: bad(), localAddress: '127.0.0.2' })
      if (refused.status !== 401) t.fail(`failure ${i + 1} answered ${refused.status}`)
    }
    const blocked = await send(httpsPort, tls.cert, { method: 'GET', path: '/v1/status', headers: bad(), localAddress: '127.0.0.2' })
    t.equal(blocked.status, 429, 'the failing client is blocked')
    const forged = await send(httpsPort, tls.cert, {
      method: 'GET',
      path: '/v1/status',
      headers: { ...bad(), 'x-forwarded-for': '127.0.0.3' },
      localAddress: '127.0.0.2',
    })
    t.equal(forged.status, 429, 'a client cannot escape by sending its own X-Forwarded-For (nginx replaces it)')
    const good = await send(httpsPort, tls.cert, {
      method: 'GET',
      path: '/v1/status',
      headers: signed('GET', '/v1/status'),
      localAddress: '127.0.0.2',
    })
    t.equal(good.status, 200, 'a valid signature from the blocked client is not refused')
    // A local process on TCP names 127.0.0.3 in X-Forwarded-For: over TCP the header is ignored.
    for (let i = 0; i < 25; i++) {
      await fetch(`http://127.0.0.1:${agentPort}/v1/status`, { headers: { ...bad(), 'x-forwarded-for': '127.0.0.3' } })
    }
    const other = await send(httpsPort, tls.cert, { method: 'GET', path: '/v1/status', headers: bad(), localAddress: '127.0.0.3' })
    t.equal(other.status, 401, 'another client behind nginx is not blocked, neither by 127.0.0.2 nor by a forged header over TCP')
  },
)
