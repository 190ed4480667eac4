import { spawn, type ChildProcess } from 'node:child_process'
import { access, mkdir, readFile, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { NGINX_LOG_FORMAT } from '../../agent/proxy/access-log.js'
import { freePort } from './ports.js'

export interface NginxOptions {
  port: number
  /** Included from `http {}`; written (pointing at an unused port) when it does not exist yet. */
  upstreamFile: string
  upstreamName: string
  /** More files included from `http {}` (e.g. a site with its own server block). */
  includes?: string[]
  /** Served as static files under /static/ (e.g. a benchmark's baseline); everything else is proxied. */
  staticDir?: string
  /** A second access log in the agent's JSON `deploy_agent` format (the env's `proxy.accessLog`). */
  accessLog?: string
  /** The site's `location /` retries a failed answer on the next server (the warm standby): RETRY_ON_STANDBY. */
  retryOnStandby?: boolean
}

/** The line docs/deploys.md recommends in a site: a 5xx of the new release is answered again by the warm standby. */
export const RETRY_ON_STANDBY = 'proxy_next_upstream error timeout http_500 http_502 http_503 http_504;'

export interface NginxInstance {
  port: number
  configPath: string
  /** `nginx … -t` for this instance, as the agent's proxy `test` command. */
  testCommand: string[]
  /** `nginx … -s reload` for this instance; the reload completes asynchronously in the master. */
  reloadCommand: string[]
  stop(): Promise<void>
}

/** Writes `upstream <name> { server 127.0.0.1:<port>; }`, the file format the agent maintains. */
export async function writeUpstreamFile(file: string, name: string, port: number): Promise<void> {
  await writeFile(file, `upstream ${name} { server 127.0.0.1:${port}; }\n`)
}

function renderConfig(dir: string, opts: NginxOptions): string {
  const q = (path: string): string => JSON.stringify(path)
  return [
    // As root the workers would otherwise switch to nobody, who cannot read a 0700 temp dir.
    process.getuid?.() === 0 ? 'user root root;' : '',
    'worker_processes 1;',
    `error_log ${q(join(dir, 'error.log'))} notice;`,
    `pid ${q(join(dir, 'nginx.pid'))};`,
    'events { worker_connections 128; }',
    'http {',
    `  access_log ${q(join(dir, 'access.log'))};`,
    ...(opts.accessLog === undefined ? [] : [`  ${NGINX_LOG_FORMAT}`, `  access_log ${q(opts.accessLog)} deploy_agent;`]),
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((kind) => `  ${kind}_temp_path ${q(join(dir, 'temp', kind))};`),
    `  include ${q(opts.upstreamFile)};`,
    ...(opts.includes ?? []).map((file) => `  include ${q(file)};`),
    '  server {',
    `    listen 127.0.0.1:${opts.port};`,
    ...(opts.staticDir === undefined
      ? []
      : [`    location /static/ { alias ${q(join(opts.staticDir, '/'))}; keepalive_requests 1000000; }`]),
    '    location / {',
    `      proxy_pass http://${opts.upstreamName};`,
    '      proxy_connect_timeout 2s;',
    ...(opts.retryOnStandby ? [`      ${RETRY_ON_STANDBY}`] : []),
    '    }',
    '  }',
    '}',
    '',
  ].join('\n')
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port })
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

// nginx writes its pid file only after it has bound its sockets: our pid there means the port is ours.
async function ready(dir: string, child: ChildProcess, port: number): Promise<boolean> {
  const pid = await readFile(join(dir, 'nginx.pid'), 'utf8').catch(() => '')
  return pid.trim() === String(child.pid) && (await canConnect(port))
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null
}

/** Starts a private nginx master under `dir` on 127.0.0.1:<port>, proxying `/` to the upstream; resolves once it accepts connections. */
export async function startNginx(dir: string, opts: NginxOptions): Promise<NginxInstance> {
  await mkdir(join(dir, 'temp'), { recursive: true })
  const configPath = join(dir, 'nginx.conf')
  await writeFile(configPath, renderConfig(dir, opts))
  if (
    !(await access(opts.upstreamFile).then(
      () => true,
      () => false,
    ))
  ) {
    await writeUpstreamFile(opts.upstreamFile, opts.upstreamName, await freePort())
  }

  const base = ['nginx', '-p', dir, '-e', join(dir, 'error.log'), '-c', configPath]
  const [cmd, ...args] = base as [string, ...string[]]
  const child = spawn(cmd, [...args, '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  let spawnError: Error | undefined
  child.once('error', (err) => {
    spawnError = err
  })
  const exitPromise = new Promise<void>((resolve) => child.once('close', () => resolve()))
  // A test process that dies without calling stop() must not leave a master holding the port.
  const killOnExit = (): void => {
    if (!exited(child)) child.kill('SIGKILL')
  }
  process.once('exit', killOnExit)

  const stop = async (): Promise<void> => {
    process.removeListener('exit', killOnExit)
    if (exited(child) || spawnError !== undefined) return
    child.kill('SIGTERM') // fast shutdown: the master stops its workers, then exits
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
    await exitPromise
    clearTimeout(timer)
  }

  const deadline = Date.now() + 10_000
  while (!(await ready(dir, child, opts.port))) {
    if (spawnError !== undefined || exited(child) || Date.now() > deadline) {
      await stop()
      const log = await readFile(join(dir, 'error.log'), 'utf8').catch(() => '')
      throw new Error(`nginx did not start on 127.0.0.1:${opts.port}: ${spawnError?.message ?? ''}${stderr}${log}`)
    }
    await sleep(50)
  }

  return {
    port: opts.port,
    configPath,
    testCommand: [...base, '-t'],
    reloadCommand: [...base, '-s', 'reload'],
    stop,
  }
}
