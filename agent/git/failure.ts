// What a failed git command's stderr says, made readable: the lines that name the cause (not git's generic
// closing advice), and a hint for the causes an operator meets when setting up repo access.
import { userInfo } from 'node:os'

/**
 * git's last stderr line is the one that says what went wrong ("fatal: …"), except when the disk is full: then the
 * cause is an earlier line ("… No space left on device") and the last one only says that unpacking failed.
 */
export const failureLine = (text: string) => {
  const lines = text.trim().split('\n')
  const full = lines.find((line) => /No space left on device/i.test(line))
  const last = lines.at(-1) ?? ''
  return full !== undefined && full !== last ? `${last} (${full.trim()})` : last
}

/**
 * Lines git prints after the real cause of a failed fetch, the same whatever the cause: "Please make sure you have
 * the correct access rights and the repository exists" follows a refused ssh key as well as a dubious ownership.
 */
const BOILERPLATE = [
  /^fatal: Could not read from remote repository\.?$/i,
  /^Please make sure you have the correct access rights$/i,
  /^and the repository exists\.?$/i,
  /^To add an exception for this directory, call:$/i,
  /^git config --global --add safe\.directory /i,
  /^Cloning into /i,
]

/** How many of the remaining lines a message shows: the cause and what led to it, not a whole transcript. */
const SHOWN_LINES = 3

/** The lines of git's stderr that say why it failed (last ones first kept), joined by ' / '. */
export function meaningfulLines(stderr: string): string {
  const lines = stderr
    .split(/\r?\n|\r/)
    .map((line) => line.trim())
    .filter((line) => line !== '' && !BOILERPLATE.some((re) => re.test(line)))
  if (lines.length === 0) return failureLine(stderr)
  const full = lines.find((line) => /No space left on device/i.test(line))
  const shown = lines.slice(-SHOWN_LINES)
  if (full !== undefined && !shown.includes(full)) shown.unshift(full)
  return shown.join(' / ')
}

/** The account git runs as: the one whose ~/.gitconfig, ~/.ssh keys and known_hosts count. */
function gitUser(): string {
  try {
    return userInfo().username
  } catch {
    return `uid ${process.getuid?.() ?? '?'}`
  }
}

/** What to do about a known cause of a failed fetch, or undefined when git's message is all there is to say. */
export function fetchHint(stderr: string, user = gitUser()): string | undefined {
  const dubious = /detected dubious ownership in repository at '([^'\n]+)'/i.exec(stderr)
  if (dubious) {
    const path = dubious[1] ?? ''
    return (
      `git refuses a repository owned by another user: as ${user} (the user the agent runs as), run ` +
      `\`sudo -u ${user} -H git config --global --add safe.directory ${path}\`, or give the repository to ${user}`
    )
  }
  if (/Host key verification failed/i.test(stderr)) {
    return `the ssh host key of the repository's server is not in ~/.ssh/known_hosts of ${user}: add it (ssh-keyscan <host>, after checking its fingerprint)`
  }
  if (/Permission denied \(publickey/i.test(stderr)) {
    return `the server refused the ssh key of ${user}: add its public key (in ~/.ssh of ${user}) to the repository as a read-only deploy key`
  }
  if (/Authentication failed|could not read (Username|Password)|HTTP 401|HTTP 403|returned error: 40[13]/i.test(stderr)) {
    return 'the server wants credentials or refused them: put a read-only token in the repo url (https://user:token@host/…) and check it has not expired'
  }
  return undefined
}
