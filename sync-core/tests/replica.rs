//! The field-device replica sans network: enrollment and the document list
//! through a scripted `Transport`, a fixed clock and randomness, offline
//! edits checked by the rules with messages in both languages, and what
//! waits for upload per household. (Sync against a real server is tested
//! by `cli/tests/device_*`, `tests/` and the mobile crate's Python suite.)

use std::cell::RefCell;
use std::time::Duration;

use sync_core::ids::HouseholdId;
use sync_core::replica::{
    Enrollment, Lang, Platform, RecordSync, Replica, ReplicaError, Request, Response, Transport,
};
use sync_core::survey::{Edit, FieldValue, Target};

struct Fixed;

impl Platform for Fixed {
    fn now_ms(&self) -> i64 {
        1_717_000_000_000
    }
    fn random(&self, buf: &mut [u8]) {
        buf.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8 + 1);
    }
    fn sleep(&self, _: Duration) {}
}

/// Answers enrollment and the commune's document list; records the calls.
#[derive(Default)]
struct Scripted {
    calls: RefCell<Vec<Request>>,
}

impl Transport for Scripted {
    fn send(&self, request: Request) -> Result<Response, String> {
        self.calls.borrow_mut().push(request.clone());
        let body = match request.path.as_str() {
            "/v1/enroll" => {
                r#"{"device":"tablet-07","name":"Chị Lan","token":"t0k3n","communes":["nhu-co"]}"#.to_owned()
            }
            p if p.starts_with("/v1/registry/communes/nhu-co") => r#"{"commune":"nhu-co","name":"Như Cố","round":"2024-1",
                "documents":[{"document":"village:nhu-co-01:2024-1","kind":"village","place":"nhu-co-01","name":"Nà Mòn"}]}"#
                .to_owned(),
            _ => return Ok(Response { status: 404, body: br#"{"error":{"code":"not_found","message":"no"}}"#.to_vec(), sent_bytes: 0 }),
        };
        Ok(Response { status: 200, body: body.into_bytes(), sent_bytes: 0 })
    }
    fn app_version(&self) -> String {
        "test/1".into()
    }
}

fn count(field: &str, n: i64) -> Edit {
    Edit::set(Target::Household(HouseholdId::new("hh-001").unwrap()), field, FieldValue::Int(n))
}

#[test]
fn enrolled_offline_edits_are_checked_kept_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let net = Scripted::default();
    let enrollment =
        Enrollment { server: "http://127.0.0.1:9/", code: "abcd-efgh-jkmn", ..Default::default() };
    let (mut replica, again) = Replica::enroll(dir.path(), &enrollment, &net, Box::new(Fixed)).unwrap();
    assert!(!again);
    assert_eq!(replica.config().device.as_str(), "tablet-07");
    assert_eq!(replica.token().unwrap().as_deref(), Some("t0k3n"));
    let id = &replica.fetch_documents(&net).unwrap()[0];
    let calls = net.calls.borrow().clone();
    assert_eq!(calls[0].url, "http://127.0.0.1:9/v1/enroll");
    assert_eq!(calls[1].token.as_deref(), Some("t0k3n"), "calls after enrollment carry the token");
    assert_eq!(replica.document_for("nhu-co-01").unwrap(), *id);
    assert!(matches!(replica.document_for("nhu-co-99"), Err(ReplicaError::UnknownPlace { .. })));

    replica.record(id, &[count("members", 5)]).unwrap();
    // A rule the next edit would break, said in both languages; nothing written.
    let breaches = replica.check_rules(id, &[count("adults", 6)]).unwrap();
    assert_eq!(breaches.len(), 1, "{breaches:?}");
    assert!(breaches[0].get(Lang::En).contains("adults (6) cannot be more than members (5)"), "{breaches:?}");
    assert!(breaches[0].get(Lang::Vi).contains("không được lớn hơn"), "{breaches:?}");
    // A value of the wrong type: a typed error with a Vietnamese message.
    let wrong =
        Edit::set(Target::Household(HouseholdId::new("hh-001").unwrap()), "members", FieldValue::Bool(true));
    let e = replica.record(id, &[wrong]).unwrap_err();
    assert!(matches!(e, ReplicaError::Edit(_)), "{e:?}");
    assert!(e.message(Lang::Vi).contains("không nhận giá trị"), "{}", e.message(Lang::Vi));

    assert_eq!(replica.status().unwrap().pending(), 1);
    let states = replica.household_sync(id).unwrap();
    assert_eq!(states.get("hh-001"), Some(&RecordSync::Waiting));

    // Reopened from its folder: the edit is there.
    drop(replica);
    let mut again = Replica::open(dir.path(), Box::new(Fixed)).unwrap();
    assert_eq!(again.status().unwrap().pending(), 1);
    // The server out of reach: an error that says so, in both languages.
    struct Down;
    impl Transport for Down {
        fn send(&self, _: Request) -> Result<Response, String> {
            Err("connection refused".into())
        }
        fn app_version(&self) -> String {
            "test/1".into()
        }
    }
    let options = sync_core::replica::SyncOptions { attempts: 2, ..Default::default() };
    let e = again.sync(&Down, &options, &mut |_| {}).unwrap_err();
    assert!(matches!(e, ReplicaError::GaveUp { attempts: 2, .. }), "{e:?}");
    assert!(
        e.message(Lang::Vi).contains("dữ liệu đã nhập vẫn lưu trên thiết bị này"),
        "{}",
        e.message(Lang::Vi)
    );
    assert_eq!(again.status().unwrap().pending(), 1);
}
