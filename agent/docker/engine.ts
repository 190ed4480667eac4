// The one place the agent talks to Docker: a typed facade over dockerode answering plain data and AgentErrors.
// Containers always use host networking: apps listen on their blue/green port on 127.0.0.1 and nginx proxies there.
import type Docker from 'dockerode'
import { buildImage, type BuildImageOptions } from './build.js'
import { callEngine, ContainerExistsError, DockerError, engineStatus, toDockerError } from './errors.js'
import { demuxLogBuffer, nonEmptyLines } from './lines.js'
import { logLines, type ContainerLogLine, type ContainerLogOptions } from './log-lines.js'
import { dockerMounts } from './mounts.js'
import { runOneOff } from './one-off.js'
import { SwarmEngine } from './swarm.js'
import { pullImage, type PullImageOptions } from './pull.js'
import { tarOf } from './tar.js'
import {
  DEFAULT_CONTAINER_SETTINGS,
  hardeningOf,
  labelFilters,
  parseDockerTime,
  type ContainerDetails,
  type ContainerHealth,
  type ContainerSummary,
  type ImageDetails,
  type ImageSummary,
  type Labels,
  type OneOffOptions,
  type OneOffResult,
  type StartContainerOptions,
} from './types.js'

export type { ContainerLogLine, ContainerLogOptions } from './log-lines.js'

const HEALTH: ReadonlySet<string> = new Set<ContainerHealth>(['healthy', 'unhealthy', 'starting'])

function tagsOf(repoTags: string[] | undefined | null): string[] {
  return (repoTags ?? []).filter((tag) => tag !== '<none>:<none>')
}

export class DockerEngine {
  #docker: Promise<Docker> | undefined

  /** Without a client, dockerode is loaded on first use: an agent that never deploys does not pay its memory. */
  constructor(docker?: Docker) {
    if (docker) this.#docker = Promise.resolve(docker)
  }

  private client(): Promise<Docker> {
    this.#docker ??= import('dockerode').then(({ default: Docker }) => new Docker())
    return this.#docker
  }

  private call<T>(what: string, fn: () => Promise<T>, fallback?: { statuses: number[]; value: T }): Promise<T> {
    return callEngine(what, fn, fallback)
  }

  /** The same engine's Swarm side (services, tasks, nodes, pushes), on the same client. */
  swarm(): SwarmEngine {
    return new SwarmEngine(() => this.client())
  }

  /** How the engine places containers in cgroups (`docker info`: CgroupDriver, CgroupVersion). */
  async cgroupLayout(): Promise<{ driver: string; version: string }> {
    const info = await this.call('read the engine info', async () => (await this.client()).info())
    return { driver: String(info.CgroupDriver ?? ''), version: String(info.CgroupVersion ?? '') }
  }

  async ping(): Promise<boolean> {
    try {
      await (await this.client()).ping()
      return true
    } catch {
      return false
    }
  }

  // ── images ──────────────────────────────────────────────────────────────────────────────────────────────

  /** Builds from a tar stream; throws BuildError (`build_failed`, `build_timeout`, `build_cancelled`). */
  async buildImage(opts: BuildImageOptions): Promise<{ imageId: string }> {
    return await buildImage(await this.client(), opts)
  }

  /** Pulls `image:tag` from its registry; throws PullError (`registry_unauthorized`, `image_not_found`, `pull_timeout`, `pull_failed`). */
  async pullImage(opts: PullImageOptions): Promise<{ digest: string; imageId: string }> {
    return await pullImage(await this.client(), opts)
  }

  /**
   * Tags the local image `from` (e.g. `repo@sha256:…`) as `tag` with `labels` added: labels need a new image, so
   * this is a build of `FROM <from>` alone — no layer, no registry (the image is local).
   */
  async labelImage(opts: {
    from: string
    tag: string
    labels: Labels
    timeoutMs: number
    onLine: (line: string) => void
  }): Promise<{ imageId: string }> {
    return await this.buildImage({
      context: tarOf({ Dockerfile: `FROM ${opts.from}\n` }),
      dockerfile: 'Dockerfile',
      tag: opts.tag,
      buildArgs: {},
      labels: opts.labels,
      timeoutMs: opts.timeoutMs,
      onLine: opts.onLine,
    })
  }

  async imageExists(ref: string): Promise<boolean> {
    return (await this.inspectImage(ref)) !== null
  }

  async inspectImage(ref: string): Promise<ImageDetails | null> {
    const info = await this.call(`inspect image ${ref}`, async () => (await this.client()).getImage(ref).inspect(), {
      statuses: [404],
      value: null,
    })
    if (info === null) return null
    const test = info.Config.Healthcheck?.Test ?? []
    return {
      id: info.Id,
      tags: tagsOf(info.RepoTags),
      labels: info.Config.Labels ?? {},
      created: new Date(info.Created),
      healthcheck: test.length > 0 && test[0] !== 'NONE',
    }
  }

  /** Images carrying every `key=value` label given (all images when none is given). */
  async listImages(labelFilter: Labels, reference?: string): Promise<ImageSummary[]> {
    const filters = { ...labelFilters(labelFilter), ...(reference !== undefined && { reference: [reference] }) }
    const images = await this.call('list images', async () => (await this.client()).listImages({ filters }))
    return images.map((image) => ({
      id: image.Id,
      tags: tagsOf(image.RepoTags),
      labels: image.Labels ?? {},
      created: new Date(image.Created * 1000),
    }))
  }

  /** Removes a tag (and the image once untagged); a missing image is fine, one used by a container is `image_in_use`. */
  async removeImage(ref: string): Promise<void> {
    try {
      await (await this.client()).getImage(ref).remove()
    } catch (err) {
      const status = engineStatus(err)
      if (status === 404) return
      if (status === 409) throw new DockerError('image_in_use', 409, toDockerError(err, `remove image ${ref}`).message, { cause: err })
      throw toDockerError(err, `remove image ${ref}`)
    }
  }

  // ── containers ──────────────────────────────────────────────────────────────────────────────────────────

  /** Runs `cmd` to completion (or kills it at `timeoutMs`) in a throw-away container; see one-off.ts. */
  async runOneOff(opts: OneOffOptions): Promise<OneOffResult> {
    return await runOneOff(await this.client(), opts)
  }

  /** Creates and starts (unless `start: false`) a long-running container; returns its id. A taken name is `container_exists`. */
  async startContainer(opts: StartContainerOptions): Promise<string> {
    const settings = opts.container ?? DEFAULT_CONTAINER_SETTINGS
    const mounts = await dockerMounts(settings)
    let container: Docker.Container
    try {
      container = await (
        await this.client()
      ).createContainer({
        name: opts.name,
        Image: opts.image,
        ...(opts.cmd ? { Cmd: opts.cmd } : {}),
        ...(opts.stopTimeoutSec !== undefined ? { StopTimeout: opts.stopTimeoutSec } : {}),
        Env: opts.env,
        Labels: opts.labels,
        // Init: a tiny init as PID 1 forwards SIGTERM, so an app that never installed a handler still stops
        // at once instead of after the stop timeout, and zombies are reaped.
        HostConfig: {
          NetworkMode: 'host',
          Init: true,
          RestartPolicy: { Name: opts.restartPolicy ?? 'unless-stopped' },
          ...(opts.cpuShares !== undefined ? { CpuShares: opts.cpuShares } : {}),
          ...hardeningOf(settings),
          Mounts: mounts,
        },
      })
    } catch (err) {
      if (engineStatus(err) === 409) throw new ContainerExistsError(opts.name)
      throw toDockerError(err, `create container ${opts.name}`)
    }
    if (opts.start === false) return container.id
    try {
      await container.start()
    } catch (err) {
      // A container that never started has no logs worth keeping, and would block its name for the next try.
      await container.remove({ force: true }).catch(() => undefined)
      throw new DockerError('container_start_failed', 500, toDockerError(err, `start container ${opts.name}`).message, { cause: err })
    }
    return container.id
  }

  /** Changes a container's CPU weight, running or not (`docker update --cpu-shares`). */
  async setCpuShares(id: string, shares: number): Promise<void> {
    await this.call(`update container ${id}`, async () => {
      await (await this.client()).getContainer(id).update({ CpuShares: shares })
    })
  }

  async inspectContainer(idOrName: string): Promise<ContainerDetails | null> {
    const info = await this.call(`inspect container ${idOrName}`, async () => (await this.client()).getContainer(idOrName).inspect(), {
      statuses: [404],
      value: null,
    })
    if (info === null) return null
    const state = info.State
    const health = state.Health?.Status
    const neverRan = state.Status === 'created'
    return {
      id: info.Id,
      name: info.Name.replace(/^\//, ''),
      image: info.Config.Image,
      imageId: info.Image,
      running: state.Running,
      restarting: state.Restarting,
      restartCount: info.RestartCount,
      exitCode: state.Running || neverRan ? null : state.ExitCode,
      health: health !== undefined && HEALTH.has(health) ? (health as ContainerHealth) : null,
      labels: info.Config.Labels ?? {},
      startedAt: parseDockerTime(state.StartedAt),
    }
  }

  /** Containers in any state carrying every `key=value` label given (all containers when none is given). */
  async listContainers(labelFilter: Labels): Promise<ContainerSummary[]> {
    const containers = await this.call('list containers', async () =>
      (await this.client()).listContainers({ all: true, filters: labelFilters(labelFilter) }),
    )
    return containers.map((c) => ({
      id: c.Id,
      name: (c.Names[0] ?? '').replace(/^\//, ''),
      image: c.Image,
      state: c.State,
      labels: c.Labels ?? {},
      created: new Date(c.Created * 1000),
    }))
  }

  /** Starts a stopped container again (a running one is left as it is). */
  async startExisting(id: string): Promise<void> {
    await this.call(`start container ${id}`, async () => (await this.client()).getContainer(id).start(), {
      statuses: [304],
      value: undefined,
    })
  }

  /** SIGTERM, then SIGKILL after `timeoutSec`; an already stopped container is fine. */
  async stopContainer(id: string, timeoutSec = 10): Promise<void> {
    await this.call(`stop container ${id}`, async () => (await this.client()).getContainer(id).stop({ t: timeoutSec }), {
      statuses: [304],
      value: undefined,
    })
  }

  /** Force-removes a container (running or not) with its anonymous volumes; a missing one is fine. */
  async removeContainer(id: string): Promise<void> {
    await this.call(`remove container ${id}`, async () => (await this.client()).getContainer(id).remove({ force: true, v: true }), {
      statuses: [404],
      value: undefined,
    })
  }

  async renameContainer(id: string, newName: string): Promise<void> {
    try {
      await (await this.client()).getContainer(id).rename({ name: newName })
    } catch (err) {
      if (engineStatus(err) === 409) throw new ContainerExistsError(newName)
      throw toDockerError(err, `rename container ${id} to ${newName}`)
    }
  }

  /** The last `lines` lines of stdout and stderr, interleaved; none for a missing container. */
  async containerLogTail(id: string, lines = 50): Promise<string[]> {
    const buf = await this.call(
      `read logs of container ${id}`,
      async () => (await this.client()).getContainer(id).logs({ stdout: true, stderr: true, tail: lines, follow: false }),
      { statuses: [404], value: Buffer.alloc(0) },
    )
    // Blank lines are dropped, so the engine's tail may hold more than we show; trim to what was asked.
    return nonEmptyLines(demuxLogBuffer(buf)).slice(-lines)
  }

  /**
   * The container's output (stdout and stderr) as lines with the engine's time of each: the last `tail` lines
   * since `since` (unix seconds), then, with `follow`, new lines until the container stops or `signal` aborts.
   * Each line is cut at MAX_LINE_CHARS.
   */
  containerLogLines(id: string, options: ContainerLogOptions): AsyncGenerator<ContainerLogLine> {
    return logLines(`read logs of container ${id}`, async (o) => (await this.client()).getContainer(id).logs(o as never), options)
  }
}
