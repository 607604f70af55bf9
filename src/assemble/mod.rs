//! Assembly: ordered replication events → committed transactions → document events.
//!
//! `transaction` buffers whole transactions (and streamed ones); `fold` applies spec §3 to
//! one committed transaction. Knows Strapi's model, never sockets.

pub mod event;
pub mod fold;
pub mod row;
pub mod transaction;

pub use event::{Action, DocumentEvent, DocumentKey, EventOffset, TransactionEvents, View};
pub use fold::fold_transaction;
pub use transaction::{Assembled, CommittedTransaction, LogicalMessage, TransactionBuffer};
