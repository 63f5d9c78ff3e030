//! Consumes queued image ids, asks recognition who is in them, records the answer.
