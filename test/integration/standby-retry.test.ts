// The warm standby as nginx's backup while a release is observed, with a real agent, Docker and nginx whose site
// has the recommended `proxy_next_upstream error timeout http_500 http_502 http_503 http_504;`: a release whose `/`
// answers 500 is retried on the standby, so a GET loop through nginx sees no failure, while the access log still
// counts the release's 500s and the traffic verdict rolls it back. A good release ends with nginx's file naming it
// alone and the standby stopped.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { MANAGED_HEADER } from '../../agent/proxy/nginx.js'
import { startAgentRig, type AgentRig } from '../helpers/agent-rig.js'
import { makeGitRepo } from '../helpers/git.js'
import { requestLoop } from '../helpers/load.js'
import { sampleReleaseFiles } from '../helpers/sample-app.js'

const OLD = 'v1.0.0'
const GOOD = 'v1.1.0'
const BAD = 'v1.2.0'

// As in traffic-rollback.test.ts: busybox httpd answers `/` with cgi-bin/index.cgi, a 500; /healthz stays 200.
const INTERNAL_ERROR = '#!/bin/sh\nprintf "HTTP/1.0 500 Internal Server Error\\r\\nContent-Type: text/plain\\r\\n\\r\\nboom\\n"\n'
const badRelease = () => ({
  ...sampleReleaseFiles({ extra: 'RUN rm /www/index.html && chmod 755 /www/cgi-bin/index.cgi' }),
  'www/cgi-bin/index.cgi': INTERNAL_ERROR,
})

async function rigFor(t: Parameters<typeof startAgentRig>[0], observeSeconds: number): Promise<AgentRig> {
  return startAgentRig(t, {
    accessLog: true,
    retryOnStandby: true,
    app: { observe: { seconds: observeSeconds, intervalMs: 200, maxFailures: 2, maxErrorRate: 0.05, minRequests: 20 } },
    repo: async (dir) =>
      (
        await makeGitRepo(join(dir, 'repo'), [
          { files: sampleReleaseFiles({}), tag: OLD },
          { files: sampleReleaseFiles({}), tag: GOOD },
          { files: badRelease(), tag: BAD },
        ])
      ).path,
  })
}

/** The upstream file naming `port` alone, as the agent writes it outside an observe window. */
const alone = (port: string) => `${MANAGED_HEADER}\nupstream sample_production { server 127.0.0.1:${port}; }\n`
const primaryOf = (file: string) => /server 127\.0\.0\.1:(\d+)[ ;]/.exec(file)?.[1] ?? ''

t.test('Warm standby: a release answering 500 is retried on the standby (no GET fails) and still rolled back by its traffic', async (t) => {
  const rig = await rigFor(t, 60)
  const first = await rig.waitFinished(await rig.startDeploy(OLD))
  t.equal(first.state, 'SUCCEEDED', JSON.stringify(first.error))
  const oldPort = primaryOf(await rig.upstream())
  t.equal(await rig.upstream(), alone(oldPort))

  const loop = requestLoop(`http://127.0.0.1:${rig.nginx.port}/`, { concurrency: 4, maxRequests: 200_000 })
  let done
  try {
    done = await rig.waitFinished(await rig.startDeploy(BAD), 120_000)
  } finally {
    const result = await loop.stop()
    t.same(result.failures, [], `no failed request of ${result.ok}`)
    t.ok(result.ok > 0)
  }
  t.equal(done.state, 'ROLLED_BACK', JSON.stringify(done.error))
  t.equal(done.error?.code, 'observe_failed')
  t.match(done.error?.message, /error rate of the new release's answers through nginx/, 'the traffic verdict, not the probes')
  t.equal(await rig.upstream(), alone(oldPort), 'nginx names the old release alone afterwards')
  t.equal(await rig.served(), OLD)
  const log = await readFile(join(rig.dir, 'nginx-production', 'access.json'), 'utf8')
  t.match(log, /"upstream_status":"500, 200"/, 'nginx logged the release’s 500 and the standby’s 200 for one request')
})

t.test('Warm standby: after a healthy window nginx names the new release alone and the standby is stopped', async (t) => {
  const rig = await rigFor(t, 3)
  const first = await rig.waitFinished(await rig.startDeploy(OLD))
  t.equal(first.state, 'SUCCEEDED', JSON.stringify(first.error))
  const oldPort = primaryOf(await rig.upstream())

  const loop = requestLoop(`http://127.0.0.1:${rig.nginx.port}/`, { concurrency: 4, maxRequests: 200_000 })
  let done
  try {
    const id = await rig.startDeploy(GOOD)
    await rig.waitFor(id, (d) => d.state === 'OBSERVING')
    const during = await rig.upstream()
    const newPort = primaryOf(during)
    t.equal(
      during,
      `${MANAGED_HEADER}\nupstream sample_production { server 127.0.0.1:${newPort} max_fails=0; server 127.0.0.1:${oldPort} backup; }\n`,
      'during OBSERVING the standby is the backup',
    )
    done = await rig.waitFinished(id)
    t.equal(await rig.upstream(), alone(newPort), 'after it, the new release alone')
  } finally {
    const result = await loop.stop()
    t.same(result.failures, [], `no failed request of ${result.ok}`)
  }
  t.equal(done?.state, 'SUCCEEDED', JSON.stringify(done?.error))
  t.equal(await rig.served(), GOOD)
  const containers = await rig.containers()
  t.notOk(
    containers.some((line) => line.startsWith(`running web ${OLD} `)),
    `the standby is stopped: ${containers.join('; ')}`,
  )
})
