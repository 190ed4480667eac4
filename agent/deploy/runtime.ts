// The runtime the deploy state machine drives: everything the engine does for a release — its image (built or
// reused, listed, pruned), its one-off containers (migrations), and its instances (start a candidate, check it,
// retire or revive it, remove it). Containers on this host today; a Swarm runtime implements the same interface.
// Labels on the engine's objects are the source of truth for which release runs where.
import type { ContainerLogLine, ContainerLogOptions, DockerEngine } from '../docker/engine.js'
import type { RegistryAuth } from '../docker/pull.js'
import type { ContainerHealth, ContainerSettings, Labels, OneOffResult } from '../docker/types.js'

export const LABEL = {
  app: 'deploy-agent.app',
  env: 'deploy-agent.env',
  release: 'deploy-agent.release',
  deploy: 'deploy-agent.deploy',
  role: 'deploy-agent.role',
  port: 'deploy-agent.port',
  commit: 'deploy-agent.commit',
} as const

export interface EnvTarget {
  app: string
  env: string
}

export interface Instance {
  id: string
  release: string
  commit: string
  deployId: string
  port: number
  image: string
  running: boolean
  created: Date
}

export interface CandidateSpec extends EnvTarget {
  release: string
  commit: string
  deployId: string
  image: string
  port: number
  /** `KEY=VALUE` environment of the app (env file, database URL); PORT is added. */
  variables: string[]
  container: ContainerSettings
}

export interface BuildSpec extends EnvTarget {
  release: string
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
  /** The kept image of `release`, or null. */
  releaseImage(target: EnvTarget, release: string): Promise<EnvImage | null>
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
  /** Every web instance of the env, running or stopped, newest first. */
  instances(target: EnvTarget): Promise<Instance[]>
  startCandidate(spec: CandidateSpec): Promise<Instance>
  /** Running and not restarting. */
  isAlive(instance: Instance): Promise<boolean>
  engineHealth(instance: Instance): Promise<ContainerHealth | null>
  /** Stops an instance but keeps it, so a rollback can revive it in a second. */
  retire(instance: Instance): Promise<void>
  revive(instance: Instance): Promise<void>
  remove(instance: Instance): Promise<void>
  logTail(instance: Instance, lines?: number): Promise<string[]>
  /** The instance's output, line by line (the app's own log, for operators): see DockerEngine.containerLogLines. */
  logs(instance: Instance, options: ContainerLogOptions): AsyncIterable<ContainerLogLine>
}

export function envLabels(target: EnvTarget): Labels {
  return { [LABEL.app]: target.app, [LABEL.env]: target.env }
}

export function imageTag(app: string, env: string, release: string): string {
  return `${app}:${env}-${release}`
}

export class ContainerRuntime implements Runtime {
  constructor(private readonly docker: DockerEngine) {}

  async releaseImage(target: EnvTarget, release: string): Promise<EnvImage | null> {
    const ref = imageTag(target.app, target.env, release)
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
    const tag = imageTag(spec.app, spec.env, spec.release)
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
    return containers
      .map((c) => ({
        id: c.id,
        release: c.labels[LABEL.release] ?? '',
        commit: c.labels[LABEL.commit] ?? '',
        deployId: c.labels[LABEL.deploy] ?? '',
        port: Number(c.labels[LABEL.port]),
        image: c.image,
        running: c.state === 'running' || c.state === 'restarting',
        created: c.created,
      }))
      .sort((a, b) => b.created.getTime() - a.created.getTime())
  }

  async startCandidate(spec: CandidateSpec): Promise<Instance> {
    const labels: Labels = {
      ...envLabels(spec),
      [LABEL.release]: spec.release,
      [LABEL.deploy]: spec.deployId,
      [LABEL.role]: 'web',
      [LABEL.port]: String(spec.port),
      [LABEL.commit]: spec.commit,
    }
    const name = `${spec.app}-${spec.env}-${spec.deployId}`
    const id = await this.docker.startContainer({
      name,
      image: spec.image,
      env: [...spec.variables, `PORT=${spec.port}`],
      labels,
      restartPolicy: 'unless-stopped',
      container: spec.container,
    })
    return {
      id,
      release: spec.release,
      commit: spec.commit,
      deployId: spec.deployId,
      port: spec.port,
      image: spec.image,
      running: true,
      created: new Date(),
    }
  }

  async isAlive(instance: Instance): Promise<boolean> {
    const details = await this.docker.inspectContainer(instance.id)
    return details !== null && details.running && !details.restarting
  }

  async engineHealth(instance: Instance): Promise<ContainerHealth | null> {
    return (await this.docker.inspectContainer(instance.id))?.health ?? null
  }

  retire(instance: Instance): Promise<void> {
    return this.docker.stopContainer(instance.id)
  }

  revive(instance: Instance): Promise<void> {
    return this.docker.startExisting(instance.id)
  }

  remove(instance: Instance): Promise<void> {
    return this.docker.removeContainer(instance.id)
  }

  logTail(instance: Instance, lines = 30): Promise<string[]> {
    return this.docker.containerLogTail(instance.id, lines)
  }

  logs(instance: Instance, options: ContainerLogOptions): AsyncIterable<ContainerLogLine> {
    return this.docker.containerLogLines(instance.id, options)
  }
}
