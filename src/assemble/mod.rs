//! Assembly: ordered replication events → committed transactions → document events.
//!
//! `transaction` buffers whole transactions (and streamed ones) in bounded memory, `spill`
//! keeps what does not fit on disk; `index` knows every row that belongs to a document
//! (filled by `snapshot`, kept by the WAL); `fold` applies spec §3 to one committed
//! transaction, or to one window of a transaction larger than
//! `replication.max_buffered_changes`. Knows Strapi's model, never sockets.

pub mod event;
pub mod fold;
pub mod index;
pub mod row;
pub mod snapshot;
mod spill;
pub mod transaction;

pub use event::{Action, DocumentEvent, DocumentKey, EventOffset, TransactionEvents, View};
pub use fold::{PopulateSettings, fold_transaction};
pub use index::DocumentIndex;
pub use spill::SpillReader;
pub use transaction::{
    Assembled, Batches, BufferStats, CommittedTransaction, LogicalMessage, SpillError,
    TransactionBuffer,
};
