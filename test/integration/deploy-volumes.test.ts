// Volumes through a real agent: the config's `volumes` reach the deployed web container (it writes into the host
// dir, nginx serves a file from it) and the migration container (it writes there and cannot write a `:ro` one);
// a deploy whose host dir is missing fails before any container is created, and the live release stays.
import { readFile, rename, writeFile, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { startAgentRig } from '../helpers/agent-rig.js'
import { dockerAvailable } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { makeGitRepo } from '../helpers/git.js'
import { sampleReleaseFiles } from '../helpers/sample-app.js'
import { tempDir } from '../helpers/tmp.js'

const skip = skipUnless(await dockerAvailable(), 'docker')
const COMMAND = 'echo "web $(cat /www/version)" > /www/data/web.txt\nexec httpd -f -p 127.0.0.1:$PORT -h /www'
const MIGRATE = [
  'echo "migrated $(cat /www/version)" > /www/data/migrated.txt',
  '(echo x > /www/conf/written) 2>/dev/null && echo writable > /www/data/ro.txt || echo refused > /www/data/ro.txt',
].join('\n')

t.test('Deploy: the app and its migration mount the volumes; a missing host dir fails the deploy', { skip }, async (t) => {
  const host = await tempDir(t)
  const data = join(host, 'uploads')
  const conf = join(host, 'conf')
  await mkdir(data)
  await mkdir(conf)
  await writeFile(join(data, 'hello.txt'), 'from the host\n')
  const files = sampleReleaseFiles({ command: COMMAND, migrate: MIGRATE })
  const rig = await startAgentRig(t, {
    app: { volumes: [`${data}:/www/data`, `${conf}:/www/conf:ro`] },
    repo: async (dir) =>
      (
        await makeGitRepo(join(dir, 'repo'), [
          { files, tag: 'v1.0.0' },
          { files, tag: 'v1.1.0' },
        ])
      ).path,
  })

  const done = await rig.waitFinished(await rig.startDeploy('v1.0.0'))
  t.equal(done.state, 'SUCCEEDED', JSON.stringify(done.error))
  t.equal(await readFile(join(data, 'migrated.txt'), 'utf8'), 'migrated v1.0.0\n', 'the migration wrote into the host dir')
  t.equal(await readFile(join(data, 'ro.txt'), 'utf8'), 'refused\n', 'the :ro mount refused the migration a write')
  t.equal(await readFile(join(data, 'web.txt'), 'utf8'), 'web v1.0.0\n', 'the web container wrote into the host dir')
  const res = await fetch(`http://127.0.0.1:${rig.nginx.port}/data/hello.txt`)
  t.equal(await res.text(), 'from the host\n', 'the web container serves a file of the host dir')

  await rename(data, `${data}.moved`)
  const failed = await rig.waitFinished(await rig.startDeploy('v1.1.0'))
  t.equal(failed.state, 'FAILED')
  t.match(failed.error, { code: 'volume_unavailable', message: /host path ".*uploads" does not exist/ })
  t.equal(await rig.served(), 'v1.0.0', 'the live release stays')
})
