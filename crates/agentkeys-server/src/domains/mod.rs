//! The server's domains. Each owns its routes (`routes.rs`, with each route's audit action), its
//! ops (`ops.rs`, what the writer applies) and its storage statements (`queries.rs`); a domain
//! reaches another only through that one's ops and queries, never its routes.

pub mod accounts;
pub mod agents;
pub mod credentials;
pub mod devices;
pub mod links;
pub mod pairings;
pub mod policy;
pub mod presence;
pub mod recovery;
pub mod releases;
pub mod requests;
pub mod session;
pub mod statements;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// Every domain's routes, merged.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(accounts::routes::routes())
        .merge(session::routes::routes())
        .merge(credentials::routes::routes())
        .merge(agents::routes::routes())
        .merge(links::routes::routes())
        .merge(pairings::routes::routes())
        .merge(requests::routes::routes())
        .merge(statements::routes::routes())
        .merge(presence::routes::routes())
        .merge(devices::routes::routes())
        .merge(recovery::routes::routes())
        .merge(policy::routes::routes())
}
