import t from 'tap'
import { splitCredentials } from '../../agent/git/mirror.js'

t.test('splitCredentials: http(s) user-info leaves the URL and becomes a header scoped to its origin', async (t) => {
  const { url, env } = splitCredentials('https://ci:s%40cret@git.example.com:8443/org/app.git')
  t.equal(url, 'https://git.example.com:8443/org/app.git')
  t.same(env, {
    GIT_CONFIG_COUNT: '1',
    GIT_CONFIG_KEY_0: 'http.https://git.example.com:8443/.extraHeader',
    GIT_CONFIG_VALUE_0: `Authorization: Basic ${Buffer.from('ci:s@cret').toString('base64')}`,
  })
  // GitHub's "token as the user name" form.
  const tokenOnly = splitCredentials('https://ghp_abc@github.com/org/app.git')
  t.equal(tokenOnly.url, 'https://github.com/org/app.git')
  t.equal(tokenOnly.env.GIT_CONFIG_VALUE_0, `Authorization: Basic ${Buffer.from('ghp_abc:').toString('base64')}`)
  const stray = splitCredentials('https://ci:50%zz@git.example.com/app.git')
  t.equal(stray.url, 'https://git.example.com/app.git', 'a malformed escape is no reason to throw')
  t.equal(stray.env.GIT_CONFIG_VALUE_0, `Authorization: Basic ${Buffer.from('ci:50%zz').toString('base64')}`)
})

t.test('splitCredentials: URLs without http(s) user-info are given to git unchanged', async (t) => {
  for (const raw of [
    'https://github.com/org/app.git',
    'ssh://git@github.com/org/app.git',
    'git@github.com:org/app.git',
    '/srv/git/app.git',
    'file:///srv/git/app.git',
  ]) {
    t.same(splitCredentials(raw), { url: raw, env: {} }, raw)
  }
})
