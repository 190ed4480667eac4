import t from 'tap'
import { planSlotDrops, serverOf, SlotLedger, type SlotRecord } from '../../agent/pitr/slots.js'
import { tempDir } from '../helpers/tmp.js'

const record = (slot: string, app: string, env: string, server = '127.0.0.1:5432'): SlotRecord => ({
  slot,
  app,
  env,
  server,
  createdAt: '2027-01-01T00:00:00.000Z',
})

t.test('PITR slots: serverOf names the server by host and port', async (t) => {
  t.equal(serverOf('postgres://u@127.0.0.1/db'), '127.0.0.1:5432')
  t.equal(serverOf('postgres://u:p@db.example.com:6432/db'), 'db.example.com:6432')
})

t.test('PITR slots: only recorded slots no PITR env uses are dropped, each through an env that reaches its server', async (t) => {
  const plan = planSlotDrops(
    [
      record('deploy_agent_shop_prod', 'shop', 'prod'), // still in use
      record('deploy_agent_shop_staging', 'shop', 'staging'), // PITR removed, database kept
      record('old_name', 'shop', 'prod'), // the env's slot was renamed
      record('deploy_agent_gone_prod', 'gone', 'prod'), // the app is gone: through another env on that server
      record('deploy_agent_far_prod', 'far', 'prod', '10.0.0.9:5432'), // no env reaches that server any more
      record('deploy_agent_shop_prod', 'shop', 'prod', '10.0.0.8:5432'), // same name, but on a server it moved from
    ],
    [
      { app: 'shop', env: 'prod', server: '127.0.0.1:5432', slot: 'deploy_agent_shop_prod' },
      { app: 'shop', env: 'staging', server: '127.0.0.1:5432', slot: null },
      { app: 'blog', env: 'prod', server: '10.0.0.8:5432', slot: null },
      { app: 'web', env: 'prod', server: null, slot: null },
    ],
  )
  t.same(
    plan.map((d) => `${d.record.slot}@${d.record.server} via ${d.via ? `${d.via.app}/${d.via.env}` : '-'}`),
    [
      'deploy_agent_shop_staging@127.0.0.1:5432 via shop/staging',
      'old_name@127.0.0.1:5432 via shop/prod',
      'deploy_agent_gone_prod@127.0.0.1:5432 via shop/prod',
      'deploy_agent_far_prod@10.0.0.9:5432 via -',
      'deploy_agent_shop_prod@10.0.0.8:5432 via blog/prod',
    ],
  )
  t.same(planSlotDrops([], [{ app: 'shop', env: 'prod', server: '127.0.0.1:5432', slot: 'x' }]), [], 'nothing recorded, nothing dropped')
})

t.test('PITR slots: the ledger in the state dir (none at first, one record per slot and server)', async (t) => {
  const dir = await tempDir(t)
  const ledger = new SlotLedger(dir)
  t.same(await ledger.list(), [])
  await ledger.add(record('a', 'shop', 'prod'))
  await ledger.add(record('b', 'shop', 'staging'))
  await ledger.add(record('a', 'shop', 'prod'))
  t.same(
    (await new SlotLedger(dir).list()).map((r) => r.slot),
    ['b', 'a'],
  )
  await ledger.remove({ slot: 'b', server: '127.0.0.1:5432' })
  t.same(
    (await ledger.list()).map((r) => r.slot),
    ['a'],
  )
})
