// The database URL an app's containers get (in `database.envName`): the env's URL with the password from
// `passwordFile` put in (URL-encoded) and the scheme the app's driver expects (`database.appUrlScheme`, e.g.
// `postgresql+asyncpg` for async SQLAlchemy). pg tools never see this form: they get the plain URL and PGPASSWORD.
export interface DatabaseUrlConfig {
  url: string
  appUrlScheme: string
}

export function appDatabaseUrl(db: DatabaseUrlConfig, password?: string): string {
  const url = new URL(db.url)
  if (password !== undefined) url.password = encodeURIComponent(password)
  return `${db.appUrlScheme}:${url.href.slice(url.protocol.length)}`
}
