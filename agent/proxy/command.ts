// Runs one command given as an argument array (never through a shell), with a timeout, and never throws.
import { execFile } from 'node:child_process'

export interface CommandResult {
  ok: boolean
  /** Exit code, or null when the process was killed or never started. */
  code: number | null
  stdout: string
  stderr: string
  timedOut: boolean
  /** Why the command did not succeed, for error messages: stderr, else the spawn error or exit status. */
  failure: string
}

const MAX_OUTPUT = 1024 * 1024

export function runCommand(argv: readonly string[], timeoutMs: number): Promise<CommandResult> {
  const [file, ...args] = argv
  if (file === undefined) {
    return Promise.resolve({ ok: false, code: null, stdout: '', stderr: '', timedOut: false, failure: 'empty command' })
  }
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: MAX_OUTPUT, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err === null) {
        resolve({ ok: true, code: 0, stdout, stderr, timedOut: false, failure: '' })
        return
      }
      const e = err as NodeJS.ErrnoException & { killed?: boolean; signal?: string | null; code?: unknown }
      const timedOut = e.killed === true && e.signal === 'SIGKILL'
      const code = typeof e.code === 'number' ? e.code : null
      const reason = timedOut
        ? `timed out after ${timeoutMs} ms`
        : code !== null
          ? `exited with status ${code}`
          : (e.signal ?? '') !== ''
            ? `killed by ${e.signal}`
            : e.message
      const text = stderr.trim()
      resolve({ ok: false, code, stdout, stderr, timedOut, failure: text === '' ? reason : `${reason}: ${text}` })
    })
  })
}
