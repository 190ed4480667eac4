// The agent's own TLS (`listen.tls`), for real: a self-signed P-256 certificate made by openssl, /healthz over HTTPS
// with that certificate trusted (and refused without), a signed CLI request trusting it through
// NODE_EXTRA_CA_CERTS, and the bad-input cases: missing, unreadable, malformed or mismatched files stop the agent
// before it listens, each named by its key path.
import { request } from 'node:https'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { stringify } from 'yaml'
import { startAgent } from '../../agent/cli/serve.js'
import { createLogger } from '../../agent/observability/logger.js'
import { AUDIENCE, testConfigDocument, writeTestKeys } from '../helpers/agent.js'
import { runCli } from '../helpers/cli.js'
import { freePort } from '../helpers/ports.js'
import { selfSignedCert } from '../helpers/tls.js'
import { tempDir } from '../helpers/tmp.js'

/** GET over HTTPS trusting `ca`; resolves with the status, rejects on a TLS or socket error. */
function httpsGet(url: string, ca?: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, method: 'GET' }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    req.end()
  })
}

async function writeConfig(dir: string, port: number, tls: { cert: string; key: string }): Promise<string> {
  const path = join(dir, 'agent.yaml')
  await writeFile(path, stringify({ ...testConfigDocument(dir), listen: { host: '127.0.0.1', port, tls } }))
  return path
}

t.test('TLS: the agent serves HTTPS with listen.tls; the CLI trusts a private CA through NODE_EXTRA_CA_CERTS', async (t) => {
  const dir = await tempDir(t)
  const keys = await writeTestKeys(dir)
  const tls = await selfSignedCert(dir)
  const port = await freePort()
  const configPath = await writeConfig(dir, port, { cert: 'agent.crt', key: 'agent.key' })
  const agent = await startAgent(configPath, createLogger({ level: 'silent' }))
  t.teardown(() => agent.close())
  const url = `https://127.0.0.1:${port}`

  t.equal(await httpsGet(`${url}/healthz`, tls.cert), 200, '/healthz over HTTPS, the certificate trusted')
  await t.rejects(
    httpsGet(`${url}/healthz`),
    { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' },
    'an untrusted certificate is refused: it really is TLS',
  )
  const plain = await fetch(`http://127.0.0.1:${port}/healthz`).then(
    (r) => r.status,
    () => 'no answer',
  )
  t.not(plain, 200, 'plain HTTP gets no /healthz answer')

  const env = {
    DEPLOY_AGENT_URL: url,
    DEPLOY_AGENT_AUDIENCE: AUDIENCE,
    DEPLOY_AGENT_KEY_ID: 'ci',
    DEPLOY_AGENT_KEY_FILE: join(keys.dir, 'ci.key'),
    DEPLOY_AGENT_STATUS_TOKEN_FILE: '',
  }
  const trusted = await runCli(['status', '--json'], { ...env, NODE_EXTRA_CA_CERTS: tls.certFile })
  t.equal(trusted.code, 0, trusted.stderr)
  t.match(JSON.parse(trusted.stdout), { apps: { web: { envs: { staging: {} } } } }, 'a signed status over HTTPS')
  const untrusted = await runCli(['status'], { ...env, NODE_EXTRA_CA_CERTS: '' })
  t.equal(untrusted.code, 3, 'without the CA the agent is unreachable (exit 3)')
  t.match(
    untrusted.stderr,
    /cannot reach the agent at https:\/\/127\.0\.0\.1:\d+: DEPTH_ZERO_SELF_SIGNED_CERT \(a private CA\? trust it with NODE_EXTRA_CA_CERTS/,
  )
})

t.test('TLS: bad cert or key files stop the agent before it listens, naming listen.tls.cert / listen.tls.key', async (t) => {
  const dir = await tempDir(t)
  await writeTestKeys(dir)
  const tls = await selfSignedCert(dir)
  const other = await selfSignedCert(dir, 'other')
  await mkdir(join(dir, 'a-directory'))
  await writeFile(join(dir, 'garbage.pem'), 'not a pem file\n')
  const port = await freePort()
  const listening = () =>
    fetch(`http://127.0.0.1:${port}/healthz`).then(
      () => true,
      () => false,
    )

  const missing = await writeConfig(dir, port, { cert: 'missing.crt', key: 'a-directory' })
  const serve = await runCli(['serve', '--config', missing])
  t.equal(serve.code, 2, 'serve exits 2')
  t.match(serve.stderr, new RegExp(`listen\\.tls\\.cert: cannot read ${dir}/missing\\.crt \\(ENOENT\\)`))
  t.match(serve.stderr, new RegExp(`listen\\.tls\\.key: cannot read ${dir}/a-directory \\(EISDIR\\)`), 'both problems at once')
  t.equal(await listening(), false, 'nothing listens')

  await writeConfig(dir, port, { cert: 'agent.key', key: 'garbage.pem' })
  const malformed = await runCli(['check-config', '--config', join(dir, 'agent.yaml'), '--json'])
  t.equal(malformed.code, 2)
  t.same(JSON.parse(malformed.stdout).problems, [
    `listen.tls.cert: ${tls.keyFile} is not a PEM certificate`,
    `listen.tls.key: ${dir}/garbage.pem is not a PEM private key (or it is encrypted)`,
  ])

  await writeConfig(dir, port, { cert: 'agent.crt', key: 'other.key' })
  const mismatched = await runCli(['serve', '--config', join(dir, 'agent.yaml')])
  t.equal(mismatched.code, 2)
  t.match(mismatched.stderr, `listen.tls.key: ${other.keyFile} does not belong to the certificate in ${tls.certFile}`)
  t.equal(await listening(), false, 'nothing listens')
})
