// The procedures and stdlib modules are embedded with include_dir!, which does not tell cargo
// to rebuild when a file is added or edited; these lines do.
fn main() {
    println!("cargo:rerun-if-changed=scripts");
    println!("cargo:rerun-if-changed=stdlib");
}
