//! Each route's audit action is named once, where the route is declared ([`audited`]): the name
//! travels with the request as an extension, so the handler's commit, the audit row of a failed
//! authentication and the metrics all read the same one.

use axum::Extension;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use utoipa_axum::router::UtoipaMethodRouter;

use crate::error::ApiError;

/// The audit action of a route (`credential.read`, `agent.revoke`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action(pub &'static str);

/// Declares `route` with its audit `action`.
pub fn audited<S>(action: &'static str, (schemas, paths, router): UtoipaMethodRouter<S>) -> UtoipaMethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    (schemas, paths, router.route_layer(Extension(Action(action))))
}

impl<S: Send + Sync> FromRequestParts<S> for Action {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Action>()
            .copied()
            .ok_or_else(|| ApiError::internal("a route was declared without its audit action"))
    }
}
