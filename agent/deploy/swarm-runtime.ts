// The runtime of an env with `runtime: swarm`: a release's services run as Swarm services, two colours per web
// service (`<app>_<env>_<service>_blue|green`, blue on the first port of each pair), each task on its node's host
// network. A candidate is the idle colour made anew from the release's image, pushed to the env's registry and run
// by digest; it is ready when every task runs that image, and the pipeline then probes each node's address. Retire
// scales a colour to 0 (kept for a rollback in a second), revive scales it back up. Images, builds and migrations
// stay on this host (the manager): a swarm env shares them with the container runtime.
import { setTimeout as sleep } from 'node:timers/promises'
import type { ContainerLogLine, ContainerLogOptions } from '../docker/engine.js'
import { DockerError } from '../docker/errors.js'
import type { RegistryAuth } from '../docker/pull.js'
import type { ServiceDefinition, SwarmEngine, SwarmNode, SwarmService, SwarmTask } from '../docker/swarm.js'
import type { ContainerHealth, Labels, OneOffResult } from '../docker/types.js'
import type { WorkerState } from '../health/index.js'
import {
  candidateServices,
  coreMembers,
  envLabels,
  LABEL,
  LOOPBACK,
  MemberExitedError,
  memberFromLabels,
  memberLabels,
  membersOf,
  newMember,
  singletonsOf,
  startedGroup,
  type BuildSpec,
  type CandidateService,
  type CandidateSpec,
  type EnvImage,
  type EnvTarget,
  type Instance,
  type KeepPulledSpec,
  type Member,
  type MigrationSpec,
  type NodeTask,
  type PullSpec,
  type Runtime,
} from './runtime.js'

export interface SwarmSettings {
  /** Tasks per web service. */
  replicas: number
  /** `host[:port][/path]`: the agent pushes there and every node pulls from there. */
  registry: string
  constraints: string[]
  /** The primary web service's [blue, green] ports: which colour a slot is. */
  ports: readonly [number, number]
  /** The registry's credentials (`swarm.registryAuth`), read at each deploy: a rotated password is used at once. */
  credentials?: () => Promise<RegistryAuth>
}

/** How long tasks may take to run (a pull on each node, a start) or to stop. */
const CONVERGE_MS = 120_000
const POLL_MS = 250
/** A task that failed this many times while converging fails the candidate (a crash loop, a bad image). */
const FAILED_TASKS_LIMIT = 3
/** How long no web task may have exited before its tasks count as started (Swarm restarts one after a second). */
const QUIET_MS = 3_000
/** How much of a crash-looping task's output goes in the deploy's log and error. */
const TASK_OUTPUT_LINES = 20

export class SwarmRuntimeError extends DockerError {
  constructor(message: string) {
    super('docker_error', 502, message)
  }
}

export class SwarmRuntime implements Runtime {
  constructor(
    /** The manager's own engine, for images and migrations. */
    private readonly local: Runtime,
    private readonly swarm: SwarmEngine,
    private readonly settings: SwarmSettings,
  ) {}

  // ── images and one-offs: on this host ─────────────────────────────────────────────────────────────────────

  releaseImage(target: EnvTarget, release: string, service?: string): Promise<EnvImage | null> {
    return this.local.releaseImage(target, release, service)
  }
  buildRelease(spec: BuildSpec): Promise<string> {
    return this.local.buildRelease(spec)
  }
  pullImage(spec: PullSpec): Promise<{ digest: string }> {
    return this.local.pullImage(spec)
  }
  keepPulled(spec: KeepPulledSpec): Promise<EnvImage> {
    return this.local.keepPulled(spec)
  }
  releases(target: EnvTarget): Promise<EnvImage[]> {
    return this.local.releases(target)
  }
  removeImage(ref: string): Promise<void> {
    return this.local.removeImage(ref)
  }
  /** Once per release, on the manager, before any colour changes. */
  runMigration(spec: MigrationSpec): Promise<OneOffResult> {
    return this.local.runMigration(spec)
  }
  oneOffs(target: EnvTarget): Promise<string[]> {
    return this.local.oneOffs(target)
  }
  removeOneOff(id: string): Promise<void> {
    return this.local.removeOneOff(id)
  }

  // ── releases: services on the swarm ───────────────────────────────────────────────────────────────────────

  async instances(target: EnvTarget): Promise<Instance[]> {
    const [services, nodes] = await Promise.all([this.swarm.services({ ...envLabels(target), [LABEL.role]: 'web' }), this.swarm.nodes()])
    const hosts = await this.addresses(nodes)
    const groups = new Map<string, SwarmService[]>()
    for (const s of services) {
      const key = s.labels[LABEL.deploy] || s.id
      groups.set(key, [...(groups.get(key) ?? []), s])
    }
    const instances: Instance[] = []
    for (const group of groups.values()) {
      // The primary is the group's first web service in the config; it names the slot.
      const ordered = group.sort(
        (a, b) =>
          Number(b.labels[LABEL.port] !== undefined) - Number(a.labels[LABEL.port] !== undefined) ||
          Number(a.labels[LABEL.index] ?? 0) - Number(b.labels[LABEL.index] ?? 0),
      )
      const members: Member[] = []
      for (const s of ordered) {
        const member = memberOf(s)
        const tasks = await this.swarm.tasks(s.id)
        if (member.port !== null) member.hosts = hosts(tasks, s)
        member.tasks = nodeTasks(tasks, nodes)
        members.push(member)
      }
      const primary = ordered[0] as SwarmService
      instances.push({
        id: primary.id,
        release: primary.labels[LABEL.release] ?? '',
        commit: primary.labels[LABEL.commit] ?? '',
        deployId: primary.labels[LABEL.deploy] ?? '',
        port: Number(primary.labels[LABEL.port]),
        image: primary.image,
        running: members.some((m) => m.running),
        created: primary.created,
        members,
      })
    }
    return instances.sort((a, b) => b.created.getTime() - a.created.getTime())
  }

  async startCandidate(spec: CandidateSpec): Promise<Instance> {
    const colour = this.colourOf(spec.port)
    const services = candidateServices(spec)
    const auth = await this.settings.credentials?.()
    // One image string for every node: pushed to the registry, run by digest.
    const pushed = new Map<string, string>()
    for (const image of new Set(services.map((s) => s.image ?? spec.image)))
      pushed.set(image, await this.pushed(spec, image, image === spec.image ? spec.app : repoOf(image), auth))
    const hostNetwork = await this.swarm.hostNetworkId()
    // Services of these names left by a crash between remove and create: this colour is being made anew.
    const existing = await this.swarm.services({ ...envLabels(spec) })
    const members: Member[] = []
    try {
      for (const service of services) {
        const name = `${spec.app}_${spec.env}_${service.name}_${colour}`
        for (const stale of existing) if (stale.name === name) await this.removeAndWait(stale.id)
        const member = newMember('', service)
        // The credentials stay with the service: each node pulls with them, now and when a revive needs a pull.
        member.id = await this.swarm.createService(
          {
            ...this.definition(name, memberLabels(spec, service), service, pushed.get(service.image ?? spec.image) as string, spec),
            hostNetwork,
          },
          auth,
        )
        members.push(member)
      }
      await Promise.all(members.filter((m) => m.running).map((m) => this.converge(m)))
    } catch (err) {
      // Half a release must not run: every service made so far goes with the one that failed.
      for (const m of members) await this.removeAndWait(m.id).catch(() => undefined)
      throw err
    }
    return startedGroup(spec, members)
  }

  async isAlive(instance: Instance, which: 'core' | 'all' = 'core'): Promise<boolean> {
    const members = which === 'all' ? membersOf(instance) : coreMembers(instance)
    const alive = await Promise.all(members.map(async (m) => (await this.memberState(m)).alive))
    return alive.every(Boolean)
  }

  engineHealth(): Promise<ContainerHealth | null> {
    // A task's HEALTHCHECK is the node's; the agent's probes of every node decide.
    return Promise.resolve(null)
  }

  /**
   * Alive: at least one task runs, every task the service wants runs (or waits for a node it cannot have: a node
   * is down), and every node the member was checked on still runs one (a node that went down since is a death).
   */
  async memberState(member: Member): Promise<WorkerState> {
    const service = await this.swarm.service(member.id)
    if (service === null) return { alive: false, restartCount: 0, health: null }
    const tasks = await this.swarm.tasks(member.id)
    const placed = placementOf(tasks, service)
    const hosts = member.hosts === undefined ? [] : (await this.addresses())(tasks, service)
    const alive =
      service.replicas > 0 &&
      placed.running.length > 0 &&
      placed.starting.length === 0 &&
      (member.hosts ?? []).every((h) => hosts.includes(h))
    return { alive, restartCount: tasks.filter((t) => t.state === 'failed').length, health: null }
  }

  promote(): Promise<void> {
    // Tasks get no CPU weight of their own: builds and migrations run on the manager, not beside them.
    return Promise.resolve()
  }

  async retire(instance: Instance): Promise<void> {
    await Promise.all(membersOf(instance).map((m) => this.scaleTo(m, 0)))
  }

  async revive(instance: Instance): Promise<void> {
    await Promise.all(coreMembers(instance).map((m) => this.scaleTo(m, this.replicasOf(m))))
  }

  async remove(instance: Instance): Promise<void> {
    for (const m of membersOf(instance)) await this.removeAndWait(m.id)
  }

  async startSingletons(instance: Instance): Promise<void> {
    await Promise.all(singletonsOf(instance).map((m) => this.scaleTo(m, 1)))
  }

  async stopSingletons(instance: Instance): Promise<void> {
    await Promise.all(singletonsOf(instance).map((m) => this.scaleTo(m, 0)))
  }

  async logTail(container: { id: string }, lines = 30): Promise<string[]> {
    const out: string[] = []
    for await (const l of this.swarm.serviceLogLines(container.id, { tail: lines, follow: false })) out.push(l.line)
    return out.filter((l) => l.trim() !== '').slice(-lines)
  }

  logs(container: { id: string }, options: ContainerLogOptions): AsyncIterable<ContainerLogLine> {
    return this.swarm.serviceLogLines(container.id, options)
  }

  /** The last lines a task printed; none when its node cannot be asked (the failure is reported all the same). */
  private async taskOutput(taskId: string): Promise<string[]> {
    const out: string[] = []
    try {
      for await (const l of this.swarm.taskLogLines(taskId, { tail: TASK_OUTPUT_LINES, follow: false })) out.push(l.line)
    } catch {
      return []
    }
    return out.filter((l) => l.trim() !== '').slice(-TASK_OUTPUT_LINES)
  }

  // ── helpers ───────────────────────────────────────────────────────────────────────────────────────────────

  private colourOf(port: number | null): 'blue' | 'green' {
    if (port === null) throw new SwarmRuntimeError('an app of workers only cannot run on a swarm yet')
    const slot = this.settings.ports.indexOf(port)
    if (slot === -1) throw new SwarmRuntimeError(`port ${port} is not one of the env's pair ${this.settings.ports.join('/')}`)
    return slot === 0 ? 'blue' : 'green'
  }

  private replicasOf(member: Pick<Member, 'kind'>): number {
    return member.kind === 'web' ? this.settings.replicas : 1
  }

  /** `<registry>/<repo>@sha256:…` of the local image, pushed under the release's tag. */
  private async pushed(spec: CandidateSpec, image: string, repo: string, auth: RegistryAuth | undefined): Promise<string> {
    const remote = `${this.settings.registry}/${repo}`
    const digest = await this.swarm.push(image, remote, `${spec.env}-${spec.release}`, () => undefined, auth)
    return `${remote}@${digest}`
  }

  private definition(
    name: string,
    labels: Labels,
    service: CandidateService,
    image: string,
    spec: CandidateSpec,
  ): Omit<ServiceDefinition, 'hostNetwork'> {
    return {
      name,
      labels,
      image,
      ...(service.command ? { command: service.command } : {}),
      env: service.port === null ? spec.variables : [...spec.variables, `PORT=${service.port}`],
      // Stop-first workers start only after the other colour's have stopped (startSingletons).
      replicas: service.order === 'stop-first' ? 0 : this.replicasOf(service),
      // Tasks of a web service share their node's port.
      ...(service.kind === 'web' ? { maxPerNode: 1 } : {}),
      constraints: this.settings.constraints,
      stopGraceSec: service.stopTimeoutSec,
      updateOrder: service.order ?? 'start-first',
    }
  }

  private async scaleTo(member: Member, replicas: number): Promise<void> {
    await this.swarm.scale(member.id, replicas)
    if (replicas === 0) await this.drained(member.id)
    else await this.converge(member, replicas)
    member.running = replicas > 0
  }

  /**
   * Scales to 0 and waits for the tasks to stop before the service goes: the port is free only then (the next
   * candidate of this colour binds it), and a removed service's tasks can no longer be listed.
   */
  private async removeAndWait(id: string): Promise<void> {
    if ((await this.swarm.service(id)) === null) return
    await this.swarm.scale(id, 0)
    await this.drained(id)
    await this.swarm.removeService(id)
  }

  /** Until no task of the service runs (or is about to). */
  private async drained(serviceId: string): Promise<void> {
    await this.until(`the tasks of service ${serviceId} to stop`, async () => {
      const [tasks, nodes] = await Promise.all([this.swarm.tasks(serviceId), this.swarm.nodes()])
      // A node that is down cannot report its tasks stopped (nor serve them): they are not waited for.
      const ready = new Set(nodes.filter((n) => n.state === 'ready').map((n) => n.id))
      const live = tasks.filter((t) => ACTIVE.has(t.state) && ready.has(t.nodeId))
      return live.length === 0 ? true : `${live.length} still ${[...new Set(live.map((t) => t.state))].join('/')}`
    })
  }

  /**
   * Until `replicas` tasks of the member run its current image, each on its own node; then its hosts are the
   * nodes' addresses. A task that keeps failing (a crash loop, a pull refused) fails it at once with the task's
   * own words.
   */
  private async converge(member: Member, replicas?: number): Promise<void> {
    const hosts = await this.addresses()
    const since = Date.now() - 1000
    await this.until(`service ${member.service} to run`, async () => {
      const service = await this.swarm.service(member.id)
      if (service === null) throw new SwarmRuntimeError(`service ${member.service} (${member.id}) is gone`)
      const want = replicas ?? service.replicas
      const tasks = await this.swarm.tasks(member.id)
      const failed = tasks.filter((t) => (t.state === 'failed' || t.state === 'rejected') && t.created.getTime() >= since)
      const rejected = failed.some((t) => t.state === 'rejected')
      // A worker whose task exited has started; the health checks judge it as on one box (container_exited, its
      // output in the deploy log). Seen here or not depended on a poll catching its task running.
      if (member.port === null && !rejected && failed.length > 0) return true
      if (failed.length >= FAILED_TASKS_LIMIT || rejected) {
        const last = failed.sort((a, b) => b.created.getTime() - a.created.getTime())[0] as SwarmTask
        const words = `service ${member.service}: task ${last.state}: ${last.message || 'no reason given'}`
        if (rejected) throw new SwarmRuntimeError(words)
        // Its tasks ran and exited (a crash loop): the app's own words say why, as for a container that exits.
        const lines = await this.taskOutput(last.id)
        throw new MemberExitedError(lines.length > 0 ? `${words}; last lines:\n${lines.join('\n')}` : words, member.service, lines)
      }
      // A web task that exits at once runs for an instant between restarts (a second apart): until none has exited
      // for a while, tasks caught running prove nothing, and a crash loop reaches the limit above, with its output.
      const lastExit = Math.max(0, ...failed.map((t) => t.created.getTime()))
      if (member.port !== null && Date.now() - lastExit < QUIET_MS) return `a task exited ${failed.length} time(s); waiting`
      const placed = placementOf(tasks, service)
      // Fewer nodes than replicas (one down, constraints): the release runs where it can, never nowhere.
      if (placed.running.length >= want || (placed.running.length > 0 && placed.starting.length === 0)) {
        if (member.port !== null) member.hosts = hosts(placed.running, service)
        return true
      }
      const waiting = [...placed.starting, ...placed.unplaceable]
      return `${placed.running.length} of ${want} running${waiting.length > 0 ? ` (${waiting.map((t) => `${t.state}: ${t.message}`).join('; ')})` : ''}`
    })
  }

  /** Polls `check` (true: done; a string: why not yet) until done or CONVERGE_MS, then fails with the last why. */
  private async until(what: string, check: () => Promise<true | string>): Promise<void> {
    const deadline = Date.now() + CONVERGE_MS
    for (;;) {
      const answer = await check()
      if (answer === true) return
      if (Date.now() >= deadline) throw new SwarmRuntimeError(`timed out after ${CONVERGE_MS / 1000} s waiting for ${what}: ${answer}`)
      await sleep(POLL_MS)
    }
  }

  /**
   * Maps tasks to the addresses nginx and the probes use: a node's advertised address, this manager's own tasks on
   * loopback. Nodes are known by id, never by hostname.
   */
  private async addresses(known?: SwarmNode[]): Promise<(tasks: SwarmTask[], service: SwarmService) => string[]> {
    const [self, nodes] = await Promise.all([this.swarm.localNodeId(), known ?? this.swarm.nodes()])
    const addr = new Map(nodes.map((n) => [n.id, n.id === self ? LOOPBACK : n.addr]))
    return (tasks, service) =>
      [
        ...new Set(
          tasks
            .filter((t) => t.desired === 'running' && t.state === 'running' && t.image === service.image)
            .map((t) => addr.get(t.nodeId))
            .filter((a): a is string => a !== undefined && a !== ''),
        ),
      ].sort()
  }
}

/**
 * The tasks a service wants, by where they are: running its current image, on their way (pulling, starting, a
 * restart), or waiting for a node they cannot have (every eligible node has one, or is down).
 */
export function placementOf(tasks: SwarmTask[], service: Pick<SwarmService, 'image'>) {
  const wanted = tasks.filter((t) => t.desired === 'running')
  const running = wanted.filter((t) => t.state === 'running' && t.image === service.image)
  const unplaceable = wanted.filter((t) => t.state === 'pending' && /no suitable node/i.test(t.message))
  const starting = wanted.filter((t) => !running.includes(t) && !unplaceable.includes(t))
  return { running, starting, unplaceable }
}

/** The tasks the orchestrator wants running, by node (its advertised address: the manager's too), for the releases. */
export function nodeTasks(tasks: SwarmTask[], nodes: SwarmNode[]): NodeTask[] {
  const addr = new Map(nodes.map((n) => [n.id, n.addr]))
  return tasks
    .filter((t) => t.desired === 'running')
    .map((t) => ({ node: t.nodeId, addr: addr.get(t.nodeId) ?? '', state: t.state }))
    .sort((a, b) => a.addr.localeCompare(b.addr) || a.node.localeCompare(b.node))
}

/** Task states in which a task holds (or is about to hold) its node's port. */
const ACTIVE = new Set(['new', 'pending', 'assigned', 'accepted', 'preparing', 'ready', 'starting', 'running'])

function memberOf(s: SwarmService): Member {
  return memberFromLabels(s.id, s.labels, s.replicas > 0)
}

/** `lifeos-api:prod-v1` → `lifeos-api`: the repository a service's own image is pushed to. */
function repoOf(image: string): string {
  return image.replace(/[:@].*$/, '').replace(/^.*\//, '')
}
