//! What can go wrong on a field device, as typed values whose text is
//! given in the surveyor's language ([`Lang`]): the CLI device and the
//! mobile crate show the same words.

use std::path::PathBuf;

use crate::error::EditError;
use crate::store::StoreError;
use crate::wire::{ErrorBody, ErrorCode};

/// A language the device speaks to its surveyor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lang {
    /// English.
    En,
    /// Tiếng Việt.
    Vi,
}

/// One message in both languages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text {
    /// In English.
    pub en: String,
    /// In Vietnamese.
    pub vi: String,
}

impl Text {
    /// A message from its English and Vietnamese texts.
    pub fn new(en: impl Into<String>, vi: impl Into<String>) -> Self {
        Self { en: en.into(), vi: vi.into() }
    }

    /// The text in `lang`.
    pub fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::En => &self.en,
            Lang::Vi => &self.vi,
        }
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.en)
    }
}

/// A number with `places` decimals: a decimal comma in Vietnamese.
pub fn decimal(x: f64, places: usize, lang: Lang) -> String {
    let s = format!("{x:.places$}");
    match lang {
        Lang::En => s,
        Lang::Vi => s.replace('.', ","),
    }
}

/// A server's refusal in Vietnamese: what its code means, then the server's
/// own words (the server writes them in English).
pub fn explain(code: &ErrorCode, message: &str) -> String {
    use ErrorCode as C;
    let vi = match code {
        C::Unauthorized => "máy chủ không nhận mã truy cập này",
        C::Revoked => "thiết bị này đã bị thu hồi; hãy xin quản trị viên mã đăng ký mới",
        C::InvalidEnrollmentCode => "mã đăng ký không đúng, đã dùng hoặc đã hết hạn; hãy xin mã mới",
        C::BadEnrollmentCode => "mã đăng ký gõ không đúng dạng",
        C::Forbidden => "không được phép làm việc này (ngoài các xã được giao)",
        C::TooManyRequests => "quá nhiều lần thử; hãy đợi một lúc rồi thử lại",
        C::UnknownRound => "đợt điều tra này chưa được mở trên máy chủ",
        C::UnknownCommune => "xã này không có trong danh mục địa bàn của máy chủ",
        C::UnknownDocument => "máy chủ không có tài liệu này",
        C::UnknownDevice => "máy chủ không có thiết bị này",
        C::NotFound => "máy chủ không tìm thấy điều được hỏi",
        C::BadRegistry => "danh mục địa bàn không nạp được",
        C::BadRequest => "yêu cầu không hợp lệ",
        C::StoreUnavailable => "máy chủ tạm thời không lưu được; không có gì bị mất, hãy thử lại",
        C::Internal => "máy chủ gặp lỗi nội bộ",
        C::BodyTooLarge | C::TooManyDocuments | C::TooLarge => "yêu cầu quá lớn",
        C::RuleBroken | C::NotAdmitted | C::EditRefused => "dữ liệu vi phạm quy tắc của mẫu điều tra",
        _ => "máy chủ không chấp nhận yêu cầu",
    };
    format!("{vi} (mã {code}; máy chủ ghi: {message:?})")
}

/// Why one call to the server failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CallError {
    /// No answer: refused connection, reset, timeout. Worth retrying.
    Unreachable(String),
    /// The server answered with an error. Its code may be one this build
    /// does not know ([`ErrorCode::Other`], a newer server's).
    Server {
        /// HTTP status.
        status: u16,
        /// The error it sent.
        body: ErrorBody,
    },
    /// An error answer without the error shape (e.g. a proxy's page).
    Http {
        /// HTTP status.
        status: u16,
        /// The start of the answer.
        text: String,
    },
    /// The answer could not be read.
    Garbled(String),
}

impl CallError {
    /// Whether trying again (with a new exchange) can help: no answer,
    /// 5xx, 409 and 429 (docs/protocol.md). Decided by the status, so a code
    /// this build does not know is treated right.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Unreachable(_) | CallError::Garbled(_) => true,
            CallError::Server { status, .. } | CallError::Http { status, .. } => {
                *status >= 500 || *status == 409 || *status == 429
            }
        }
    }

    /// The message in both languages.
    pub fn text(&self) -> Text {
        match self {
            CallError::Unreachable(why) => Text::new(
                format!("no answer from the server: {why}"),
                format!("máy chủ không trả lời ({why})"),
            ),
            CallError::Server { status, body } => Text::new(
                format!("server said {status}: {body}"),
                format!("máy chủ trả lời {status}: {}", explain(&body.code, &body.message)),
            ),
            CallError::Http { status, text } => {
                Text::new(format!("answered {status}: {text}"), format!("máy chủ trả lời {status}: {text}"))
            }
            CallError::Garbled(why) => Text::new(
                format!("unreadable answer from the server: {why}"),
                format!("không đọc được câu trả lời của máy chủ ({why})"),
            ),
        }
    }

    /// The message in `lang`.
    pub fn message(&self, lang: Lang) -> String {
        self.text().get(lang).to_owned()
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message(Lang::En))
    }
}

/// What went wrong on a device. [`ReplicaError::message`] says it in the
/// surveyor's language; `Display` is English.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The directory holds no device yet.
    NotInitialised(PathBuf),
    /// The device's own database failed: a local fault (disk full, a
    /// damaged or unwritable file), never retried as if the server were at fault.
    LocalStore(#[from] StoreError),
    /// An id or setting that does not parse, or a request this device
    /// cannot make.
    Invalid(Text),
    /// The edit breaks a rule of the survey model.
    Edit(#[from] EditError),
    /// The place is not a document of this device's commune.
    UnknownPlace {
        /// What was asked for.
        place: String,
        /// The device's commune.
        commune: String,
        /// The places it has.
        known: String,
    },
    /// The device has never fetched its commune's documents.
    NotPulled,
    /// The server refused the request as a whole (not worth retrying).
    Refused(ErrorBody),
    /// The server could not be reached, or its answer could not be read.
    Unreachable(Text),
    /// Enrollment failed: the code was refused or the server could not be reached.
    Enroll(Text),
    /// The server could not be reached after every retry.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        seconds: f64,
        /// The last error.
        last: Text,
    },
    /// An exchange did not go quiet within the round limit.
    TooManyRounds(u32),
}

impl ReplicaError {
    /// An error code for apps and logs, stable across languages.
    pub fn code(&self) -> &'static str {
        match self {
            ReplicaError::NotInitialised(_) => "not_initialised",
            ReplicaError::LocalStore(_) => "local_store",
            ReplicaError::Invalid(_) => "invalid",
            ReplicaError::Edit(_) => "edit_refused",
            ReplicaError::UnknownPlace { .. } => "unknown_place",
            ReplicaError::NotPulled => "not_pulled",
            ReplicaError::Refused(_) => "refused",
            ReplicaError::Unreachable(_) => "unreachable",
            ReplicaError::Enroll(_) => "enroll_failed",
            ReplicaError::GaveUp { .. } => "gave_up",
            ReplicaError::TooManyRounds(_) => "too_many_rounds",
        }
    }

    /// The message in `lang`.
    pub fn message(&self, lang: Lang) -> String {
        let say = |en: String, vi: String| match lang {
            Lang::En => en,
            Lang::Vi => vi,
        };
        match self {
            ReplicaError::NotInitialised(dir) => say(
                format!(
                    "{} is not a device directory; run `thonsync device init --server URL --code CODE` first",
                    dir.display()
                ),
                format!(
                    "{} không phải thư mục của thiết bị; hãy chạy `thonsync device init --server URL --code MÃ` trước",
                    dir.display()
                ),
            ),
            ReplicaError::LocalStore(e) => say(
                format!(
                    "this device's own database failed: {e}; this is a problem of this device \
                     (free space, the file and its folder), not of the server"
                ),
                format!(
                    "cơ sở dữ liệu trên thiết bị này bị lỗi ({e}); đây là sự cố của thiết bị \
                     (dung lượng trống, tệp và thư mục của nó), không phải của máy chủ"
                ),
            ),
            ReplicaError::Invalid(text) => text.get(lang).to_owned(),
            ReplicaError::Unreachable(text) => say(
                format!("the call to the server failed: {}", text.en),
                format!("gọi máy chủ không thành công: {}", text.vi),
            ),
            ReplicaError::Enroll(text) => say(
                format!("enrollment failed: {}", text.en),
                format!("đăng ký thiết bị không thành công: {}", text.vi),
            ),
            ReplicaError::Edit(e) => edit_text(e).get(lang).to_owned(),
            ReplicaError::UnknownPlace { place, commune, known } => say(
                format!(
                    "{place:?} is not a village of commune {commune} (known: {known}); \
                     run `thonsync device pull` if the registry changed"
                ),
                format!(
                    "{place:?} không phải thôn của xã {commune} (các thôn: {known}); \
                     chạy `thonsync device pull` nếu danh mục địa bàn đã thay đổi"
                ),
            ),
            ReplicaError::NotPulled => say(
                "this device has no documents yet; run `thonsync device pull` while online".into(),
                "thiết bị này chưa có tài liệu nào; hãy chạy `thonsync device pull` khi có mạng".into(),
            ),
            ReplicaError::Refused(body) => say(
                format!("the server refused the sync: {body}"),
                format!("máy chủ từ chối đồng bộ: {}", explain(&body.code, &body.message)),
            ),
            ReplicaError::GaveUp { attempts, seconds, last } => say(
                format!(
                    "gave up after {attempts} attempts over {seconds:.1} s: {}; \
                     your edits are kept on this device, sync again when online",
                    last.en
                ),
                format!(
                    "đã dừng sau {attempts} lần thử trong {} giây: {}; \
                     dữ liệu đã nhập vẫn lưu trên thiết bị này, hãy đồng bộ lại khi có mạng",
                    decimal(*seconds, 1, Lang::Vi),
                    last.vi
                ),
            ),
            ReplicaError::TooManyRounds(n) => {
                say(format!("the sync did not finish in {n} rounds"), format!("đồng bộ không xong sau {n} vòng"))
            }
        }
    }
}

impl std::fmt::Display for ReplicaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message(Lang::En))
    }
}

/// An edit the survey model refused, in both languages.
pub fn edit_text(e: &EditError) -> Text {
    let vi = match e {
        EditError::UnknownField { field, known, .. } => {
            format!("{field:?} không phải trường của bản ghi này; các trường có: {known}")
        }
        EditError::WrongType { field, value, .. } => format!("trường {field:?} không nhận giá trị {value:?}"),
        EditError::WrongOperation { field, .. } => format!(
            "trường {field:?} không thay đổi được theo cách này (bộ đếm dùng `thonsync device add`, \
             trường khác dùng `thonsync device set`)"
        ),
        EditError::NoHouseholds(d) => format!("tài liệu {d} là của xã, không có hộ nào"),
        EditError::NoSuchHousehold { document, household } => {
            format!("hộ {household:?} không có trong {document}")
        }
        EditError::Automerge(inner) => format!("lỗi dữ liệu automerge ({inner})"),
    };
    Text::new(e.to_string(), vi)
}
