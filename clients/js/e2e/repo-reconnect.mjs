// Run by tests/tests/repo_reconnect.rs against a real server: what a
// reconnect costs a stock automerge-repo 2.5 client with storage on disk
// (NodeFSStorageAdapter). It syncs households into every document it is
// given, shuts down, starts again from its storage (a new Repo on the same
// folder), edits one field of one document, reconnects and syncs all of
// them. The bytes of its WebSocket frames (the payloads, up and down) are
// counted for each connection. Offline first: the second Repo opens its
// documents and takes the edit before it goes online. Sync states are kept
// with `keepSyncStates` (thonsync.js) unless THONSYNC_KEEP=0. Prints one
// JSON line.
//
// Env: THONSYNC_SERVER (http://127.0.0.1:PORT), THONSYNC_TOKEN,
// THONSYNC_DEVICE, THONSYNC_DOCUMENTS (comma-separated ids),
// THONSYNC_STORAGE (a folder), THONSYNC_MODE:
//   "storage-id"    the client sees the server's storage id, as published;
//   "no-storage-id" the client is not shown it (as before the server
//                   announced one): it keeps no sync state with the server;
//   "no-storage"    the second Repo has no storage: it fetches everything.
import * as A from "@automerge/automerge"
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"
import { createHousehold, deviceActor, documentUrl, increment, keepSyncStates, repoSocketUrl, setFields } from "../thonsync.js"

const env = process.env
const [server, token, device, folder, mode] = [
  env.THONSYNC_SERVER,
  env.THONSYNC_TOKEN,
  env.THONSYNC_DEVICE,
  env.THONSYNC_STORAGE,
  env.THONSYNC_MODE ?? "storage-id",
]
const ids = env.THONSYNC_DOCUMENTS.split(",")
const deadline = setTimeout(() => {
  console.error("timed out")
  process.exit(2)
}, 90_000)
const sleep = ms => new Promise(r => setTimeout(r, ms))

/** The stock WebSocket adapter, counting the bytes of the frames it sends and receives. */
class CountingAdapter extends WebSocketClientAdapter {
  constructor(url, counts, showStorageId) {
    super(url)
    this.counts = counts
    this.showStorageId = showStorageId
  }
  connect(peerId, peerMetadata) {
    super.connect(peerId, peerMetadata)
    const socket = this.socket
    if (socket && !socket.counted) {
      socket.counted = true
      const send = socket.send.bind(socket)
      socket.send = data => {
        this.counts.up += data.byteLength
        this.counts.framesUp += 1
        this.counts.last = Date.now()
        send(data)
      }
    }
  }
  receiveMessage(bytes) {
    this.counts.down += bytes.byteLength
    this.counts.framesDown += 1
    this.counts.last = Date.now()
    super.receiveMessage(bytes)
  }
  peerCandidate(peerId, peerMetadata) {
    this.counts.storageId = peerMetadata?.storageId ?? null
    const shown = this.showStorageId ? peerMetadata : { ...peerMetadata, storageId: undefined }
    super.peerCandidate(peerId, shown)
  }
}

/** A Repo (with storage in `folder`, or none), its network adapter (added
 * now, or later by `online()`) and its frame counts. */
function open(withStorage, showStorageId, online = true) {
  const counts = { up: 0, down: 0, framesUp: 0, framesDown: 0, last: Date.now(), storageId: null }
  const adapter = new CountingAdapter(repoSocketUrl(server, token), counts, showStorageId)
  const storage = withStorage ? new NodeFSStorageAdapter(folder) : undefined
  const repo = new Repo({ storage, network: online ? [adapter] : [] })
  if (process.env.THONSYNC_KEEP !== "0") keepSyncStates(repo)
  // The server's heads for each document, as the last sync message from it told them.
  const theirs = new Map()
  repo.synchronizer.on("sync-state", ({ documentId, syncState }) => {
    if (syncState.theirHeads) theirs.set(documentId, [...syncState.theirHeads].sort().join(","))
  })
  return { repo, counts, theirs, online: () => repo.networkSubsystem.addNetworkAdapter(adapter) }
}

/** Until the server holds every document's heads, then until no frame for a while. */
async function settle({ theirs, counts }, handles) {
  const inStep = () => handles.every(h => theirs.get(h.documentId) === [...A.getHeads(h.doc())].sort().join(","))
  while (!inStep()) await sleep(25)
  while (Date.now() - counts.last < 750) await sleep(50)
}

const figures = ({ up, down, framesUp, framesDown }) => ({ up, down, framesUp, framesDown })
const urls = await Promise.all(ids.map(id => documentUrl(id)))

// 1. First sync: every document found on the server, households written
// into each one field at a time, as a surveyor fills a form (a history of
// some 200 changes a document).
const first = open(true, true)
const handles = await Promise.all(urls.map(url => first.repo.find(url)))
const actor = deviceActor(device)
for (const handle of handles) {
  for (let k = 1; k <= 10; k++) {
    const hh = `hh-${String(k).padStart(3, "0")}`
    await createHousehold(handle, hh)
    await setFields(handle, hh, { members: 3 + (k % 4) }, actor)
    await setFields(handle, hh, { adults: 2 }, actor)
    await setFields(handle, hh, { head_name: `Hộ ${k}` }, actor)
    await setFields(handle, hh, { fibre_broadband: k % 2 === 0 }, actor)
    for (let q = 0; q < 15; q++) await increment(handle, hh, "qr_codes_issued", 1, actor)
  }
  await setFields(handle, "facts", { digital_team_members: 3 }, actor)
}
await settle(first, handles)
const changes = handles.reduce((n, h) => n + A.getAllChanges(h.doc()).length, 0)
await first.repo.shutdown()

// 2. A new Repo on the same storage, offline: the documents opened from it,
// one field edited in one. Then online (or, without storage, online from
// the start and everything fetched), and synced.
const stored = mode !== "no-storage"
const second = open(stored, mode !== "no-storage-id", !stored)
const again = await Promise.all(urls.map(url => second.repo.find(url)))
const before = A.getHeads(again[0].doc())
await setFields(again[0], "hh-001", { members: 11 }, deviceActor(device))
const edit = A.getChanges(A.view(again[0].doc(), before), again[0].doc())
if (stored) second.online()
await settle(second, again)
await second.repo.shutdown()

console.log(
  JSON.stringify({
    mode,
    documents: ids.length,
    changes,
    storageId: first.counts.storageId,
    first: figures(first.counts),
    reconnect: figures(second.counts),
    edit: edit.reduce((n, c) => n + c.byteLength, 0),
    members: again[0].doc().households["hh-001"].members,
  }),
)
clearTimeout(deadline)
process.exit(0)
