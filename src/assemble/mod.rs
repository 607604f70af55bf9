//! Assembly: ordered replication events → committed transactions → document events.
//!
//! `transaction` buffers whole transactions (and streamed ones); `index` knows every row that
//! belongs to a document (filled by `snapshot`, kept by the WAL); `fold` applies spec §3 to
//! one committed transaction. Knows Strapi's model, never sockets.

pub mod event;
pub mod fold;
pub mod index;
pub mod row;
pub mod snapshot;
pub mod transaction;

pub use event::{Action, DocumentEvent, DocumentKey, EventOffset, TransactionEvents, View};
pub use fold::{PopulateSettings, fold_transaction};
pub use index::DocumentIndex;
pub use transaction::{Assembled, CommittedTransaction, LogicalMessage, TransactionBuffer};
