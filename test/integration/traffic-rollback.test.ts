// Catching a bad release from real traffic, with a real agent, real Docker and a real nginx writing the
// deploy_agent JSON access log: the release's health stays green while its `/` answers 500 after the switch, under
// a request loop through nginx. With proxy.accessLog it is rolled back within seconds, long before its observe
// window ends; without it the probes alone never notice and it ends SUCCEEDED.
import { join } from 'node:path'
import t, { type Test } from 'tap'
import type { Deploy } from '../../agent/store/deploys.js'
import { startAgentRig, type AgentRig } from '../helpers/agent-rig.js'
import { makeGitRepo } from '../helpers/git.js'
import { requestLoop, type LoopResult } from '../helpers/load.js'
import { sampleReleaseFiles } from '../helpers/sample-app.js'

const GOOD = 'v1.0.0'
const BAD = 'v1.1.0'
/** Long enough that the probes could never be what ended the window in the time the test allows. */
const OBSERVE_SEC = 60

// busybox httpd answers a directory without index.html with cgi-bin/index.cgi: `/` is a 500, /healthz and
// /version (the smoke check) stay 200.
const INTERNAL_ERROR = '#!/bin/sh\nprintf "HTTP/1.0 500 Internal Server Error\\r\\nContent-Type: text/plain\\r\\n\\r\\nboom\\n"\n'
const badRelease = () => ({
  ...sampleReleaseFiles({ extra: 'RUN rm /www/index.html && chmod 755 /www/cgi-bin/index.cgi' }),
  'www/cgi-bin/index.cgi': INTERNAL_ERROR,
})

async function rigFor(t: Test, accessLog: boolean, observeSeconds: number): Promise<AgentRig> {
  return startAgentRig(t, {
    accessLog,
    app: { observe: { seconds: observeSeconds, intervalMs: 200, maxFailures: 2, maxErrorRate: 0.05, minRequests: 20 } },
    repo: async (dir) =>
      (
        await makeGitRepo(join(dir, 'repo'), [
          { files: sampleReleaseFiles({}), tag: GOOD },
          { files: badRelease(), tag: BAD },
        ])
      ).path,
  })
}

function secondsBetween(d: Deploy, from: string, to: string): number {
  const at = (state: string) => Date.parse(d.states.find((s) => s.state === state)?.at ?? 'NaN')
  return (at(to) - at(from)) / 1000
}

/** Deploys BAD under a request loop through nginx; answers the deploy and what the loop saw. */
async function deployBadUnderLoad(rig: AgentRig): Promise<{ done: Deploy; loop: LoopResult }> {
  const good = await rig.waitFinished(await rig.startDeploy(GOOD))
  if (good.state !== 'SUCCEEDED') throw new Error(`the good release did not deploy: ${JSON.stringify(good.error)}`)
  const loop = requestLoop(`http://127.0.0.1:${rig.nginx.port}/`, { concurrency: 4, maxRequests: 200_000 })
  try {
    const done = await rig.waitFinished(await rig.startDeploy(BAD), 120_000)
    return { done, loop: await loop.stop() }
  } catch (err) {
    await loop.stop()
    throw err
  }
}

t.test('Traffic: a release answering 500 behind nginx is rolled back from the access log, long before the probes', async (t) => {
  const rig = await rigFor(t, true, OBSERVE_SEC)
  const { done, loop } = await deployBadUnderLoad(rig)
  t.equal(done.state, 'ROLLED_BACK', JSON.stringify(done.error))
  t.equal(done.error?.code, 'observe_failed')
  t.match(
    done.error?.message,
    /error rate of the new release's answers through nginx was \d+(\.\d)?% \(\d+ of \d+ in 2 s were 5xx or upstream errors\), more than maxErrorRate 5%/,
  )
  const observed = secondsBetween(done, 'OBSERVING', 'ROLLING_BACK')
  t.ok(observed < 10, `rolled back ${observed} s into a ${OBSERVE_SEC} s window`)
  t.equal(await rig.served(), GOOD, 'nginx serves the good release again')
  t.ok(
    loop.failures.some((f) => f === 'HTTP 500'),
    'the loop did see the bad release answer 500',
  )
  t.ok(loop.ok > 0)

  const metrics = await (await fetch(`${rig.url}/metrics`, { headers: { authorization: `Bearer ${rig.keys.statusToken}` } })).text()
  const count = (release: string, cls: string) => {
    const m = new RegExp(
      `deploy_agent_upstream_responses_total\\{app="${rig.app}",env="${rig.env}",release="${release}",class="${cls}"\\} (\\d+)`,
    ).exec(metrics)
    return m ? Number(m[1]) : 0
  }
  t.ok(count(BAD, '5xx') >= 20, `the bad release's 500s are counted: ${count(BAD, '5xx')}`)
  t.ok(count(GOOD, '2xx') > 0, `the good release's 200s are counted: ${count(GOOD, '2xx')}`)
})

t.test('Traffic: without an access log the probes alone never notice that release', async (t) => {
  const rig = await rigFor(t, false, 4)
  const { done, loop } = await deployBadUnderLoad(rig)
  t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
  t.equal(await rig.served(), BAD, 'the bad release stays live')
  t.ok(loop.failures.filter((f) => f === 'HTTP 500').length >= 20, 'while it answered 500s through nginx')
})
