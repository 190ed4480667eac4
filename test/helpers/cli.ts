// Runs the real `deploy-agent` binary (bin/deploy-agent.js) as a child process, as an operator or CI would.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { AUDIENCE } from './agent.js'

export const BIN = fileURLToPath(new URL('../../bin/deploy-agent.js', import.meta.url))

/** The child's environment. tap's coverage hooks are left out: the binary runs dist/ (when built and fresh) or the
 * sources through tsx, neither of which tap's coverage report can merge with its own, and a merged garbage report
 * would hide real gaps. TSX_DISABLE_CACHE=1 from the start: tap's NODE_OPTIONS preloads a loader, whose hooks thread
 * would not see the bin set it (the bin refuses the sources then). */
function childEnv(extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...process.env, TSX_DISABLE_CACHE: '1', ...extra, _TAPJS_PROCESSINFO_COVERAGE_: '0' }
}

export interface CliResult {
  code: number
  stdout: string
  stderr: string
}

/** The environment a shell sets to reach the agent at `url` as CI would: the test keys in `keysDir` (writeTestKeys), no colour. */
export function cliEnvFor(url: string, keysDir: string): NodeJS.ProcessEnv {
  return {
    DEPLOY_AGENT_URL: url,
    DEPLOY_AGENT_AUDIENCE: AUDIENCE,
    DEPLOY_AGENT_KEY_ID: 'ci',
    DEPLOY_AGENT_KEY_FILE: join(keysDir, 'ci.key'),
    DEPLOY_AGENT_STATUS_TOKEN_FILE: join(keysDir, 'status.token'),
    NO_COLOR: '1',
  }
}

/** The environment of a person who approves held deploys: `cliEnvFor` with the `approver` key instead of CI's. */
export function approverEnvFor(url: string, keysDir: string): NodeJS.ProcessEnv {
  return { ...cliEnvFor(url, keysDir), DEPLOY_AGENT_KEY_ID: 'approver', DEPLOY_AGENT_KEY_FILE: join(keysDir, 'approver.key') }
}

/** Runs one CLI command to completion; never throws on a non-zero exit. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: childEnv(env), timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0
      resolve({ code, stdout, stderr })
    })
  })
}

/** Runs `bash <script> ...args` (a script of scripts/ as CI or an operator would) to completion; never throws. */
export function runBashScript(script: string, args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 120_000): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile('bash', [script, ...args], { env: childEnv(env), timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0
      resolve({ code, stdout, stderr })
    })
  })
}

export interface ServeProcess {
  child: ChildProcess
  url: string
  output(): string
  /** resolves with the exit code */
  exited: Promise<number | null>
  stop(signal?: NodeJS.Signals): Promise<number | null>
  /**
   * Resolves once the start-up catch-up of the nightly backups is over: an agent with no nightly backup yet takes
   * one at start, and a manual backup of the same env meanwhile is refused with backup_busy.
   */
  nightlyCatchUpDone(timeoutMs?: number): Promise<void>
}

/** Starts `deploy-agent serve` and waits until /healthz answers at `url` (20 s unless `readyTimeoutMs` says). */
export async function startServe(
  configPath: string,
  url: string,
  env: NodeJS.ProcessEnv = {},
  readyTimeoutMs = 20_000,
): Promise<ServeProcess> {
  const child = spawn(process.execPath, [BIN, 'serve', '--config', configPath], { env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout?.on('data', (d) => (output += d))
  child.stderr?.on('data', (d) => (output += d))
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const deadline = Date.now() + readyTimeoutMs
  for (;;) {
    if (child.exitCode !== null) throw new Error(`serve exited with ${child.exitCode}:\n${output}`)
    const ok = await fetch(`${url}/healthz`).then(
      (r) => r.ok,
      () => false,
    )
    if (ok) break
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`serve did not answer /healthz in ${readyTimeoutMs / 1000} s:\n${output}`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  return {
    child,
    url,
    output: () => output,
    exited,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null) child.kill(signal)
      return exited
    },
    nightlyCatchUpDone: async (timeoutMs = 60_000) => {
      const done = /"job":"nightly-backups".*"msg":"job (finished|failed)"/
      for (const stop = Date.now() + timeoutMs; !done.test(output); await new Promise((r) => setTimeout(r, 50))) {
        if (Date.now() > stop) throw new Error(`the nightly catch-up did not finish in ${timeoutMs / 1000} s:\n${output}`)
      }
    },
  }
}
