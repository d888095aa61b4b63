// Run by tests/tests/repo_js.rs against a real server: a stock
// automerge-repo 2.5 client (WebSocket adapter, token in the query as a
// browser would) writes households through the helper, a second client
// (another connection, nothing shared) reads them back from the server, and
// a document outside the registry is unavailable. Prints one JSON line.
//
// Env: THONSYNC_SERVER (http://127.0.0.1:PORT), THONSYNC_TOKEN,
// THONSYNC_DEVICE, THONSYNC_DOCUMENT.
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { createHousehold, deviceActor, documentUrl, increment, onRefusal, repoSocketUrl, setFields } from "../thonsync.js"

const { THONSYNC_SERVER: server, THONSYNC_TOKEN: token, THONSYNC_DEVICE: device, THONSYNC_DOCUMENT: documentId } = process.env
const deadline = setTimeout(() => {
  console.error("timed out")
  process.exit(2)
}, 30_000)

function connect() {
  return new Repo({ network: [new WebSocketClientAdapter(repoSocketUrl(server, token))] })
}

const url = await documentUrl(documentId)
const writer = connect()
const handle = await writer.find(url)
const actor = deviceActor(device)
await createHousehold(handle, "hh-101")
await setFields(handle, "hh-101", { members: 5, adults: 3, head_name: "Nông Thị Lan", fibre_broadband: true }, actor)
await increment(handle, "hh-101", "qr_codes_issued", 2, actor)
await setFields(handle, "hh-102", { members: 2 }, actor)
await setFields(handle, "facts", { digital_team_members: 4 }, actor)
await increment(handle, "facts", "security_cameras", 1, actor)

// Read back through another connection: only what the server stored (and
// acknowledged) can arrive there.
const reader = connect()
const seen = await reader.find(url)
const wanted = d =>
  d.households?.["hh-101"]?.members === 5 &&
  d.households?.["hh-101"]?.qr_codes_issued?.value === 2 &&
  d.households?.["hh-102"]?.members === 2 &&
  d.facts?.digital_team_members === 4
while (!wanted(seen.doc())) await new Promise(r => setTimeout(r, 50))

let unavailable = false
try {
  await reader.find(await documentUrl("village:no-such-village:2024-1"))
} catch {
  unavailable = true
}

// A value of the wrong type: refused, kept, and told to the writer once.
const refused = new Promise(resolve => onRefusal(handle, resolve))
await setFields(handle, "hh-101", { adults: "three" }, actor)
const refusal = await refused

console.log(JSON.stringify({ url, heads: seen.heads(), unavailable, actor, refusal }))
clearTimeout(deadline)
await writer.shutdown()
await reader.shutdown()
process.exit(0)
