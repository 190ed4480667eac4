// The agent's one handle on nginx: an upstream file it owns (`upstream <name> { server 127.0.0.1:<port>; }`), the
// config test, the reload, and proof that the reload took. A switch that fails leaves the old file in place, byte
// for byte, so a failed deploy changes neither routing nor what is saved on disk.
import { setTimeout as sleep } from 'node:timers/promises'
import { readFile, rm, stat } from 'node:fs/promises'
import { basename, dirname } from 'node:path'
import { runCommand, type CommandResult } from './command.js'
import { ProxyError } from './errors.js'
import { signalReload, waitForNewWorkers, workerPids } from './workers.js'
import { ensureDir, fsyncDir, writeFileAtomic } from '../files.js'

export { ProxyError, type ProxyErrorCode } from './errors.js'
export { signalReload, waitForNewWorkers, workerPids, type WaitForWorkersOptions } from './workers.js'
export { probeThrough, type ThroughResult } from './through.js'

export const MANAGED_HEADER = '# managed by deploy-agent; do not edit'

export interface NginxUpstreamOptions {
  upstreamFile: string
  upstreamName: string
  /**
   * Several upstreams in the one file (an app with several web services), primary first: each has a blue/green
   * pair, and a switch to the primary's port of one slot writes every upstream's port of that slot. Without it the
   * file holds the one upstream `upstreamName`.
   */
  upstreams?: Array<{ name: string; ports: readonly [number, number] }>
  /** e.g. `['nginx', '-t']` */
  testCommand: string[]
  /** e.g. `['nginx', '-s', 'reload']`; with a pid file, nginx's own `-s reload` is sent as a signal from here. */
  reloadCommand: string[]
  /** The nginx master's pid file; when given, every reload is confirmed by watching its workers. */
  pidFile?: string
  /** Timeout of each command (default 30 s). */
  commandTimeoutMs?: number
  /** How long to wait for the new workers after a reload (default 5 s). */
  confirmTimeoutMs?: number
  /** The commands and the /proc reads of a switch; tests pass a fake. */
  host?: NginxHost
}

/** What a switch runs outside the process: commands, and the nginx master's workers. */
export interface NginxHost {
  run(argv: readonly string[], timeoutMs: number): Promise<CommandResult>
  workerPids(pidFile: string): Promise<Set<number>>
  waitForNewWorkers(pidFile: string, before: Set<number>, timeoutMs: number): Promise<number[]>
  signalReload(pidFile: string): Promise<void>
}

const realHost: NginxHost = { run: runCommand, workerPids, waitForNewWorkers, signalReload }

/**
 * `nginx [options] -s reload` only reads the master's pid and sends it SIGHUP — after parsing the whole config, which
 * is most of its 7–15 ms. With the pid file known the agent sends the signal itself; any other command runs as given.
 */
const isNginxSignalReload = (argv: readonly string[]) =>
  basename(argv[0] ?? '') === 'nginx' && argv.at(-2) === '-s' && argv.at(-1) === 'reload'

/** How many tested contents a switch remembers (blue and green, times a few placements on a swarm). */
const TESTED_KEPT = 8

/** The addresses serving each port of a switch (a swarm: every node running a task); a port not in it: 127.0.0.1. */
export type Placement = ReadonlyMap<number, readonly string[]>

/**
 * The replaced release kept warm while the new one is observed: nginx's `backup` for every upstream (`port`: the
 * primary's, of the other slot), so a request the new release fails is retried there. Its `placement` as a switch's.
 */
export interface Standby {
  port: number
  placement?: Placement
}

/** What the deploy state machine needs from a proxy; NginxUpstream is the one implementation. */
export interface UpstreamSwitch {
  currentPort(): Promise<number | null>
  switchTo(port: number, placement?: Placement, standby?: Standby): Promise<{ previousPort: number | null }>
  /**
   * Resolves true once the proxy processes that ran before the last switch are gone (their in-flight requests
   * done), false when that cannot be known (no pid file) or `timeoutMs` passed first.
   */
  drained?(timeoutMs: number): Promise<boolean>
  /**
   * Writes the upstream file when it does not exist yet, so nginx, whose site includes it, can start before the
   * first deploy: the one server is marked `down` (nginx answers 502) and the file names no live port.
   */
  ensureFile?(placeholderPort: number): Promise<boolean>
}

interface Saved {
  content: Buffer
  mode: number
}

const NAME = /^[A-Za-z0-9_.-]{1,128}$/
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/

function assertPort(port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ProxyError('proxy_invalid_port', `not a TCP port: ${String(port)}`, undefined, 400)
  }
}

function show(argv: readonly string[]): string {
  return argv.join(' ')
}

export class NginxUpstream implements UpstreamSwitch {
  readonly upstreamFile: string
  readonly upstreamName: string
  private readonly upstreams: Array<{ name: string; ports: readonly [number, number] }> | null
  private readonly testCommand: readonly string[]
  private readonly reloadCommand: readonly string[]
  private readonly pidFile: string | undefined
  private readonly signalsReload: boolean
  private readonly commandTimeoutMs: number
  private readonly confirmTimeoutMs: number
  // Switches run one at a time: each one reads the file the previous one left.
  private tail: Promise<unknown> = Promise.resolve()
  /** The workers that served before the last confirmed switch: requests in flight there still reach the old port. */
  private retiring = new Set<number>()
  private readonly host: NginxHost
  /**
   * Contents `nginx -t` passed in this process, in the order tested. A switch back to one of them (a rollback) skips
   * the test (20–50 ms, most of a rollback's own time): a config broken since by someone else still fails the
   * reload, which the new workers' absence shows, and only then is the test run, for nginx's own words.
   */
  private readonly tested = new Set<string>()

  constructor(options: NginxUpstreamOptions) {
    for (const name of [options.upstreamName, ...(options.upstreams ?? []).map((u) => u.name)])
      if (!NAME.test(name)) throw new ProxyError('proxy_invalid_config', `invalid upstream name: ${JSON.stringify(name)}`, undefined, 500)
    for (const [key, argv] of [
      ['testCommand', options.testCommand],
      ['reloadCommand', options.reloadCommand],
    ] as const) {
      if (argv.length === 0) throw new ProxyError('proxy_invalid_config', `${key} is empty`, undefined, 500)
    }
    this.upstreamFile = options.upstreamFile
    this.upstreamName = options.upstreams?.[0]?.name ?? options.upstreamName
    this.upstreams = options.upstreams && options.upstreams.length > 0 ? options.upstreams.map((u) => ({ ...u })) : null
    this.testCommand = [...options.testCommand]
    this.reloadCommand = [...options.reloadCommand]
    this.pidFile = options.pidFile
    this.signalsReload = options.pidFile !== undefined && isNginxSignalReload(options.reloadCommand)
    this.commandTimeoutMs = options.commandTimeoutMs ?? 30_000
    this.confirmTimeoutMs = options.confirmTimeoutMs ?? 5_000
    this.host = options.host ?? realHost
  }

  /**
   * With a standby, the new release's servers get `max_fails=0`: nginx's default (one failure hides a server for
   * 10 s) would send all its traffic to the backup, and the traffic verdict would never see it fail.
   */
  render(port: number, placement?: Placement, standby?: Standby): string {
    assertPort(port)
    if (standby) {
      assertPort(standby.port)
      if (standby.port === port) throw new ProxyError('proxy_invalid_port', `the standby's port ${port} is the live one's`, undefined, 400)
    }
    const servers = (p: number, hosts: readonly string[], param: string) => {
      for (const host of hosts)
        if (!IPV4.test(host)) throw new ProxyError('proxy_invalid_port', `not an IPv4 address: ${JSON.stringify(host)}`, undefined, 400)
      return hosts.map((h) => `server ${h}:${p}${param};`)
    }
    const block = (name: string, p: number, backup: number | undefined) => {
      const hosts = placement?.get(p) ?? ['127.0.0.1']
      if (hosts.length === 0) throw new ProxyError('proxy_invalid_port', `no address serves port ${p}`, undefined, 400)
      // A standby with no address left (a swarm colour with no task running) is no backup: the switch goes on.
      const lines =
        backup === undefined
          ? servers(p, hosts, '')
          : [...servers(p, hosts, ' max_fails=0'), ...servers(backup, standby?.placement?.get(backup) ?? ['127.0.0.1'], ' backup')]
      return `upstream ${name} { ${lines.join(' ')} }\n`
    }
    if (!this.upstreams) return `${MANAGED_HEADER}\n${block(this.upstreamName, port, standby?.port)}`
    const slot = this.slotOf(port)
    if (standby && this.slotOf(standby.port) === slot)
      throw new ProxyError('proxy_invalid_port', `the standby's port ${standby.port} is on the live slot`, undefined, 400)
    const other = slot === 0 ? 1 : 0
    return `${MANAGED_HEADER}\n${this.upstreams.map((u) => block(u.name, u.ports[slot], standby && u.ports[other])).join('')}`
  }

  /** Which of the pairs (0 blue, 1 green) the primary's `port` names. */
  private slotOf(port: number): 0 | 1 {
    const slot = this.upstreams?.[0]?.ports.indexOf(port) ?? -1
    if (slot === -1) throw new ProxyError('proxy_invalid_port', `port ${port} is not one of the primary upstream's pair`, undefined, 400)
    return slot as 0 | 1
  }

  /**
   * Parses a file in the format `render` writes (comment lines ignored); null when it is another upstream's or not
   * ours. With several upstreams the primary's port answers: the agent writes them all from one slot, so upstreams
   * that disagree were edited by hand — the primary's still says where the release's web traffic goes (answering
   * null would send the next candidate onto a slot that may serve), and the next switch writes them all again.
   * A warm standby's `backup` servers name no port: the primaries are live.
   */
  parse(text: string): number | null {
    const body = text
      .split('\n')
      .filter((line) => !line.trimStart().startsWith('#'))
      .join('\n')
    // One or more servers (a swarm: one per node), all on the slot's port; `max_fails=0` and `backup` the only
    // parameters (a warm standby's).
    const server = String.raw`\s*server\s+\d{1,3}(?:\.\d{1,3}){3}:\d{1,5}(?:\s+(?:max_fails=0|backup))*\s*;`
    const block = new RegExp(String.raw`\s*upstream\s+(\S+)\s*\{((?:${server})+)\s*\}`, 'y')
    const found = new Map<string, number>()
    let end = 0
    for (let m = block.exec(body); m !== null; m = block.exec(body)) {
      const primaries = [...(m[2] as string).matchAll(/:(\d{1,5})((?:\s+(?:max_fails=0|backup))*)\s*;/g)].filter(
        (p) => !/\bbackup\b/.test(p[2] as string),
      )
      const ports = new Set(primaries.map((p) => Number(p[1])))
      if (ports.size !== 1) return null
      found.set(m[1] as string, [...ports][0] as number)
      end = block.lastIndex
    }
    if (body.slice(end).trim() !== '' || found.size !== (this.upstreams?.length ?? 1)) return null
    const port = found.get(this.upstreamName)
    return port !== undefined && port >= 1 && port <= 65535 ? port : null
  }

  async ensureFile(placeholderPort: number): Promise<boolean> {
    assertPort(placeholderPort)
    const slot = this.upstreams ? this.slotOf(placeholderPort) : 0
    const servers = (this.upstreams ?? [{ name: this.upstreamName, ports: [placeholderPort, placeholderPort] as const }]).map(
      (u) => `upstream ${u.name} { server 127.0.0.1:${u.ports[slot]} down; }\n`,
    )
    const placeholder = `${MANAGED_HEADER}\n# no release is live yet\n${servers.join('')}`
    const run = this.tail.then(async () => {
      if ((await this.save()) !== null) return false
      await ensureDir(dirname(this.upstreamFile), 0o755)
      await writeFileAtomic(this.upstreamFile, placeholder, 0o644)
      return true
    })
    this.tail = run.catch(() => undefined)
    return run
  }

  /** The port the upstream file points at; null when the file is missing or not in our format. */
  async currentPort(): Promise<number | null> {
    const text = await readFile(this.upstreamFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null
      throw err
    })
    return text === null ? null : this.parse(text)
  }

  /**
   * Points the upstream at 127.0.0.1:<port>: write the file, `nginx -t`, reload, confirm. On any failure the old
   * file is put back (and nginx reloaded with it when a reload had been attempted) before the error is thrown.
   * With a `standby` the replaced release stays in the file as every upstream's backup (see `render`).
   */
  switchTo(port: number, placement?: Placement, standby?: Standby): Promise<{ previousPort: number | null }> {
    const run = this.tail.then(() => this.switchNow(port, placement, standby))
    this.tail = run.catch(() => undefined)
    return run
  }

  private async switchNow(port: number, placement?: Placement, standby?: Standby): Promise<{ previousPort: number | null }> {
    const next = this.render(port, placement, standby)
    // Only a reload confirmed by new workers can stand in for the test: without a pid file every content is tested.
    const skipTest = this.pidFile !== undefined && this.tested.has(next)
    // The workers before the reload, read while the file is written (they are only compared after the reload).
    const workersBefore = this.pidFile === undefined ? undefined : this.host.workerPids(this.pidFile)
    workersBefore?.catch(() => undefined) // awaited below; a failure there must not go unhandled meanwhile
    const saved = await this.save()
    const previousPort = saved === null ? null : this.parse(saved.content.toString('utf8'))

    await ensureDir(dirname(this.upstreamFile), 0o755)
    // The rename's own fsync waits until nginx has been told (a crash before it leaves the old file, which is
    // what nginx then still runs).
    await writeFileAtomic(this.upstreamFile, next, 0o644, { syncDir: false })

    if (!skipTest) {
      const test = await this.run(this.testCommand)
      if (!test.ok) {
        await this.restore(saved)
        throw this.testFailed(port, test)
      }
      this.remember(next)
    }

    let before: Set<number> | undefined
    try {
      before = await workersBefore
    } catch (err) {
      await this.restore(saved)
      throw err
    }

    const reload = await this.reload()
    if (reload !== null) {
      throw await this.failAfterReload(
        saved,
        port,
        skipTest,
        new ProxyError(
          'proxy_reload_failed',
          `nginx reload (${show(this.reloadCommand)}) failed for port ${port}: ${reload.failure}`,
          reload.stderr,
        ),
      )
    }

    if (this.pidFile !== undefined && before !== undefined) {
      try {
        await this.host.waitForNewWorkers(this.pidFile, before, this.confirmTimeoutMs)
        this.retiring = before
      } catch (err) {
        throw await this.failAfterReload(saved, port, skipTest, err)
      }
    }
    await fsyncDir(dirname(this.upstreamFile))
    return { previousPort }
  }

  private testFailed(port: number, test: CommandResult): ProxyError {
    return new ProxyError(
      'proxy_test_failed',
      `nginx config test (${show(this.testCommand)}) failed for port ${port}: ${test.failure}`,
      test.stderr,
    )
  }

  private remember(content: string): void {
    this.tested.delete(content)
    this.tested.add(content)
    for (const old of this.tested) if (this.tested.size > TESTED_KEPT) this.tested.delete(old)
  }

  /**
   * A reload that failed or was not confirmed: nothing tested is trusted any more (nginx's config may have changed).
   * When the test was skipped it runs now, on the new file still in place, so a config broken since fails as it
   * would have before the reload, with nginx's words. Then the old file goes back. Answers the error to throw.
   */
  private async failAfterReload(saved: Saved | null, port: number, skippedTest: boolean, err: unknown): Promise<unknown> {
    this.tested.clear()
    let thrown = err
    if (skippedTest) {
      const test = await this.run(this.testCommand)
      if (!test.ok) thrown = this.testFailed(port, test)
    }
    await this.rollBack(saved)
    return thrown
  }

  async drained(timeoutMs: number): Promise<boolean> {
    if (this.pidFile === undefined) return false
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const current = await this.host.workerPids(this.pidFile).catch(() => new Set<number>())
      if (![...this.retiring].some((pid) => current.has(pid))) return true
      if (Date.now() >= deadline) return false
      await sleep(20)
    }
  }

  private run(argv: readonly string[]): Promise<CommandResult> {
    return this.host.run(argv, this.commandTimeoutMs)
  }

  /** Reloads nginx (see isNginxSignalReload); answers why it failed, or null. */
  private async reload(): Promise<{ failure: string; stderr?: string } | null> {
    if (this.signalsReload && this.pidFile !== undefined) {
      return this.host.signalReload(this.pidFile).then(
        () => null,
        (err: unknown) => ({ failure: (err as Error).message }),
      )
    }
    const result = await this.run(this.reloadCommand)
    return result.ok ? null : { failure: result.failure, stderr: result.stderr }
  }

  private async save(): Promise<Saved | null> {
    try {
      const [content, info] = await Promise.all([readFile(this.upstreamFile), stat(this.upstreamFile)])
      return { content, mode: info.mode & 0o777 }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
      throw err
    }
  }

  private async restore(saved: Saved | null): Promise<void> {
    if (saved === null) {
      await rm(this.upstreamFile, { force: true })
      await fsyncDir(dirname(this.upstreamFile))
    } else {
      await writeFileAtomic(this.upstreamFile, saved.content, saved.mode)
    }
  }

  // After a reload was attempted: the old file back, and one more reload so nginx runs it whatever the first did.
  // Best effort: the caller is already failing with the first error.
  private async rollBack(saved: Saved | null): Promise<void> {
    await this.restore(saved)
    await this.reload()
  }
}
