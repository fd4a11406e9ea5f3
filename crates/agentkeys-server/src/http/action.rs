//! Each route is declared once, in its domain's `routes.rs`, with what it is: [`signed`] (a
//! session's signed request) or [`anonymous`] (no session yet), and its audit action. The action
//! travels with the request as an extension, so the handler's commit, the audit row of a failed
//! authentication and the metrics all read the same one; the kind adds to the route's OpenAPI
//! operation what every route of that kind can answer (and, for signed routes, the signature
//! headers and the security scheme), so the document states every status code.

use axum::Extension;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required};
use utoipa_axum::router::UtoipaMethodRouter;

use crate::error::ApiError;

/// The audit action of a route (`credential.read`, `agent.revoke`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action(pub &'static str);

/// The name of the security scheme of signed routes in the OpenAPI document.
pub const SESSION_SCHEME: &str = "agentkeys_session";

/// Declares a route that takes a session's signed request.
pub fn signed<S>(action: &'static str, route: UtoipaMethodRouter<S>) -> UtoipaMethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    declare(action, route, Kind::Signed)
}

/// Declares a route without a session (account creation, pairing, link codes).
pub fn anonymous<S>(action: &'static str, route: UtoipaMethodRouter<S>) -> UtoipaMethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    declare(action, route, Kind::Anonymous)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Signed,
    Anonymous,
}

fn declare<S>(
    action: &'static str,
    (schemas, mut paths, router): UtoipaMethodRouter<S>,
    kind: Kind,
) -> UtoipaMethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    for item in paths.paths.values_mut() {
        for operation in
            [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten()
        {
            document(operation, kind);
        }
    }
    let router = match kind {
        Kind::Signed => router.route_layer(axum::middleware::from_fn(super::chain::answer_head)),
        Kind::Anonymous => router,
    };
    (schemas, paths, router.route_layer(Extension(Action(action))))
}

/// What every route of `kind` can answer besides what its own annotation lists.
fn document(operation: &mut Operation, kind: Kind) {
    let mut common = vec![
        ("400", "The request is malformed: a path, query or body that breaks the schema or a rule it states."),
        ("413", "The body is over 64 KiB."),
        (
            "429",
            "Rate limited (per agent, per account for code look-ups, or per source address without a session); see Retry-After.",
        ),
        ("500", "A server fault; the details are in the server log."),
        ("503", "The database is unavailable, or the server is shutting down."),
    ];
    if kind == Kind::Signed {
        common.push((
            "401",
            "No session, an unknown or revoked one, or a signature that does not verify, a stale timestamp or a replayed nonce.",
        ));
        common.push((
            "403",
            "Denied: only the account owner may do this, the agent's scope or tier does not allow it, or the account requires presence for this critical operation.",
        ));
        operation.security = Some(vec![SecurityRequirement::new(SESSION_SCHEME, Vec::<String>::new())]);
        let parameters = operation.parameters.get_or_insert_with(Vec::new);
        for (name, description, pattern) in [
            (
                "x-agentkeys-timestamp",
                "Unix seconds at signing (within 60 s of the server's clock).",
                "^-?[0-9]{1,19}$",
            ),
            (
                "x-agentkeys-nonce",
                "16 fresh random bytes, base64url (22 characters), never used before.",
                "^[A-Za-z0-9_-]{22}$",
            ),
            (
                "x-agentkeys-signature",
                "Ed25519 signature by the session's device key over the request (docs/protocol.md), base64url.",
                "^[A-Za-z0-9_-]{86}$",
            ),
        ] {
            parameters.push(RefOr::T(header(name, description, pattern)));
        }
        parameters.push(RefOr::T(
            ParameterBuilder::new()
                .name(agentkeys_proto::chain::HEADER_AUDIT_SEEN)
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "The place of the account's audit chain this client saw last; the answer's x-agentkeys-audit-at \
                     says the chain's hash there now (docs/protocol.md, \"Account audit chains\").",
                ))
                .schema(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).maximum(Some(i64::MAX))))
                .build(),
        ));
    }
    for (status, description) in common {
        operation.responses.responses.entry(status.to_owned()).or_insert_with(|| error_response(description));
    }
}

fn header(name: &str, description: &str, pattern: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern))))
        .build()
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
            .build(),
    )
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
