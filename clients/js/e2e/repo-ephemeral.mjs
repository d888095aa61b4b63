// Run by tests/tests/repo_js.rs against a real server: `ephemeral` messages
// (presence, cursors: `handle.broadcast`) between stock automerge-repo 2.5
// clients through `/v1/repo`. A and B (two devices of the commune) have the
// document open, C (a third) has another one. What each receives is
// recorded at its WebSocket adapter (every `ephemeral` frame) and at its
// handle (`ephemeral-message`). Prints one JSON line.
//
// Env: THONSYNC_SERVER (http://127.0.0.1:PORT), THONSYNC_TOKENS (three
// device tokens, comma-separated), THONSYNC_DOCUMENT, THONSYNC_OTHER (a
// second document of the commune).
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { documentUrl, repoSocketUrl } from "../thonsync.js"

const { THONSYNC_SERVER: server, THONSYNC_TOKENS: tokens, THONSYNC_DOCUMENT: document, THONSYNC_OTHER: other } =
  process.env
const deadline = setTimeout(() => {
  console.error("timed out")
  process.exit(2)
}, 60_000)
const sleep = ms => new Promise(r => setTimeout(r, ms))
const until = async (what, ok) => {
  for (let i = 0; i < 400 && !ok(); i++) await sleep(25)
  if (!ok()) throw new Error(`never: ${what}`)
}

/** A Repo over one device's token; the ephemeral frames its adapter receives. */
function client(token) {
  const adapter = new WebSocketClientAdapter(repoSocketUrl(server, token))
  const frames = []
  adapter.on("message", m => {
    if (m.type === "ephemeral") frames.push(m)
  })
  return { repo: new Repo({ network: [adapter] }), frames, peerId: null }
}

const [a, b, c] = tokens.split(",").map(client)
const [url, otherUrl] = [await documentUrl(document), await documentUrl(other)]
const [ha, hb, hc] = await Promise.all([a.repo.find(url), b.repo.find(url), c.repo.find(otherUrl)])
const heard = { a: [], b: [] }
ha.on("ephemeral-message", ({ message, senderId }) => heard.a.push({ message, senderId }))
hb.on("ephemeral-message", ({ message, senderId }) => heard.b.push({ message, senderId }))
const got = (who, key) => heard[who].filter(h => h.message && key in h.message)

// A presence message reaches B, with A as its sender.
ha.broadcast({ cursor: "hh-001", name: "Lan" })
await until("B hears A", () => got("b", "cursor").length === 1)
// B answers; A hears it.
hb.broadcast({ reply: "hh-002" })
await until("A hears B", () => got("a", "reply").length === 1)
// Too large (5,000 bytes, over the 4 KiB cap): dropped; what follows passes.
ha.broadcast({ blob: "x".repeat(5000) })
ha.broadcast({ after: true })
await until("B hears what follows the large one", () => got("b", "after").length === 1)
// A burst far past the pace: some pass, the rest are dropped.
await sleep(1500)
for (let i = 0; i < 50; i++) ha.broadcast({ burst: i })
await sleep(1500)

console.log(
  JSON.stringify({
    a: a.repo.peerId,
    b: b.repo.peerId,
    cursorSender: got("b", "cursor")[0].senderId,
    replySender: got("a", "reply")[0].senderId,
    large: got("b", "blob").length,
    burst: got("b", "burst").length,
    // Frames at the adapters: B's of A's messages; A's of its own (B passes
    // A's on, as automerge-repo does; the server relays only a peer's own);
    // C's (it has another document open).
    bFrames: b.frames.length,
    aOwnFrames: a.frames.filter(m => m.senderId === a.repo.peerId).length,
    cFrames: c.frames.length,
    cReady: hc.isReady(),
  }),
)
clearTimeout(deadline)
await Promise.all([a.repo.shutdown(), b.repo.shutdown(), c.repo.shutdown()])
process.exit(0)
