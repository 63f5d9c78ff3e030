//! The stages one batch goes through, in order. Each is a small function (or type) of its
//! own with its own tests; [`crate::Processor`] strings them together.
//!
//! 1. [`parse`]: message bodies to image ids (poison → dead-letter).
//! 2. [`claim`]: mark the rows `processing` for a new attempt; sort out redeliveries of
//!    finished rows and ids of no row.
//! 3. [`attempts`]: images past the attempt limit are given up on.
//! 4. [`load`]: open the files through the image root, read them, hash what was read and
//!    compare with the recorded hash.
//! 5. [`pack`]: group the files into calls bounded by count and by bytes.
//! 6. [`recognise`]: ask recognition, split calls refused as too large, classify failures.
//! 7. [`record`]: one outcome per image, written with its hash in one transaction.
//! 8. [`settle`]: acknowledge, requeue after a backoff, or dead-letter each message.

pub mod attempts;
pub mod claim;
pub mod load;
pub mod pack;
pub mod parse;
pub mod recognise;
pub mod record;
pub mod settle;
