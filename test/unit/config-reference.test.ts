// docs/configuration.md's config reference against agent/config/schema.ts: the table is exactly what the schema generates
// (every key, type and default; `npm run docs:config` rewrites it), every key has a meaning, and every default in
// it is the value a config that leaves the key out really gets.
import { readFile } from 'node:fs/promises'
import t from 'tap'
import { meaningsOf, referenceRows, referenceSection, regenerate, UNDESCRIBED } from '../../agent/config/reference.js'
import { configSchema } from '../../agent/config/schema.js'

const readme = await readFile(new URL('../../docs/configuration.md', import.meta.url), 'utf8')

t.test('config reference: the docs table is the one the schema generates', async (t) => {
  t.equal(regenerate(readme), readme, 'up to date (run `npm run docs:config` after changing agent/config/schema.ts)')
  const { table } = referenceSection(readme)
  t.notOk(table.includes(UNDESCRIBED), 'every key has a meaning')
  const documented = [...meaningsOf(table).keys()]
  t.same(
    documented,
    referenceRows().map((r) => r.path),
    'the same keys, in schema order',
  )
  for (const path of [
    'listen.tls.cert',
    'listen.trustProxy',
    'keys[].allow.refs',
    'apps.<app>.envs.<env>.proxy.drainMs',
    'backups.retention.monthly',
    'notify[].secretFile',
  ]) {
    t.ok(documented.includes(path), `${path} is documented`)
  }
})

t.test('config reference: a key added to the schema shows up as undescribed', async (t) => {
  const withoutRow = readme.replace(/^\| `listen\.port` \|.*\n/m, '')
  t.not(withoutRow, readme)
  const regenerated = regenerate(withoutRow)
  t.match(regenerated, new RegExp(`^\\| \`listen\\.port\` \\| integer \\| \`8787\` \\| ${UNDESCRIBED} \\|$`, 'm'))
})

/** A config that sets every section that has keys of its own, leaving the keys with defaults out. */
const minimal = {
  audience: 'web-1.example.com',
  keys: [{ id: 'ci', alg: 'hmac-sha256', secretEnv: 'SECRET' }],
  apps: {
    a: {
      repo: '/srv/a.git',
      migrate: { command: ['migrate'] },
      smoke: [{ path: '/' }],
      services: { s: { kind: 'web', smoke: [{ path: '/' }], build: {} } },
      envs: {
        e: {
          ref: 'branch:main',
          ports: { s: [18001, 18002] },
          database: { url: 'postgres://u@h/db', pitr: {} },
          proxy: { upstreamFile: 'a.conf' },
        },
      },
    },
  },
  notify: [{ kind: 'slack', url: 'https://hooks.example.com/x' }],
}

/** `minimal` with env e on a swarm, for the keys of `swarm` (required with runtime: swarm, refused without). */
const onSwarm = structuredClone(minimal)
Object.assign(onSwarm.apps.a.envs.e, { runtime: 'swarm', swarm: { registry: '127.0.0.1:5000' } })

const stepsOf = (path: string) =>
  path.replaceAll('<app>', 'a').replaceAll('<env>', 'e').replaceAll('<service>', 's').replaceAll('[]', '.0').split('.')

function valueAt(config: unknown, steps: string[]): unknown {
  return steps.reduce<unknown>((at, step) => (at as Record<string, unknown> | undefined)?.[step], config)
}

/** `minimal` with the key at `steps` left out. */
function without(steps: string[]): unknown {
  const copy = structuredClone(steps.includes('swarm') ? onSwarm : minimal) as Record<string, unknown>
  const parent = valueAt(copy, steps.slice(0, -1)) as Record<string, unknown> | undefined
  if (parent) delete parent[steps.at(-1) as string]
  return copy
}

t.test('config reference: every default in the docs is what a config without the key gets', async (t) => {
  const rows = referenceRows()
  let checked = 0
  for (const row of rows) {
    if (row.default === 'required' || row.default === '—' || row.default.includes('defaults')) continue
    const steps = stepsOf(row.path)
    t.same(valueAt(configSchema.parse(without(steps)), steps), JSON.parse(row.default), `${row.path} defaults to ${row.default}`)
    checked++
  }
  t.ok(checked >= 35, `${checked} defaults checked`)
  t.equal(rows.find((r) => r.path === 'listen.port')?.default, '8787')
  t.equal(rows.find((r) => r.path === 'backups.schedule')?.default, '"0 3 * * *"')
  t.equal(rows.find((r) => r.path === 'audience')?.default, 'required')
  t.equal(rows.find((r) => r.path === 'backups.dir')?.default, '—')
})
