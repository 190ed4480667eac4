// Child processes of the backup engine (pg_dump, pg_restore, psql, tar, gzip): argument arrays, never a shell;
// output streamed, never held in memory; a failure reported with the tool's exit and the tail of its stderr.
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { open, rm, type FileHandle } from 'node:fs/promises'
import { Writable, type Readable, type Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'

const STDERR_TAIL = 4096

/** A tool that did not succeed; `detail` is its stderr tail (or the stream error) for the operator. */
export class ToolError extends Error {
  constructor(
    readonly tool: string,
    message: string,
    readonly detail: string,
  ) {
    super(detail === '' ? message : `${message}: ${detail}`)
  }
}

export interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
  /** The child could not be started (ENOENT, EACCES). */
  error?: Error
  stderr: string
}

export interface Written {
  bytes: number
  sha256: string
}

function toolName(argv: readonly string[]): string {
  return (argv[0] ?? '').split('/').pop() ?? ''
}

/** Why a tool failed, or null when it exited 0 (or with one of `okCodes`). */
export function exitProblem(exit: Exit, okCodes: readonly number[] = [0]): string | null {
  if (exit.error?.name === 'AbortError') return 'was cancelled'
  if (exit.error !== undefined) return `could not be started (${exit.error.message})`
  if (exit.signal !== null) return `was killed by ${exit.signal}`
  if (exit.code !== null && okCodes.includes(exit.code)) return null
  return `exited with status ${exit.code}`
}

function start(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  stdio: ['ignore' | 'pipe', 'ignore' | 'pipe', 'pipe'],
  signal?: AbortSignal,
): { child: ChildProcess; exited: Promise<Exit> } {
  const [file, ...args] = argv
  if (file === undefined) throw new Error('empty command')
  const child = spawn(file, args, { env, stdio, signal, killSignal: 'SIGKILL' })
  let stderr = ''
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (text: string) => {
    stderr = (stderr + text).slice(-STDERR_TAIL)
  })
  const exited = new Promise<Exit>((resolve) => {
    let error: Error | undefined
    child.once('error', (err) => {
      error = err
      // A child that never started emits no 'close' on every Node version: settle now.
      if (child.pid === undefined) resolve({ code: null, signal: null, error, stderr })
    })
    child.once('close', (code, signal) => resolve({ code, signal, error, stderr: stderr.trim() }))
  })
  return { child, exited }
}

/**
 * Writes every chunk to `handle` (all of it), hashing and counting as it goes; backpressure comes from the disk.
 * pg_dump writes its stdout in stdio-buffer pieces (~8 KiB), so the chunks that pile up while one write is on the
 * disk go out together in the next write (`_writev`): one syscall per batch instead of one per piece. Each chunk is
 * hashed as it is handed over, while the previous write is still in the thread pool.
 */
export class HashingFileSink extends Writable {
  bytes = 0
  /** Writes issued to the file (fewer than chunks when they were coalesced). */
  writes = 0
  readonly hash = createHash('sha256')

  constructor(private readonly handle: FileHandle) {
    super({ highWaterMark: 1 << 20 })
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.take(chunk)
    this.writeAll(chunk).then(() => callback(), callback)
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (err?: Error | null) => void): void {
    for (const { chunk } of chunks) this.take(chunk)
    this.writeAll(Buffer.concat(chunks.map((c) => c.chunk))).then(() => callback(), callback)
  }

  private take(chunk: Buffer): void {
    this.hash.update(chunk)
    this.bytes += chunk.length
  }

  private async writeAll(data: Buffer): Promise<void> {
    this.writes++
    for (let offset = 0; offset < data.length; ) {
      const { bytesWritten } = await this.handle.write(data, offset, data.length - offset)
      offset += bytesWritten
    }
  }
}

/**
 * Runs `argv` and streams its stdout into a new file at `path` (created with O_EXCL, mode 0600), hashing it on the
 * way, then fsyncs it. On any failure — the tool's exit (or `okCodes`), a write error such as ENOSPC — the file is
 * removed and a ToolError thrown. The caller renames the file into place.
 */
export async function captureToFile(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  path: string,
  options: { okCodes?: readonly number[]; signal?: AbortSignal } = {},
): Promise<Written> {
  const okCodes = options.okCodes ?? [0]
  const tool = toolName(argv)
  const handle = await open(path, 'wx', 0o600)
  let done = false
  try {
    const { child, exited } = start(argv, env, ['ignore', 'pipe', 'pipe'], options.signal)
    const sink = new HashingFileSink(handle)
    let streamError: unknown
    try {
      await pipeline(child.stdout as Readable, sink)
    } catch (err) {
      streamError = err
      child.kill('SIGKILL')
    }
    const exit = await exited
    if (options.signal?.aborted === true) throw new ToolError(tool, `${tool} was cancelled`, '')
    if (streamError !== undefined && exit.error === undefined) {
      throw new ToolError(tool, `writing the output of ${tool} failed`, (streamError as Error).message)
    }
    const problem = exitProblem(exit, okCodes)
    if (problem !== null) throw new ToolError(tool, `${tool} ${problem}`, exit.stderr)
    await handle.chmod(0o600) // the umask may have narrowed it; never wider than 0600 either way
    await handle.sync()
    done = true
    return { bytes: sink.bytes, sha256: sink.hash.digest('hex') }
  } finally {
    await handle.close()
    if (!done) await rm(path, { force: true })
  }
}

/** Runs `argv` to completion; stdout goes to `stdout` when given (streamed), else is discarded. */
export async function runTool(argv: readonly string[], env: NodeJS.ProcessEnv, stdout?: Writable): Promise<Exit> {
  const { child, exited } = start(argv, env, ['ignore', stdout === undefined ? 'ignore' : 'pipe', 'pipe'])
  if (stdout !== undefined) {
    try {
      await pipeline(child.stdout as Readable, stdout)
    } catch (err) {
      child.kill('SIGKILL')
      const exit = await exited
      throw new ToolError(toolName(argv), `reading the output of ${toolName(argv)} failed`, (err as Error).message || exit.stderr)
    }
  }
  return exited
}

/** Runs `argv` and returns its stdout (small outputs only: versions, listings). */
export async function toolOutput(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<string> {
  let out = ''
  const collect = new Writable({
    write(chunk: Buffer, _e, cb) {
      if (out.length < 65536) out += chunk.toString('utf8')
      cb()
    },
  })
  const exit = await runTool(argv, env, collect)
  const problem = exitProblem(exit)
  if (problem !== null) throw new ToolError(toolName(argv), `${toolName(argv)} ${problem}`, exit.stderr)
  return out.trim()
}

/**
 * `producer | filter | consumer` without a shell (e.g. `gunzip -c f | guard | psql`). Any failure kills both
 * children; the first meaningful cause wins: the filter's refusal, then the consumer's exit, then the producer's.
 */
export async function runPiped(producer: readonly string[], filter: Transform, consumer: readonly string[], env: NodeJS.ProcessEnv): Promise<void> {
  const from = start(producer, env, ['ignore', 'pipe', 'pipe'])
  const to = start(consumer, env, ['pipe', 'ignore', 'pipe'])
  let filterError: unknown
  filter.once('error', (err) => {
    filterError = err
  })
  let streamError: unknown
  try {
    await pipeline(from.child.stdout as Readable, filter, to.child.stdin as Writable)
  } catch (err) {
    streamError = err
    // The consumer must not run what reached it before the failure as if the input had ended normally.
    to.child.kill('SIGKILL')
    from.child.kill('SIGKILL')
  }
  const [fromExit, toExit] = await Promise.all([from.exited, to.exited])
  if (filterError !== undefined) throw new ToolError(toolName(consumer), (filterError as Error).message, '')
  const consumerProblem = streamError !== undefined && toExit.signal === 'SIGKILL' ? null : exitProblem(toExit)
  if (consumerProblem !== null) throw new ToolError(toolName(consumer), `${toolName(consumer)} ${consumerProblem}`, toExit.stderr)
  const producerProblem = exitProblem(fromExit)
  if (producerProblem !== null) throw new ToolError(toolName(producer), `${toolName(producer)} ${producerProblem}`, fromExit.stderr)
  if (streamError !== undefined) throw new ToolError(toolName(consumer), 'streaming failed', (streamError as Error).message)
}
