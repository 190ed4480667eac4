import t from 'tap'
import { parseConfig } from '../../agent/config/load.js'
import { findTarget } from '../../agent/config/targets.js'
import { pitrSlot } from '../../agent/pitr/paths.js'
import { configProblems } from '../helpers/config.js'

const problems = configProblems

const env = (name: string, ports: string, extra: string) => `      ${name}: { ref: "tag:v*", ports: [${ports}], ${extra} }\n`

t.test('Config: database.pitr defaults (enabled, slot named after the app and env, weekly base backup)', async (t) => {
  const config = parseConfig(
    `audience: web-1\napps:\n  life-os:\n    repo: /srv/one.git\n    envs:\n${env('prod', '18001, 18002', 'database: { url: "postgres://a@127.0.0.1/a", pitr: {} }')}`,
    {},
    'agent.yaml',
    '/etc',
  )
  const target = findTarget(config, 'life-os', 'prod')
  t.same(target.envConfig.database?.pitr, { enabled: true, baseBackup: '0 2 * * 0' })
  t.equal(pitrSlot(target), 'deploy_agent_life_os_prod')
})

t.test('Config: database.pitr problems name their key paths', async (t) => {
  const yaml = `audience: web-1
apps:
  one:
    repo: /srv/one.git
    envs:
${env('a', '18001, 18002', 'database: { url: "postgres://a@127.0.0.1/a", pitr: { slot: "Bad-Slot", baseBackup: "every sunday", extra: 1 } }')}${env('b', '18003, 18004', 'database: { url: "postgres://a@127.0.0.1/b", pitr: { slot: same } }')}${env('c', '18005, 18006', 'database: { url: "postgres://a@127.0.0.1/c", pitr: { slot: same } }')}${env('d', '18007, 18008', 'database: { url: "postgres://a@127.0.0.1/d", pitr: { enabled: false, slot: same } }')}`
  t.same(problems(yaml).sort(), [
    'apps.one.envs.a.database.pitr.baseBackup: must be a cron expression (minute hour day month weekday), e.g. "0 2 * * 0"',
    'apps.one.envs.a.database.pitr.extra: unknown key',
    'apps.one.envs.a.database.pitr.slot: must be 1 to 63 lowercase letters, digits or _ (a replication slot name)',
    'apps.one.envs.c.database.pitr.slot: slot "same" is already used by one/b',
  ])
})
