// The real binary end to end: serve on a real port, the CLI's signed and token requests, `sign --curl`, the
// the openssl recipe of docs/api.md, config errors, keygen, SIGHUP key reload and graceful SIGTERM.
import { execFile } from 'node:child_process'
import { appendFile, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { stringify } from 'yaml'
import { AUDIENCE, testConfigDocument, writeTestKeys } from '../helpers/agent.js'
import { runCli, startServe, type ServeProcess } from '../helpers/cli.js'
import { freePort } from '../helpers/ports.js'
import { tempDir } from '../helpers/tmp.js'

const run = promisify(execFile)

async function writeConfig(dir: string, port: number, extra: Record<string, unknown> = {}): Promise<string> {
  const path = join(dir, 'agent.yaml')
  const doc = testConfigDocument(dir, extra)
  await writeFile(path, stringify({ ...doc, listen: { host: '127.0.0.1', port } }))
  return path
}

/** The fenced block of docs/api.md that starts with `# sign-with-openssl`. */
async function readmeRecipe(): Promise<string> {
  const readme = await readFile(new URL('../../docs/api.md', import.meta.url), 'utf8')
  const block = /```bash\n(# sign-with-openssl\n[\s\S]*?)```/.exec(readme)?.[1]
  if (!block) throw new Error('docs/api.md has no sign-with-openssl block')
  return block
}

t.test('CLI: serve, status, sign, openssl recipe, SIGHUP and SIGTERM', async (t) => {
  const dir = await tempDir(t)
  const keys = await writeTestKeys(dir)
  const port = await freePort()
  const configPath = await writeConfig(dir, port)
  const url = `http://127.0.0.1:${port}`
  const agent: ServeProcess = await startServe(configPath, url)
  t.teardown(() => agent.stop('SIGKILL'))
  const client = { DEPLOY_AGENT_URL: url, DEPLOY_AGENT_AUDIENCE: AUDIENCE }

  const byToken = await runCli(['status', '--token-file', join(keys.dir, 'status.token')], client)
  t.equal(byToken.code, 0, byToken.stderr)
  t.match(byToken.stdout, /^APP\s+ENV\s+LIVE\s+PORT\s+DEPLOYING\s+LAST BACKUP\n/)
  t.match(byToken.stdout, /web\s+staging\s+-/)

  const signed = await runCli(['status', '--json'], {
    ...client,
    DEPLOY_AGENT_KEY_ID: 'ci',
    DEPLOY_AGENT_KEY_FILE: join(keys.dir, 'ci.key'),
  })
  t.equal(signed.code, 0, signed.stderr)
  t.same(Object.keys(JSON.parse(signed.stdout).apps.web.envs).sort(), ['production', 'staging'])

  const wrongAudience = await runCli(['status'], {
    DEPLOY_AGENT_URL: url,
    DEPLOY_AGENT_KEY_ID: 'ci',
    DEPLOY_AGENT_KEY_FILE: join(keys.dir, 'ci.key'),
  })
  t.equal(wrongAudience.code, 1, 'signed for 127.0.0.1 instead of the configured audience')
  t.match(wrongAudience.stderr, /unauthorized/)

  const curl = await runCli(
    [
      'sign',
      '--key-id',
      'legacy',
      '--key-file',
      join(keys.dir, 'legacy.secret'),
      '--path',
      '/v1/apps/web/envs/staging/deploys',
      '--body',
      '{"ref":"main"}',
      '--curl',
    ],
    client,
  )
  t.equal(curl.code, 0, curl.stderr)
  t.match(curl.stdout, /^curl -sS -X POST 'http:\/\/127\.0\.0\.1:\d+\/v1\/apps\/web\/envs\/staging\/deploys' -H 'Deploy-Key-Id: legacy'/)
  const curlRun = await run('bash', ['-c', `${curl.stdout.trim()} -w '\\n%{http_code}'`])
  t.match(curlRun.stdout, /"state":"QUEUED"[\s\S]*\n202$/, 'the printed curl command is accepted')

  const headers = await runCli(
    ['sign', '-X', 'GET', '--key-id', 'ci', '--key-file', join(keys.dir, 'ci.key'), '--path', '/v1/status'],
    client,
  )
  t.match(
    headers.stdout,
    /^Deploy-Key-Id: ci\nDeploy-Timestamp: \d+\nDeploy-Nonce: [A-Za-z0-9_-]{24}\nDeploy-Signature: v1=[A-Za-z0-9_-]{86}\n$/,
  )

  const recipe = await readmeRecipe()
  for (const [alg, keyId, keyFile, method, path, body, expected] of [
    ['ed25519', 'ci', 'ci.key', 'GET', '/v1/status', '', '200'],
    ['ed25519', 'ci', 'ci.key', 'POST', '/v1/apps/web/envs/staging/deploys', '{"ref":"main"}', '202'],
    ['hmac-sha256', 'legacy', 'legacy.secret', 'POST', '/v1/apps/web/envs/staging/deploys', '{"ref":"main"}', '202'],
  ] as const) {
    const env = {
      ...process.env,
      ALG: alg,
      KEY_ID: keyId,
      KEY_FILE: join(keys.dir, keyFile),
      AUDIENCE,
      URL: url,
      METHOD: method,
      REQ_PATH: path,
      BODY: body,
    }
    // The recipe runs unchanged; curl is wrapped only to print the status code after the body.
    const script = `set -euo pipefail\ncurl() { command curl -w '\\n%{http_code}' "$@"; }\ncd "$(mktemp -d)"\n${recipe}`
    const result = await run('bash', ['-c', script], { env })
    t.equal(result.stdout.trim().split('\n').at(-1), expected, `openssl recipe, ${alg} ${method} ${path}`)
  }

  // SIGHUP: a key added to the config file works without a restart.
  await writeFile(join(keys.dir, 'new.secret'), 'n'.repeat(40))
  const doc = testConfigDocument(dir)
  const addedKey = { id: 'added', alg: 'hmac-sha256', secretFile: 'keys/new.secret' }
  await writeFile(configPath, stringify({ ...doc, listen: { host: '127.0.0.1', port }, keys: [...(doc.keys as object[]), addedKey] }))
  const before = await runCli(['status'], { ...client, DEPLOY_AGENT_KEY_ID: 'added', DEPLOY_AGENT_KEY_FILE: join(keys.dir, 'new.secret') })
  t.equal(before.code, 1, 'unknown before the reload')
  agent.child.kill('SIGHUP')
  await t.resolveMatch(
    (async () => {
      for (let i = 0; i < 100 && !agent.output().includes('keyring reloaded'); i++) await new Promise((r) => setTimeout(r, 50))
      return agent.output()
    })(),
    /keyring reloaded/,
  )
  const after = await runCli(['status'], { ...client, DEPLOY_AGENT_KEY_ID: 'added', DEPLOY_AGENT_KEY_FILE: join(keys.dir, 'new.secret') })
  t.equal(after.code, 0, after.stderr)

  // A broken config on SIGHUP keeps the old keyring.
  await appendFile(configPath, 'bogus: true\n')
  agent.child.kill('SIGHUP')
  for (let i = 0; i < 100 && !agent.output().includes('keyring reload failed'); i++) await new Promise((r) => setTimeout(r, 50))
  t.match(agent.output(), /keyring reload failed/)
  const still = await runCli(['status'], { ...client, DEPLOY_AGENT_KEY_ID: 'added', DEPLOY_AGENT_KEY_FILE: join(keys.dir, 'new.secret') })
  t.equal(still.code, 0, 'the previous keyring stays in use')

  t.notMatch(agent.output(), /v1=[0-9a-f]{64}|v1=[A-Za-z0-9_-]{86}/, 'no signature reached the log')
  t.notMatch(agent.output(), new RegExp(keys.statusToken), 'the status token never reached the log')
  t.equal(await agent.stop('SIGTERM'), 0, 'SIGTERM exits cleanly')
})

t.test('CLI: a bad config exits 2 without listening, naming every problem', async (t) => {
  const dir = await tempDir(t)
  await writeTestKeys(dir)
  const port = await freePort()
  const configPath = await writeConfig(dir, port, {
    apps: { web: { repo: '/srv/web.git', envs: { production: { ref: 'tag:v*', ports: [18011, 70000] } } } },
    keys: [{ id: 'ci', alg: 'ed25519', publicKeyFile: 'keys/missing.pub' }],
  })
  const check = await runCli(['check-config', '--config', configPath])
  t.equal(check.code, 2)
  t.match(check.stderr, /apps\.web\.envs\.production\.ports\[1\]: must be a port number/)

  await writeConfig(dir, port, {
    keys: [
      { id: 'ci', alg: 'ed25519', publicKeyFile: 'keys/missing.pub' },
      { id: 'h', alg: 'hmac-sha256', secretFile: 'keys/ci.pub' },
    ],
  })
  const keyProblems = await runCli(['check-config', '--config', configPath])
  t.equal(keyProblems.code, 2)
  t.match(keyProblems.stderr, /keys\[0\]\.publicKeyFile: cannot read .*missing\.pub \(ENOENT\)/)

  const serve = await runCli(['serve', '--config', configPath])
  t.equal(serve.code, 2, 'serve refuses to start')
  const listening = await fetch(`http://127.0.0.1:${port}/healthz`).then(
    () => true,
    () => false,
  )
  t.equal(listening, false, 'nothing listens')

  const good = await writeConfig(dir, port)
  const ok = await runCli(['check-config', '--config', good])
  t.equal(ok.code, 0, ok.stderr)
  t.match(ok.stdout, /OK \(1 apps, 2 envs, 5 keys\)/)
})

t.test('CLI: keygen writes keys with private modes and never overwrites', async (t) => {
  const dir = await tempDir(t)
  const out = join(dir, 'keys')
  const first = await runCli(['keygen', '--name', 'ci-main', '--out-dir', out, '--status-token'])
  t.equal(first.code, 0, first.stderr)
  t.equal((await stat(join(out, 'ci-main.key'))).mode & 0o777, 0o600)
  t.equal((await stat(join(out, 'status.token'))).mode & 0o777, 0o600)
  const pub = await readFile(join(out, 'ci-main.pub'), 'utf8')
  t.match(pub, /^-----BEGIN PUBLIC KEY-----/)
  const again = await runCli(['keygen', '--name', 'ci-main', '--out-dir', out])
  t.equal(again.stdout, '', 'nothing rewritten')
  t.equal(await readFile(join(out, 'ci-main.pub'), 'utf8'), pub)
  const hmac = await runCli(['keygen', '--alg', 'hmac-sha256', '--name', 'legacy'])
  t.match(hmac.stdout, /^# legacy\.secret\n[A-Za-z0-9_-]{43}\n$/)
  const help = await runCli(['--help'])
  t.match(help.stdout, /serve[\s\S]*check-config[\s\S]*keygen[\s\S]*sign[\s\S]*status/)
  const bad = await runCli(['sign', '--path', '/x'])
  t.equal(bad.code, 2, 'sign without a key is a usage error')
})
