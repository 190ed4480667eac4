// The shapes the Docker facade answers with: plain data, no dockerode types, so deploy/ stays engine-agnostic.

export type Labels = Record<string, string>

export interface ImageSummary {
  id: string
  /** `repo:tag` names; untagged images have none. */
  tags: string[]
  labels: Labels
  created: Date
}

export interface ImageDetails extends ImageSummary {
  /** The image declares a HEALTHCHECK (so containers of it report a health status). */
  healthcheck: boolean
}

export type ContainerHealth = 'healthy' | 'unhealthy' | 'starting'

export interface ContainerDetails {
  id: string
  name: string
  /** The image reference the container was created from, as given. */
  image: string
  imageId: string
  running: boolean
  restarting: boolean
  restartCount: number
  /** Null while the container runs or before it ever started. */
  exitCode: number | null
  /** Null when the image has no healthcheck. */
  health: ContainerHealth | null
  labels: Labels
  startedAt: Date | null
}

export interface ContainerSummary {
  id: string
  name: string
  image: string
  /** Docker's state word: created, running, restarting, exited, paused, dead, removing. */
  state: string
  labels: Labels
  created: Date
}

/** What a container may do beyond running its process: the same for an app's web and migration containers. */
export interface ContainerSettings {
  /** Linux capabilities taken from Docker's default set (`ALL` for every one). */
  capDrop: string[]
  capAdd: string[]
  /** Setuid binaries and file capabilities cannot raise a process's privileges. */
  noNewPrivileges: boolean
  /** Memory limit in bytes (swap included: none on top); unset: no limit. */
  memory?: number
  /** Most processes and threads at once; unset: no limit. */
  pids?: number
  /** What the container mounts; unset: nothing. */
  volumes?: VolumeMount[]
  /** A bind of the Docker socket (or a directory holding it) is allowed; unset: refused. */
  allowDockerSocket?: boolean
}

export interface VolumeMount {
  /** `bind`: a host directory (or file) by absolute path; `volume`: a named Docker volume (Docker creates it). */
  kind: 'bind' | 'volume'
  /** The absolute host path, or the volume's name. */
  source: string
  /** The absolute path inside the container. */
  target: string
  readOnly: boolean
}

/** NET_RAW would let a container on the host network sniff loopback traffic (other apps, the agent's tokens). */
export const DEFAULT_CONTAINER_SETTINGS: Readonly<ContainerSettings> = Object.freeze({
  capDrop: ['NET_RAW'],
  capAdd: [],
  noNewPrivileges: true,
})

/**
 * The CPU weight of work that is not serving yet (image builds, migrations): an eighth of a container's default
 * 1024, so that when the CPUs are busy the live release keeps most of them and still answers in time, while the
 * build or migration still gets all the idle CPU there is (a weight is not a cap).
 */
export const BACKGROUND_CPU_SHARES = 128
/** The CPU weight of a serving release: Docker's default, one host process's. */
export const LIVE_CPU_SHARES = 1024

/** The HostConfig fields that apply `settings`. */
export function hardeningOf(settings: ContainerSettings): {
  CapDrop: string[]
  CapAdd: string[]
  SecurityOpt: string[]
  Memory?: number
  MemorySwap?: number
  PidsLimit?: number
} {
  return {
    CapDrop: [...settings.capDrop],
    CapAdd: [...settings.capAdd],
    SecurityOpt: settings.noNewPrivileges ? ['no-new-privileges'] : [],
    // Docker's default lets swap double the limit; equal values mean the limit is what the config says.
    ...(settings.memory !== undefined && { Memory: settings.memory, MemorySwap: settings.memory }),
    ...(settings.pids !== undefined && { PidsLimit: settings.pids }),
  }
}

export interface OneOffOptions {
  image: string
  cmd: string[]
  env: string[]
  labels: Labels
  timeoutMs: number
  onLine: (line: string) => void
  name?: string
  /** Default: DEFAULT_CONTAINER_SETTINGS. */
  container?: ContainerSettings
  /** The container's CPU weight (HostConfig.CpuShares); default BACKGROUND_CPU_SHARES. */
  cpuShares?: number
}

export interface OneOffResult {
  /** Null when the command was killed for running past its timeout. */
  exitCode: number | null
  timedOut: boolean
  /** The last lines of its output (stdout and stderr interleaved). */
  logTail: string[]
}

export interface StartContainerOptions {
  name: string
  image: string
  env: string[]
  labels: Labels
  restartPolicy?: 'unless-stopped' | 'no'
  /** Default: DEFAULT_CONTAINER_SETTINGS. */
  container?: ContainerSettings
  /** The command; default: the image's CMD. */
  cmd?: string[]
  /** SIGTERM, then SIGKILL after this long (also for a `docker stop` by hand); Docker's default when unset. */
  stopTimeoutSec?: number
  /** The container's CPU weight (HostConfig.CpuShares); Docker's default (1024) when unset. */
  cpuShares?: number
  /** False: created, not started (a stop-first worker waits for the switch). Default true. */
  start?: boolean
}

/** Docker's label filter: every `key=value` pair must match; an empty value only asks for the key. */
export function labelFilters(labels: Labels): { label: string[] } {
  return { label: Object.entries(labels).map(([key, value]) => (value === '' ? key : `${key}=${value}`)) }
}

// Docker reports "never" as the zero time of Go.
export function parseDockerTime(value: string | undefined): Date | null {
  if (value === undefined || value === '' || value.startsWith('0001-01-01')) return null
  const date = new Date(value)
  return Number.isNaN(date.getTime()) ? null : date
}
