//! Rebuilds the crate when a migration file changes, since `embed_migrations!` reads them at
//! compile time and cargo does not track that on its own.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
