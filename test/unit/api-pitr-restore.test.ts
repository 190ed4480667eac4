// POST /v1/backups/pitr/restore: signed, authorised for the env it restores, confirmed, one target; the PITR side
// is a recorder here (the restore itself is tested against PostgreSQL in integration/pitr.test.ts).
import { dirname, join } from 'node:path'
import t from 'tap'
import type { Target } from '../../agent/config/targets.js'
import type { PitrEnvStatus } from '../../agent/pitr/monitor.js'
import type { PitrTarget } from '../../agent/pitr/target.js'
import { buildTestAgent, signedInject, type TestAgent } from '../helpers/agent.js'
import { cliEnvFor, runCli } from '../helpers/cli.js'
import { tempDir } from '../helpers/tmp.js'

/** What the PITR side last checked of web/production. */
const PRODUCTION: PitrEnvStatus = {
  slot: 'deploy_agent_web_production',
  window: {
    earliest: { time: '2027-01-03T02:00:05.123Z', lsn: '0/3000100', baseBackup: '20270103T020000Z' },
    latest: { lsn: '0/9A000F0', time: '2027-01-05T10:15:00.456Z' },
    gaps: [
      {
        from: { lsn: '0/5000000', time: '2027-01-04T01:00:00.000Z' },
        to: { lsn: '0/8000100', time: '2027-01-04T09:30:00.000Z', baseBackup: '20270104T093000Z' },
      },
    ],
  },
  receiver: { running: false, streaming: false, restarts: 4, downSince: '2027-01-05T10:15:30.000Z' },
  walStatus: 'extended',
  safeWalSize: null,
  receiveLagBytes: 2_500_000,
  walDiskFreeBytes: 12_000_000_000,
  problems: [{ kind: 'receiver_down', message: 'pg_receivewal has not streamed', hint: 'see the log' }],
  error: null,
  checkedAt: '2027-01-05T10:21:00.000Z',
}

let agent: TestAgent
const calls: Array<{ env: string; point: PitrTarget }> = []
const pruned: Array<{ env: string; dryRun: boolean }> = []
let address = 0

t.before(async () => {
  const dir = await tempDir(t)
  const database = { url: 'postgres://agent@127.0.0.1:1/web', pitr: {} }
  agent = await buildTestAgent(dir, {
    extra: {
      apps: {
        web: {
          repo: '/srv/git/web.git',
          envs: {
            staging: { ref: 'branch:main', ports: [18001, 18002], database },
            production: { ref: 'tag:v*.*.*', ports: [18011, 18012], database },
          },
        },
      },
    },
    pitr: {
      enabled: (target: Target) => target.env === 'production',
      status: (target: Target) => (target.env === 'production' ? PRODUCTION : null),
      statuses: () => [{ app: 'web', env: 'production', ...PRODUCTION }],
      prune: async (target: Target, opts: { dryRun?: boolean } = {}) => {
        pruned.push({ env: target.env, dryRun: opts.dryRun === true })
        return { plan: { bases: [], removeWal: [], keepWalFrom: null }, text: 'keep   20270101T020000Z  newest' }
      },
      restore: async (target: Target, point: PitrTarget) => {
        calls.push({ env: target.env, point })
        return { target: 'x', baseBackup: 'b', database: 'web', oldDatabase: 'web_old_1', prerestore: 'p', durationMs: 1 }
      },
    },
  })
})
t.teardown(() => agent.close())

/** The CLI's environment for this agent, listening from the first call on. */
let listening: Promise<string> | undefined
const cliEnv = async () => {
  listening ??= agent.app.listen({ host: '127.0.0.1', port: 0 })
  return cliEnvFor(await listening, join(dirname(agent.configPath), 'keys'))
}

const restore = (keyId: 'legacy' | 'ci', body: Record<string, unknown>) =>
  signedInject(agent, {
    url: '/v1/backups/pitr/restore',
    keyId,
    key: keyId === 'legacy' ? { alg: 'hmac-sha256', secret: agent.keys.hmac.secret } : undefined,
    body,
    remoteAddress: `127.0.8.${++address}`,
  })

t.test('PITR API: a restore before a deploy, confirmed, by a key allowed for the env', async (t) => {
  calls.length = 0
  const ok = await restore('ci', { app: 'web', env: 'production', target: { beforeDeploy: 'd_abcdefghijkl' }, confirm: 'web/production' })
  t.equal(ok.statusCode, 200, ok.body)
  t.match(JSON.parse(ok.body), { database: 'web', oldDatabase: 'web_old_1' })
  t.same(calls, [{ env: 'production', point: { beforeDeploy: 'd_abcdefghijkl' } }])
})

t.test('PITR API: refused without the confirmation, for another env, or with no or two targets', async (t) => {
  calls.length = 0
  const body = { app: 'web', env: 'production', target: { time: '2027-01-01T00:00:00+00:00' }, confirm: 'web/production' }
  const cases = [
    [await restore('ci', { ...body, confirm: 'web/staging' }), 400],
    [await restore('legacy', body), 403],
    [await restore('ci', { ...body, target: {} }), 400],
    [await restore('ci', { ...body, target: { lsn: '0/1', time: body.target.time } }), 400],
    [await restore('ci', { ...body, target: { lsn: 'not-an-lsn' } }), 400],
    [await restore('ci', { ...body, app: 'nope', confirm: 'nope/production' }), 404],
  ] as const
  t.same(
    cases.map(([res]) => res.statusCode),
    cases.map(([, status]) => status),
  )
  t.same(calls, [], 'nothing was restored')
})

t.test('CLI restore --pitr: one target, --app and --env, sent to the PITR route', async (t) => {
  calls.length = 0
  const env = await cliEnv()
  const ok = await runCli(['restore', '--pitr', '--app', 'web', '--env', 'production', '--before-deploy', 'd_abcdefghijkl', '--yes'], env)
  t.equal(ok.code, 0, ok.stderr)
  t.match(ok.stdout, /restored web to x \(base backup b\)/)
  t.match(ok.stdout, /old database kept as web_old_1/)
  t.same(calls, [{ env: 'production', point: { beforeDeploy: 'd_abcdefghijkl' } }])
  const two = await runCli(['restore', '--pitr', '--app', 'web', '--env', 'production', '--to-lsn', '0/1', '--to-time', 'x', '--yes'], env)
  t.equal(two.code, 2, two.stderr)
  t.match(two.stderr, /exactly one of --before-deploy, --to-time, --to-lsn/)
  const noEnv = await runCli(['restore', '--pitr', '--to-lsn', '0/1', '--yes'], env)
  t.match(noEnv.stderr, /needs --app and --env/)
  t.equal(calls.length, 1)
})

t.test("PITR API: prune applies the env's PITR retention beside its dumps", async (t) => {
  pruned.length = 0
  const env = await cliEnv()
  const dry = await runCli(['backups', 'prune', 'web', 'production', '--dry-run'], env)
  t.equal(dry.code, 0, dry.stderr)
  t.match(dry.stdout, /point-in-time recovery \(base backups and WAL\):\nkeep {3}20270101T020000Z {2}newest/)
  const staging = await runCli(['backups', 'prune', 'web', 'staging', '--json'], env)
  t.notMatch(staging.stdout, /pitr/, 'an env without PITR has no PITR plan')
  t.same(pruned, [{ env: 'production', dryRun: true }])
})

t.test('PITR status: the recoverable window and health in GET /v1/status and `deploy-agent backups`', async (t) => {
  const status = await agent.app.inject({ url: '/v1/status', headers: { authorization: `Bearer ${agent.keys.statusToken}` } })
  t.equal(status.statusCode, 200, status.body)
  const envs = (JSON.parse(status.body) as { apps: { web: { envs: Record<string, { pitr: unknown }> } } }).apps.web.envs
  t.same(envs.production?.pitr, PRODUCTION)
  t.equal(envs.staging?.pitr, null, 'an env without PITR')
  const env = await cliEnv()
  const list = await runCli(['backups'], env)
  t.equal(list.code, 0, list.stderr)
  t.match(
    list.stdout,
    /point-in-time recovery \(recoverable window per env\):\nAPP +ENV +EARLIEST +LATEST +RECEIVER +LAG +SLOT +DISK FREE\n/,
  )
  t.match(
    list.stdout,
    /web +production +2027-01-03 02:00:05Z \(0\/3000100\) +2027-01-05 10:15:00Z \(0\/9A000F0\) +down since 2027-01-05 10:15:30Z +2\.5 MB +extended +12\.0 GB/,
  )
  t.match(list.stdout, /web\/production: pg_receivewal has not streamed \(see the log\)/)
  t.match(
    list.stdout,
    /web\/production: cannot recover between 2027-01-04 01:00:00Z \(0\/5000000\) and 2027-01-04 09:30:00Z \(0\/8000100\): no WAL was received there/,
  )
  const json = JSON.parse((await runCli(['backups', '--json', '--env', 'staging'], env)).stdout) as { pitr: unknown[] }
  t.same(json.pitr, [], 'filtered by env like the backups')
})
