//! nowpilot
fn main() {}
