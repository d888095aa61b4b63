"""Two and three phones driven through the UniFFI Python bindings of the
mobile crate against a real thonsync-server: what a field app does."""

import base64
import json
import os
import signal
import subprocess
import sys

import mobile
import pytest

from conftest import BINDINGS, UrllibTransport, quick

VILLAGE = "nhu-co-01"


def field(record, name):
    fields = record.facts if hasattr(record, "facts") else record.fields
    return next(f for f in fields if f.name == name)


def count(n):
    return mobile.FieldValue.INT(n)


def test_enroll_edit_offline_validate_in_vietnamese_sync_and_clash(server, phone):
    lan, _, _ = phone("Chị Lan")
    tung, _, _ = phone("Anh Tùng")
    info = lan.info()
    assert info.commune == "nhu-co" and info.name == "Chị Lan"
    places = [v.place for v in lan.villages()]
    assert VILLAGE in places and "nhu-co" in places, places
    assert lan.unsent_count() == 0

    # Offline edits on each phone; the same field of the same household on both.
    out = lan.set_field(VILLAGE, "hh-001", "members", count(5))
    assert out.new_household and out.unsent_changes == 1
    lan.set_field(VILLAGE, "hh-001", "fibre_broadband", mobile.FieldValue.BOOL(True))
    lan.increment_field(VILLAGE, None, "security_cameras", 2)
    tung.set_field(VILLAGE, "hh-001", "members", count(6))
    tung.increment_field(VILLAGE, None, "security_cameras", 3)
    assert lan.unsent_count() == 3 and tung.unsent_count() == 2
    assert lan.household(VILLAGE, "hh-001").sync == mobile.SyncState.WAITING
    assert field(lan.household(VILLAGE, "hh-001"), "members").value == count(5)

    # A value the field does not take: a typed error, in Vietnamese too; nothing written.
    with pytest.raises(mobile.MobileError.Validation) as bad:
        lan.set_field(VILLAGE, "hh-001", "members", mobile.FieldValue.TEXT("nhiều"))
    assert bad.value.field == "members"
    assert "không nhận giá trị" in bad.value.message_vi, bad.value.message_vi
    assert "members" in bad.value.message_en
    # A consistency rule the edit would break.
    with pytest.raises(mobile.MobileError.RuleBroken) as rule:
        lan.set_field(VILLAGE, "hh-001", "adults", count(9))
    assert "không được lớn hơn members" in rule.value.message_vi, rule.value.message_vi
    assert "chưa ghi gì" in rule.value.message_vi
    assert "cannot be more than members" in rule.value.message_en
    assert lan.unsent_count() == 3
    log = lan.error_log()
    assert "không nhận giá trị" in log and "cannot be more than" in log, log

    # Sync: each sends, both end with the merged village.
    events = []

    class Progress(mobile.SyncProgress):
        def on_round(self, round, documents, bytes_sent, bytes_received):
            events.append((round, documents, bytes_sent, bytes_received))

        def on_retry(self, attempt, wait_ms, message_vi, message_en):
            events.append(("retry", attempt))

    first = lan.sync(quick(), Progress())
    assert first.result == mobile.SyncResult.DONE, first
    assert first.sent_changes >= 3 and first.unsent_changes == 0
    assert events and events[0][1] >= 2, events
    assert tung.sync(quick(), None).sent_changes >= 2
    assert lan.sync(quick(), None).received_changes >= 2
    for p in (lan, tung):
        assert p.unsent_count() == 0
        v = p.village(VILLAGE)
        assert field(v, "security_cameras").value == count(5), "counters add up"
        hh = next(h for h in v.households if h.id == "hh-001")
        assert hh.sync == mobile.SyncState.SYNCED
    # Both phones show the same one of the clashing values ...
    assert field(lan.household(VILLAGE, "hh-001"), "members").value == field(
        tung.household(VILLAGE, "hh-001"), "members"
    ).value
    # ... and the administrator sees the clash with both surveyors.
    conflicts = server.thonsync(["conflicts"])
    assert "members" in conflicts and "hh-001" in conflicts, conflicts
    assert "Chị Lan" in conflicts and "Anh Tùng" in conflicts, conflicts


def test_a_cut_exchange_converges_on_retry(server, phone):
    lan, _, _ = phone("Chị Lan")
    cut = {"n": 0}

    def drop(request, n):
        # The first upload is lost on the way, the next answer on the way back.
        if request.path != "/v1/sync":
            return None
        cut["n"] += 1
        return {1: "request", 2: "response"}.get(cut["n"])

    flaky = UrllibTransport(drop)
    first, folder, _ = phone("Chị Hoa")
    del first
    hoa = mobile.FieldReplica.open(folder, flaky)
    hoa.set_field(VILLAGE, "hh-007", "members", count(4))
    hoa.increment_field(VILLAGE, None, "security_cameras", 1)
    retries = []

    class Progress(mobile.SyncProgress):
        def on_round(self, *a):
            pass

        def on_retry(self, attempt, wait_ms, message_vi, message_en):
            retries.append((attempt, message_vi, message_en))

    out = hoa.sync(quick(), Progress())
    assert out.result == mobile.SyncResult.DONE, out
    assert out.exchanges == 3 and len(retries) == 2, (out, retries)
    assert "máy chủ không trả lời" in retries[0][1], retries
    assert hoa.unsent_count() == 0
    # Nothing was stored twice: the other phone sees exactly one camera.
    lan.sync(quick(), None)
    assert field(lan.village(VILLAGE), "security_cameras").value == count(1)
    assert field(lan.household(VILLAGE, "hh-007"), "members").value == count(4)
    # Out of reach altogether: an outcome, not an error, and nothing lost.
    hoa.set_field(VILLAGE, "hh-007", "adults", count(2))
    offline = UrllibTransport(lambda request, n: "request")
    del hoa
    away = mobile.FieldReplica.open(folder, offline)
    gone = away.sync(quick(attempts=2), None)
    assert gone.result == mobile.SyncResult.OFFLINE, gone
    assert gone.unsent_changes == 1 and "đồng bộ lại khi có mạng" in gone.message_vi
    assert "gave up" in away.error_log()


class DamagingTransport(UrllibTransport):
    def __init__(self):
        super().__init__()
        self.damaged = False

    def send(self, request):
        if request.path == "/v1/sync" and not self.damaged:
            body = json.loads(bytes(request.body))
            for doc in body.get("documents", []):
                msg = doc.get("message")
                if doc.get("document", "").startswith("village:nhu-co-01") and msg and len(msg) > 200:
                    raw = bytearray(base64.b64decode(msg))
                    raw[-8] ^= 0xFF
                    doc["message"] = base64.b64encode(bytes(raw)).decode()
                    self.damaged = True
            request.body = json.dumps(body).encode()
        return super().send(request)


def test_a_refused_upload_is_set_aside_and_readable(server, phone):
    damaging = DamagingTransport()
    lan, _, _ = phone("Chị Lan", damaging)
    lan.set_field(VILLAGE, "hh-003", "members", count(7))
    lan.set_field(VILLAGE, "hh-003", "head_name", mobile.FieldValue.TEXT("Hoàng Văn Páo"))
    out = lan.sync(quick(), None)
    assert damaging.damaged, "the transport found the upload to damage"
    assert out.result == mobile.SyncResult.DONE_WITH_REFUSALS, out
    assert any(d.startswith("village:nhu-co-01") for d in out.refused_documents), out
    assert "giữ riêng" in out.message_vi
    refused = lan.refused_versions()
    assert len(refused) == 1, refused
    kept = refused[0]
    assert kept.code and kept.message_vi and kept.at_ms > 0
    hh = next(h for h in kept.households if h.id == "hh-003")
    assert field(hh, "members").value == count(7)
    assert field(hh, "head_name").value == mobile.FieldValue.TEXT("Hoàng Văn Páo")
    assert hh.sync == mobile.SyncState.REFUSED
    # The village starts over from the server's version; the refused record shows as refused.
    village = next(v for v in lan.villages() if v.place == VILLAGE)
    assert village.refused
    states = {h.id: h.sync for h in lan.village(VILLAGE).households}
    assert states.get("hh-003") == mobile.SyncState.REFUSED, states
    assert kept.code in lan.error_log()
    # Entered again, it syncs.
    lan.set_field(VILLAGE, "hh-003", "members", count(7))
    assert lan.sync(quick(), None).result == mobile.SyncResult.DONE
    assert lan.unsent_count() == 0


KILLED = r"""
import os, sys, signal
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
import mobile
from conftest import UrllibTransport
r = mobile.FieldReplica.open(sys.argv[3], UrllibTransport())
r.set_field("nhu-co-01", "hh-009", "members", mobile.FieldValue.INT(8))
r.increment_field("nhu-co-01", None, "security_cameras", 4)
print("recorded", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_app_killed_and_reopened_loses_nothing(server, phone):
    lan, folder, _ = phone("Chị Lan")
    del lan
    here = os.path.dirname(__file__)
    done = subprocess.run(
        [sys.executable, "-c", KILLED, BINDINGS, here, folder],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr)
    assert "recorded" in done.stdout
    again = mobile.FieldReplica.open(folder, UrllibTransport())
    assert again.unsent_count() == 2
    assert field(again.household(VILLAGE, "hh-009"), "members").value == count(8)
    assert again.household(VILLAGE, "hh-009").sync == mobile.SyncState.WAITING
    assert again.sync(quick(), None).sent_changes >= 2
    assert again.unsent_count() == 0
    tung, _, _ = phone("Anh Tùng")
    assert field(tung.village(VILLAGE), "security_cameras").value == count(4)
    assert field(tung.household(VILLAGE, "hh-009"), "members").value == count(8)
