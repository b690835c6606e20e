//! Rebuild when a migration is added or changed: `embed_migrations!` reads `sql/` at
//! compile time, and cargo does not watch that directory by itself.
fn main() {
    println!("cargo:rerun-if-changed=../../sql");
}
