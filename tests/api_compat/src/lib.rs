//! Empty: the program under test is in tests/, written against atlas-rust 0.10.
