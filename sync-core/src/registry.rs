//! The place registry: province → district → commune → village, with the
//! bundled sample of Bắc Kạn's 8 pilot communes and CSV loading.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::ids::{check_id, DocumentId, PlaceId, Round};

/// Level of a place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlaceKind {
    /// Tỉnh.
    Province,
    /// Huyện or thành phố.
    District,
    /// Xã or phường.
    Commune,
    /// Thôn or tổ dân phố.
    Village,
}

impl PlaceKind {
    /// The kind a parent of this kind must have.
    pub fn parent(self) -> Option<PlaceKind> {
        match self {
            PlaceKind::Province => None,
            PlaceKind::District => Some(PlaceKind::Province),
            PlaceKind::Commune => Some(PlaceKind::District),
            PlaceKind::Village => Some(PlaceKind::Commune),
        }
    }
}

/// One place, as in the registry CSV: `id,kind,name,parent,expected_households`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// Stable id.
    pub id: String,
    /// Level.
    pub kind: PlaceKind,
    /// Name with its diacritics, e.g. `Xã Như Cố`.
    pub name: String,
    /// Id of the enclosing place (empty for a province).
    #[serde(default, deserialize_with = "empty_is_none")]
    pub parent: Option<String>,
    /// Households a village is expected to have, for completeness.
    #[serde(default)]
    pub expected_households: Option<u32>,
}

fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.trim().is_empty()))
}

/// Why a registry was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A CSV row that does not parse.
    #[error("registry CSV line {line}: {reason}")]
    Csv {
        /// 1-based line.
        line: u64,
        /// What was wrong.
        reason: String,
    },
    /// A place whose id, parent or kind breaks the hierarchy.
    #[error("place {id:?}: {reason}")]
    Place {
        /// Place id.
        id: String,
        /// What was wrong.
        reason: String,
    },
}

/// Why a new registry was not loaded although it parses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the new registry drops {} place(s) holding survey data: {}; their data would be left out of \
     every figure (`thonsync status`, `thonsync report`). Put them back in the file, or load it \
     anyway with `thonsync registry load FILE --force`",
    places.len(),
    places.join(", ")
)]
pub struct DropsData {
    /// The places dropped, sorted.
    pub places: Vec<String>,
}

/// Checks a registry about to replace `current`: a file that drops places
/// holding `stored` documents is refused unless `force`. Returns the places
/// a forced load drops (empty when none).
pub fn check_load<'a>(
    current: &Registry,
    next: &Registry,
    stored: impl IntoIterator<Item = &'a DocumentId>,
    force: bool,
) -> Result<Vec<String>, DropsData> {
    let places = current.dropped_with_data(next, stored);
    if places.is_empty() || force {
        Ok(places)
    } else {
        Err(DropsData { places })
    }
}

/// The audit log's action for a registry load.
pub const AUDIT_LOAD: &str = "registry.load";
/// The audit log's action for a refused registry load.
pub const AUDIT_LOAD_REFUSED: &str = "registry.load_refused";

/// The audit log's detail of a registry load: how many places, and which
/// places holding survey data a forced load dropped.
pub fn load_detail(places: usize, dropped: &[String]) -> String {
    if dropped.is_empty() {
        format!("{places} places loaded")
    } else {
        format!(
            "{places} places loaded with --force, dropping places that hold survey data: {}",
            dropped.join(", ")
        )
    }
}

/// The places, indexed by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registry {
    places: BTreeMap<String, Place>,
}

/// Bắc Kạn's pilot communes: (commune id, name, district id, district name, villages, village prefix).
const PILOT: &[(&str, &str, &str, &str, u32, &str)] = &[
    ("song-cau", "Phường Sông Cầu", "tp-bac-kan", "Thành phố Bắc Kạn", 20, "Tổ dân phố"),
    ("quang-thuan", "Xã Quang Thuận", "bach-thong", "Huyện Bạch Thông", 8, "Thôn"),
    ("thuong-giao", "Xã Thượng Giáo", "ba-be", "Huyện Ba Bể", 8, "Thôn"),
    ("nghia-ta", "Xã Nghĩa Tá", "cho-don", "Huyện Chợ Đồn", 8, "Thôn"),
    ("nhu-co", "Xã Như Cố", "cho-moi", "Huyện Chợ Mới", 11, "Thôn"),
    ("duc-van", "Xã Đức Vân", "ngan-son", "Huyện Ngân Sơn", 8, "Thôn"),
    ("con-minh", "Xã Côn Minh", "na-ri", "Huyện Na Rì", 8, "Thôn"),
    ("giao-hieu", "Xã Giáo Hiệu", "pac-nam", "Huyện Pác Nặm", 8, "Thôn"),
];

/// Households each sample village is expected to have.
pub const SAMPLE_HOUSEHOLDS_PER_VILLAGE: u32 = 10;

impl Registry {
    /// Builds a registry, checking ids and the hierarchy.
    pub fn new(places: impl IntoIterator<Item = Place>) -> Result<Self, RegistryError> {
        let mut map = BTreeMap::new();
        for p in places {
            check_id("place id", &p.id)
                .map_err(|e| RegistryError::Place { id: p.id.clone(), reason: e.to_string() })?;
            if p.name.trim().is_empty() {
                return Err(RegistryError::Place { id: p.id, reason: "name is empty".into() });
            }
            if map.contains_key(&p.id) {
                return Err(RegistryError::Place { id: p.id, reason: "listed twice".into() });
            }
            map.insert(p.id.clone(), p);
        }
        for p in map.values() {
            match (p.kind.parent(), &p.parent) {
                (None, None) => {}
                (None, Some(_)) => {
                    return Err(RegistryError::Place {
                        id: p.id.clone(),
                        reason: "a province has no parent".into(),
                    })
                }
                (Some(k), None) => {
                    return Err(RegistryError::Place {
                        id: p.id.clone(),
                        reason: format!("needs a parent {k:?}"),
                    })
                }
                (Some(k), Some(parent)) => match map.get(parent) {
                    Some(pp) if pp.kind == k => {}
                    Some(pp) => {
                        return Err(RegistryError::Place {
                            id: p.id.clone(),
                            reason: format!("parent {parent:?} is a {:?}, expected a {k:?}", pp.kind),
                        })
                    }
                    None => {
                        return Err(RegistryError::Place {
                            id: p.id.clone(),
                            reason: format!("parent {parent:?} is not in the registry"),
                        })
                    }
                },
            }
        }
        Ok(Self { places: map })
    }

    /// The bundled sample: Bắc Kạn's 8 pilot communes (Như Cố with 11
    /// villages, Sông Cầu with 20 residential groups, the others with 8
    /// generated villages each).
    pub fn sample_bac_kan() -> Self {
        let mut places = vec![Place {
            id: "bac-kan".into(),
            kind: PlaceKind::Province,
            name: "Tỉnh Bắc Kạn".into(),
            parent: None,
            expected_households: None,
        }];
        for (commune, name, district, district_name, villages, prefix) in PILOT {
            places.push(Place {
                id: (*district).into(),
                kind: PlaceKind::District,
                name: (*district_name).into(),
                parent: Some("bac-kan".into()),
                expected_households: None,
            });
            places.push(Place {
                id: (*commune).into(),
                kind: PlaceKind::Commune,
                name: (*name).into(),
                parent: Some((*district).into()),
                expected_households: None,
            });
            for n in 1..=*villages {
                places.push(Place {
                    id: format!("{commune}-{n:02}"),
                    kind: PlaceKind::Village,
                    name: format!(
                        "{prefix} {n} ({})",
                        name.trim_start_matches("Xã ").trim_start_matches("Phường ")
                    ),
                    parent: Some((*commune).into()),
                    expected_households: Some(SAMPLE_HOUSEHOLDS_PER_VILLAGE),
                });
            }
        }
        Self::new(places).expect("the bundled sample is valid")
    }

    /// Reads a registry CSV with header `id,kind,name,parent,expected_households`.
    pub fn from_csv(reader: impl Read) -> Result<Self, RegistryError> {
        let mut rdr = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(reader);
        let mut places = Vec::new();
        for row in rdr.deserialize::<Place>() {
            let place = row.map_err(|e| RegistryError::Csv {
                line: e.position().map(|p| p.line()).unwrap_or(0),
                reason: e.to_string(),
            })?;
            places.push(place);
        }
        Self::new(places)
    }

    /// Writes the registry as CSV.
    pub fn to_csv(&self, writer: impl Write) -> Result<(), csv::Error> {
        let mut w = csv::Writer::from_writer(writer);
        for p in self.places.values() {
            w.serialize(p)?;
        }
        w.flush()?;
        Ok(())
    }

    /// Every place.
    pub fn places(&self) -> impl Iterator<Item = &Place> {
        self.places.values()
    }

    /// Whether there are no places.
    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// One place.
    pub fn get(&self, id: &str) -> Option<&Place> {
        self.places.get(id)
    }

    /// Places of a kind, sorted by id.
    pub fn of_kind(&self, kind: PlaceKind) -> impl Iterator<Item = &Place> {
        self.places.values().filter(move |p| p.kind == kind)
    }

    /// The direct children of a place.
    pub fn children(&self, id: &str) -> impl Iterator<Item = &Place> + '_ {
        let id = id.to_owned();
        self.places.values().filter(move |p| p.parent.as_deref() == Some(id.as_str()))
    }

    /// The ancestor of `id` of the given kind (or the place itself).
    pub fn ancestor(&self, id: &str, kind: PlaceKind) -> Option<&Place> {
        let mut cur = self.places.get(id)?;
        loop {
            if cur.kind == kind {
                return Some(cur);
            }
            cur = self.places.get(cur.parent.as_deref()?)?;
        }
    }

    /// Communes at or under a place (a province, district or commune).
    pub fn communes_under(&self, id: &str) -> Vec<&Place> {
        self.of_kind(PlaceKind::Commune)
            .filter(|c| {
                self.ancestor(&c.id, self.places.get(id).map(|p| p.kind).unwrap_or(PlaceKind::Province))
                    .map(|a| a.id.as_str())
                    == Some(id)
            })
            .collect()
    }

    /// The documents a commune has in a round: its villages' and its own.
    pub fn documents_for_commune(&self, commune: &str, round: &Round) -> Vec<DocumentId> {
        let mut docs = Vec::new();
        let Ok(cid) = PlaceId::new(commune) else { return docs };
        if self.get(commune).map(|p| p.kind) != Some(PlaceKind::Commune) {
            return docs;
        }
        docs.push(DocumentId::commune(cid, round.clone()));
        for v in self.children(commune) {
            if let Ok(vid) = PlaceId::new(v.id.as_str()) {
                docs.push(DocumentId::village(vid, round.clone()));
            }
        }
        docs
    }

    /// The commune a document belongs to.
    pub fn commune_of(&self, doc: &DocumentId) -> Option<&Place> {
        self.ancestor(doc.place.as_str(), PlaceKind::Commune)
    }

    /// Whether a document belongs to this registry: its place is here with
    /// the kind the document needs (a village document, a village). What the
    /// report reads, what `status` counts and what a new registry may not
    /// drop unasked are all judged by this one rule.
    pub fn holds(&self, doc: &DocumentId) -> bool {
        let want = match doc.kind {
            crate::ids::DocumentKind::Village => PlaceKind::Village,
            crate::ids::DocumentKind::Commune => PlaceKind::Commune,
        };
        self.get(doc.place.as_str()).map(|p| p.kind) == Some(want)
    }

    /// The places of `stored` documents that this registry holds and `next`
    /// would not: loading `next` would leave their survey data out of every
    /// figure. Sorted, each once.
    pub fn dropped_with_data<'a>(
        &self,
        next: &Registry,
        stored: impl IntoIterator<Item = &'a DocumentId>,
    ) -> Vec<String> {
        let dropped: std::collections::BTreeSet<String> = stored
            .into_iter()
            .filter(|id| self.holds(id) && !next.holds(id))
            .map(|id| id.place.to_string())
            .collect();
        dropped.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_that_drops_places_with_data_names_them() {
        let old = Registry::sample_bac_kan();
        let next = Registry::new(old.places().filter(|p| p.id != "nhu-co-03").cloned()).unwrap();
        let stored: Vec<DocumentId> =
            ["village:nhu-co-03:2024-1", "village:nhu-co-04:2024-1", "village:gone-01:2024-1"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect();
        assert!(old.holds(&stored[0]) && !next.holds(&stored[0]));
        // A place already outside the registry is not the new file's doing.
        assert_eq!(old.dropped_with_data(&next, &stored), vec!["nhu-co-03".to_owned()]);
        assert!(old.dropped_with_data(&old, &stored).is_empty());
        // A commune id is not a village's place.
        assert!(!old.holds(&"village:nhu-co:2024-1".parse().unwrap()));
    }

    #[test]
    fn sample_has_the_seed_communes_and_round_trips_through_csv() {
        let r = Registry::sample_bac_kan();
        assert_eq!(r.of_kind(PlaceKind::Commune).count(), 8);
        assert_eq!(r.children("nhu-co").count(), 11);
        assert_eq!(r.children("song-cau").count(), 20);
        assert_eq!(r.get("nhu-co").unwrap().name, "Xã Như Cố");
        assert_eq!(r.communes_under("bac-kan").len(), 8);
        assert_eq!(r.communes_under("cho-moi").len(), 1);
        let mut buf = Vec::new();
        r.to_csv(&mut buf).unwrap();
        assert_eq!(Registry::from_csv(&buf[..]).unwrap(), r);
    }

    #[test]
    fn csv_errors_name_the_line_and_the_place() {
        let bad = "id,kind,name,parent,expected_households\nbk,province,Bắc Kạn,,\nx,planet,X,bk,\n";
        let e = Registry::from_csv(bad.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
        let orphan = "id,kind,name,parent,expected_households\nv1,village,V,nowhere,5\n";
        let e = Registry::from_csv(orphan.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("nowhere"), "{e}");
    }
}
