//! The local stack (work in progress).
