// The README's runnable first deploy: examples/hello/demo.sh run as a new user would, on the real engines
// (Docker, nginx, git), with ports of its own. It must show every step the README promises.
import { readFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import t from 'tap'
import { runBashScript } from '../helpers/cli.js'
import { dockerAvailable } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { freePorts } from '../helpers/ports.js'
import { tempDir } from '../helpers/tmp.js'

const repo = resolve(import.meta.dirname, '../..')
const DEMO = 'examples/hello/demo.sh'
const docker = await dockerAvailable()

t.test('README: the first-deploy command is the demo script', async (t) => {
  const readme = await readFile(join(repo, 'README.md'), 'utf8')
  t.match(readme, `bash ${DEMO}`)
})

t.test('examples/hello: deploys, rolls a bad tag back by itself, rolls back by hand', { skip: skipUnless(docker, 'docker') }, async (t) => {
  const dir = await tempDir(t)
  const [nginx, agent, blue, green] = (await freePorts(4)) as [number, number, number, number]
  const result = await runBashScript(
    join(repo, DEMO),
    [],
    {
      DEMO_DIR: dir,
      DEMO_NGINX_PORT: String(nginx),
      DEMO_AGENT_PORT: String(agent),
      DEMO_PORTS: `${blue} ${green}`,
    },
    240_000,
  )
  const out = result.stdout
  t.equal(result.code, 0, 'the demo exits 0', { stderr: result.stderr.slice(-2000), stdout: out.slice(-3000) })
  const served = [...out.matchAll(/^nginx serves version (v[0-9.]+)/gm)].map((m) => m[1])
  t.same(served, ['v1.0.0', 'v1.1.0', 'v1.1.0', 'v1.0.0'], 'nginx served each live release in turn')
  t.match(out, /ROLLED_BACK {2}observe_failed/, 'the bad tag was rolled back by the agent')
  t.match(out, /SUCCEEDED: hello\/demo v1\.0\.0/, 'the manual rollback succeeded')
  t.match(out, /^v1\.0\.0 .*\*\s+live\s/m, 'releases marks v1.0.0 live')
})
