// The runtime the deploy state machine drives: everything the engine does for a release — its image (built or
// reused, listed, pruned), its one-off containers (migrations), and its instances (start a candidate, check it,
// retire or revive it, remove it). Containers on this host today; a Swarm runtime implements the same interface.
// Labels on the engine's objects are the source of truth for which release runs where.
import { WEB_SERVICE, type ServiceKind, type WorkerOrder } from '../config/services.js'
import type { ContainerLogLine, ContainerLogOptions, DockerEngine } from '../docker/engine.js'
import type { RegistryAuth } from '../docker/pull.js'
import { AgentError } from '../errors.js'
import {
  BACKGROUND_CPU_SHARES,
  LIVE_CPU_SHARES,
  type ContainerHealth,
  type ContainerSettings,
  type ContainerSummary,
  type Labels,
  type OneOffResult,
} from '../docker/types.js'
import type { WorkerState } from '../health/index.js'
import type { Placement } from '../proxy/nginx.js'

/**
 * A member whose tasks kept exiting while its group started (a crash loop on a swarm): judged as a candidate
 * container that exits on one box, with the last lines of its output for the deploy log.
 */
export class MemberExitedError extends AgentError {
  constructor(
    message: string,
    readonly service: string,
    readonly lastLines: string[],
  ) {
    super('container_exited', 502, message)
  }
}

export const LABEL = {
  app: 'deploy-agent.app',
  env: 'deploy-agent.env',
  release: 'deploy-agent.release',
  deploy: 'deploy-agent.deploy',
  role: 'deploy-agent.role',
  port: 'deploy-agent.port',
  commit: 'deploy-agent.commit',
  /** The service a container runs (none: `web`, a container from before services). */
  service: 'deploy-agent.service',
  /** Its position in the config: the lowest web one is the group's primary. */
  index: 'deploy-agent.index',
  /** Workers: start-first or stop-first. */
  order: 'deploy-agent.order',
  stopTimeout: 'deploy-agent.stop-timeout',
} as const

export interface EnvTarget {
  app: string
  env: string
}

/** One container of a release: a web service on its port, or a worker. */
export interface Member {
  id: string
  service: string
  kind: ServiceKind
  /** A web service's port; null for a worker. */
  port: number | null
  /** A worker's order; null for a web service. */
  order: WorkerOrder | null
  /** SIGTERM, then SIGKILL after this long. */
  stopTimeoutSec: number
  running: boolean
  /** Where a web member answers: each node running one of its tasks (a swarm). Absent: this host, 127.0.0.1. */
  hosts?: string[]
  /** A swarm member's tasks the orchestrator wants running (none when scaled to 0). Absent: containers on this host. */
  tasks?: NodeTask[]
}

/** One task of a swarm service: the node it is on (id and advertised address) and its state (`running`, `pending`, …). */
export interface NodeTask {
  node: string
  addr: string
  state: string
}

export const LOOPBACK = '127.0.0.1'

/** The addresses a web member answers on. */
export function hostsOf(member: Member): string[] {
  return member.hosts ?? [LOOPBACK]
}

/** Which addresses serve each web port of the group, for the proxy; null when all are this host's loopback. */
export function placementOf(instance: Instance): Placement | undefined {
  const members = membersOf(instance).filter((m) => m.port !== null && m.hosts !== undefined)
  return members.length === 0 ? undefined : new Map(members.map((m) => [m.port as number, m.hosts as string[]]))
}

/**
 * A release on the engine: the group of containers one deploy started (they share its deploy id). `id` and `port`
 * are its primary's (the first web service): the port names the slot — blue or green — every web member is on. A
 * group of workers only has no port (null): its deploy id names it. `running`: any member runs. Without `members`
 * it is one web container (`id`, `port`).
 */
export interface Instance {
  id: string
  release: string
  commit: string
  deployId: string
  port: number | null
  image: string
  running: boolean
  created: Date
  members?: Member[]
}

/** The group's containers (one web member when it lists none). */
export function membersOf(instance: Instance): Member[] {
  return (
    instance.members ?? [
      {
        id: instance.id,
        service: WEB_SERVICE,
        kind: 'web',
        port: instance.port,
        order: null,
        stopTimeoutSec: 10,
        running: instance.running,
      },
    ]
  )
}

/** Stop-first workers: never two of an env at once, so they start only after the switch (`startSingletons`). */
export function isSingleton(member: Member): boolean {
  return member.order === 'stop-first'
}

/** The members that start with the group and are revived with it: web services and start-first workers. */
export function coreMembers(instance: Instance): Member[] {
  return membersOf(instance).filter((m) => !isSingleton(m))
}

export function singletonsOf(instance: Instance): Member[] {
  return membersOf(instance).filter(isSingleton)
}

/** One container of a candidate group; without `services` a candidate is one web container on `port`. */
export interface CandidateService {
  name: string
  kind: ServiceKind
  /** Web services only. */
  port: number | null
  /** Null: the image's CMD. */
  command: string[] | null
  order: WorkerOrder | null
  stopTimeoutSec: number
  index: number
  /** The service's own image; default: the spec's (the app's). */
  image?: string
  /** The service's own settings (its own `volumes`); default: the spec's. */
  container?: ContainerSettings
}

export interface CandidateSpec extends EnvTarget {
  release: string
  commit: string
  deployId: string
  image: string
  /** The primary's port (the slot); null for a group of workers only. */
  port: number | null
  /** Every service of the release, primary first; absent: one web container (named as before services). */
  services?: CandidateService[]
  /** `KEY=VALUE` environment of the app (env file, database URL); PORT is added for web services. */
  variables: string[]
  container: ContainerSettings
}

export interface BuildSpec extends EnvTarget {
  release: string
  /** A service with a build of its own: its image is `<app>-<service>:<env>-<release>`. */
  service?: string
  commit: string
  /** A tar stream of the build context. */
  context: NodeJS.ReadableStream
  dockerfile: string
  buildArgs: Record<string, string>
  timeoutMs: number
  onLine: (line: string) => void
  /** The build steps' CPU weight (the live release has 1024). */
  cpuShares: number
}

export interface MigrationSpec extends EnvTarget {
  deployId: string
  image: string
  command: string[]
  variables: string[]
  timeoutMs: number
  onLine: (line: string) => void
  container: ContainerSettings
  /** The migration's CPU weight (the live release has 1024). */
  cpuShares: number
}

export interface PullSpec {
  /** The image name without tag. */
  image: string
  tag: string
  auth?: RegistryAuth
  timeoutMs: number
  onLine: (line: string) => void
}

/** A pulled image made the env's kept image of `release`. */
export interface KeepPulledSpec extends EnvTarget {
  release: string
  /** The manifest digest, kept where a built image keeps its commit. */
  digest: string
  /** `<image>@<digest>`: local since the pull. */
  source: string
  timeoutMs: number
  onLine: (line: string) => void
}

/**
 * A kept image of the env: tagged `<app>:<env>-<release>` and carrying the commit label (for a pulled image, the
 * digest it was pulled by).
 */
export interface EnvImage {
  release: string
  commit: string
  ref: string
  created: Date
  /** The content-addressed image id, when the engine said. */
  id?: string
}

export interface Runtime {
  /** The kept image of `release` (of a service with its own build: that one's), or null. */
  releaseImage(target: EnvTarget, release: string, service?: string): Promise<EnvImage | null>
  /** Builds the release's image and answers its reference. */
  buildRelease(spec: BuildSpec): Promise<string>
  /** Pulls `image:tag` from its registry and answers the manifest digest the tag resolved to. */
  pullImage(spec: PullSpec): Promise<{ digest: string }>
  /** Makes a pulled image the env's kept image of `release` (tag and label), without the registry. */
  keepPulled(spec: KeepPulledSpec): Promise<EnvImage>
  /** Every kept image of the env, newest first. */
  releases(target: EnvTarget): Promise<EnvImage[]>
  removeImage(ref: string): Promise<void>
  runMigration(spec: MigrationSpec): Promise<OneOffResult>
  /** Ids of the env's one-off (migration) containers, running or not. */
  oneOffs(target: EnvTarget): Promise<string[]>
  removeOneOff(id: string): Promise<void>
  /** Every release group of the env, running or stopped, newest first. */
  instances(target: EnvTarget): Promise<Instance[]>
  /**
   * Creates every member of the group and starts its web services and start-first workers; stop-first workers
   * wait for `startSingletons`. A member that cannot be created or started takes the whole group with it.
   */
  startCandidate(spec: CandidateSpec): Promise<Instance>
  /** Its core members (`all`: every member) are running and not restarting. */
  isAlive(instance: Instance, which?: 'core' | 'all'): Promise<boolean>
  engineHealth(container: { id: string }): Promise<ContainerHealth | null>
  /** A worker's state for its health check; a missing container is not alive. */
  memberState(member: Member): Promise<WorkerState>
  /** Gives every member the CPU weight of a serving release (a candidate starts at the weight of a build). */
  promote(instance: Instance): Promise<void>
  /** Stops every member (SIGTERM, SIGKILL after its stopTimeoutSec) but keeps them, for a rollback in a second. */
  retire(instance: Instance): Promise<void>
  /** Starts its core members again (stop-first workers wait for `startSingletons`). */
  revive(instance: Instance): Promise<void>
  remove(instance: Instance): Promise<void>
  /** Starts the group's stop-first workers (after the other group's were stopped). */
  startSingletons(instance: Instance): Promise<void>
  /** Stops the group's stop-first workers (SIGTERM, SIGKILL after their stopTimeoutSec). */
  stopSingletons(instance: Instance): Promise<void>
  logTail(container: { id: string }, lines?: number): Promise<string[]>
  /** A container's output, line by line (the app's own log, for operators): see DockerEngine.containerLogLines. */
  logs(container: { id: string }, options: ContainerLogOptions): AsyncIterable<ContainerLogLine>
}

export function envLabels(target: EnvTarget): Labels {
  return { [LABEL.app]: target.app, [LABEL.env]: target.env }
}

export function imageTag(app: string, env: string, release: string, service?: string): string {
  return service === undefined ? `${app}:${env}-${release}` : `${app}-${service}:${env}-${release}`
}

/** The labels every member of a candidate group carries, and each member's own (its service, port, order). */
export function memberLabels(spec: CandidateSpec, service: CandidateService): Labels {
  const labels: Labels = {
    ...envLabels(spec),
    [LABEL.release]: spec.release,
    [LABEL.deploy]: spec.deployId,
    [LABEL.role]: 'web',
    [LABEL.commit]: spec.commit,
    [LABEL.service]: service.name,
    [LABEL.index]: String(service.index),
  }
  if (service.port !== null) labels[LABEL.port] = String(service.port)
  if (service.order !== null) labels[LABEL.order] = service.order
  labels[LABEL.stopTimeout] = String(service.stopTimeoutSec)
  return labels
}

/** A candidate's services: its own, or the one web container of an app without `services`. */
export function candidateServices(spec: CandidateSpec): CandidateService[] {
  return spec.services ?? [{ name: WEB_SERVICE, kind: 'web', port: spec.port, command: null, order: null, stopTimeoutSec: 10, index: 0 }]
}

/** A member as `startCandidate` makes it: stop-first workers are not running until `startSingletons`. */
export function newMember(id: string, service: CandidateService): Member {
  const { name, kind, port, order, stopTimeoutSec } = service
  return { id, service: name, kind, port, order, stopTimeoutSec, running: order !== 'stop-first' }
}

/** A member read back from its labels (a container's, a Swarm service's). */
export function memberFromLabels(id: string, labels: Labels, running: boolean): Member {
  const port = labels[LABEL.port]
  const order = labels[LABEL.order]
  return {
    id,
    service: labels[LABEL.service] ?? WEB_SERVICE,
    kind: port === undefined ? 'worker' : 'web',
    port: port === undefined ? null : Number(port),
    order: port !== undefined ? null : order === 'stop-first' ? 'stop-first' : 'start-first',
    stopTimeoutSec: Number(labels[LABEL.stopTimeout] ?? 10) || 10,
    running,
  }
}

/** The group a candidate's members make, its primary (the first member) naming it. */
export function startedGroup(spec: CandidateSpec, members: Member[]): Instance {
  return {
    id: (members[0] as Member).id,
    release: spec.release,
    commit: spec.commit,
    deployId: spec.deployId,
    port: spec.port,
    image: spec.image,
    running: true,
    created: new Date(),
    members,
  }
}

export class ContainerRuntime implements Runtime {
  constructor(private readonly docker: DockerEngine) {}

  async releaseImage(target: EnvTarget, release: string, service?: string): Promise<EnvImage | null> {
    const ref = imageTag(target.app, target.env, release, service)
    const details = await this.docker.inspectImage(ref)
    return details && { release, commit: details.labels[LABEL.commit] ?? '', ref, created: details.created, id: details.id }
  }

  async pullImage(spec: PullSpec): Promise<{ digest: string }> {
    const { digest } = await this.docker.pullImage(spec)
    return { digest }
  }

  async keepPulled(spec: KeepPulledSpec): Promise<EnvImage> {
    const ref = imageTag(spec.app, spec.env, spec.release)
    const { imageId } = await this.docker.labelImage({
      from: spec.source,
      tag: ref,
      labels: { [LABEL.commit]: spec.digest },
      timeoutMs: spec.timeoutMs,
      onLine: spec.onLine,
    })
    return { release: spec.release, commit: spec.digest, ref, created: new Date(), id: imageId }
  }

  async buildRelease(spec: BuildSpec): Promise<string> {
    const tag = imageTag(spec.app, spec.env, spec.release, spec.service)
    // Images get the commit label only: the classic builder adds a layer per build label, and the tag already
    // names app, env and release.
    await this.docker.buildImage({
      context: spec.context,
      dockerfile: spec.dockerfile,
      tag,
      buildArgs: spec.buildArgs,
      labels: { [LABEL.commit]: spec.commit },
      timeoutMs: spec.timeoutMs,
      onLine: spec.onLine,
      cpuShares: spec.cpuShares,
    })
    return tag
  }

  async releases(target: EnvTarget): Promise<EnvImage[]> {
    const prefix = imageTag(target.app, target.env, '')
    const found = await this.docker.listImages({ [LABEL.commit]: '' }, `${prefix}*`)
    return found
      .flatMap((img) =>
        img.tags
          .filter((tag) => tag.startsWith(prefix))
          .map((ref) => ({
            release: ref.slice(prefix.length),
            commit: img.labels[LABEL.commit] ?? '',
            ref,
            created: img.created,
            id: img.id,
          })),
      )
      .sort((a, b) => b.created.getTime() - a.created.getTime())
  }

  removeImage(ref: string): Promise<void> {
    return this.docker.removeImage(ref)
  }

  runMigration(spec: MigrationSpec): Promise<OneOffResult> {
    return this.docker.runOneOff({
      image: spec.image,
      cmd: spec.command,
      env: spec.variables,
      labels: { ...envLabels(spec), [LABEL.deploy]: spec.deployId, [LABEL.role]: 'migrate' },
      timeoutMs: spec.timeoutMs,
      onLine: spec.onLine,
      container: spec.container,
      cpuShares: spec.cpuShares,
    })
  }

  async oneOffs(target: EnvTarget): Promise<string[]> {
    return (await this.docker.listContainers({ ...envLabels(target), [LABEL.role]: 'migrate' })).map((c) => c.id)
  }

  removeOneOff(id: string): Promise<void> {
    return this.docker.removeContainer(id)
  }

  async instances(target: EnvTarget): Promise<Instance[]> {
    const containers = await this.docker.listContainers({ ...envLabels(target), [LABEL.role]: 'web' })
    const groups = new Map<string, ContainerSummary[]>()
    for (const c of containers) {
      const key = c.labels[LABEL.deploy] || c.id
      groups.set(key, [...(groups.get(key) ?? []), c])
    }
    return [...groups.values()].map(groupOf).sort((a, b) => b.created.getTime() - a.created.getTime())
  }

  async startCandidate(spec: CandidateSpec): Promise<Instance> {
    const members: Member[] = []
    try {
      for (const service of candidateServices(spec)) {
        const member = newMember('', service)
        member.id = await this.docker.startContainer({
          // Without services the one container keeps the name it always had.
          name: spec.services ? `${spec.app}-${spec.env}-${service.name}-${spec.deployId}` : `${spec.app}-${spec.env}-${spec.deployId}`,
          image: service.image ?? spec.image,
          cmd: service.command ?? undefined,
          env: service.port === null ? spec.variables : [...spec.variables, `PORT=${service.port}`],
          labels: memberLabels(spec, service),
          restartPolicy: 'unless-stopped',
          container: service.container ?? spec.container,
          stopTimeoutSec: service.stopTimeoutSec,
          // Until it serves, a candidate must not take the CPU from the live release: promote() raises it.
          cpuShares: BACKGROUND_CPU_SHARES,
          start: member.running,
        })
        members.push(member)
      }
    } catch (err) {
      // Half a release must not run: every member made so far goes with the one that failed.
      for (const m of members) await this.docker.removeContainer(m.id).catch(() => undefined)
      throw err
    }
    return startedGroup(spec, members)
  }

  async isAlive(instance: Instance, which: 'core' | 'all' = 'core'): Promise<boolean> {
    const members = which === 'all' ? membersOf(instance) : coreMembers(instance)
    const alive = await Promise.all(members.map((m) => this.containerAlive(m.id)))
    return alive.every(Boolean)
  }

  private async containerAlive(id: string): Promise<boolean> {
    const details = await this.docker.inspectContainer(id)
    return details !== null && details.running && !details.restarting
  }

  async engineHealth(container: { id: string }): Promise<ContainerHealth | null> {
    return (await this.docker.inspectContainer(container.id))?.health ?? null
  }

  async memberState(member: Member): Promise<WorkerState> {
    const details = await this.docker.inspectContainer(member.id)
    if (details === null) return { alive: false, restartCount: 0, health: null }
    return { alive: details.running && !details.restarting, restartCount: details.restartCount, health: details.health }
  }

  async promote(instance: Instance): Promise<void> {
    await Promise.all(membersOf(instance).map((m) => this.docker.setCpuShares(m.id, LIVE_CPU_SHARES)))
  }

  async retire(instance: Instance): Promise<void> {
    await Promise.all(membersOf(instance).map((m) => this.docker.stopContainer(m.id, m.stopTimeoutSec)))
    for (const m of instance.members ?? []) m.running = false
  }

  async revive(instance: Instance): Promise<void> {
    for (const m of coreMembers(instance)) await this.docker.startExisting(m.id)
    for (const m of instance.members ?? []) if (!isSingleton(m)) m.running = true
  }

  async remove(instance: Instance): Promise<void> {
    for (const m of membersOf(instance)) await this.docker.removeContainer(m.id)
  }

  async startSingletons(instance: Instance): Promise<void> {
    for (const m of singletonsOf(instance)) {
      await this.docker.startExisting(m.id)
      m.running = true
    }
  }

  async stopSingletons(instance: Instance): Promise<void> {
    await Promise.all(singletonsOf(instance).map((m) => this.docker.stopContainer(m.id, m.stopTimeoutSec)))
    for (const m of singletonsOf(instance)) m.running = false
  }

  logTail(container: { id: string }, lines = 30): Promise<string[]> {
    return this.docker.containerLogTail(container.id, lines)
  }

  logs(container: { id: string }, options: ContainerLogOptions): AsyncIterable<ContainerLogLine> {
    return this.docker.containerLogLines(container.id, options)
  }
}

/** A release group from its containers' labels: the primary is the web member listed first in the config. */
function groupOf(containers: ContainerSummary[]): Instance {
  const members = containers
    .map((c) => {
      const member = memberFromLabels(c.id, c.labels, c.state === 'running' || c.state === 'restarting')
      return { member, index: Number(c.labels[LABEL.index] ?? 0), c }
    })
    .sort((a, b) => Number(b.member.kind === 'web') - Number(a.member.kind === 'web') || a.index - b.index)
  const { c: primary } = members[0] as (typeof members)[number]
  return {
    id: primary.id,
    release: primary.labels[LABEL.release] ?? '',
    commit: primary.labels[LABEL.commit] ?? '',
    deployId: primary.labels[LABEL.deploy] ?? '',
    port: primary.labels[LABEL.port] === undefined ? null : Number(primary.labels[LABEL.port]),
    image: primary.image,
    running: members.some((m) => m.member.running),
    created: primary.created,
    members: members.map((m) => m.member),
  }
}
