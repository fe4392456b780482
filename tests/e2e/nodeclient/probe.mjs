// ClickHouse's Node.js client of the SQL endpoint: prints one line per compression setting, which
// tests/e2e/test_sql_node.py compares. Arguments: the endpoint's URL, the admin key.
import { createClient } from '@clickhouse/client'

const [url, key] = process.argv.slice(2)
const settings = { none: {}, gzip: { response: true }, 'gzip both ways': { request: true, response: true } }
for (const [name, compression] of Object.entries(settings)) {
  const client = createClient({ url, username: 'pingstream', password: key, database: 'pingstream', compression, log: { level: 127 } })
  try {
    const rows = await (await client.query({
      query: 'SELECT number, toString(number) AS s FROM numbers(100000) WHERE number >= {n:UInt32}',
      format: 'JSONEachRow', query_params: { n: 10 },
    })).json()
    const pings = await (await client.query({ query: 'SELECT count() AS c FROM pings', format: 'JSON' })).json()
    let error = 'none'
    try {
      await client.query({ query: 'SELECT * FROM nowhere', format: 'JSON' })
    } catch (e) {
      error = e.code
    }
    const ping = await client.ping()
    console.log(`${name} ok ${rows.length} ${rows[5].s} ${pings.data[0].c} ${ping.success} error=${error}`)
  } catch (e) {
    console.log(`${name} failed: ${e.message}`)
  }
  await client.close()
}
