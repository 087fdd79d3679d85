//! Data: raw corpus sources → normalised, filtered text → WordPiece tokenizer → packed,
//! hashed, memory-mappable token shards, and the reader that feeds them to pretraining.
