// `deploy-agent backup` waits until the backup is verified. The status may say the backup settled after the list was
// read (its verification ended in between): the CLI then reads the list again, so it never prints a verified backup
// as "not verified". A fake agent on loopback plays that order.
import { createServer } from 'node:http'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { buildProgram } from '../../agent/cli/program.js'
import { tempDir } from '../helpers/tmp.js'

const ID = 'f3a10931'
const backup = (verified: unknown) => ({
  id: ID,
  legacy: false,
  app: 'shop',
  env: 'production',
  kind: 'manual',
  createdAt: '2026-12-07T23:00:00.000Z',
  file: `${ID}.dump`,
  bytes: 1700,
  sha256: null,
  verified,
  pinnedBy: null,
})

t.test('CLI backup: verified between the list and the status, it is printed verified', async (t) => {
  let lists = 0
  const server = createServer(async (req, res) => {
    for await (const chunk of req) void chunk
    res.setHeader('content-type', 'application/json')
    if (req.method === 'POST') {
      res.statusCode = 202
      return res.end(JSON.stringify({ id: ID }))
    }
    if (req.url === '/v1/backups') {
      // The first list is read before the verification ends; the status after it.
      const verified = lists++ === 0 ? null : { at: '2026-12-07T23:00:01.000Z', method: 'full', ok: true }
      return res.end(JSON.stringify({ backups: [backup(verified)], failures: [] }))
    }
    res.end(JSON.stringify({ apps: { shop: { envs: { production: { lastBackup: { id: ID, createdAt: '2026-12-07T23:00:00.000Z' } } } } } }))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`
  const keyFile = join(await tempDir(t), 'key')
  await writeFile(keyFile, 'x'.repeat(40))
  process.env.DEPLOY_AGENT_STATUS_TOKEN = 'token'
  process.env.NO_COLOR = '1'
  const log = console.log
  let out = ''
  console.log = (...parts: unknown[]) => void (out += `${parts.join(' ')}\n`)
  try {
    await buildProgram().parseAsync(['backup', 'shop', 'production', '--url', url, '--key-id', 'ops', '--key-file', keyFile], {
      from: 'user',
    })
  } finally {
    console.log = log
  }
  t.match(out, new RegExp(`^${ID}\\s+shop/production\\s+1.7 kB\\s+verified \\(full\\)$`, 'm'))
  t.equal(lists, 2, 'the list was read again after the status')
})
