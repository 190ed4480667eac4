// Registry credentials on a real swarm (the two-node rig's manager) and a real registry with htpasswd auth: a
// service created through the swarm facade without them cannot pull its image; created with them (X-Registry-Auth,
// as a swarm env with `registryAuth` does) its task pulls and runs, and the service's spec does not show the
// password. The registry is on the manager's loopback, so the service is constrained to the manager: the task's pull
// is the node's own, with the credentials the swarm handed it, as on any node.
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { readRegistryAuth } from '../../agent/deploy/prepare.js'
import { DockerEngine } from '../../agent/docker/engine.js'
import type { ServiceDefinition, SwarmTask } from '../../agent/docker/swarm.js'
import { BASE_IMAGE, ensureBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { startRegistry } from '../helpers/registry.js'
import { canRunSwarmRig, startSwarmRig } from '../helpers/swarm.js'
import { tempDir } from '../helpers/tmp.js'

t.setTimeout(1_500_000)
const skip = skipUnless(await canRunSwarmRig(), 'the two-node swarm rig (root, dockerd, iproute2, util-linux, docker-registry)')

t.test('Swarm registry auth: nodes pull with the credentials the service was created with', { skip, timeout: 600_000 }, async (t) => {
  await ensureBaseImage()
  const rig = await startSwarmRig(t)
  const registry = await startRegistry(t, await tempDir(t))
  const name = `auth-${randomBytes(3).toString('hex')}`
  // Pushed, then untagged here: the manager has to pull it from the registry to run it.
  const { digest } = await registry.pushFiles(`${name}/app`, 'v1', {
    Dockerfile: `FROM ${BASE_IMAGE}\nCMD ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]\n`,
  })
  const swarm = new DockerEngine(rig.manager).swarm()
  const auth = await readRegistryAuth({ username: registry.username, passwordFile: registry.passwordFile }, registry.host)
  const hostNetwork = await rig.hostNetworkId()
  const definition = (colour: string): ServiceDefinition => ({
    name: `${name}_${colour}`,
    labels: { 'deploy-agent.test': name },
    image: `${registry.host}/${name}/app@${digest}`,
    hostNetwork,
    env: [],
    replicas: 1,
    constraints: ['node.role==manager'],
    stopGraceSec: 2,
    updateOrder: 'start-first',
  })
  const made: string[] = []
  t.teardown(async () => {
    for (const id of made) await swarm.removeService(id).catch(() => undefined)
  })
  /** Waits until a task of the service is in one of `states`; answers it. */
  const taskIn = async (id: string, states: string[]): Promise<SwarmTask> => {
    const deadline = Date.now() + 90_000
    for (;;) {
      const tasks = await swarm.tasks(id)
      const found = tasks.find((task) => states.includes(task.state))
      if (found) return found
      if (Date.now() > deadline) throw new Error(`no task of ${id} became ${states.join('/')}: ${JSON.stringify(tasks)}`)
      await sleep(250)
    }
  }

  const anonymous = await swarm.createService(definition('blue'))
  made.push(anonymous)
  const refused = await taskIn(anonymous, ['rejected', 'failed', 'running'])
  t.not(refused.state, 'running', 'without credentials the task cannot pull')
  t.match(refused.message, /no basic auth credentials|unauthorized|authentication required|No such image/i, refused.message)

  const withAuth = await swarm.createService(definition('green'), auth)
  made.push(withAuth)
  const running = await taskIn(withAuth, ['running'])
  t.equal(running.nodeId, rig.nodes.managerId, 'pulled and running on the manager')
  const spec = JSON.stringify(await rig.manager.getService(withAuth).inspect())
  t.notMatch(spec, registry.password, 'the service shows no password')
})
