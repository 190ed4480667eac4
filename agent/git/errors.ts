// Errors of the git facade: one class, a stable code each, and the HTTP status that code answers with.
import { AgentError } from '../errors.js'

const STATUS = {
  /** A branch or tag name that is not a safe ref name (or could be read as an option). */
  invalid_ref: 400,
  /** A commit that is not 40 lowercase hex digits. */
  invalid_commit: 400,
  /** A subdirectory to archive that escapes the tree or could be read as an option. */
  invalid_path: 400,
  /** The tag, branch or commit is not in the mirror. */
  ref_not_found: 404,
  /** A tag now points at another commit than when this agent last saw it. */
  tag_moved: 409,
  /** The mirror has not been cloned yet. */
  mirror_missing: 409,
  /** Cloning or fetching from the app's repository failed (the upstream's or the network's fault, mostly). */
  git_fetch_failed: 502,
  /** `git archive` failed (also delivered as an 'error' event on the archive stream). */
  git_archive_failed: 500,
  /** Any other git command failed or timed out. */
  git_failed: 500,
  /** `<stateDir>/tags.json` cannot be read as a tag ledger. */
  tag_ledger_corrupt: 500,
} as const

export type GitErrorCode = keyof typeof STATUS

export class GitError extends AgentError {
  declare readonly code: GitErrorCode
  /** git's stderr (credentials in URLs redacted), when a git command failed. */
  readonly stderr: string | undefined

  constructor(code: GitErrorCode, message: string, stderr?: string) {
    super(code, STATUS[code], message)
    this.stderr = stderr
  }
}

/** Replaces the user-info of every `scheme://user:password@host` URL in `text` by `***`. */
export function redactCredentials(text: string): string {
  return text.replace(/\b([a-z][a-z0-9+.-]*:\/\/)[^\s/@'"]+@/gi, '$1***@')
}
