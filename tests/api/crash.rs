//! Crashes: `kill -9` of the real binary, and a finalize cut short.
