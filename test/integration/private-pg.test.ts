// The private PostgreSQL helper (test/helpers/private-pg.ts): bench/pitr.ts runs its cluster with fsync on.
import pg from 'pg'
import t from 'tap'
import { skipUnless } from '../helpers/engines.js'
import { canRunPrivatePostgres, startPrivatePostgres } from '../helpers/private-pg.js'

const skip = skipUnless(await canRunPrivatePostgres(), 'a private PostgreSQL server (root, a postgres user, the server binaries)')

async function show(url: string, name: string): Promise<string> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 })
  await client.connect()
  try {
    return (await client.query<{ v: string }>(`SELECT current_setting('${name}') AS v`)).rows[0]?.v ?? ''
  } finally {
    await client.end()
  }
}

t.test('private-pg: settings are applied after the defaults, which stay for tests', { skip }, async (t) => {
  const tuned = await startPrivatePostgres(t, { settings: { fsync: 'on', work_mem: '8MB' } })
  t.equal(await show(tuned.url(), 'fsync'), 'on', 'a setting overrides the default fsync=off')
  t.equal(await show(tuned.url(), 'work_mem'), '8MB')
  const plain = await startPrivatePostgres(t)
  t.equal(await show(plain.url(), 'fsync'), 'off', 'tests keep fsync off')
})
