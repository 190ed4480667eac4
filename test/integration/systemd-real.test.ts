// The installer and the units under a real systemd (PID 1 in a container, as on a Debian server): one start on a
// fresh install, the nginx reload helper surviving a burst of switches, and an admin's restart loop within the
// start limits. The unit files' own syntax is checked by systemd-analyze in install.test.ts.
import { execFile } from 'node:child_process'
import { realpath } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'
import { dockerAvailable } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { tempDir } from '../helpers/tmp.js'
import { bootSystemd, debootstrapAvailable, ensureSystemdImage, type BootedSystemd } from '../helpers/systemd.js'

const run = promisify(execFile)
const checkout = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '')
const available = (await dockerAvailable()) && (await debootstrapAvailable())

/** The journal lines of a unit, message text only. */
async function journal(box: BootedSystemd, unit: string): Promise<string[]> {
  const { stdout } = await box.exec(['journalctl', '--no-pager', '--output', 'cat', '--unit', unit])
  return stdout.split('\n')
}

async function show(box: BootedSystemd, unit: string, property: string): Promise<string> {
  return (await box.exec(['systemctl', 'show', '--value', '--property', property, unit])).stdout.trim()
}

/** Polls the agent's /healthz from inside the container (bash's /dev/tcp: minbase has no curl). */
async function agentAnswers(box: BootedSystemd): Promise<boolean> {
  const probe = 'exec 3<>/dev/tcp/127.0.0.1/8787 && printf "GET /healthz HTTP/1.0\\r\\n\\r\\n" >&3 && cat <&3'
  for (let i = 0; i < 60; i++) {
    const answer = await box.exec(['bash', '-c', probe]).then(
      (r) => r.stdout,
      () => '',
    )
    if (answer.startsWith('HTTP/1.1 200')) return true
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  return false
}

async function burst(box: BootedSystemd, touches: number): Promise<void> {
  await box.exec(['bash', '-c', `for i in $(seq ${touches}); do touch /etc/nginx/deploy-agent/.reload; sleep 0.4; done; sleep 1`])
}

t.test('the units under a real systemd', { skip: skipUnless(available, 'docker and debootstrap') }, async (t) => {
  await ensureSystemdImage()
  // Built on the host (the checkout's node_modules may be a symlink the container cannot follow), installed as
  // DEPLOY_AGENT_DIST; the checkout's node_modules stand in for `npm ci --omit=dev` (no registry in the tests).
  const dist = join(await tempDir(t, 'deploy-agent-systemd-dist-'), 'dist')
  await run(process.execPath, [join(checkout, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', dist], {
    cwd: checkout,
  })
  const box = await bootSystemd('deploy-agent-test-systemd', [
    `${checkout}:/src:ro`,
    `${dist}:/dist:ro`,
    `${await realpath(join(checkout, 'node_modules'))}:/opt/deploy-agent/node_modules:ro`,
  ])
  t.teardown(() => box.remove())

  t.test('a fresh install starts the agent once', async (t) => {
    const install = await box.exec(['bash', '/src/scripts/install.sh'], { DEPLOY_AGENT_SKIP_NPM: '1', DEPLOY_AGENT_DIST: '/dist' })
    t.match(install.stdout, /started deploy-agent\.service/)
    t.notMatch(install.stdout, /restarted deploy-agent/, 'no restart after the first start')
    t.ok(await agentAnswers(box), 'the installed agent answers /healthz')
    const starts = (await journal(box, 'deploy-agent')).filter((line) => line.startsWith('Started deploy-agent.service'))
    t.equal(starts.length, 1, 'systemd started it exactly once')
    t.equal(await show(box, 'deploy-agent', 'NRestarts'), '0')
    t.equal(await show(box, 'deploy-agent-nginx-reload.path', 'ActiveState'), 'active', 'the reload helper watches its trigger')
  })

  t.test('a burst of switches never disables the nginx reload helper', async (t) => {
    const reloadsBefore = (await journal(box, 'deploy-agent-nginx-reload.service')).filter((l) => l.includes('signal process started'))
    await burst(box, 8)
    t.equal(await show(box, 'deploy-agent-nginx-reload.path', 'ActiveState'), 'active', 'the .path unit is not failed')
    t.equal(await show(box, 'deploy-agent-nginx-reload.path', 'Result'), 'success', 'no unit-start-limit-hit')
    // A switch after the burst still reloads nginx.
    await burst(box, 1)
    const reloads = (await journal(box, 'deploy-agent-nginx-reload.service')).filter((l) => l.includes('signal process started'))
    t.ok(reloads.length >= reloadsBefore.length + 2, `nginx was reloaded during and after the burst (${reloads.length} reloads)`)
  })

  t.test("an admin's edit-and-restart loop stays within the start limits", async (t) => {
    for (let i = 0; i < 7; i++) await box.exec(['systemctl', 'restart', 'deploy-agent'])
    t.equal(await show(box, 'deploy-agent', 'ActiveState'), 'active', 'seven restarts in a row (the old limit was 5 per 300 s)')
    t.ok(await agentAnswers(box), 'and it serves')
  })
})
