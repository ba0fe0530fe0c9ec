#![doc = include_str!("protocol.md")]
