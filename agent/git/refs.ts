// Pure checks on what reaches a git command line: ref names, commit ids and archive subdirectories.
// Everything here throws a GitError with a 400 code; nothing runs git.
import { posix } from 'node:path'
import { GitError } from './errors.js'

const REF_NAME = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$/
const COMMIT = /^[0-9a-f]{40}$/

/**
 * Returns `ref` if it is a safe branch or tag name: `^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$` (so never an option),
 * no `..`, no `@{`, not ending in `.lock` or `/`, and none of git's other refusals (`//`, a component starting
 * with `.` or ending in `.lock`). Throws GitError `invalid_ref` (400) otherwise.
 */
export function validateRefName(ref: string): string {
  const problem = refNameProblem(ref)
  if (problem !== undefined) throw new GitError('invalid_ref', `invalid ref ${JSON.stringify(ref)}: ${problem}`)
  return ref
}

function refNameProblem(ref: unknown): string | undefined {
  if (typeof ref !== 'string') return 'not a string'
  if (!REF_NAME.test(ref)) return 'must match ^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$'
  if (ref.includes('..')) return 'must not contain ".."'
  if (ref.includes('@{')) return 'must not contain "@{"'
  if (ref.endsWith('/')) return 'must not end with "/"'
  if (ref.includes('//')) return 'must not contain "//"'
  for (const component of ref.split('/')) {
    if (component.startsWith('.')) return 'no path component may start with "."'
    if (component.endsWith('.lock')) return 'no path component may end with ".lock"'
  }
  return undefined
}

/** Returns `commit` if it is a full commit id (40 lowercase hex); throws GitError `invalid_commit` (400) otherwise. */
export function validateCommit(commit: string): string {
  if (typeof commit !== 'string' || !COMMIT.test(commit)) {
    throw new GitError('invalid_commit', `invalid commit ${JSON.stringify(commit)}: must be 40 lowercase hex digits`)
  }
  return commit
}

/**
 * Normalises a subdirectory of the tree to archive: `''`, `'.'` and `'./'` mean the whole tree (returns `'.'`),
 * otherwise a relative path without a trailing slash. Throws GitError `invalid_path` (400) for `..` anywhere, a
 * leading `/` or `-`, or control characters.
 */
export function normalizeSubdir(subdir: string): string {
  const refuse = (why: string): never => {
    throw new GitError('invalid_path', `invalid subdirectory ${JSON.stringify(subdir)}: ${why}`)
  }
  if (typeof subdir !== 'string') return refuse('not a string')
  if (subdir.includes('..')) refuse('must not contain ".."')
  if (subdir.startsWith('/')) refuse('must be relative')
  if (subdir.startsWith('-')) refuse('must not start with "-"')
  if (/[\u0000-\u001f\u007f]/.test(subdir)) refuse('must not contain control characters')
  const normal = posix.normalize(subdir === '' ? '.' : subdir).replace(/\/+$/, '')
  if (normal === '' || normal === '.') return '.'
  if (normal.startsWith('-')) refuse('must not start with "-"') // e.g. "./-x"
  return normal
}
