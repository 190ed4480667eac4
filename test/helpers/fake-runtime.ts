// An engine of plain records for unit tests of deploy decisions: instances and kept images in memory, one-off
// results chosen by the test, and `faults` that make single operations throw as a dockerd going away would.
import type { HandOver } from '../../agent/deploy/handover.js'
import type { Placement, Standby, UpstreamSwitch } from '../../agent/proxy/nginx.js'
import {
  coreMembers,
  membersOf,
  newMember,
  singletonsOf,
  startedGroup,
  type BuildSpec,
  type CandidateSpec,
  type EnvImage,
  type EnvTarget,
  type Instance,
  type KeepPulledSpec,
  type Member,
  type MigrationSpec,
  type PullSpec,
  type Runtime,
} from '../../agent/deploy/runtime.js'
import type { OneOffResult } from '../../agent/docker/types.js'

export const engineDown = () => Object.assign(new Error('connect ENOENT /var/run/docker.sock'), { code: 'ENOENT' })

export interface RuntimeFaults {
  isAlive?: (i: Instance) => boolean
  retire?: (i: Instance) => boolean
  build?: () => boolean
  /** A worker member that is dead (exited) whenever it is looked at. */
  deadWorker?: (m: Member) => boolean
  /**
   * A worker member that keeps exiting and being restarted by its restart policy: down when its group is checked,
   * running again (restarted once) when looked at alone.
   */
  restartingWorker?: (m: Member) => boolean
}

export class FakeRuntime implements Runtime {
  readonly removed: string[] = []
  readonly retired: string[] = []
  readonly revived: string[] = []
  readonly images = new Map<string, EnvImage>()
  oneOffIds: string[] = []
  /** What each build and migration was asked for, in order. */
  readonly builds: BuildSpec[] = []
  readonly migrations: MigrationSpec[] = []
  /** The registry: `image:tag` → digest. */
  readonly registry = new Map<string, string>()
  readonly pulls: string[] = []
  /**
   * What happened to members, in order — `start <release>/<service>`, `stop …`, `remove …` — shared with a
   * FakeRouter's `switch <port>` when given the same array: the order of a switch is read from it.
   */
  readonly ops: string[] = []
  migration: OneOffResult = { exitCode: 0, timedOut: false, logTail: [] }
  /** A candidate without services serves on these addresses (a swarm's nodes) instead of this host's loopback. */
  candidateHosts: string[] | undefined

  constructor(
    readonly list: Instance[],
    readonly faults: RuntimeFaults = {},
  ) {}

  keep(release: string, commit: string): void {
    this.images.set(release, { release, commit, ref: `web:production-${release}`, created: new Date() })
  }

  /** Images of services with their own build, by `<service>:<release>`. */
  readonly serviceImages = new Map<string, EnvImage>()
  async releaseImage(_target: EnvTarget, release: string, service?: string) {
    return (service === undefined ? this.images.get(release) : this.serviceImages.get(`${service}:${release}`)) ?? null
  }
  async buildRelease(spec: BuildSpec) {
    this.builds.push(spec)
    if (this.faults.build?.()) throw new Error('build failed: RUN false')
    if (spec.service !== undefined) {
      const ref = `web-${spec.service}:production-${spec.release}`
      this.serviceImages.set(`${spec.service}:${spec.release}`, { release: spec.release, commit: spec.commit, ref, created: new Date() })
      return ref
    }
    this.keep(spec.release, spec.commit)
    return `web:production-${spec.release}`
  }
  async pullImage(spec: PullSpec) {
    const digest = this.registry.get(`${spec.image}:${spec.tag}`)
    if (!digest) throw Object.assign(new Error(`manifest unknown: ${spec.image}:${spec.tag}`), { code: 'image_not_found' })
    this.pulls.push(`${spec.image}:${spec.tag}`)
    return { digest }
  }
  async keepPulled(spec: KeepPulledSpec) {
    this.keep(spec.release, spec.digest)
    return this.images.get(spec.release) as EnvImage
  }
  async releases() {
    return [...this.images.values()]
  }
  async removeImage(ref: string) {
    for (const [release, image] of this.images) if (image.ref === ref) this.images.delete(release)
  }
  async runMigration(spec: MigrationSpec) {
    this.migrations.push(spec)
    return this.migration
  }
  async oneOffs() {
    return this.oneOffIds
  }
  async removeOneOff(id: string) {
    this.oneOffIds = this.oneOffIds.filter((o) => o !== id)
  }
  async instances() {
    return [...this.list]
  }
  async startCandidate(spec: CandidateSpec): Promise<Instance> {
    if (spec.services) {
      const members = spec.services.map((s) => newMember(`c-${spec.deployId}-${s.name}`, s))
      for (const m of members) if (m.running) this.ops.push(`start ${spec.release}/${m.service}`)
      const group = startedGroup(spec, members)
      this.list.unshift(group)
      return group
    }
    const instance: Instance = {
      id: `c-${spec.deployId}`,
      release: spec.release,
      commit: spec.commit,
      deployId: spec.deployId,
      port: spec.port,
      image: spec.image,
      running: true,
      created: new Date(),
    }
    if (this.candidateHosts)
      instance.members = [
        {
          id: instance.id,
          service: 'web',
          kind: 'web',
          port: spec.port,
          order: null,
          stopTimeoutSec: 10,
          running: true,
          hosts: this.candidateHosts,
        },
      ]
    this.list.unshift(instance)
    return instance
  }
  async isAlive(i: Instance, which: 'core' | 'all' = 'core') {
    if (this.faults.isAlive?.(i)) throw engineDown()
    if (!i.members) return i.running
    const members = which === 'all' ? membersOf(i) : coreMembers(i)
    return members.every((m) => m.running && !this.faults.deadWorker?.(m) && !this.faults.restartingWorker?.(m))
  }
  async engineHealth() {
    return null
  }
  async memberState(m: Member) {
    const restarted = this.faults.restartingWorker?.(m) === true
    return { alive: m.running && !this.faults.deadWorker?.(m), restartCount: restarted ? 1 : 0, health: null }
  }
  /** Ids of the instances given a serving release's CPU weight, in order. */
  readonly promoted: string[] = []
  async promote(i: Instance) {
    this.promoted.push(i.id)
  }
  async retire(i: Instance) {
    if (this.faults.retire?.(i)) throw engineDown()
    for (const m of i.members ?? []) if (m.running) this.ops.push(`stop ${i.release}/${m.service}`)
    for (const m of i.members ?? []) m.running = false
    i.running = false
    this.retired.push(i.id)
  }
  async revive(i: Instance) {
    for (const m of coreMembers(i)) if (i.members && !m.running) this.ops.push(`start ${i.release}/${m.service}`)
    for (const m of i.members ? coreMembers(i) : []) m.running = true
    i.running = true
    this.revived.push(i.id)
  }
  async remove(i: Instance) {
    for (const m of i.members ?? []) this.ops.push(`remove ${i.release}/${m.service}`)
    this.removed.push(i.id)
    this.list.splice(this.list.indexOf(i), 1)
  }
  async startSingletons(i: Instance) {
    for (const m of singletonsOf(i)) {
      if (!m.running) this.ops.push(`start ${i.release}/${m.service}`)
      m.running = true
    }
  }
  async stopSingletons(i: Instance) {
    for (const m of singletonsOf(i)) {
      if (m.running) this.ops.push(`stop ${i.release}/${m.service}`)
      m.running = false
    }
  }
  /** Stop-first workers of the env running now, as `<release>/<service>`: never more than one per service. */
  runningSingletons(): string[] {
    return this.list.flatMap((i) =>
      singletonsOf(i)
        .filter((m) => m.running)
        .map((m) => `${i.release}/${m.service}`),
    )
  }
  async logTail() {
    return []
  }
  /** Lines each instance printed, by id; `logs` answers the last `tail` of them. */
  readonly output = new Map<string, string[]>()
  /** Followers of `logs` still attached (a follow lasts until its signal aborts). */
  following = 0
  async *logs(i: Instance, options: { tail: number; follow?: boolean; signal?: AbortSignal }) {
    const lines = options.tail === 0 ? [] : (this.output.get(i.id) ?? []).slice(-options.tail)
    for (const line of lines) yield { at: new Date().toISOString(), stream: 'stdout' as const, line }
    const { signal } = options
    if (!options.follow || !signal || signal.aborted) return
    this.following++
    await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }))
    this.following--
  }
}

/** nginx as a variable: the routed port, switched at once; `failSwitch` makes the next switches throw. */
export class FakeRouter implements UpstreamSwitch {
  failSwitch = 0
  /** Placeholder ports written by ensureFile (only while nothing is routed). */
  readonly ensured: number[] = []
  constructor(
    public routed: number | null,
    /** Where each switch is recorded as `switch <port>` (a FakeRuntime's `ops`, to read the order of a switch). */
    readonly ops: string[] = [],
  ) {}
  async ensureFile(port: number) {
    if (this.routed !== null) return false
    this.ensured.push(port)
    return true
  }
  async currentPort() {
    return this.routed
  }
  /** The placement of each switch (undefined: this host's loopback). */
  readonly placements: Array<Placement | undefined> = []
  /** The warm standby of each switch (undefined: the file names the live release alone). */
  readonly standbys: Array<Standby | undefined> = []
  async switchTo(port: number, placement?: Placement, standby?: Standby) {
    this.placements.push(placement)
    this.standbys.push(standby)
    if (this.failSwitch > 0) {
      this.failSwitch -= 1
      throw new Error('nginx -t failed: the old upstream was put back')
    }
    const previousPort = this.routed
    this.routed = port
    this.ops.push(`switch ${port}`)
    return { previousPort }
  }
}

/** The hand-over record of a worker-only env as a variable; `ops` as FakeRouter's (`hand-over <deploy id>`). */
export class FakeHandOver implements HandOver {
  constructor(
    public handedTo: string | null,
    readonly ops: string[] = [],
  ) {}
  async current() {
    return this.handedTo
  }
  async handTo(deployId: string) {
    this.handedTo = deployId
    this.ops.push(`hand-over ${deployId}`)
  }
}

/** A source repository whose every tag and branch is `commit`, and a tag memory that accepts anything. */
export function fakeSource(
  commit: string,
  archive: () => NodeJS.ReadableStream = () => {
    throw new Error('no build expected')
  },
) {
  return {
    repo: () => ({
      fetch: async () => undefined,
      resolveTag: async () => ({ commit, annotated: false }),
      resolveBranch: async () => commit,
      isAncestor: async () => true,
      archive,
    }),
    tags: { check: () => undefined, record: async () => undefined },
  }
}
