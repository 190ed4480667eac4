// One-off containers (migrations): run a command in a fresh container of an image, stream its output, bound it
// in time, and always remove the container afterwards.
import { StringDecoder } from 'node:string_decoder'
import { Writable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import type Docker from 'dockerode'
import { ContainerExistsError, DockerError, engineMessage, engineStatus, toDockerError } from './errors.js'
import { LineSplitter, MAX_LINE_CHARS, Tail } from './lines.js'
import { dockerMounts } from './mounts.js'
import { BACKGROUND_CPU_SHARES, DEFAULT_CONTAINER_SETTINGS, hardeningOf, type OneOffOptions, type OneOffResult } from './types.js'

const LOG_TAIL = 50
// After the exit, the log stream normally ends at once; do not hang on one that does not.
const LOG_DRAIN_MS = 2_000

/** A writable that decodes UTF-8 across chunk borders and calls `emit` once per whole line. */
function lineSink(emit: (line: string) => void): { sink: Writable; flush: () => void } {
  const decoder = new StringDecoder('utf8')
  const lines = new LineSplitter(MAX_LINE_CHARS)
  const out = (batch: string[]): void => {
    for (const line of batch) if (line.trim() !== '') emit(line.trimEnd())
  }
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      out(lines.push(decoder.write(chunk)))
      callback()
    },
  })
  return { sink, flush: () => out(lines.push(decoder.end()).concat(lines.flush())) }
}

/** Follows a container's multiplexed log stream until it ends; resolves either way (logs are best effort). */
function pumpLogs(docker: Docker, logs: NodeJS.ReadableStream, emit: (line: string) => void): Promise<void> {
  const stdout = lineSink(emit)
  const stderr = lineSink(emit)
  docker.modem.demuxStream(logs, stdout.sink, stderr.sink)
  return new Promise((resolve) => {
    const done = (): void => {
      stdout.flush()
      stderr.flush()
      resolve()
    }
    logs.once('end', done)
    logs.once('close', done)
    logs.once('error', done)
  })
}

async function ignoreStatus(promise: Promise<unknown>, ...statuses: number[]): Promise<void> {
  try {
    await promise
  } catch (err) {
    const status = engineStatus(err)
    if (status === undefined || !statuses.includes(status)) throw err
  }
}

/** Waits for the container to exit; past `timeoutMs` kills it. */
async function waitOrKill(container: Docker.Container, timeoutMs: number): Promise<{ exitCode: number | null; timedOut: boolean }> {
  const waited = container.wait() as Promise<{ StatusCode: number }>
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs)
  })
  try {
    const first = await Promise.race([waited, timeout])
    if (first !== 'timeout') return { exitCode: first.StatusCode, timedOut: false }
  } finally {
    clearTimeout(timer)
  }
  // 404/409: it exited (and maybe vanished) in the meantime, which is what the kill wanted anyway.
  await ignoreStatus(container.kill(), 404, 409)
  await waited.catch(() => undefined)
  return { exitCode: null, timedOut: true }
}

export async function runOneOff(docker: Docker, opts: OneOffOptions): Promise<OneOffResult> {
  const tail = new Tail(LOG_TAIL)
  const emit = (line: string): void => {
    tail.push(line)
    try {
      opts.onLine(line)
    } catch {
      // a failing log sink must not leave the container behind
    }
  }
  const settings = opts.container ?? DEFAULT_CONTAINER_SETTINGS
  // Migrations mount what the app mounts: the same container settings, checked the same way.
  const mounts = await dockerMounts(settings)
  let container: Docker.Container
  try {
    container = await docker.createContainer({
      ...(opts.name !== undefined ? { name: opts.name } : {}),
      Image: opts.image,
      Cmd: opts.cmd,
      Env: opts.env,
      Labels: opts.labels,
      Tty: false,
      HostConfig: {
        NetworkMode: 'host',
        Init: true,
        // A migration runs while the live release serves: it must not take the CPU from it.
        CpuShares: opts.cpuShares ?? BACKGROUND_CPU_SHARES,
        ...hardeningOf(settings),
        Mounts: mounts,
      },
    })
  } catch (err) {
    if (engineStatus(err) === 409 && opts.name !== undefined) throw new ContainerExistsError(opts.name)
    throw toDockerError(err, `create a one-off container of ${opts.image}`)
  }
  try {
    try {
      await container.start()
    } catch (err) {
      throw new DockerError('container_start_failed', 500, `start ${opts.cmd.join(' ')} in ${opts.image}: ${engineMessage(err)}`, {
        cause: err,
      })
    }
    // Following from the start returns everything written so far, so no output is lost to the race with start.
    const logs = await container.logs({ follow: true, stdout: true, stderr: true })
    const drained = pumpLogs(docker, logs, emit)
    const outcome = await waitOrKill(container, opts.timeoutMs)
    const drainTimer = new AbortController()
    await Promise.race([drained, sleep(LOG_DRAIN_MS, undefined, { signal: drainTimer.signal }).catch(() => undefined)])
    drainTimer.abort()
    ;(logs as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.()
    return { ...outcome, logTail: tail.lines() }
  } catch (err) {
    throw toDockerError(err, `run ${opts.cmd.join(' ')} in ${opts.image}`)
  } finally {
    await ignoreStatus(container.remove({ force: true }), 404, 409).catch(() => undefined)
  }
}
