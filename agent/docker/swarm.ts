// The engine's Swarm side, for the swarm runtime: services (one per colour and service of an env), their tasks,
// the nodes they run on, and pushing the release's image to the registry every node pulls from. Plain data and
// AgentErrors out, like DockerEngine; dockerode's service/task/node calls in.
import type Docker from 'dockerode'
import { callEngine, DockerError, engineMessage } from './errors.js'
import { followEngineEvents, type EngineEvent } from './events.js'
import { capLine } from './lines.js'
import { logLines, type ContainerLogLine, type ContainerLogOptions } from './log-lines.js'
import { DIGEST, isUnauthorized, type RegistryAuth } from './pull.js'
import { labelFilters, type Labels } from './types.js'

export interface SwarmNode {
  id: string
  /** The address the node advertises (`Status.Addr`): where its host-network tasks listen. */
  addr: string
  /** `ready`, `down`, `unknown`, `disconnected`. */
  state: string
  availability: string
}

export interface SwarmTask {
  id: string
  serviceId: string
  nodeId: string
  /** What the orchestrator wants: `running`, `shutdown`, … */
  desired: string
  /** What it is: `new`, `pending`, `running`, `failed`, `rejected`, `shutdown`, `complete`, … */
  state: string
  /** Why it failed or waits (`no suitable node …`, the exit code). */
  message: string
  /** The spec version the task was made from: tasks of an older spec are on their way out. */
  image: string
  created: Date
}

export interface SwarmService {
  id: string
  name: string
  version: number
  labels: Labels
  replicas: number
  image: string
  created: Date
}

/** What the swarm runtime asks for: one replicated service on the host network. */
export interface ServiceDefinition {
  name: string
  labels: Labels
  /** `<registry>/<repo>@sha256:…`: every node pulls the same bytes. */
  image: string
  /** The swarm-scope id of the host network (hostNetworkId). */
  hostNetwork: string
  command?: string[]
  env: string[]
  replicas: number
  /** Tasks of a web service share the node's port: at most one per node. */
  maxPerNode?: number
  constraints: string[]
  stopGraceSec: number
  /** How Swarm replaces a task when the spec changes (workers): `start-first` or `stop-first`. */
  updateOrder: 'start-first' | 'stop-first'
}

const SECOND_NS = 1_000_000_000

export class SwarmEngine {
  constructor(private readonly client: () => Promise<Docker>) {}

  /** This engine's node id; throws when it is not a Swarm manager (the agent drives the swarm from one). */
  async localNodeId(): Promise<string> {
    const info = (await callEngine('read the engine info', async () => (await this.client()).info())) as {
      Swarm?: { NodeID?: string; ControlAvailable?: boolean; LocalNodeState?: string }
    }
    const swarm = info.Swarm
    if (!swarm?.NodeID || swarm.LocalNodeState !== 'active')
      throw new DockerError('docker_error', 503, 'this engine is not part of a swarm (runtime: swarm needs `docker swarm init` here)')
    if (!swarm.ControlAvailable)
      throw new DockerError('docker_error', 503, 'this engine is a swarm worker: the agent must run on a manager')
    return swarm.NodeID
  }

  /**
   * The swarm-scope id of the `host` network, for a service's `Networks: [{ Target }]`: the local network's id (or
   * its name) is not what the orchestrator resolves.
   */
  async hostNetworkId(): Promise<string> {
    const host = (await this.client()).getNetwork('host') as unknown as { inspect(opts: { scope: string }): Promise<{ Id: string }> }
    return (await callEngine('inspect the swarm host network', () => host.inspect({ scope: 'swarm' }))).Id
  }

  async nodes(): Promise<SwarmNode[]> {
    const nodes = (await callEngine('list swarm nodes', async () => (await this.client()).listNodes())) as Array<{
      ID: string
      Status?: { State?: string; Addr?: string }
      Spec?: { Availability?: string }
    }>
    return nodes.map((n) => ({
      id: n.ID,
      addr: n.Status?.Addr ?? '',
      state: n.Status?.State ?? 'unknown',
      availability: n.Spec?.Availability ?? 'active',
    }))
  }

  async services(labels: Labels): Promise<SwarmService[]> {
    const found = await callEngine('list swarm services', async () => (await this.client()).listServices({ filters: labelFilters(labels) }))
    return found.map(serviceOf)
  }

  async service(id: string): Promise<SwarmService | null> {
    const found = await callEngine(
      `inspect service ${id}`,
      async () => (await (await this.client()).getService(id).inspect()) as Docker.Service,
      {
        statuses: [404],
        value: null,
      },
    )
    return found && serviceOf(found)
  }

  /** Every task of the service the manager still remembers (running, failed and shut down). */
  async tasks(serviceId: string): Promise<SwarmTask[]> {
    const tasks = (await callEngine(`list tasks of service ${serviceId}`, async () =>
      (await this.client()).listTasks({ filters: { service: [serviceId] } }),
    )) as Array<{
      ID: string
      ServiceID: string
      NodeID?: string
      DesiredState?: string
      CreatedAt?: string
      Status?: { State?: string; Message?: string; Err?: string }
      Spec?: { ContainerSpec?: { Image?: string } }
    }>
    return tasks.map((t) => ({
      id: t.ID,
      serviceId: t.ServiceID,
      nodeId: t.NodeID ?? '',
      desired: t.DesiredState ?? '',
      state: t.Status?.State ?? '',
      message: t.Status?.Err || t.Status?.Message || '',
      image: t.Spec?.ContainerSpec?.Image ?? '',
      created: new Date(t.CreatedAt ?? 0),
    }))
  }

  /** `auth`: the registry's credentials, kept with the service so that every node can pull its image. */
  async createService(def: ServiceDefinition, auth?: RegistryAuth): Promise<string> {
    const spec = specOf(def) as Docker.CreateServiceOptions
    const created = await callEngine(`create service ${def.name}`, async () => {
      const docker = await this.client()
      return auth ? docker.createService({ ...auth }, spec) : docker.createService(spec)
    })
    return (created as unknown as { id?: string; ID?: string }).id ?? (created as unknown as { ID: string }).ID
  }

  /** Sets the replica count; the rest of the spec is kept as it is. */
  async scale(id: string, replicas: number): Promise<void> {
    await callEngine(`scale service ${id}`, async () => {
      const service = (await this.client()).getService(id)
      const current = (await service.inspect()) as Docker.Service
      await service.update({ ...current.Spec, Mode: { Replicated: { Replicas: replicas } }, version: current.Version?.Index ?? 0 })
    })
  }

  async removeService(id: string): Promise<void> {
    await callEngine(`remove service ${id}`, async () => (await this.client()).getService(id).remove(), {
      statuses: [404],
      value: undefined,
    })
  }

  /**
   * Tags the local image `source` as `repo:tag`, pushes it (as `auth`'s user, if given) and answers the manifest
   * digest the registry stored.
   */
  async push(source: string, repo: string, tag: string, onLine: (line: string) => void, auth?: RegistryAuth): Promise<string> {
    const docker = await this.client()
    const ref = `${repo}:${tag}`
    await callEngine(`tag ${source} as ${ref}`, () => docker.getImage(source).tag({ repo, tag }))
    let digest: string | null = null
    // The engine wants X-Registry-Auth on every push, even an empty one (a registry without auth).
    const authconfig = auth ? { ...auth } : { serveraddress: repo.split('/')[0] }
    // The password must never reach a message, even if an engine or proxy echoed it.
    const clean = (text: string) => (auth && auth.password !== '' ? text.replaceAll(auth.password, '[redacted]') : text)
    const stream = (await callEngine(`push ${ref}`, () => docker.getImage(ref).push({ authconfig }))) as NodeJS.ReadableStream
    const error = await followEngineEvents<EngineEvent & { status?: unknown; aux?: { Digest?: unknown } }>(stream, 'push', {
      event: (event) => {
        if (typeof event.aux?.Digest === 'string' && DIGEST.test(event.aux.Digest)) digest = event.aux.Digest
        if (typeof event.status === 'string') onLine(clean(capLine(event.status)))
      },
      text: (line) => onLine(clean(line)),
    }).catch((err: unknown) => engineMessage(err))
    if (error !== null) {
      const text = clean(error)
      if (!isUnauthorized(text)) throw new DockerError('docker_error', 502, `push of ${ref} failed: ${text}`)
      const hint = auth ? `as user ${auth.username}: check swarm.registryAuth` : 'no swarm.registryAuth is set'
      throw new DockerError('registry_unauthorized', 502, `push of ${ref} failed: ${text} (${hint})`)
    }
    if (digest === null) throw new DockerError('docker_error', 502, `push of ${ref}: the engine did not report the manifest digest`)
    return digest
  }

  serviceLogLines(id: string, options: ContainerLogOptions): AsyncGenerator<ContainerLogLine> {
    return logLines(`read logs of service ${id}`, async (o) => (await this.client()).getService(id).logs(o as never), options)
  }

  /** One task's output (a task that exited: why it did), from whichever node ran it. */
  taskLogLines(id: string, options: ContainerLogOptions): AsyncGenerator<ContainerLogLine> {
    // dockerode has Task#logs (GET /tasks/{id}/logs); @types/dockerode does not declare it.
    type TaskLogs = { logs(o: never): Promise<NodeJS.ReadableStream> }
    return logLines(
      `read logs of task ${id}`,
      async (o) => ((await this.client()).getTask(id) as unknown as TaskLogs).logs(o as never),
      options,
    )
  }
}

function serviceOf(s: Docker.Service): SwarmService {
  const task = s.Spec?.TaskTemplate as Docker.ContainerTaskSpec | undefined
  return {
    id: s.ID,
    name: s.Spec?.Name ?? '',
    version: s.Version?.Index ?? 0,
    labels: s.Spec?.Labels ?? {},
    replicas: s.Spec?.Mode?.Replicated?.Replicas ?? 0,
    image: task?.ContainerSpec?.Image ?? '',
    created: new Date(s.CreatedAt ?? 0),
  }
}

function specOf(def: ServiceDefinition): Docker.ServiceSpec {
  return {
    Name: def.name,
    Labels: def.labels,
    TaskTemplate: {
      ContainerSpec: {
        Image: def.image,
        ...(def.command ? { Command: def.command } : {}),
        Env: def.env,
        Labels: def.labels,
        StopGracePeriod: def.stopGraceSec * SECOND_NS,
      },
      // Host networking: each task listens on its node's port, which nginx lists (no routing mesh).
      Networks: [{ Target: def.hostNetwork }],
      Placement: { Constraints: def.constraints, ...(def.maxPerNode ? { MaxReplicas: def.maxPerNode } : {}) },
      // The agent's observe window judges a release; Swarm only restarts a task that exits.
      RestartPolicy: { Condition: 'any', Delay: SECOND_NS, MaxAttempts: 0 },
    } as Docker.ContainerTaskSpec,
    Mode: { Replicated: { Replicas: def.replicas } },
    UpdateConfig: { Parallelism: 1, Order: def.updateOrder, FailureAction: 'pause' },
  }
}
