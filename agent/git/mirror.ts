// One app's repository, kept as a bare mirror in the state dir: fetch it, resolve tags and branches to commits,
// and stream `git archive` of a commit for the Docker build. Every git command is an argument array built here
// from constants and validated input; nothing is ever handed to a shell.
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { rename, rm, stat } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import { PassThrough } from 'node:stream'
import { GitPluginError, GitError as SimpleGitError, simpleGit } from 'simple-git'
import { ensureDir } from '../files.js'
import { GitError, redactCredentials } from './errors.js'
import { failureLine, fetchHint, meaningfulLines } from './failure.js'
import { normalizeSubdir, validateCommit, validateRefName } from './refs.js'

export { GitError, redactCredentials, type GitErrorCode } from './errors.js'
export { normalizeSubdir, validateCommit, validateRefName } from './refs.js'
export { failureLine } from './failure.js'

/** The transports git may use (GIT_ALLOW_PROTOCOL): `ext::` and `fd::` are refused. */
export const ALLOWED_PROTOCOLS = 'file:git:http:https:ssh'
export const DEFAULT_GIT_TIMEOUT_MS = 5 * 60 * 1000

/**
 * Given to every git command as `-c`. Redundant with GIT_ALLOW_PROTOCOL (which already implies it), kept as a
 * second lock. simple-git files any `protocol.*.allow` setting under `allowUnsafeProtocolOverride`, so that one
 * category is allowed for these instances; every other unsafe-operation check stays on, and no argument of ours
 * ever carries a `-c` from outside this module.
 */
const GIT_CONFIG = ['protocol.ext.allow=never']

/**
 * git runs under `nice` (+10): a fetch and an archive are a deploy's background work, and on a busy host the live
 * release keeps the CPU they would take (the build's own steps get a low weight from Docker instead).
 */
const NICE = 'nice'

/**
 * The parent's environment variables git may see. Everything else (GIT_DIR and friends inherited from a hook,
 * GIT_SSH_COMMAND, PAGER, EDITOR…) is dropped: it could redirect or subvert the command, and simple-git refuses
 * most of it anyway.
 */
const PASSED_ENV = new Set([
  'PATH',
  'HOME',
  'USER',
  'LOGNAME',
  'LANG',
  'LANGUAGE',
  'TZ',
  'TMPDIR',
  'SSH_AUTH_SOCK',
  'HTTP_PROXY',
  'HTTPS_PROXY',
  'NO_PROXY',
  'ALL_PROXY',
  'http_proxy',
  'https_proxy',
  'no_proxy',
  'all_proxy',
  'GIT_SSL_CAINFO',
  'GIT_SSL_CAPATH',
  'SSL_CERT_FILE',
  'SSL_CERT_DIR',
])

/** The environment of every git child: a short allow-list of the parent's plus the safety settings. */
export function gitEnv(parent: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [key, value] of Object.entries(parent)) {
    if (value !== undefined && (PASSED_ENV.has(key) || key.startsWith('LC_'))) env[key] = value
  }
  env.GIT_ALLOW_PROTOCOL = ALLOWED_PROTOCOLS
  env.GIT_TERMINAL_PROMPT = '0'
  return env
}

/**
 * An http(s) URL's user-info (`https://user:token@host/…`) taken out of the URL: git is given the clean URL, and
 * the credentials as an `Authorization` header scoped to that origin, through GIT_CONFIG_* environment variables.
 * The environment of a process is readable only by its user and root; its argv (`ps`) and the mirror's config file
 * would show the token to others. Other URLs are answered unchanged.
 */
export function splitCredentials(raw: string): { url: string; env: Record<string, string> } {
  if (!/^https?:\/\//i.test(raw)) return { url: raw, env: {} }
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    return { url: raw, env: {} }
  }
  if (url.username === '' && url.password === '') return { url: raw, env: {} }
  // A stray `%` is taken as it is written (decoding it would throw), as git would have sent it.
  const decode = (part: string): string => {
    try {
      return decodeURIComponent(part)
    } catch {
      return part
    }
  }
  const basic = Buffer.from(`${decode(url.username)}:${decode(url.password)}`).toString('base64')
  url.username = ''
  url.password = ''
  return {
    url: url.toString(),
    env: {
      GIT_CONFIG_COUNT: '1',
      GIT_CONFIG_KEY_0: `http.${url.origin}/.extraHeader`,
      GIT_CONFIG_VALUE_0: `Authorization: Basic ${basic}`,
    },
  }
}

export interface GitMirrorOptions {
  /** Any URL git understands over file, git, http(s) or ssh. */
  url: string
  /** The bare mirror, e.g. `<stateDir>/repos/<app>.git`. */
  dir: string
  /** Wall-clock limit for one git command (not for an archive stream); default 5 minutes. */
  timeoutMs?: number
}

export interface ResolvedTag {
  commit: string
  /** The tag is a tag object (`git tag -a`), not a lightweight ref to the commit. */
  annotated: boolean
}

export interface TagInfo {
  name: string
  /** The commit the tag peels to. */
  commit: string
}

interface GitRun {
  exitCode: number
  stdout: string
  stderr: string
}

/** A git command that ran and exited non-zero: carried through simple-git so the exit code is not lost. */
class GitExit extends SimpleGitError {
  constructor(
    readonly exitCode: number,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(undefined, stderr.trim() || `git exited with code ${exitCode}`)
  }
}

const STDERR_LIMIT = 64 * 1024

export class GitMirror {
  /** The repository URL as git is given it: without credentials (see splitCredentials). */
  readonly url: string
  readonly dir: string
  readonly timeoutMs: number
  readonly #env: Record<string, string>
  /** The configured URL with its user-info as `***`: says credentials are in use without showing them. */
  readonly #safeUrl: string
  /** #env carries the credentials as GIT_CONFIG_* (which simple-git refuses unless told they are ours). */
  readonly #configEnv: boolean
  /** The fetch in flight (or the last one): fetches are chained so two deploys never fetch at once. */
  #fetching: Promise<void> = Promise.resolve()

  constructor(opts: GitMirrorOptions) {
    if (typeof opts.url !== 'string' || opts.url.trim() === '') throw new TypeError('GitMirror: url must be a non-empty string')
    if (typeof opts.dir !== 'string' || opts.dir === '') throw new TypeError('GitMirror: dir must be a non-empty string')
    const timeoutMs = opts.timeoutMs ?? DEFAULT_GIT_TIMEOUT_MS
    if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) throw new RangeError(`GitMirror: timeoutMs must be positive, got ${timeoutMs}`)
    const { url, env } = splitCredentials(opts.url)
    this.url = url
    this.#safeUrl = redactCredentials(opts.url)
    this.dir = resolve(opts.dir)
    this.timeoutMs = timeoutMs
    this.#env = { ...gitEnv(), ...env }
    this.#configEnv = Object.keys(env).length > 0
  }

  /** The URL as it may appear in logs and error messages. */
  get safeUrl(): string {
    return this.#safeUrl
  }

  /**
   * Clones the mirror if `dir` holds none yet (into a temp dir renamed into place, so a crash never leaves half a
   * mirror), else fetches every ref from origin, pruning deleted branches and tags and taking moved tags.
   * Calls are serialised; a failed fetch does not poison the next one. Throws GitError `git_fetch_failed`.
   */
  fetch(): Promise<void> {
    const next = this.#fetching.catch(() => undefined).then(() => this.#fetchNow())
    this.#fetching = next
    return next
  }

  async #fetchNow(): Promise<void> {
    if (!(await this.#exists())) return await this.#clone()
    const configured = await this.#git(['config', '--get', 'remote.origin.url'], 'git_fetch_failed')
    if (configured.exitCode !== 0 || configured.stdout.trim() !== this.url) {
      // The app's `repo` changed since the clone (or origin went missing): follow the config.
      const args = configured.exitCode === 0 ? ['set-url', '--', 'origin', this.url] : ['add', '--mirror=fetch', '--', 'origin', this.url]
      const set = await this.#git(['remote', ...args], 'git_fetch_failed')
      if (set.exitCode !== 0) throw this.#fetchFailed(set.stderr)
    }
    const run = await this.#git(['fetch', '--prune', '--prune-tags', '--tags', '--force', 'origin'], 'git_fetch_failed')
    if (run.exitCode !== 0) throw this.#fetchFailed(run.stderr)
  }

  async #clone(): Promise<void> {
    const parent = dirname(this.dir)
    const temp = join(parent, `.${basename(this.dir)}.clone-${randomBytes(6).toString('hex')}`)
    try {
      await ensureDir(parent)
      const run = await this.#git(['clone', '--mirror', '--', this.url, temp], 'git_fetch_failed', parent)
      if (run.exitCode !== 0) throw this.#fetchFailed(run.stderr)
      await rename(temp, this.dir)
    } catch (err) {
      if (err instanceof GitError) throw err
      throw new GitError('git_fetch_failed', `cloning ${this.safeUrl} into ${this.dir} failed: ${(err as Error).message}`)
    } finally {
      await rm(temp, { recursive: true, force: true })
    }
  }

  #fetchFailed(stderr: string): GitError {
    // git's own words (its closing advice left out) and, for a known cause, what to do about it.
    const clean = redactCredentials(stderr.trim())
    const hint = fetchHint(clean)
    const message = `fetching ${this.safeUrl} failed: ${meaningfulLines(clean) || 'git gave no reason'}${hint ? ` (hint: ${hint})` : ''}`
    return new GitError('git_fetch_failed', message, clean)
  }

  /** The commit `refs/tags/<tag>` peels to. Throws `invalid_ref` (400) or `ref_not_found` (404). */
  async resolveTag(tag: string): Promise<ResolvedTag> {
    const ref = `refs/tags/${validateRefName(tag)}`
    const object = await this.#revParse(ref)
    if (object === undefined) throw new GitError('ref_not_found', `tag ${tag} not found in ${this.safeUrl}`)
    const commit = await this.#revParse(`${ref}^{commit}`)
    if (commit === undefined) throw new GitError('ref_not_found', `tag ${tag} does not point to a commit`)
    return { commit, annotated: object !== commit }
  }

  /** The head commit of `refs/heads/<branch>`. Throws `invalid_ref` (400) or `ref_not_found` (404). */
  async resolveBranch(branch: string): Promise<string> {
    const commit = await this.#revParse(`refs/heads/${validateRefName(branch)}^{commit}`)
    if (commit === undefined) throw new GitError('ref_not_found', `branch ${branch} not found in ${this.safeUrl}`)
    return commit
  }

  /** Whether the mirror has `commit` (40 hex) as a commit object. */
  async hasCommit(commit: string): Promise<boolean> {
    return (await this.#revParse(`${validateCommit(commit)}^{commit}`)) !== undefined
  }

  /** Whether `commit` is `of` or an ancestor of it. Throws `ref_not_found` when either is not in the mirror. */
  async isAncestor(commit: string, of: string): Promise<boolean> {
    validateCommit(commit)
    validateCommit(of)
    const run = await this.#git(['merge-base', '--is-ancestor', '--end-of-options', commit, of])
    if (run.exitCode === 0) return true
    if (run.exitCode === 1) return false
    for (const c of [commit, of]) {
      if (!(await this.hasCommit(c))) throw new GitError('ref_not_found', `commit ${c} not found in ${this.safeUrl}`)
    }
    throw this.#failed('merge-base', run)
  }

  /** Every tag with the commit it peels to, by name; tags of trees or blobs are left out. */
  async listTags(): Promise<TagInfo[]> {
    const format = '%(refname)%09%(objecttype)%09%(objectname)%09%(*objecttype)%09%(*objectname)'
    const run = await this.#git(['for-each-ref', `--format=${format}`, 'refs/tags'])
    if (run.exitCode !== 0) throw this.#failed('for-each-ref', run)
    const tags: TagInfo[] = []
    for (const line of run.stdout.split('\n')) {
      if (line === '') continue
      const [refname = '', type, object = '', peeledType, peeled = ''] = line.split('\t')
      const name = refname.replace(/^refs\/tags\//, '')
      if (type === 'commit') tags.push({ name, commit: object })
      else if (peeledType === 'commit') tags.push({ name, commit: peeled })
      else if (type === 'tag') {
        // A tag of a tag: git before 2.44 peels `*` one level only.
        const commit = await this.#revParse(`${refname}^{commit}`)
        if (commit !== undefined) tags.push({ name, commit })
      }
    }
    return tags
  }

  /**
   * A tar stream of `commit`'s tree, or of `subdir` within it (the tar then roots at the subdir): the stdout of
   * `git archive`. A non-zero exit is an 'error' event carrying git's stderr (GitError `git_archive_failed`) and the
   * stream never ends cleanly, so a consumer cannot take a truncated tar for a whole one. Destroying the stream
   * kills git. Invalid `commit` or `subdir` throws before anything runs.
   */
  archive(commit: string, subdir = '.'): NodeJS.ReadableStream {
    validateCommit(commit)
    const dir = normalizeSubdir(subdir)
    const treeish = dir === '.' ? commit : `${commit}:${dir}`
    const out = new PassThrough()
    const child = spawn(NICE, ['git', ...GIT_CONFIG.flatMap((c) => ['-c', c]), 'archive', '--format=tar', '--', treeish], {
      cwd: this.dir,
      env: { ...this.#env, GIT_DIR: this.dir },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stderr = ''
    let settled = false
    const fail = (message: string) => {
      if (settled) return
      settled = true
      const clean = redactCredentials(stderr.trim())
      out.destroy(new GitError('git_archive_failed', `git archive ${treeish}: ${message}`, clean))
    }
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (chunk: string) => {
      if (stderr.length < STDERR_LIMIT) stderr += chunk.slice(0, STDERR_LIMIT - stderr.length)
    })
    // Not `pipe`: that would end `out` when git's stdout ends, before the exit status says whether it is whole.
    child.stdout.on('data', (chunk: Buffer) => {
      if (!out.destroyed && !out.write(chunk)) child.stdout.pause()
    })
    out.on('drain', () => child.stdout.resume())
    child.once('error', (err) => fail(`could not run git: ${err.message}`))
    child.once('close', (code, signal) => {
      if (code === 0) {
        if (!settled) {
          settled = true
          out.end()
        }
        return
      }
      fail(failureLine(redactCredentials(stderr)) || `git exited with ${code === null ? `signal ${signal}` : `code ${code}`}`)
    })
    out.once('close', () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    })
    return out
  }

  /** `rev-parse --verify --quiet` of `rev`: its object id, or undefined when there is no such object. */
  async #revParse(rev: string): Promise<string | undefined> {
    const run = await this.#git(['rev-parse', '--verify', '--quiet', '--end-of-options', rev])
    if (run.exitCode === 0) return run.stdout.trim()
    if (run.exitCode === 1) return undefined
    throw this.#failed('rev-parse', run)
  }

  #failed(command: string, run: GitRun): GitError {
    const clean = redactCredentials(run.stderr.trim())
    return new GitError('git_failed', `git ${command} failed in ${this.dir}: ${failureLine(clean) || `exit code ${run.exitCode}`}`, clean)
  }

  async #exists(): Promise<boolean> {
    try {
      return (await stat(this.dir)).isDirectory()
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false
      throw err
    }
  }

  /**
   * Runs git with `args` and resolves with its exit code and output, whatever the exit code. With no `cwd` the
   * command runs on the mirror (GIT_DIR, so git never goes looking for another repository); the mirror must exist.
   * Throws GitError `failCode` when git cannot run, simple-git refuses the command, or it outlives `timeoutMs`.
   */
  async #git(args: string[], failCode: 'git_failed' | 'git_fetch_failed' = 'git_failed', cwd?: string): Promise<GitRun> {
    if (cwd === undefined && !(await this.#exists())) {
      throw new GitError('mirror_missing', `no mirror of ${this.safeUrl} in ${this.dir} yet: fetch first`)
    }
    const signal = AbortSignal.timeout(this.timeoutMs)
    const git = simpleGit({
      binary: [NICE, 'git'],
      baseDir: cwd ?? this.dir,
      config: GIT_CONFIG,
      abort: signal,
      unsafe: { allowUnsafeProtocolOverride: true, allowUnsafeConfigEnvCount: this.#configEnv },
      errors: (error, result) => {
        if (error instanceof GitPluginError || result.exitCode === 0) return error
        const text = (chunks: Buffer[]) => Buffer.concat(chunks).toString('utf8')
        return new GitExit(result.exitCode, text(result.stdOut), text(result.stdErr).slice(0, STDERR_LIMIT))
      },
    }).env(cwd === undefined ? { ...this.#env, GIT_DIR: this.dir } : this.#env)
    try {
      return { exitCode: 0, stdout: await git.raw(args), stderr: '' }
    } catch (err) {
      if (err instanceof GitExit) return { exitCode: err.exitCode, stdout: err.stdout, stderr: err.stderr }
      const what = `git ${args[0]} (${this.safeUrl})`
      if (signal.aborted) throw new GitError(failCode, `${what} timed out after ${this.timeoutMs} ms`)
      throw new GitError(failCode, `${what} could not run: ${redactCredentials(err instanceof Error ? err.message : String(err))}`)
    }
  }
}
