// An engine of plain records for unit tests of deploy decisions: instances and kept images in memory, one-off
// results chosen by the test, and `faults` that make single operations throw as a dockerd going away would.
import type { UpstreamSwitch } from '../../agent/proxy/nginx.js'
import type {
  BuildSpec,
  CandidateSpec,
  EnvImage,
  EnvTarget,
  Instance,
  KeepPulledSpec,
  MigrationSpec,
  PullSpec,
  Runtime,
} from '../../agent/deploy/runtime.js'
import type { OneOffResult } from '../../agent/docker/types.js'

export const engineDown = () => Object.assign(new Error('connect ENOENT /var/run/docker.sock'), { code: 'ENOENT' })

export interface RuntimeFaults {
  isAlive?: (i: Instance) => boolean
  retire?: (i: Instance) => boolean
  build?: () => boolean
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
  migration: OneOffResult = { exitCode: 0, timedOut: false, logTail: [] }

  constructor(
    readonly list: Instance[],
    readonly faults: RuntimeFaults = {},
  ) {}

  keep(release: string, commit: string): void {
    this.images.set(release, { release, commit, ref: `web:production-${release}`, created: new Date() })
  }

  async releaseImage(_target: EnvTarget, release: string) {
    return this.images.get(release) ?? null
  }
  async buildRelease(spec: BuildSpec) {
    this.builds.push(spec)
    if (this.faults.build?.()) throw new Error('build failed: RUN false')
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
    const instance = {
      id: `c-${spec.deployId}`,
      release: spec.release,
      commit: spec.commit,
      deployId: spec.deployId,
      port: spec.port,
      image: spec.image,
      running: true,
      created: new Date(),
    }
    this.list.unshift(instance)
    return instance
  }
  async isAlive(i: Instance) {
    if (this.faults.isAlive?.(i)) throw engineDown()
    return i.running
  }
  async engineHealth() {
    return null
  }
  async retire(i: Instance) {
    if (this.faults.retire?.(i)) throw engineDown()
    i.running = false
    this.retired.push(i.id)
  }
  async revive(i: Instance) {
    i.running = true
    this.revived.push(i.id)
  }
  async remove(i: Instance) {
    this.removed.push(i.id)
    this.list.splice(this.list.indexOf(i), 1)
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
  constructor(public routed: number | null) {}
  async ensureFile(port: number) {
    if (this.routed !== null) return false
    this.ensured.push(port)
    return true
  }
  async currentPort() {
    return this.routed
  }
  async switchTo(port: number) {
    if (this.failSwitch > 0) {
      this.failSwitch -= 1
      throw new Error('nginx -t failed: the old upstream was put back')
    }
    const previousPort = this.routed
    this.routed = port
    return { previousPort }
  }
}
