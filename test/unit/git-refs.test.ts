import t from 'tap'
import { redactCredentials } from '../../agent/git/errors.js'
import { ALLOWED_PROTOCOLS, gitEnv } from '../../agent/git/mirror.js'
import { normalizeSubdir, validateCommit, validateRefName } from '../../agent/git/refs.js'

t.test('validateRefName: accepts tag and branch names', async (t) => {
  for (const ref of ['main', 'v1.2.3', 'release/2026-05', 'feature/a_b.c', 'A', 'x'.repeat(128)]) t.equal(validateRefName(ref), ref)
})

t.test('validateRefName: refuses options, traversal and what git would refuse', async (t) => {
  const bad = [
    '',
    '-x',
    '--upload-pack=x',
    '-',
    '.hidden',
    '/abs',
    'a..b',
    '..',
    'main@{1}',
    'v1^{tree}',
    'a b',
    'a:b',
    'a~1',
    'a*',
    'a?',
    'a[1]',
    'a\\b',
    'v1.lock',
    'a.lock/b',
    'dir/',
    'a//b',
    'a/.b',
    'x'.repeat(129),
    'a\nb',
    'é',
  ]
  for (const ref of bad)
    t.throws(() => validateRefName(ref), { code: 'invalid_ref', statusCode: 400, name: 'GitError' }, JSON.stringify(ref))
  t.throws(() => validateRefName(42 as unknown as string), { code: 'invalid_ref' })
})

t.test('validateCommit: 40 lowercase hex only', async (t) => {
  const sha = 'e5d9f5cb2c85c97da52b41d7ce9e42e7ddf4a34a'
  t.equal(validateCommit(sha), sha)
  for (const bad of ['', 'HEAD', sha.toUpperCase(), sha.slice(1), `${sha}0`, `-${sha.slice(1)}`, `${sha.slice(1)}\n`]) {
    t.throws(() => validateCommit(bad), { code: 'invalid_commit', statusCode: 400 }, JSON.stringify(bad))
  }
})

t.test('normalizeSubdir: the whole tree or a clean relative path', async (t) => {
  t.equal(normalizeSubdir('.'), '.')
  t.equal(normalizeSubdir(''), '.')
  t.equal(normalizeSubdir('./'), '.')
  t.equal(normalizeSubdir('app'), 'app')
  t.equal(normalizeSubdir('./app/web/'), 'app/web')
  t.equal(normalizeSubdir('app//web'), 'app/web')
  for (const bad of ['..', '../x', 'a/../b', 'a/..', '/etc', '-x', '--remote=x', './-x', 'a\nb', 'a\u0000b']) {
    t.throws(() => normalizeSubdir(bad), { code: 'invalid_path', statusCode: 400 }, JSON.stringify(bad))
  }
})

t.test('redactCredentials: hides the user-info of URLs, keeps the rest', async (t) => {
  t.equal(
    redactCredentials("fatal: unable to access 'https://bob:hunter2@git.example.com/a.git/'"),
    "fatal: unable to access 'https://***@git.example.com/a.git/'",
  )
  t.equal(
    redactCredentials('https://ghp_token@github.com/o/r.git and http://u:p@h:8080/x'),
    'https://***@github.com/o/r.git and http://***@h:8080/x',
  )
  t.equal(
    redactCredentials('git@github.com:o/r.git /srv/git/app.git https://host/a@b'),
    'git@github.com:o/r.git /srv/git/app.git https://host/a@b',
  )
})

t.test('gitEnv: an allow-list of the parent plus the protocol and prompt locks', async (t) => {
  const env = gitEnv({
    PATH: '/usr/bin',
    HOME: '/home/agent',
    LC_ALL: 'C.UTF-8',
    SSH_AUTH_SOCK: '/run/ssh',
    GIT_DIR: '/elsewhere',
    GIT_SSH_COMMAND: 'sh -c evil',
    EDITOR: 'vi',
    PAGER: 'less',
    GIT_ALLOW_PROTOCOL: 'ext',
    SECRET: 'x',
  })
  t.same(env, {
    PATH: '/usr/bin',
    HOME: '/home/agent',
    LC_ALL: 'C.UTF-8',
    SSH_AUTH_SOCK: '/run/ssh',
    GIT_ALLOW_PROTOCOL: ALLOWED_PROTOCOLS,
    GIT_TERMINAL_PROMPT: '0',
  })
  t.equal(ALLOWED_PROTOCOLS, 'file:git:http:https:ssh')
})
