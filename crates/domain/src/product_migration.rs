//! A product's tenant-schema migrations, as registered with the registry: an append-only,
//! checksummed list, applied in version order inside each tenant's schema. These are the
//! rules a registration must follow; the caller computes checksums (SHA-256 of the SQL).

/// The longest name.
pub const NAME_MAX: usize = 200;
/// The longest SQL text of one migration, in bytes.
pub const SQL_MAX: usize = 256 * 1024;
/// The most migrations one product may register.
pub const COUNT_MAX: usize = 10_000;

/// A migration as a registration lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked<'a> {
    /// Its version, as sent (checked to fit a positive 32-bit number).
    pub version: i64,
    /// Its name.
    pub name: &'a str,
    /// Its SQL.
    pub sql: &'a str,
    /// The SHA-256 of its SQL, hex.
    pub checksum: &'a str,
}

/// A migration already registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered<'a> {
    /// Its version.
    pub version: i32,
    /// Its name.
    pub name: &'a str,
    /// The SHA-256 of its SQL, hex.
    pub checksum: &'a str,
}

/// What is wrong with the list itself, whatever is registered: `(pointer, detail)` each.
pub fn shape_problems(asked: &[Asked<'_>]) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if asked.is_empty() {
        problems.push(("/".to_owned(), "list at least one migration".to_owned()));
    }
    if asked.len() > COUNT_MAX {
        problems.push((
            "/".to_owned(),
            format!("at most {COUNT_MAX} migrations per product"),
        ));
    }
    let mut previous: Option<i64> = None;
    for (index, migration) in asked.iter().enumerate() {
        if !(1..=i64::from(i32::MAX)).contains(&migration.version) {
            problems.push((
                format!("/{index}/version"),
                format!("must be a whole number from 1 to {}", i32::MAX),
            ));
        } else if let Some(before) = previous.filter(|before| migration.version <= *before) {
            problems.push((
                format!("/{index}/version"),
                format!("must be greater than the version listed before it ({before})"),
            ));
        }
        previous = Some(migration.version);
        let name_length = migration.name.chars().count();
        if name_length == 0
            || name_length > NAME_MAX
            || migration.name.chars().any(char::is_control)
        {
            problems.push((
                format!("/{index}/name"),
                format!("must be 1 to {NAME_MAX} characters, none of them a control character"),
            ));
        }
        if migration.sql.trim().is_empty() || migration.sql.len() > SQL_MAX {
            problems.push((
                format!("/{index}/sql"),
                format!("must be SQL of 1 to {SQL_MAX} bytes"),
            ));
        } else if let Some(refusal) = crate::migration_sql::refusal(migration.sql) {
            problems.push((format!("/{index}/sql"), refusal));
        }
    }
    problems
}

/// Which of `asked` (a list that passed [`shape_problems`]) are new, by index, given what is
/// `registered` (in version order): every registered migration must be listed unchanged,
/// and new ones come after the highest registered version. The first breach is the error,
/// as `(pointer, detail)`.
pub fn appended(
    registered: &[Registered<'_>],
    asked: &[Asked<'_>],
) -> Result<Vec<usize>, (String, String)> {
    for kept in registered {
        let Some(index) = asked
            .iter()
            .position(|migration| migration.version == i64::from(kept.version))
        else {
            return Err((
                "/".to_owned(),
                format!(
                    "version {} ({}) is registered and cannot be removed: migrations are append-only",
                    kept.version, kept.name
                ),
            ));
        };
        let listed = &asked[index];
        if listed.checksum != kept.checksum {
            return Err((
                format!("/{index}/sql"),
                format!(
                    "differs from registered version {} (sha256 {}): a registered migration never changes; register a new version instead",
                    kept.version, kept.checksum
                ),
            ));
        }
        if listed.name != kept.name {
            return Err((
                format!("/{index}/name"),
                format!(
                    "differs from registered version {} ({:?}): a registered migration never changes",
                    kept.version, kept.name
                ),
            ));
        }
    }
    let highest = registered.iter().map(|kept| kept.version).max();
    let mut new = Vec::new();
    for (index, migration) in asked.iter().enumerate() {
        if registered
            .iter()
            .any(|kept| i64::from(kept.version) == migration.version)
        {
            continue;
        }
        if let Some(highest) = highest.filter(|highest| migration.version < i64::from(*highest)) {
            return Err((
                format!("/{index}/version"),
                format!(
                    "is below the highest registered version ({highest}): new migrations come after it"
                ),
            ));
        }
        new.push(index);
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(version: i64, sql: &'static str) -> Asked<'static> {
        Asked {
            version,
            name: "step",
            sql,
            checksum: sql,
        }
    }

    fn registered(version: i32, sql: &'static str) -> Registered<'static> {
        Registered {
            version,
            name: "step",
            checksum: sql,
        }
    }

    #[test]
    fn refuses_versions_out_of_order_or_out_of_range_and_empty_sql() {
        let problems = shape_problems(&[
            asked(2, "a"),
            asked(2, "b"),
            asked(0, " "),
            asked(1 << 40, "c"),
        ]);
        let pointers: Vec<&str> = problems
            .iter()
            .map(|(pointer, _)| pointer.as_str())
            .collect();
        assert_eq!(
            pointers,
            ["/1/version", "/2/version", "/2/sql", "/3/version"]
        );
        assert_eq!(shape_problems(&[]).len(), 1, "an empty list is refused");
        assert!(shape_problems(&[asked(1, "a"), asked(5, "b")]).is_empty());
    }

    #[test]
    fn refuses_a_name_with_a_control_character_or_too_long() {
        let long = "n".repeat(NAME_MAX + 1);
        for name in ["", "tab\there", long.as_str()] {
            let migration = Asked {
                name,
                ..asked(1, "a")
            };
            assert_eq!(shape_problems(&[migration])[0].0, "/0/name", "{name:?}");
        }
    }

    #[test]
    fn new_versions_after_the_registered_ones_are_appended() {
        let kept = [registered(1, "a"), registered(2, "b")];
        let listed = [asked(1, "a"), asked(2, "b"), asked(3, "c"), asked(7, "d")];
        assert_eq!(appended(&kept, &listed), Ok(vec![2, 3]));
        assert_eq!(
            appended(&kept, &listed[..2]),
            Ok(vec![]),
            "the same list again adds nothing"
        );
        assert_eq!(appended(&[], &listed), Ok(vec![0, 1, 2, 3]));
    }

    #[test]
    fn refuses_to_change_remove_or_insert_before_a_registered_migration() {
        let kept = [registered(1, "a"), registered(5, "b")];
        let changed = appended(&kept, &[asked(1, "a"), asked(5, "B")]).expect_err("changed sql");
        assert_eq!(changed.0, "/1/sql");
        let removed = appended(&kept, &[asked(5, "b")]).expect_err("removed");
        assert_eq!(removed.0, "/");
        let inserted = appended(&kept, &[asked(1, "a"), asked(3, "x"), asked(5, "b")])
            .expect_err("inserted before the highest");
        assert_eq!(inserted.0, "/1/version");
        let renamed = appended(
            &kept,
            &[
                Asked {
                    name: "other",
                    ..asked(1, "a")
                },
                asked(5, "b"),
            ],
        )
        .expect_err("renamed");
        assert_eq!(renamed.0, "/0/name");
    }
}
