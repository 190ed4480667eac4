import t from 'tap'
import { failureLine } from '../../agent/git/mirror.js'
import { fetchHint, meaningfulLines } from '../../agent/git/failure.js'

t.test("failureLine: git's last stderr line says what failed", async (t) => {
  t.equal(failureLine('remote: Counting objects\nfatal: repository not found\n'), 'fatal: repository not found')
  t.equal(failureLine(''), '')
})

t.test("failureLine: a full disk is named even when git's last line only says unpacking failed", async (t) => {
  const stderr = [
    'error: file write error: No space left on device',
    'fatal: unable to write loose object file',
    'fatal: unpack-objects failed',
  ].join('\n')
  t.equal(failureLine(stderr), 'fatal: unpack-objects failed (error: file write error: No space left on device)')
})

// What git 2.39 prints for the two access failures an operator meets first.
const PUBLICKEY = [
  'git@example.org: Permission denied (publickey).',
  'fatal: Could not read from remote repository.',
  '',
  'Please make sure you have the correct access rights',
  'and the repository exists.',
].join('\n')
const HOSTKEY = [
  'Host key verification failed.',
  'fatal: Could not read from remote repository.',
  '',
  'Please make sure you have the correct access rights',
  'and the repository exists.',
].join('\n')

t.test("meaningfulLines: git's closing advice is left out, the cause kept", async (t) => {
  t.equal(meaningfulLines(PUBLICKEY), 'git@example.org: Permission denied (publickey).')
  t.equal(meaningfulLines(HOSTKEY), 'Host key verification failed.')
  t.equal(meaningfulLines('fatal: repository not found\n'), 'fatal: repository not found')
  t.equal(meaningfulLines(''), '')
})

t.test('fetchHint: a hint per known cause, none for others', async (t) => {
  t.match(fetchHint(PUBLICKEY, 'deploy-agent'), /deploy key/)
  t.match(fetchHint(HOSTKEY, 'deploy-agent'), /known_hosts of deploy-agent/)
  t.match(
    fetchHint("fatal: detected dubious ownership in repository at '/srv/app.git'", 'deploy-agent'),
    /as deploy-agent .*safe\.directory \/srv\/app\.git/,
  )
  t.match(fetchHint("fatal: could not read Username for 'https://example.org': terminal prompts disabled"), /token/)
  t.equal(fetchHint('fatal: repository not found'), undefined)
})
