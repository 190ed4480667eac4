// The commit each tag pointed to when this agent first deployed it, so a tag moved upstream is refused rather
// than silently deploying other code under the same release name. `<stateDir>/tags.json`:
// `{ "v": 1, "apps": { "<app>": { "<tag>": { "commit": "<40 hex>", "firstSeen": "<ISO time>" } } } }`.
// An image app's tags are kept the same way, their "commit" being the manifest digest (`sha256:<64 hex>`).
import { readFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { ensureDir, writeFileAtomic } from '../files.js'
import { GitError } from './errors.js'
import { validateRefName } from './refs.js'

export const TAG_LEDGER_FORMAT = 1

export interface TagLedgerEntry {
  commit: string
  /** ISO 8601 time the tag was first recorded. */
  firstSeen: string
}

export interface TagLedgerOptions {
  /** Clock for `firstSeen`. */
  now?: () => Date
}

/** A git commit, or an image's manifest digest. */
const COMMIT = /^(?:[0-9a-f]{40}|sha256:[0-9a-f]{64})$/

export class TagLedger {
  readonly path: string
  /** app → tag → entry. Maps, so no name from the file can reach an object prototype. */
  readonly #apps: Map<string, Map<string, TagLedgerEntry>>
  readonly #now: () => Date
  /** Writes are chained: each one writes the whole ledger, and the last call's state must be the one on disk. */
  #writing: Promise<void> = Promise.resolve()

  private constructor(path: string, apps: Map<string, Map<string, TagLedgerEntry>>, opts: TagLedgerOptions) {
    this.path = path
    this.#apps = apps
    this.#now = opts.now ?? (() => new Date())
  }

  /** Loads the ledger at `path`; a missing file is an empty ledger. Throws GitError `tag_ledger_corrupt`. */
  static async open(path: string, opts: TagLedgerOptions = {}): Promise<TagLedger> {
    let text: string
    try {
      text = await readFile(path, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new TagLedger(path, new Map(), opts)
      throw err
    }
    return new TagLedger(path, parseLedger(path, text), opts)
  }

  /** The commit `tag` of `app` pointed to when first recorded, if it was. */
  get(app: string, tag: string): TagLedgerEntry | undefined {
    const entry = this.#apps.get(app)?.get(tag)
    return entry === undefined ? undefined : { ...entry }
  }

  /** Throws GitError `tag_moved` (409) if `tag` of `app` was recorded with another commit than `commit`. */
  check(app: string, tag: string, commit: string): void {
    const known = this.#apps.get(app)?.get(tag)
    if (known !== undefined && known.commit !== commit) {
      throw new GitError(
        'tag_moved',
        `tag ${tag} of ${app} moved: it pointed to ${known.commit} (first seen ${known.firstSeen}), now to ${commit}; refusing to deploy it`,
      )
    }
  }

  /**
   * Remembers that `tag` of `app` points to `commit` and persists the ledger (resolves once it is on disk; if the
   * write fails nothing is remembered). Recording the same commit again is a no-op; another commit throws
   * `tag_moved` and leaves the ledger as it was.
   */
  async record(app: string, tag: string, commit: string): Promise<void> {
    validateRefName(tag)
    if (!COMMIT.test(commit))
      throw new GitError(
        'invalid_commit',
        `invalid commit ${JSON.stringify(commit)}: must be 40 lowercase hex digits or an image digest sha256:<64 hex>`,
      )
    this.check(app, tag, commit)
    let tags = this.#apps.get(app)
    if (tags?.has(tag) === true) return
    if (tags === undefined) this.#apps.set(app, (tags = new Map()))
    const entry = { commit, firstSeen: this.#now().toISOString() }
    tags.set(tag, entry)
    const data = this.#serialize()
    const write = this.#writing
      .catch(() => undefined)
      .then(async () => {
        await ensureDir(dirname(this.path))
        await writeFileAtomic(this.path, data)
      })
    this.#writing = write
    try {
      await write
    } catch (err) {
      // Not on disk, so not recorded: the next record() tries again.
      if (tags.get(tag) === entry) tags.delete(tag)
      throw err
    }
  }

  #serialize(): string {
    // fromEntries defines properties, so even a "__proto__" key read from the file round-trips as data.
    const apps = Object.fromEntries([...this.#apps].map(([app, tags]) => [app, Object.fromEntries(tags)]))
    return `${JSON.stringify({ v: TAG_LEDGER_FORMAT, apps }, null, 2)}\n`
  }
}

function parseLedger(path: string, text: string): Map<string, Map<string, TagLedgerEntry>> {
  const corrupt = (why: string): never => {
    throw new GitError('tag_ledger_corrupt', `tag ledger ${path} is unreadable: ${why}; fix or remove it (removing forgets every tag seen)`)
  }
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch (err) {
    return corrupt(`not JSON (${(err as Error).message})`)
  }
  if (!isObject(doc)) return corrupt('not a JSON object')
  if (doc.v !== TAG_LEDGER_FORMAT) return corrupt(`format version ${JSON.stringify(doc.v)}, expected ${TAG_LEDGER_FORMAT}`)
  if (!isObject(doc.apps)) return corrupt('"apps" is not an object')
  const apps = new Map<string, Map<string, TagLedgerEntry>>()
  for (const [app, tags] of Object.entries(doc.apps)) {
    if (!isObject(tags)) return corrupt(`apps.${app} is not an object`)
    const entries = new Map<string, TagLedgerEntry>()
    for (const [tag, entry] of Object.entries(tags)) {
      if (!isObject(entry) || typeof entry.commit !== 'string' || !COMMIT.test(entry.commit) || typeof entry.firstSeen !== 'string') {
        return corrupt(`apps.${app}.${tag} is not { commit: <40 hex or sha256 digest>, firstSeen: <time> }`)
      }
      entries.set(tag, { commit: entry.commit, firstSeen: entry.firstSeen })
    }
    apps.set(app, entries)
  }
  return apps
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value)
