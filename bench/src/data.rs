//! Deterministic Person rows: the same generator feeds the raw SQLite baseline, the
//! server seeding and the local stores, so every scenario moves rows of the same shape
//! and size (about 150 bytes of values, a note on one row in four).

use roster_protocol::Fields;
use serde_json::Value;

const FIRST: &[&str] = &[
    "Jane", "John", "Amelie", "Omar", "Chloe", "Lucas", "Fatima", "Hugo", "Ines", "Noah", "Lea",
    "Adam", "Sofia", "Louis", "Maya", "Ethan", "Zoe", "Nathan", "Alice", "Yanis", "Emma",
    "Gabriel", "Lina", "Arthur", "Jade", "Raphael", "Mila", "Jules", "Rose", "Tom",
];

/// Last names; the bench searches for [`SEARCH_TERM`], one of them, which so matches
/// about 1 row in 40.
const LAST: &[&str] = &[
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy",
    "Moreau", "Simon", "Laurent", "Lefebvre", "Michel", "Garcia", "David", "Bertrand", "Roux",
    "Vincent", "Fournier", "Morel", "Girard", "Andre", "Mercier", "Dupont", "Lambert", "Bonnet",
    "Francois", "Martinez", "Okonkwo", "Nakamura", "Kowalski", "Haddad", "Schmidt", "Rossi",
    "Silva", "Novak", "Jensen", "Oliveira", "Ivanova",
];

/// A search that matches one last name (and the e-mails built from it).
pub const SEARCH_TERM: &str = "okonkwo";

const CITIES: &[&str] = &[
    "Lyon",
    "Paris",
    "Marseille",
    "Toulouse",
    "Nantes",
    "Lille",
    "Bordeaux",
    "Rennes",
    "Grenoble",
    "Dijon",
    "Brest",
    "Nice",
    "Metz",
    "Tours",
    "Caen",
    "Reims",
];

/// One Person row's values.
#[derive(Debug, Clone)]
pub struct Person {
    pub name: String,
    pub email: String,
    pub phone: String,
    pub age: i64,
    pub city: String,
    pub notes: Option<String>,
}

impl Person {
    /// The row as the wire and the client store see it.
    pub fn fields(&self) -> Fields {
        let mut fields = Fields::new();
        fields.insert("name".into(), Value::String(self.name.clone()));
        fields.insert("email".into(), Value::String(self.email.clone()));
        fields.insert("phone".into(), Value::String(self.phone.clone()));
        fields.insert("age".into(), Value::from(self.age));
        fields.insert("city".into(), Value::String(self.city.clone()));
        fields.insert(
            "notes".into(),
            self.notes.clone().map_or(Value::Null, Value::String),
        );
        fields
    }
}

/// A seeded generator of Person rows (splitmix64; no dependency, same rows every run).
#[derive(Debug, Clone)]
pub struct RowGen {
    state: u64,
    index: u64,
}

impl RowGen {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
            index: 0,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        let len = list.len() as u64;
        list[usize::try_from(self.next_u64() % len).unwrap_or(0)]
    }

    pub fn person(&mut self) -> Person {
        self.index += 1;
        let first = self.pick(FIRST);
        let last = self.pick(LAST);
        let city = self.pick(CITIES);
        let phone = self.next_u64();
        let age = 18 + i64::try_from(self.next_u64() % 73).unwrap_or(0);
        let notes = (self.next_u64() % 4 == 0)
            .then(|| format!("Met at the {city} meetup; prefers e-mail, call after 18:00."));
        Person {
            name: format!("{first} {last}"),
            email: format!(
                "{}.{}{}@example.org",
                first.to_ascii_lowercase(),
                last.to_ascii_lowercase(),
                self.index
            ),
            phone: format!(
                "+33 6 {:02} {:02} {:02} {:02}",
                phone % 100,
                (phone / 100) % 100,
                (phone / 10_000) % 100,
                (phone / 1_000_000) % 100
            ),
            age,
            city: city.to_owned(),
            notes,
        }
    }

    /// A random (version 4) row id from this generator: ids in no particular order,
    /// unlike the time-ordered v7 ids the client makes.
    pub fn random_id(&mut self) -> roster_protocol::RowId {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    pub fn people(&mut self, n: usize) -> Vec<Person> {
        (0..n).map(|_| self.person()).collect()
    }

    pub fn fields(&mut self, n: usize) -> Vec<Fields> {
        (0..n).map(|_| self.person().fields()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_deterministic_and_valid() {
        let a = RowGen::new(7).fields(100);
        let b = RowGen::new(7).fields(100);
        assert_eq!(a, b);
        let schema = roster_protocol::Schema::default_person();
        for fields in &a {
            schema.tables[0].validate_fields(fields).unwrap();
        }
        let hits = RowGen::new(1)
            .people(4000)
            .iter()
            .filter(|p| p.name.to_lowercase().contains(SEARCH_TERM))
            .count();
        assert!(
            (50..=150).contains(&hits),
            "{hits} search hits in 4000 rows"
        );
    }
}
