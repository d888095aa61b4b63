// The helper against docs/vectors/genesis.json, the vectors the Rust tests
// hold equal to what the server makes: URLs, actors, and household genesis
// changes byte for byte.
import { test } from "node:test"
import assert from "node:assert/strict"
import { readFileSync } from "node:fs"
import * as A from "@automerge/automerge"
import { createHousehold, documentUrl, householdActor, deviceActor, setFields, increment } from "../thonsync.js"

const vectors = JSON.parse(readFileSync(new URL("../../../docs/vectors/genesis.json", import.meta.url), "utf8"))
const bytes = text => Uint8Array.from(text.match(/../g).map(b => parseInt(b, 16)))
const hex = b => Array.from(b, x => x.toString(16).padStart(2, "0")).join("")

/** What createHousehold needs of a DocHandle. */
function fakeHandle(doc) {
  return { doc: () => doc, update(cb) { doc = cb(doc) } }
}

test("document URLs are the published ones", async () => {
  for (const v of vectors.documents) assert.equal(await documentUrl(v.document), v.url, v.document)
})

test("household genesis changes are byte-identical to the server's", async () => {
  let checked = 0
  for (const v of vectors.documents) {
    for (const h of v.households) {
      assert.equal(await householdActor(v.document, h.household), h.actor)
      const [doc] = A.applyChanges(A.init(), [bytes(v.genesis.bytes)])
      const handle = fakeHandle(doc)
      const hash = await createHousehold(handle, h.household)
      assert.equal(hash, h.hash, `${v.document} ${h.household}`)
      const made = A.getAllChanges(handle.doc()).find(c => A.decodeChange(c).hash === hash)
      assert.equal(hex(made), h.bytes, "the same bytes")
      assert.equal(await createHousehold(handle, h.household), null, "made once")
      checked++
    }
  }
  assert.ok(checked >= 3)
})

test("edits are under the device actor and typed", async () => {
  const v = vectors.documents[0]
  const [doc] = A.applyChanges(A.init(), [bytes(v.genesis.bytes)])
  const handle = fakeHandle(doc)
  const actor = deviceActor("dev-0123456789abcdef")
  assert.match(actor, new RegExp("^" + hex(new TextEncoder().encode("tsd/dev-0123456789abcdef/")) + "[0-9a-f]{16}$"))
  await setFields(handle, "hh-007", { members: 4, head_name: "Lan", fibre_broadband: true }, actor)
  await increment(handle, "hh-007", "qr_codes_issued", 2, actor)
  await setFields(handle, "facts", { digital_team_members: 3 }, actor)
  const d = handle.doc()
  assert.equal(d.households["hh-007"].members, 4)
  assert.equal(d.households["hh-007"].qr_codes_issued.value, 2)
  assert.ok(d.households["hh-007"].head_name instanceof A.ImmutableString, "text is a plain string value")
  const authors = A.getAllChanges(d).map(c => A.decodeChange(c)).filter(c => c.time !== 0).map(c => c.actor)
  assert.deepEqual([...new Set(authors)], [actor])
})
