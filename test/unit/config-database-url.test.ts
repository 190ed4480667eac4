// The database URL the app's containers get, and the config keys behind it (issue: an async SQLAlchemy app needs
// postgresql+asyncpg://, which check-config refused, and the agent injected postgres://).
import t from 'tap'
import { appDatabaseUrl } from '../../agent/config/database-url.js'
import { parseConfig } from '../../agent/config/load.js'
import { ConfigError } from '../../agent/errors.js'

const config = (database: string) =>
  parseConfig(
    `
audience: a
apps:
  shop:
    repo: /srv/shop.git
    envs:
      production: { ref: "tag:v*", ports: [18001, 18002], database: ${database} }
`,
    {},
    'a',
    '/tmp',
  )

t.test('appDatabaseUrl: the scheme the app asks for, the password URL-encoded', async (t) => {
  t.equal(
    appDatabaseUrl({ url: 'postgres://shop@127.0.0.1:5432/shop', appUrlScheme: 'postgresql' }),
    'postgresql://shop@127.0.0.1:5432/shop',
  )
  t.equal(
    appDatabaseUrl({ url: 'postgres://shop@127.0.0.1/shop', appUrlScheme: 'postgresql+asyncpg' }, 'p@ss:w/rd%?#'),
    'postgresql+asyncpg://shop:p%40ss%3Aw%2Frd%25%3F%23@127.0.0.1/shop',
  )
  t.equal(
    appDatabaseUrl({ url: 'postgresql://shop:inline@db.local/shop', appUrlScheme: 'postgres' }),
    'postgres://shop:inline@db.local/shop',
  )
  const back = new URL(appDatabaseUrl({ url: 'postgres://shop@h/shop', appUrlScheme: 'postgresql' }, 'p@ss:w/rd%?#'))
  t.equal(decodeURIComponent(back.password), 'p@ss:w/rd%?#', 'a driver decoding the URL gets the password back')
})

t.test('Config: database.appUrlScheme defaults to postgresql, takes a +driver, refuses anything else by key path', async (t) => {
  t.equal(config('{ url: "postgres://shop@127.0.0.1/shop" }').apps.shop?.envs.production?.database?.appUrlScheme, 'postgresql')
  t.equal(
    config('{ url: "postgres://shop@127.0.0.1/shop", appUrlScheme: postgresql+asyncpg }').apps.shop?.envs.production?.database
      ?.appUrlScheme,
    'postgresql+asyncpg',
  )
  const problems = (database: string): string[] => {
    try {
      config(database)
      return []
    } catch (err) {
      return err instanceof ConfigError ? err.problems : [String(err)]
    }
  }
  t.match(problems('{ url: "postgres://shop@127.0.0.1/shop", appUrlScheme: "mysql" }'), [
    /^apps\.shop\.envs\.production\.database\.appUrlScheme: must be postgresql or postgres/,
  ])
  const asyncUrl = problems('{ url: "postgresql+asyncpg://shop@127.0.0.1/shop" }')
  t.equal(asyncUrl.length, 1, 'one problem, not two')
  t.match(asyncUrl[0], /^apps\.shop\.envs\.production\.database\.url: must be a plain postgres:\/\/ URL .*appUrlScheme/)
})
