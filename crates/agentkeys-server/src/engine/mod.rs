//! The domain-agnostic core of the server: [`op`] defines what a unit of work is, [`writer`]
//! commits units of work in batched transactions with their nonces and hash-chained [`audit`]
//! rows, and [`ratelimit`] keeps token buckets in the database. Nothing here names a domain.

pub mod audit;
pub mod op;
pub mod ratelimit;
pub mod writer;
