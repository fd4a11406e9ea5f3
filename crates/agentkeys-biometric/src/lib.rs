//! The human's presence at the master (PRODUCT.md §5), with all platform code in one crate: the
//! terminal is here first, because a passphrase-sealed master session (PRODUCT.md §6) is opened
//! by a passphrase typed on it.

pub mod tty;
