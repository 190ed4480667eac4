// The systemd units' settings that carry a decision: resource caps, start limits a crash loop and an admin can
// live with, a start-limit-free nginx reload helper, the journal tag. `systemd-analyze verify` of the same files
// is in test/integration/install.test.ts.
import { readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import t from 'tap'

const root = resolve(import.meta.dirname, '../..')

/** A unit file as section → key → values (a key may repeat); comments and blank lines dropped. */
function parseUnit(text: string): Record<string, Record<string, string[]>> {
  const out: Record<string, Record<string, string[]>> = {}
  let section: Record<string, string[]> | undefined
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue
    const header = /^\[(.+)\]$/.exec(line)
    if (header) section = out[header[1] as string] ??= {}
    else if (section) {
      const eq = line.indexOf('=')
      ;(section[line.slice(0, eq)] ??= []).push(line.slice(eq + 1))
    }
  }
  return out
}

async function unit(name: string) {
  return parseUnit(await readFile(resolve(root, 'systemd', name), 'utf8'))
}

/** systemd's time span in seconds, for the forms these units use (`300`, `10s`, `5min`). */
function seconds(value: string | undefined): number {
  const m = /^(\d+)(s|min)?$/.exec(value ?? '')
  if (!m) throw new Error(`not a time span this test reads: ${value}`)
  return Number(m[1]) * (m[2] === 'min' ? 60 : 1)
}

t.test('systemd units: the agent is capped in memory and tasks', async (t) => {
  const { Service: service } = await unit('deploy-agent.service')
  t.same(service?.MemoryMax, ['512M'])
  t.same(service?.TasksMax, ['256'])
})

t.test("systemd units: a crash loop never reaches the start limit, with room for an admin's restarts", async (t) => {
  const { Unit: u, Service: service } = await unit('deploy-agent.service')
  const interval = seconds(u?.StartLimitIntervalSec?.[0])
  const burst = Number(u?.StartLimitBurst?.[0])
  const restartSec = seconds(service?.RestartSec?.[0])
  t.same(service?.Restart, ['on-failure'])
  t.ok(interval > 0, 'a limit exists: something starting the agent in a tight loop is stopped')
  const crashLoopStarts = Math.floor(interval / restartSec) + 1
  t.ok(
    crashLoopStarts + 10 <= burst,
    `a crash loop (${crashLoopStarts} starts per ${interval} s) plus 10 admin restarts stay within ${burst}`,
  )
})

t.test('systemd units: the nginx reload helper is never start-limited', async (t) => {
  const { Unit: u } = await unit('deploy-agent-nginx-reload.service')
  t.same(u?.StartLimitIntervalSec, ['0'], 'a burst of triggers cannot fail the .path unit')
  const path = await unit('deploy-agent-nginx-reload.path')
  t.same(path.Path?.Unit, ['deploy-agent-nginx-reload.service'])
})

t.test('systemd units: journal tag and documentation', async (t) => {
  const { Unit: u, Service: service } = await unit('deploy-agent.service')
  t.same(service?.SyslogIdentifier, ['deploy-agent'], 'lines are tagged deploy-agent, not env')
  t.same(u?.Documentation, ['file:///usr/share/doc/deploy-agent/README.md'])
  const installer = await readFile(resolve(root, 'scripts/install.sh'), 'utf8')
  t.match(
    installer,
    /doc_dir=\$\{DEPLOY_AGENT_DOC_DIR:-\/usr\/share\/doc\/deploy-agent\}/,
    'the installer puts the README where Documentation= points',
  )
  t.match(installer, /put_file "\$src\/README\.md" "\$root\$doc_dir\/README\.md"/)
})
