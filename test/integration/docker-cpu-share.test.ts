// The start-up check against the real engine: what it says agrees with `docker info` and the host's cgroup file.
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import t from 'tap'
import { containerCpuShareWarning, DOCKER_CPU_SHARES_FILE } from '../../agent/docker/cpu-share.js'
import { DockerEngine } from '../../agent/docker/engine.js'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { testConfigDocument, writeTestKeys } from '../helpers/agent.js'
import { startServe } from '../helpers/cli.js'
import { dockerAvailable } from '../helpers/docker.js'
import { freePort } from '../helpers/ports.js'
import { tempDir } from '../helpers/tmp.js'
import { skipUnless } from '../helpers/engines.js'

t.test('containerCpuShareWarning on the real engine', { skip: skipUnless(await dockerAvailable(), 'docker') }, async (t) => {
  const { stdout } = await promisify(execFile)('docker', ['info', '--format', '{{.CgroupDriver}} {{.CgroupVersion}}'])
  const [driver, version] = stdout.trim().split(' ')
  t.same(await new DockerEngine().cgroupLayout(), { driver, version }, 'the layout is read through the Engine API')
  const shares = Number.parseInt(await readFile(DOCKER_CPU_SHARES_FILE, 'utf8').catch(() => ''), 10)
  const expected = driver === 'cgroupfs' && version === '1' && shares <= 1024
  const warning = await containerCpuShareWarning(new DockerEngine())
  t.equal(
    warning !== null,
    expected,
    `${driver} on cgroup v${version}, /docker cpu.shares ${Number.isNaN(shares) ? 'absent' : shares}: ${warning ?? 'no warning'}`,
  )

  // `serve` with apps says it once at start-up.
  const dir = await tempDir(t)
  await writeTestKeys(dir)
  const port = await freePort()
  const configPath = join(dir, 'agent.yaml')
  await writeFile(configPath, stringify({ ...testConfigDocument(dir), listen: { host: '127.0.0.1', port } }))
  const agent = await startServe(configPath, `http://127.0.0.1:${port}`)
  t.teardown(() => agent.stop('SIGKILL'))
  if (warning !== null) {
    for (let i = 0; i < 100 && !agent.output().includes('all containers share one CPU weight'); i++)
      await new Promise((r) => setTimeout(r, 50))
  } else {
    await new Promise((r) => setTimeout(r, 1000))
  }
  t.equal(agent.output().includes('all containers share one CPU weight'), expected, 'the agent logs the warning exactly when it applies')
})
