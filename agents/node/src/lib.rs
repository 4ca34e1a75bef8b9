pub mod net {}
