//! What a product's tenant-schema migration may not say. The runner applies each migration
//! in one transaction with its row in the schema's history table, so a migration that
//! begins, commits or rolls back a transaction would split that pair (applied but not
//! recorded, or recorded but half applied), and a statement PostgreSQL refuses inside a
//! transaction block (`VACUUM`, `CREATE DATABASE`, `CREATE INDEX CONCURRENTLY`, …) fails on
//! every tenant. The SQL is read with `sqlparser`'s PostgreSQL tokenizer, so such words in
//! string literals, dollar-quoted bodies (a plpgsql function's `COMMIT`), quoted identifiers
//! and comments are not statements and are allowed. Savepoints (`SAVEPOINT`, `RELEASE`,
//! `ROLLBACK TO`) nest inside the migration's transaction and are allowed too.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

/// Why `sql` cannot be a migration, in words for the product's developers; `None` when it
/// can (as far as its statements' first words tell).
pub fn refusal(sql: &str) -> Option<String> {
    let tokens = match Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location() {
        Ok(tokens) => tokens,
        Err(error) => return Some(format!("cannot be read as SQL: {error}")),
    };
    let tokens: Vec<Token> = tokens
        .into_iter()
        .map(|token| token.token)
        .filter(|token| !matches!(token, Token::Whitespace(_) | Token::EOF))
        .collect();
    for (number, statement) in statements(&tokens).iter().enumerate() {
        let words: Vec<Option<String>> = statement.iter().map(word).collect();
        if let Some((what, why)) = refused(&words) {
            return Some(format!("statement {} ({what}) {why}", number + 1));
        }
    }
    None
}

const CONTROLS: &str = "controls the transaction: each migration runs in one transaction with \
its history row, so it may not begin, commit or roll back one (savepoints are allowed)";

const OUTSIDE: &str = "cannot run inside a transaction block, and each migration runs in one \
with its history row";

/// An unquoted word, upper-cased; `None` for anything else (a quoted identifier is a name).
fn word(token: &Token) -> Option<String> {
    match token {
        Token::Word(word) if word.quote_style.is_none() => Some(word.value.to_ascii_uppercase()),
        _ => None,
    }
}

fn is(token: Option<&Token>, expected: &str) -> bool {
    token.and_then(word).as_deref() == Some(expected)
}

/// The statements of `tokens`, split at semicolons, except those inside the SQL-standard
/// body of a function or procedure (`BEGIN ATOMIC … END`, where `CASE … END` nests), which
/// PostgreSQL reads as part of the one `CREATE` statement, as psql does. Only a statement
/// that creates a function or procedure has such a body: elsewhere `begin atomic` is a
/// column named `begin` of a type named `atomic`, and the semicolons after it still split.
fn statements(tokens: &[Token]) -> Vec<&[Token]> {
    let mut statements = Vec::new();
    let mut start = 0;
    let mut depth = 0usize;
    for (index, token) in tokens.iter().enumerate() {
        match word(token).as_deref() {
            Some("BEGIN")
                if depth == 0
                    && is(tokens.get(index + 1), "ATOMIC")
                    && creates_routine(&tokens[start..index]) =>
            {
                depth = 1;
            }
            Some("CASE") if depth > 0 => depth += 1,
            Some("END") if depth > 0 => depth -= 1,
            _ => {}
        }
        if matches!(token, Token::SemiColon) && depth == 0 {
            statements.push(&tokens[start..index]);
            start = index + 1;
        }
    }
    statements.push(&tokens[start..]);
    statements.retain(|statement| !statement.is_empty());
    statements
}

/// Whether `statement` (so far) begins `CREATE [OR REPLACE] FUNCTION|PROCEDURE`.
fn creates_routine(statement: &[Token]) -> bool {
    let words: Vec<Option<String>> = statement.iter().take(4).map(word).collect();
    let at = |index: usize| words.get(index).and_then(|word| word.as_deref());
    match (at(0), at(1)) {
        (Some("CREATE"), Some("FUNCTION" | "PROCEDURE")) => true,
        (Some("CREATE"), Some("OR")) => {
            at(2) == Some("REPLACE") && matches!(at(3), Some("FUNCTION" | "PROCEDURE"))
        }
        _ => false,
    }
}

const TIMEOUTS: &str = "changes a limit the runner sets for every migration (statement, lock \
or idle timeouts) or the role it runs as";

/// What the statement of `words` (each token's unquoted word) is and why it is refused.
fn refused(words: &[Option<String>]) -> Option<(String, &'static str)> {
    let at = |index: usize| words.get(index).and_then(|word| word.as_deref());
    let named = |count: usize| (0..count).filter_map(at).collect::<Vec<&str>>().join(" ");
    match (at(0)?, at(1)) {
        ("ROLLBACK", Some("TO")) => None,
        ("ROLLBACK", Some("WORK" | "TRANSACTION")) if at(2) == Some("TO") => None,
        ("BEGIN" | "COMMIT" | "END" | "ROLLBACK" | "ABORT", _) => Some((named(1), CONTROLS)),
        ("START" | "PREPARE", Some("TRANSACTION")) => Some((named(2), CONTROLS)),
        ("VACUUM", _) => Some((named(1), OUTSIDE)),
        // A bare CLUSTER (every table) cannot run in a transaction block; `CLUSTER t` can.
        ("CLUSTER", None | Some("VERBOSE")) if words.len() <= 2 => Some((named(1), OUTSIDE)),
        ("CREATE" | "DROP" | "ALTER", Some("SUBSCRIPTION")) => Some((named(2), OUTSIDE)),
        ("SET" | "RESET", _) if changes_runner_limits(words) => Some((named(1), TIMEOUTS)),
        ("CREATE" | "DROP", Some("DATABASE" | "TABLESPACE")) | ("ALTER", Some("SYSTEM")) => {
            Some((named(2), OUTSIDE))
        }
        ("DISCARD", Some("ALL")) => Some((named(2), OUTSIDE)),
        ("CREATE", Some("INDEX")) | ("DROP", Some("INDEX")) if at(2) == Some("CONCURRENTLY") => {
            Some((named(3), OUTSIDE))
        }
        ("CREATE", Some("UNIQUE")) if at(2) == Some("INDEX") && at(3) == Some("CONCURRENTLY") => {
            Some((named(4), OUTSIDE))
        }
        ("REINDEX", second) => {
            let concurrently = words.iter().flatten().any(|word| word == "CONCURRENTLY");
            if concurrently {
                Some(("REINDEX CONCURRENTLY".to_owned(), OUTSIDE))
            } else if matches!(second, Some("SYSTEM" | "DATABASE")) {
                Some((named(2), OUTSIDE))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// `SET`/`RESET` of a timeout the runner relies on, of the role, or of everything.
fn changes_runner_limits(words: &[Option<String>]) -> bool {
    let named: Vec<&str> = words
        .iter()
        .skip(1)
        .take(3)
        .filter_map(|word| word.as_deref())
        .filter(|word| !matches!(*word, "SESSION" | "LOCAL"))
        .collect();
    matches!(
        named.first(),
        Some(
            &("STATEMENT_TIMEOUT"
                | "LOCK_TIMEOUT"
                | "IDLE_IN_TRANSACTION_SESSION_TIMEOUT"
                | "TRANSACTION_TIMEOUT"
                | "ROLE"
                | "AUTHORIZATION"
                | "ALL")
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_control_statements_are_refused_naming_the_statement() {
        for (sql, named) in [
            (
                "BEGIN; CREATE TABLE a (id int); COMMIT;",
                "statement 1 (BEGIN)",
            ),
            ("CREATE TABLE a (id int);\ncommit", "statement 2 (COMMIT)"),
            ("CREATE TABLE a (id int); END;", "statement 2 (END)"),
            (
                "create table a (id int); rollback",
                "statement 2 (ROLLBACK)",
            ),
            ("ROLLBACK AND CHAIN", "statement 1 (ROLLBACK)"),
            ("ABORT", "statement 1 (ABORT)"),
            (
                "START TRANSACTION; SELECT 1",
                "statement 1 (START TRANSACTION)",
            ),
            (
                "PREPARE TRANSACTION 'x'",
                "statement 1 (PREPARE TRANSACTION)",
            ),
            ("COMMIT PREPARED 'x'", "statement 1 (COMMIT)"),
            ("SELECT 1;;  /* c */ begin work", "statement 2 (BEGIN)"),
        ] {
            let refused = refusal(sql).unwrap_or_else(|| panic!("{sql:?} was allowed"));
            assert!(refused.starts_with(named), "{sql:?}: {refused}");
            assert!(refused.contains("controls the transaction"), "{refused}");
        }
    }

    #[test]
    fn statements_that_cannot_run_in_a_transaction_block_are_refused() {
        for (sql, named) in [
            ("VACUUM ANALYZE a", "VACUUM"),
            ("CREATE DATABASE other", "CREATE DATABASE"),
            ("DROP DATABASE other", "DROP DATABASE"),
            ("CREATE TABLESPACE t LOCATION '/x'", "CREATE TABLESPACE"),
            ("ALTER SYSTEM SET work_mem = '1MB'", "ALTER SYSTEM"),
            ("DISCARD ALL", "DISCARD ALL"),
            (
                "CREATE INDEX CONCURRENTLY a_id ON a (id)",
                "CREATE INDEX CONCURRENTLY",
            ),
            (
                "create unique index concurrently a_id on a (id)",
                "CREATE UNIQUE INDEX CONCURRENTLY",
            ),
            ("DROP INDEX CONCURRENTLY a_id", "DROP INDEX CONCURRENTLY"),
            (
                "REINDEX (VERBOSE) TABLE CONCURRENTLY a",
                "REINDEX CONCURRENTLY",
            ),
            ("REINDEX DATABASE app", "REINDEX DATABASE"),
        ] {
            let refused = refusal(sql).unwrap_or_else(|| panic!("{sql:?} was allowed"));
            assert!(
                refused.starts_with(&format!("statement 1 ({named})")),
                "{sql:?}: {refused}"
            );
            assert!(
                refused.contains("cannot run inside a transaction"),
                "{refused}"
            );
        }
    }

    #[test]
    fn the_words_inside_literals_dollar_quoted_bodies_identifiers_and_comments_are_allowed() {
        for sql in [
            "INSERT INTO notes (body) VALUES ('BEGIN; COMMIT; VACUUM')",
            "INSERT INTO notes (body) VALUES (E'it\\'s; COMMIT')",
            "-- COMMIT here is a comment\nCREATE TABLE a (id int)",
            "/* outer /* nested; COMMIT */ still a comment; ROLLBACK */ SELECT 1",
            "CREATE TABLE \"commit\" (\"end\" int); SELECT \"end\" FROM \"commit\"",
            "CREATE PROCEDURE tidy() LANGUAGE plpgsql AS $$\nBEGIN\n  DELETE FROM a;\n  COMMIT;\nEND\n$$;",
            "DO $body$ BEGIN PERFORM 1; END $body$",
            "CREATE FUNCTION one() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT CASE WHEN true THEN 1 ELSE 0 END;\n  SELECT 1;\nEND;\nSELECT one()",
            "SAVEPOINT s; CREATE TABLE a (id int); RELEASE SAVEPOINT s; ROLLBACK TO SAVEPOINT s; ROLLBACK WORK TO s",
            "CREATE INDEX a_id ON a (id); REINDEX TABLE a; SELECT CASE WHEN true THEN 1 END",
        ] {
            assert_eq!(refusal(sql), None, "{sql:?}");
        }
    }

    #[test]
    fn a_column_named_begin_of_a_type_named_atomic_hides_no_statement_after_it() {
        for (sql, named) in [
            (
                "CREATE DOMAIN atomic AS int; CREATE TABLE t2 (begin atomic); ROLLBACK; CREATE TABLE escaped (x int)",
                "statement 3 (ROLLBACK)",
            ),
            (
                "CREATE TABLE t2 (begin atomic); COMMIT",
                "statement 2 (COMMIT)",
            ),
            (
                "ALTER TABLE t ADD begin atomic; VACUUM",
                "statement 2 (VACUUM)",
            ),
        ] {
            let refused = refusal(sql).unwrap_or_else(|| panic!("{sql:?} was allowed"));
            assert!(refused.starts_with(named), "{sql:?}: {refused}");
        }
        let routine =
            "CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC SELECT 1; END; SELECT 2";
        assert_eq!(refusal(routine), None);
    }

    #[test]
    fn a_bare_cluster_subscriptions_and_the_runners_timeouts_are_refused() {
        for (sql, named) in [
            ("CLUSTER", "statement 1 (CLUSTER)"),
            ("CLUSTER VERBOSE", "statement 1 (CLUSTER)"),
            (
                "CREATE SUBSCRIPTION s CONNECTION 'x' PUBLICATION p",
                "statement 1 (CREATE SUBSCRIPTION)",
            ),
            ("SET statement_timeout = 0", "statement 1 (SET)"),
            ("SET LOCAL lock_timeout TO 0", "statement 1 (SET)"),
            ("RESET ALL", "statement 1 (RESET)"),
            ("SET SESSION AUTHORIZATION other", "statement 1 (SET)"),
            ("SET ROLE postgres", "statement 1 (SET)"),
        ] {
            let refused = refusal(sql).unwrap_or_else(|| panic!("{sql:?} was allowed"));
            assert!(refused.starts_with(named), "{sql:?}: {refused}");
        }
        for allowed in [
            "CLUSTER a USING a_pkey",
            "SET datestyle TO ISO",
            "SET LOCAL work_mem = '64MB'",
        ] {
            assert_eq!(refusal(allowed), None, "{allowed:?}");
        }
    }

    #[test]
    fn sql_the_tokenizer_cannot_read_is_refused_with_where() {
        let refused = refusal("SELECT 'unterminated").expect("refused");
        assert!(refused.starts_with("cannot be read as SQL"), "{refused}");
        let refused = refusal("DO $$ BEGIN COMMIT; END").expect("refused");
        assert!(refused.starts_with("cannot be read as SQL"), "{refused}");
    }
}
