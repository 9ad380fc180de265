//! The local stack `rollback sandbox` runs for rehearsals and the tests use: real servers on
//! loopback, each in its own directory and on its own port.

pub mod postgres;
