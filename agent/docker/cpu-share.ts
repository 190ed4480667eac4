// Docker's cgroupfs driver on cgroup v1 (a host without systemd) puts every container under one `/docker` cgroup
// whose CPU weight, 1024 by default, is that of a single host process. Under host load the live release then gets a
// sliver of a CPU, stops accepting in time, and nginx answers 504: measured in bench/results/latest.md. The agent
// does not change host cgroups; it says so once at start-up.
import { readFile } from 'node:fs/promises'
import type { DockerEngine } from './engine.js'

export const DOCKER_CPU_SHARES_FILE = '/sys/fs/cgroup/cpu/docker/cpu.shares'
/** The weight of one host process. */
const ONE_PROCESS = 1024

/** The warning for an engine whose containers all share one process's CPU weight, else null (also when unknown). */
export async function containerCpuShareWarning(
  engine: Pick<DockerEngine, 'cgroupLayout'>,
  sharesFile = DOCKER_CPU_SHARES_FILE,
): Promise<string | null> {
  const { driver, version } = await engine.cgroupLayout()
  if (driver !== 'cgroupfs' || version !== '1') return null
  const shares = Number.parseInt(await readFile(sharesFile, 'utf8').catch(() => ''), 10)
  if (!Number.isFinite(shares) || shares > ONE_PROCESS) return null
  return (
    `all containers share one CPU weight (${sharesFile} is ${shares}, the weight of one host process: Docker's cgroupfs ` +
    `driver on cgroup v1): under host load the live release can stop accepting in time and requests fail. Raise it ` +
    `(echo 10240 > ${sharesFile}) or run Docker with the systemd cgroup driver; see the README, "Zero failed requests"`
  )
}
